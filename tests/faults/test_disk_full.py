"""A full disk ends the run with one paragraph that names the file, the cause and the fix (exit 1, no
traceback, no temporary file); after space is freed the same command completes the dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cgaug.cli import app
from tests.faults.conftest import assert_whole, cli_args, debris, run_flow


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only); a filler file leaves room for the plan and about one shard."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a tmpfs mount (root)")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("tmpfs cannot be mounted here")
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    filler.write_bytes(b"\0" * (free - 150_000))
    try:
        yield mount, filler
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def check_failure(output: str, out) -> None:
    assert "error: could not write " + str(out) in output
    assert "no space left on the device" in output and "run the same command again" in output
    assert "Traceback" not in output


def test_a_full_disk_is_one_paragraph_and_a_rerun_completes(small_disk, small_source, tiny_home):
    mount, filler = small_disk
    out = mount / "out"
    result = CliRunner().invoke(app, cli_args(small_source, out))
    assert result.exit_code == 1, result.output
    check_failure(" ".join(result.output.split()), out)
    assert debris(out) == []
    filler.unlink()
    run_flow(small_source, out)
    assert_whole(out)


@pytest.mark.slow
def test_a_full_disk_prints_no_traceback_from_any_layer(small_disk, small_source, tiny_home, prefect_server):
    mount, _ = small_disk
    out = mount / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "XDG_CACHE_HOME": str(tiny_home), "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "cgaug", *cli_args(small_source, out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    check_failure(" ".join((done.stdout + done.stderr).split()), out)
    assert debris(out) == []
