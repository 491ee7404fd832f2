"""The parent's retry policy over child runs, with the launcher and the waiter replaced by a fake pool.

The real launcher (`run_deployment`) and waiter are exercised end to end in
tests/e2e; here a fake pool decides which children produce their shards, so
that every branch of the policy is reached deterministically.
"""

from __future__ import annotations

import uuid

import pytest

from cgaug.config import Orchestration
from cgaug.flows import fanout
from cgaug.flows.fanout import child_key, fan_out, groups_of


class FakePool:
    """Children 'produce' their shards unless (shard, attempt) is listed as failing."""

    def __init__(self, failing: set[tuple[int, int]], message: str | None = None):
        self.failing, self.done, self.launched, self.keys = failing, set(), [], []
        self.message = message  # the final state message of a failed child
        self._groups: dict[uuid.UUID, tuple[list[int], int]] = {}

    def launch(self, deployment, parameters, group, key):
        attempt = int(key.rsplit(":a", 1)[1])
        run_id = uuid.uuid4()
        self._groups[run_id] = (group, attempt)
        self.launched.append((tuple(group), attempt))
        self.keys.append(key)
        assert parameters == {"out": "OUT"} and deployment == "cgaug-shard/gpu"
        return run_id

    def wait(self, ids, poll_s, timeout_s):
        for run_id in ids:
            group, attempt = self._groups[run_id]
            failed = [s for s in group if (s, attempt) in self.failing]
            self.done.update(s for s in group if (s, attempt) not in self.failing)
            yield run_id, *(("Failed", self.message) if failed else ("Completed", None))


@pytest.fixture
def run(monkeypatch):
    def go(todo, failing=(), message=None, **options):
        pool = FakePool(set(failing), message)
        monkeypatch.setattr(fanout, "launch_child", pool.launch)
        monkeypatch.setattr(fanout, "wait_children", pool.wait)
        monkeypatch.setattr(fanout, "online_workers", lambda deployment: 1)
        calls, logs, claim_waits = [], [], []
        missing = fan_out(todo, Orchestration(in_process=False, **options), {"out": "OUT"}, "parent", 1,
                          pool.done.__contains__, calls.append, claim_waits.append, logs.append)
        return missing, pool, calls, logs, claim_waits
    return go


def test_everything_in_one_round(run):
    missing, pool, calls, logs, waits = run([0, 1, 2, 3], shards_per_child=2)
    assert missing == [] and sorted(calls) == [0, 1, 2, 3] and logs == [] and waits == []
    assert pool.launched == [((0, 1), 1), ((2, 3), 1)]


def test_failed_child_is_relaunched_for_its_missing_shards_only(run):
    missing, pool, calls, logs, waits = run([0, 1, 2], failing={(1, 1)}, shards_per_child=1)
    assert missing == [] and sorted(calls) == [0, 1, 2]
    assert pool.launched == [((0,), 1), ((1,), 1), ((2,), 1), ((1,), 2)]
    assert waits == [[1]]  # other producers' claims are waited for before the relaunch
    assert any("attempt 1" in line and "Failed" in line for line in logs)
    assert len(set(pool.keys)) == len(pool.keys)  # a relaunch is a new child, not the old one again


def test_gives_up_after_child_attempts(run):
    missing, pool, calls, logs, _ = run([0, 1], failing={(1, 1), (1, 2)}, child_attempts=2, shards_per_child=1)
    assert missing == [1] and calls == [0]
    assert [launch for launch in pool.launched if launch[0] == (1,)] == [((1,), 1), ((1,), 2)]
    assert "attempt 2: 1 shards still missing: [1]" in logs


def test_an_error_no_relaunch_can_fix_ends_the_parent_at_once_with_the_childs_message(run):
    message = ("Flow run encountered an exception: ModelNotFound: generator.model 'x/y' was not found: "
               "not in the Hugging Face cache")
    with pytest.raises(fanout.ChildFailed, match=r"ModelNotFound: generator\.model 'x/y' was not found") as caught:
        run([0, 1], failing={(1, 1)}, message=message, child_attempts=3, shards_per_child=1)
    assert "shards [1]" in str(caught.value)


def test_a_retryable_failure_is_relaunched_and_its_message_logged(run):
    message = "Flow run encountered an exception: OSError: connection reset"
    missing, pool, _, logs, _ = run([0], failing={(0, 1)}, message=message, shards_per_child=1)
    assert missing == [] and pool.launched == [((0,), 1), ((0,), 2)]
    assert any("connection reset" in line for line in logs)
    assert fanout.permanent_error(message) is None
    assert fanout.permanent_error(None) is None
    assert fanout.permanent_error("Flow run encountered an exception: PlanMismatch: other settings") == (
        "PlanMismatch: other settings")


def test_children_in_flight_are_bounded(run):
    _, pool, *_ = run(list(range(5)), max_children=2, shards_per_child=1)
    assert [g for g, _ in pool.launched] == [(0,), (1,), (2,), (3,), (4,)]


def test_auto_grouping_gives_each_online_worker_one_child(run):
    missing, pool, *_ = run(list(range(5)))  # one online worker: one child for everything
    assert missing == [] and pool.launched == [((0, 1, 2, 3, 4), 1)]
    assert fanout.auto_group_size(10, 4) == 3 and fanout.auto_group_size(10, 0) == 10
    assert fanout.auto_group_size(10_000, 2) == fanout.MAX_AUTO_SHARDS_PER_CHILD
    assert fanout.auto_group_size(0, 3) == 1


def test_keys_and_groups():
    assert groups_of([3, 4, 5, 9], 3) == [[3, 4, 5], [9]]
    key = child_key("abc", 2, [3, 4, 5], 1)
    assert key == "cgaug:abc:r2:s00003-00005:a1"
    assert len({child_key("abc", r, [3], a) for r in (1, 2) for a in (1, 2)}) == 4


def test_orchestration_refuses_unknown_keys_and_bad_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="shard_per_child"):
        Orchestration.model_validate({"shard_per_child": 2})
    with pytest.raises(ValidationError, match="quality_floor"):
        Orchestration(quality_floor=1.5)
