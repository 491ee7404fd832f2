"""`cgaug stack up` on a partly dead stack, and how it finds stranded flow runs, without starting Prefect.

As in test_stack_auth.py the processes `up` would start are `sleep`s (real
process groups with a real command line), so keeping, restarting and pid
reuse are checked on real processes. tests/e2e/test_stack_recovery.py runs the
same paths against a real server, workers and flow runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cgaug import stack
from tests.deploy.test_stack_auth import Spawned

ROOT = Path(__file__).resolve().parents[2]
WORKERS = {"worker-cpu", "worker-cpu-as-gpu0"}


class Recorder:
    """Stands in for bootstrap and crash_stranded_runs: records each call, returns `result` or raises it."""

    def __init__(self, result: Any = None) -> None:
        self.calls: list[tuple] = []
        self.result = result if result is not None else []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@dataclass
class Fake:
    """`up` on sleeps: what it spawned, bootstrapped, reconciled and said."""

    state: Path
    spawned: Spawned = field(default_factory=Spawned)
    bootstraps: Recorder = field(default_factory=Recorder)
    reconciles: Recorder = field(default_factory=lambda: Recorder(["crashed flow run x (id): its process 1 is gone"]))
    said: list[str] = field(default_factory=list)

    def up(self, **options: Any) -> stack.StackState:
        options = {"port": 4999, "project": self.state.parent, "gpus": [], "cpu_workers": 1, **options}
        return stack.up(self.state, say=self.said.append, **options)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    faked = Fake(tmp_path / "state")
    monkeypatch.setattr(stack, "_spawn", faked.spawned)
    monkeypatch.setattr(stack, "wait_healthy", lambda *args, **kwargs: None)
    monkeypatch.setattr(stack, "bootstrap", faked.bootstraps)
    monkeypatch.setattr(stack, "crash_stranded_runs", faked.reconciles)
    try:
        yield faked
    finally:
        stack.down(faked.state)


def _kill(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # a child of this process (the fake spawns it): gone once reaped


def test_a_killed_server_is_restarted_on_its_port_and_live_workers_are_kept(fake) -> None:
    first = dict(fake.up().processes)
    _kill(first["server"])

    second = fake.up(port=None)  # the CLI's default port would do too; None must not pick a new one
    assert {name: second.processes[name] for name in WORKERS} == {name: first[name] for name in WORKERS}
    assert second.processes["server"] != first["server"] and stack.is_alive(second.processes["server"])
    server_args, _ = fake.spawned.calls["server"]
    assert server_args[server_args.index("--port") + 1] == "4999"
    assert second.api_url == "http://127.0.0.1:4999/api"
    assert len(fake.bootstraps.calls) == 2  # a restarted server is bootstrapped again (idempotent)
    [(api_url, _, live, auth)] = fake.reconciles.calls  # stranded runs looked for once the server answers
    assert api_url == second.api_url and live == WORKERS and auth is None
    assert fake.said == ["crashed flow run x (id): its process 1 is gone",
                    "stack up: kept worker-cpu, worker-cpu-as-gpu0; restarted server"]
    assert stack.StackState.load(second.state_dir).processes == second.processes


def test_a_dead_worker_is_restarted_and_the_live_server_kept_without_a_new_bootstrap(fake) -> None:
    first = dict(fake.up().processes)
    _kill(first["worker-cpu-as-gpu0"])

    second = fake.up()
    assert second.processes["server"] == first["server"]
    assert second.processes["worker-cpu"] == first["worker-cpu"]
    assert second.processes["worker-cpu-as-gpu0"] != first["worker-cpu-as-gpu0"]
    assert len(fake.bootstraps.calls) == 1
    assert [call[2] for call in fake.reconciles.calls] == [{"server", "worker-cpu"}]
    assert fake.said[-1] == "stack up: kept server, worker-cpu; restarted worker-cpu-as-gpu0"


def test_a_running_stack_is_kept_whole(fake) -> None:
    first = dict(fake.up().processes)
    fake.spawned.calls.clear()
    assert fake.up().processes == first
    assert fake.spawned.calls == {} and len(fake.bootstraps.calls) == 1 and fake.reconciles.calls == []
    assert fake.said == ["stack up: everything runs already (server, worker-cpu, worker-cpu-as-gpu0); kept it"]


def test_after_down_up_starts_everything_and_still_looks_for_stranded_runs(fake) -> None:
    first = fake.up()
    stack.down(first.state_dir)
    second = fake.up()
    assert set(second.processes) == {"server", *WORKERS} and not set(second.processes.values()) & set(
        first.processes.values())
    assert [call[2] for call in fake.reconciles.calls] == [set()]  # every worker that took a run is gone
    assert fake.said[-1] == "stack up: kept nothing; started server, worker-cpu, worker-cpu-as-gpu0"


@pytest.mark.parametrize(("options", "message"), [
    ({"port": 5000}, "pass --port 4999"),
    ({"auth_string": "admin:s3cret"}, "pass none"),
    ({"database_url": "postgresql+asyncpg://u:pw@db:5432/prefect"}, "same --database-url"),
])
def test_a_restart_that_would_split_the_stack_is_refused(fake, options: dict[str, Any], message: str) -> None:
    first = dict(fake.up().processes)
    _kill(first["server"])
    fake.spawned.calls.clear()
    with pytest.raises(stack.StackError, match=message):
        fake.up(**options)
    assert fake.spawned.calls == {}
    assert all(stack.is_alive(first[name]) for name in WORKERS)


def test_a_failed_restart_stops_only_what_it_started(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    first = dict(fake.up().processes)
    _kill(first["server"])
    monkeypatch.setattr(stack, "bootstrap", Recorder(stack.StackError("deploy failed")))
    with pytest.raises(stack.StackError, match="deploy failed"):
        fake.up()
    state = stack.StackState.load(fake.state)
    assert state is not None and state.alive() == {name: first[name] for name in WORKERS}


def test_a_failed_look_for_stranded_runs_does_not_keep_the_stack_down(fake) -> None:
    first = dict(fake.up().processes)
    _kill(first["server"])
    fake.reconciles.result = RuntimeError("API said no")
    second = fake.up()
    assert stack.is_alive(second.processes["server"])
    assert fake.said[-2:] == ["could not look for stranded flow runs: RuntimeError('API said no')",
                              "stack up: kept worker-cpu, worker-cpu-as-gpu0; restarted server"]


def test_a_reused_pid_is_neither_kept_nor_stopped(tmp_path: Path) -> None:
    """The state names a pid that now runs another program: `up` must not keep it, `down` not kill it."""
    stranger = subprocess.Popen(["sleep", "61"], start_new_session=True)
    try:
        state = stack.StackState("http://127.0.0.1:4999/api", "http://127.0.0.1:4999", str(tmp_path),
                                 {"server": stranger.pid},
                                 commands={"server": [stack.prefect_bin(), "server", "start", "--port", "4999"]})
        state.save()
        assert state.alive() == {}
        assert stack.down(tmp_path) == [] and stranger.poll() is None
        legacy = stack.StackState("u", "u", str(tmp_path), {"server": stranger.pid})  # no commands recorded
        assert legacy.alive() == {"server": stranger.pid}
    finally:
        stranger.kill()
        stranger.wait()
    assert not stack.is_ours(stranger.pid, None)


def test_is_ours_matches_a_script_started_through_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "prefect"  # like the prefect entry point: the kernel runs it as [sh, script, args]
    script.write_text("#!/bin/sh\nsleep 60\n")
    script.chmod(0o755)
    process = subprocess.Popen([str(script), "worker", "start"], start_new_session=True)
    try:
        assert stack.is_ours(process.pid, [str(script), "worker", "start"])
        assert stack.is_ours(process.pid, ["prefect", "worker", "start"])
        assert not stack.is_ours(process.pid, ["prefect", "server", "start"])
        assert not stack.is_ours(process.pid, ["other", "worker", "start"])
    finally:
        process.kill()
        process.wait()


def test_a_process_is_ours_as_soon_as_popen_returns() -> None:
    """Popen returns while the child may still be inside execve, its argv and environment not yet
    written (/proc reads them empty): `up` must not restart such a worker nor `down` skip it, and a just
    started flow run must not count as gone. Several tries, since the child is not always that slow."""
    marker = str(uuid.uuid4())
    for _ in range(20):
        process = subprocess.Popen(["sleep", "61"], start_new_session=True,
                                   env={**os.environ, "PREFECT__FLOW_RUN_ID": marker})
        try:
            assert stack.is_ours(process.pid, ["sleep", "61"])
            assert stack.run_process_alive(marker, str(process.pid))
        finally:
            process.kill()
            process.wait()


# --- which flow runs are stranded --------------------------------------------------------------------------


def _write_log(logs: Path, name: str, *incarnations: list[str]) -> None:
    lines = []
    for runs in incarnations:
        lines.append(f"{stack.LOG_MARKER} {name} at 2026-01-01 00:00:00 ---")
        lines += [f"12:00:00.000 | INFO    | prefect.flow_runs.worker - Worker '{name}' submitting flow run "
                  f"'{run}'" for run in runs]
        lines.append("12:00:01.000 | INFO    | Flow run 'x' - Beginning flow run")
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{name}.log").write_text("\n".join(lines) + "\n")


def test_worker_submissions_tell_runs_of_living_workers_from_runs_of_dead_ones(tmp_path: Path) -> None:
    old, current, other = (str(uuid.uuid4()) for _ in range(3))
    _write_log(tmp_path, "worker-cpu", [old], [current])  # restarted once: `old` was taken before
    _write_log(tmp_path, "worker-cpu-as-gpu0", [other])
    (tmp_path / "server.log").write_text(f"Worker 'w' submitting flow run '{uuid.uuid4()}'\n")
    assert stack.worker_submissions(tmp_path, {"server", "worker-cpu"}) == {
        old: False, current: True, other: False}
    assert stack.worker_submissions(tmp_path, set()) == {old: False, current: False, other: False}
    assert stack.worker_submissions(tmp_path / "missing", {"worker-cpu"}) == {}


def test_spawn_heads_each_start_with_the_marker(tmp_path: Path) -> None:
    for _ in range(2):
        stack._spawn("worker-x", ["true"], dict(os.environ), tmp_path).wait()
    assert (tmp_path / "worker-x.log").read_text().count(stack.LOG_MARKER) == 2


@pytest.fixture
def run_process():
    """A live process that says it is flow run `run_id` (the way a process worker's flow run does)."""
    run_id = str(uuid.uuid4())
    process = subprocess.Popen(["sleep", "60"], env={**os.environ, "PREFECT__FLOW_RUN_ID": run_id})
    yield run_id, process.pid
    process.kill()
    process.wait()


def test_only_provably_dead_runs_are_stranded(run_process) -> None:
    run_id, pid = run_process
    dead = subprocess.Popen(["true"])
    dead.wait()
    other = str(uuid.uuid4())
    assert stack.stranded_reason(run_id, str(pid), worker_alive=False) is None  # its process runs: never
    assert stack.stranded_reason(other, str(pid), worker_alive=True) == f"its process {pid} is gone"  # reused pid
    assert stack.stranded_reason(run_id, str(dead.pid), worker_alive=True) == f"its process {dead.pid} is gone"
    assert stack.stranded_reason(run_id, None, worker_alive=True) is None  # its worker may still start it
    assert stack.stranded_reason(run_id, None, worker_alive=False) == (
        "the worker that took it is gone and it never started a process")
    assert stack.stranded_reason(run_id, f"elsewhere:{dead.pid}", worker_alive=False) is None  # other host
    assert stack.stranded_reason(run_id, f"{os.uname().nodename}:{dead.pid}", worker_alive=False)


# --- riding out an outage ----------------------------------------------------------------------------------


def _retry_window_s(env: dict[str, str]) -> tuple[float, float]:
    """Shortest and longest time Prefect's client keeps retrying (waits 2**k s, +-jitter, before retry k)."""
    retries = int(env["PREFECT_CLIENT_MAX_RETRIES"])
    jitter = float(env.get("PREFECT_CLIENT_RETRY_JITTER_FACTOR", 0.2))
    nominal = sum(2 ** k for k in range(1, retries + 1))
    return nominal * (1 - jitter), nominal * (1 + jitter)


def test_every_stack_client_retries_for_at_least_three_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    monkeypatch.delenv("PREFECT_CLIENT_MAX_RETRIES", raising=False)
    env = stack.base_env("http://h/api")
    assert set(stack.CLIENT_RETRY_ENV) <= _get_valid_setting_names(Settings)
    shortest, longest = _retry_window_s(env)
    assert shortest >= 180 and longest <= 600  # three minutes at least, not stuck for ever
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "9")
    assert stack.base_env()["PREFECT_CLIENT_MAX_RETRIES"] == "9"  # an operator's own choice wins


def test_compose_clients_retry_like_the_stack_and_its_server_keeps_leases_on_disk() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {k: compose["x-prefect-client-env"][k] for k in stack.CLIENT_RETRY_ENV} == stack.CLIENT_RETRY_ENV
    server_env = compose["services"]["prefect-server"]["environment"]
    assert server_env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == stack.LEASE_STORAGE


def test_the_stack_server_keeps_leases_on_disk(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", raising=False)
    fake.up()
    _, env = fake.spawned.calls["server"]
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == stack.LEASE_STORAGE
    import importlib

    assert importlib.import_module(stack.LEASE_STORAGE).ConcurrencyLeaseStorage


def test_redact_keeps_the_database_url_but_its_password() -> None:
    assert stack.redact(None) is None
    assert stack.redact("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert stack.redact("postgresql+asyncpg://u:pw@db:5432/p") == "postgresql+asyncpg://u:***@db:5432/p"
