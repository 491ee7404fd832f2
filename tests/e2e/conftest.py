"""The deployed path for real: `prefect server start`, process workers, deploy/prefect.yaml, PostgreSQL.

Everything here starts real processes (`cgaug.stack`), so every test is
marked slow and e2e. The helpers talk to the server through Prefect's own
client, the way a user's script would.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from cgaug import stack

PROJECT = Path(__file__).resolve().parents[2]
TINY = {"run": {"variants": 2, "shard_size": 2}, "generator": {"model": "tiny"}, "filters": {"mode": "tiny"}}


@pytest.fixture(scope="session")
def e2e_source(tmp_path_factory) -> Path:
    """Two fixture images and an object bank: 4 samples in 2 shards of 2 with TINY."""
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank_sources import build_from_folder

    root = tmp_path_factory.mktemp("e2e-cityscapes")
    write_fixtures(root, images=2, seed=1, height=128, width=256)
    write_fixture_masks(root / "bank_masks", seed=1)
    build_from_folder(str(root / "bank_masks"), str(root / "bank.parquet"))
    return root


@contextlib.contextmanager
def running_stack(state: Path, **options: Any):
    """A stack for the duration of the block, stopped (workers with SIGINT) whatever happens."""
    started = stack.up(state, project=PROJECT, **options)
    try:
        yield started
    finally:
        stack.down(state)


@pytest.fixture(scope="session")
def pool(tmp_path_factory, tiny_home):
    """The SQLite stack: server, deployments, a CPU worker and two GPU-pool workers (on the CPU)."""
    with running_stack(tmp_path_factory.mktemp("stack"), cpu_workers=2) as started:
        yield started


@contextlib.contextmanager
def api(url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        yield client


def parameters(source: Path, out: Path, config: dict | None = None, **orchestration: Any) -> dict[str, Any]:
    return {"source": str(source), "out": str(out), "bank": str(source / "bank.parquet"),
            "config": config or TINY,
            "orchestration": {"in_process": False, "poll_s": 0.5, **orchestration}}


def run_generate(url: str, params: dict[str, Any], timeout_s: float = 600):
    """`prefect deployment run cgaug/generate` and wait: the final flow run."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        return run_deployment("cgaug/generate", parameters=params, timeout=timeout_s, poll_interval=1,
                              as_subflow=False)


def artifacts(url: str, key: str, flow_run_ids: list | None = None) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                         flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids) if flow_run_ids else None)
    with api(url) as client:
        return client.read_artifacts(artifact_filter=flt)


def child_runs(url: str, parent_id) -> list:
    """The flow runs launched by a parent (`run_deployment` inside a flow links them as subflows)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with api(url) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))


def wait_until(predicate, timeout_s: float, what: str, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# --- PostgreSQL ------------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` system user then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server in a temporary directory, for the session: an asyncpg URL to a fresh db."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries (initdb) not found; install postgresql (Debian package)")
    base = Path(tempfile.mkdtemp(prefix="cgaug-pg-", dir="/tmp"))
    base.chmod(0o755)
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "cgaug", "--auth=trust",
                                 "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "pg.log"), "-w",
                                 "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cgaug", "prefect"],
                       check=True, capture_output=True)
        yield f"postgresql+asyncpg://cgaug@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
