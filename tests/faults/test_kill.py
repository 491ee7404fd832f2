"""SIGKILL at each point of a shard's life, then the same command again: it exits 0 at once (a dead
process's claim does not block it), every planned row is there exactly once, verify passes, no
temporary file or claim remains, and the shards committed before the kill are byte-identical."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from cgaug.cli import app
from tests.faults.conftest import assert_whole, cli_args, shard_bytes

POINTS = ["before_claim@1", "while_writing@1", "after_commit@1", "during_index"]


def cgaug(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cgaug", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    return done, time.monotonic() - start


@pytest.fixture(scope="module")
def normal_run_s(small_source, tiny_home, prefect_server, tmp_path_factory) -> float:
    """How long an uninterrupted run of the same command takes here (the yardstick of a rerun)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "XDG_CACHE_HOME": str(tiny_home)}
    done, seconds = cgaug(cli_args(small_source, tmp_path_factory.mktemp("normal") / "out"), env)
    assert done.returncode == 0, done.stderr[-3000:]
    return seconds


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_an_immediate_rerun_after_sigkill_completes_the_dataset(point, small_source, tiny_home, prefect_server,
                                                                tmp_path, normal_run_s):
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "XDG_CACHE_HOME": str(tiny_home)}
    killed, _ = cgaug(cli_args(small_source, out), env | {"_CGAUG_FAULT": point})
    assert killed.returncode == -9, killed.stderr[-3000:]
    committed = shard_bytes(out)
    rerun, seconds = cgaug(cli_args(small_source, out), env)
    print(f"{point}: rerun {seconds:.1f} s (uninterrupted run {normal_run_s:.1f} s)")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    assert seconds < normal_run_s + 30  # generous on shared CPUs; the dead claim's TTL is 300 s
    assert_whole(out)
    assert CliRunner().invoke(app, ["shards", "verify", str(out)]).exit_code == 0
    assert {name: data for name, data in shard_bytes(out).items() if name in committed} == committed
