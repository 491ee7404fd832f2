"""Fan-out of shard work to the GPU pool: launch child runs, wait for them, retry what is left.

The parent `cgaug` runs on the CPU pool and never occupies a GPU slot: it
creates one `cgaug-shard` run per group of shards with `run_deployment`
(non-blocking, idempotency key = parent run + retry count + group + launch
attempt, so a retried parent or a re-sent request never duplicates a child),
then polls their states. Shards still missing after a round — their child
failed, crashed or was given up — are launched again, at most
`child_attempts` times each. Shards that another live producer has claimed
are waited for (up to a claim TTL), not duplicated. A child that failed with
an error no retry can fix (a model that is not there, settings that do not
match the output) ends the parent at once with the child's message
(`ChildFailed`) instead of being launched again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

from cgaug.config import Orchestration

MAX_AUTO_SHARDS_PER_CHILD = 64  # auto grouping: at most this many shards per child (retry and balance unit)

# Exceptions of a child that a relaunch cannot fix: the same inputs fail the same way on any worker.
PERMANENT_ERRORS = frozenset({"ModelNotFound", "CheckpointNotFound", "CheckpointError", "PlanMismatch",
                              "ConfigError", "InputError", "EmptyBankError", "ValidationError"})
_EXCEPTION_PREFIX = "encountered an exception: "


class ChildFailed(RuntimeError):
    """A child run failed with an error that no relaunch can fix; the message is the child's."""


def permanent_error(message: str | None) -> str | None:
    """The child's error when its final state message names one of `PERMANENT_ERRORS`, else None.

    Prefect words a flow run's failure as "Flow run encountered an exception: Name: message".
    """
    if not message or _EXCEPTION_PREFIX not in message:
        return None
    error = message.split(_EXCEPTION_PREFIX, 1)[1]
    name = error.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    return error if name in PERMANENT_ERRORS else None


def groups_of(shards: list[int], size: int) -> list[list[int]]:
    return [shards[i:i + size] for i in range(0, len(shards), size)]


def auto_group_size(pending: int, workers: int) -> int:
    """Shards per child when not fixed: one child per online worker, capped for balance and retries."""
    return max(1, min(MAX_AUTO_SHARDS_PER_CHILD, -(-pending // max(workers, 1))))


def online_workers(deployment: str) -> int:
    """Online workers of the pool the shard deployment runs on (0 when none answered recently)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkerStatus

    with get_client(sync_client=True) as client:
        pool = client.read_deployment_by_name(deployment).work_pool_name
        if pool is None:
            return 0
        return sum(w.status == WorkerStatus.ONLINE for w in client.read_workers_for_work_pool(pool))


def child_key(parent: str, run_count: int, group: list[int], attempt: int) -> str:
    """Idempotency key of a child run: unique per parent run, parent retry, shard group and launch."""
    return f"cgaug:{parent}:r{run_count}:s{group[0]:05d}-{group[-1]:05d}:a{attempt}"


def launch_child(deployment: str, parameters: dict[str, Any], group: list[int], key: str) -> UUID:
    """Create one child run on the pool and return at once (the parent waits separately)."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters=parameters | {"shard_ids": group}, timeout=0,
                         idempotency_key=key, flow_run_name=f"shards-{group[0]:05d}-{group[-1]:05d}",
                         as_subflow=True)
    return run.id


def wait_children(ids: list[UUID], poll_s: float, timeout_s: float | None
                  ) -> Iterator[tuple[UUID, str, str | None]]:
    """Yield (child id, final state name, its message) as children finish; 'TimedOut' for those still
    running at the end."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    pending = set(ids)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while pending:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(pending))))
            for run in runs:
                if run.state is not None and run.state.is_final():
                    pending.discard(run.id)
                    yield run.id, run.state.name, run.state.message
            if pending and deadline is not None and time.monotonic() > deadline:
                for run_id in sorted(pending):
                    yield run_id, "TimedOut", None
                return
            if pending:
                time.sleep(poll_s)


def fan_out(todo: list[int], orch: Orchestration, parameters: dict[str, Any], parent: str, run_count: int,
            is_done: Callable[[int], bool], on_done: Callable[[int], None],
            wait_for_claims: Callable[[list[int]], None], log: Callable[[str], None]) -> list[int]:
    """Produce `todo` through child runs; returns the shards still missing after every attempt.

    `is_done(shard)` checks storage (the truth, whatever a child's state says), `on_done(shard)` is
    called as soon as the child holding a finished shard ends (it must be idempotent: the caller
    sweeps `todo` once more at the end for shards finished by other producers), and
    `wait_for_claims(shards)` blocks while other live producers hold claims on shards about to be
    launched again.

    Raises:
        ChildFailed: a child failed with an error no relaunch can fix (see `permanent_error`).
    """
    remaining = list(todo)
    for attempt in range(1, orch.child_attempts + 1):
        if attempt > 1:
            wait_for_claims(remaining)
            remaining = [s for s in remaining if not is_done(s)]
            if not remaining:
                break
        size = orch.shards_per_child or auto_group_size(len(remaining), online_workers(orch.shard_deployment))
        groups = groups_of(remaining, size)
        failed: list[str] = []
        for batch in groups_of(list(range(len(groups))), orch.max_children):
            children = {launch_child(orch.shard_deployment, parameters, groups[i],
                                     child_key(parent, run_count, groups[i], attempt)): groups[i] for i in batch}
            for run_id, state, message in wait_children(list(children), orch.poll_s, orch.child_timeout_s):
                for shard in children[run_id]:
                    if is_done(shard):
                        on_done(shard)
                if state != "Completed":
                    error = permanent_error(message)
                    if error is not None:
                        raise ChildFailed(f"child run {run_id} (shards {children[run_id]}) failed with an error "
                                          f"a relaunch cannot fix: {error}")
                    failed.append(f"shards {children[run_id]} child {run_id} ended {state}"
                                  + (f": {message}" if message else ""))
        remaining = [s for s in remaining if not is_done(s)]
        for note in failed:
            log(f"attempt {attempt}: {note}")
        if not remaining:
            break
        log(f"attempt {attempt}: {len(remaining)} shards still missing: {remaining[:20]}")
    return remaining
