"""The same deployed path against a real PostgreSQL server (the production database)."""

from __future__ import annotations

import subprocess

import pyarrow.parquet as pq
import pytest

from cgaug.storage.fs import open_root
from cgaug.storage.shards import verify
from tests.e2e.conftest import artifacts, child_runs, parameters, run_generate, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _count(postgres_url: str, sql: str) -> int:
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    result = subprocess.run(["psql", "-h", "127.0.0.1", "-p", port, "-U", "cgaug", "-d", "prefect", "-At", "-c", sql],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


def test_generate_deployment_on_postgres(postgres_url, e2e_source, tmp_path, tiny_home):
    with running_stack(tmp_path / "stack", database_url=postgres_url) as started:
        out = tmp_path / "out"
        run = run_generate(started.api_url, parameters(e2e_source, out, shards_per_child=2))
        assert run.state.is_completed(), run.state
        assert verify(open_root(str(out))) == []
        assert pq.read_table(out / "index.parquet").num_rows == 4
        [child] = child_runs(started.api_url, run.id)
        assert child.state.is_completed() and child.work_pool_name == "gpu"
        assert len(artifacts(started.api_url, "cgaug-shard-quality", [child.id])) == 2
        assert len(artifacts(started.api_url, "cgaug-run-summary", [run.id])) == 1
        # the server really keeps its state in PostgreSQL: the runs and artifacts are rows there
        assert _count(postgres_url, "select count(*) from flow_run") == 2
        assert _count(postgres_url, "select count(*) from artifact where key = 'cgaug-shard-quality'") == 2
