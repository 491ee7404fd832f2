"""Fan-out of shard work to the GPU pool: launch child runs, wait for them, retry what is left.

The parent `cgaug` runs on the CPU pool and never occupies a GPU slot: it
creates one `cgaug-shard` run per group of shards with `run_deployment`
(non-blocking, idempotency key = parent run + retry count + group + launch
attempt, so a retried parent or a re-sent request never duplicates a child),
then polls their states. Shards still missing after a round — their child
failed, crashed or was given up — are launched again, at most
`child_attempts` times each. Shards that another live producer has claimed
are waited for (up to a claim TTL), not duplicated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SHARD_DEPLOYMENT = "cgaug-shard/gpu"
MAX_AUTO_SHARDS_PER_CHILD = 64  # auto grouping: at most this many shards per child (retry and balance unit)


class Orchestration(BaseModel):
    """How the parent runs shard work; none of it changes a sample's content (not fingerprinted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_process: bool = True  # run shards in this process (local CLI) instead of child runs on the pool
    shard_deployment: str = DEFAULT_SHARD_DEPLOYMENT
    # 0 = auto: pending shards split evenly over the pool's online workers, at most
    # MAX_AUTO_SHARDS_PER_CHILD each. More shards per child amortise the child's process start and
    # model load (benchmarks/orchestration.py); fewer balance load and retry in smaller units.
    shards_per_child: int = Field(0, ge=0)
    max_children: int = Field(64, ge=1)  # child runs in flight at once (bounds API and pool load)
    child_attempts: int = Field(3, ge=1)  # launches per shard before the parent fails
    child_timeout_s: float | None = Field(None, gt=0)  # a child unfinished after this is given up on
    poll_s: float = Field(2.0, gt=0)  # how often the parent reads its children's states
    claim_ttl_s: float = Field(300.0, gt=0)  # a producer silent this long is dead (cgaug.storage.claims)
    quality_floor: float | None = Field(0.3, ge=0.0, le=1.0)  # acceptance below: cgaug.shard.low-quality


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


def wait_children(ids: list[UUID], poll_s: float, timeout_s: float | None) -> Iterator[tuple[UUID, str]]:
    """Yield (child id, final state name) as children finish; 'TimedOut' for those still running at the end."""
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
                    yield run.id, run.state.name
            if pending and deadline is not None and time.monotonic() > deadline:
                for run_id in sorted(pending):
                    yield run_id, "TimedOut"
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
            for run_id, state in wait_children(list(children), orch.poll_s, orch.child_timeout_s):
                for shard in children[run_id]:
                    if is_done(shard):
                        on_done(shard)
                if state != "Completed":
                    failed.append(f"shards {children[run_id]} child {run_id} ended {state}")
        remaining = [s for s in remaining if not is_done(s)]
        for note in failed:
            log(f"attempt {attempt}: {note}")
        if not remaining:
            break
        log(f"attempt {attempt}: {len(remaining)} shards still missing: {remaining[:20]}")
    return remaining
