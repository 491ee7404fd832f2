"""A crash costs seconds: `cgaug stack up` repairs a partly dead stack, and runs outlive a server outage.

One stack for the module (a CPU worker for the parent, one GPU-pool worker on
the CPU for the children); each test kills parts of it with SIGKILL and
repairs it with `stack.up`, as a user would with `cgaug stack up`, so the
stack is whole again for the next test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cgaug import stack
from cgaug.storage.claims import CLAIMS_DIR
from cgaug.storage.fs import open_root
from cgaug.storage.shards import verify
from tests.e2e.conftest import PROJECT, api, child_runs, parameters, run_generate, running_stack, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

OUTAGE_S = 100.0  # the server is away this long (then restarted on its port and database)
GPU_WORKER = "worker-cpu-as-gpu0"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory, tiny_home) -> Path:
    state = tmp_path_factory.mktemp("recovery-stack")
    with running_stack(state, cpu_workers=1):
        yield state


def _up(state: Path) -> tuple[stack.StackState, list[str]]:
    """`cgaug stack up` with the options the stack was started with: what it returned and printed."""
    said: list[str] = []
    return stack.up(state, project=PROJECT, cpu_workers=1, say=said.append), said


def _kill(*pids: int) -> None:
    """SIGKILL each process group and wait until its leader is gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    for pid in pids:
        wait_until(lambda pid=pid: not stack.is_alive(pid), 30, f"process {pid} to die", every_s=0.1)


def _start_generate(state: stack.StackState, out: Path, source: Path):
    """A cgaug/generate run, returned once its child produces a shard (a claim exists)."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = parameters(source, out, quality_floor=None, claim_ttl_s=5.0)
    with temporary_settings({PREFECT_API_URL: state.api_url}):
        parent = run_deployment("cgaug/generate", parameters=params, timeout=0, as_subflow=False)
    wait_until(lambda: any((out / CLAIMS_DIR).glob("*.json")), 300, "a shard in production", every_s=0.1)
    return parent, params


def _assert_complete(out: Path) -> None:
    assert verify(open_root(str(out))) == []
    index = pq.read_table(out / "index.parquet", columns=["sample_id"])["sample_id"].to_pylist()
    planned = pq.read_table(out / "plan.parquet", columns=["sample_id"])["sample_id"].to_pylist()
    assert sorted(index) == sorted(planned) and len(planned) == 4


def test_up_restarts_the_dead_server_and_worker_crashes_the_stranded_run_and_a_rerun_goes_ahead(
        state_dir, e2e_source, tmp_path):
    from prefect.client.schemas.objects import StateType

    before = stack.StackState.load(state_dir)
    out = tmp_path / "out"
    parent, params = _start_generate(before, out, e2e_source)
    with api(before.api_url) as client:
        parent_pid = int(client.read_flow_run(parent.id).infrastructure_pid)
    # The parent's whole machine dies with the server: its worker and the flow run it started.
    _kill(before.processes["server"], before.processes["worker-cpu"], parent_pid)

    started = time.monotonic()
    after, said = _up(state_dir)
    print(f"\nstack up after the kill: {time.monotonic() - started:.1f} s\n" + "\n".join(said))
    assert after.api_url == before.api_url
    assert after.processes[GPU_WORKER] == before.processes[GPU_WORKER]  # kept, with its child run in flight
    assert {name for name in ("server", "worker-cpu") if after.processes[name] != before.processes[name]} == {
        "server", "worker-cpu"}
    assert said[-1] == f"stack up: kept {GPU_WORKER}; restarted server, worker-cpu"
    assert said[:-1] == [f"crashed flow run {parent.name} ({parent.id}): its process {parent_pid} is gone"]

    with api(after.api_url) as client:
        assert client.read_flow_run(parent.id).state.type == StateType.CRASHED
        [child] = child_runs(after.api_url, parent.id)
        # Its process lived on, so `stack up` left it alone: still running, or (on a fast machine)
        # already done with its shards by now. Crashed would mean `up` judged a live run dead.
        assert child.state.type != StateType.CRASHED, child.state
        wait_until(lambda: client.read_flow_run(child.id).state.is_final(), 300, "the orphaned child to end")
        assert client.read_flow_run(child.id).state.is_completed()

    rerun = run_generate(after.api_url, params, timeout_s=300)
    print(f"rerun done {time.monotonic() - started:.1f} s after stack up began")
    assert rerun.state.is_completed(), rerun.state
    with api(after.api_url) as client:
        history = [s.name for s in client.read_flow_run_states(rerun.id)]
    assert "AwaitingConcurrencySlot" not in history, history  # the crashed parent's slot was free at once
    _assert_complete(out)


def test_a_run_in_flight_outlives_a_two_minute_server_outage(state_dir, e2e_source, tmp_path):
    before = stack.StackState.load(state_dir)
    out = tmp_path / "out"
    parent, _ = _start_generate(before, out, e2e_source)
    _kill(before.processes["server"])
    time.sleep(OUTAGE_S)

    after, said = _up(state_dir)  # the server comes back on its port and database
    back = time.monotonic()
    assert after.api_url == before.api_url
    assert said == [f"stack up: kept worker-cpu, {GPU_WORKER}; restarted server"]  # nothing crashed: all alive
    with api(after.api_url) as client:
        wait_until(lambda: client.read_flow_run(parent.id).state.is_final(), 420, "the parent to end")
        finished = client.read_flow_run(parent.id)
    print(f"\nparent {finished.state.name} {time.monotonic() - back:.1f} s after the server came back")
    assert finished.state.is_completed(), finished.state
    assert all(c.state.is_completed() for c in child_runs(after.api_url, parent.id))
    _assert_complete(out)
