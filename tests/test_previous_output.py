"""An output written by the previous main still verifies, resumes as a no-op and keeps its fingerprint.

The fixture (tests/data/previous_main, see its README.md) was made with the commands below from inside
that folder, so its recorded source and bank paths are relative: every run here works in a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cgaug.config import load_config

FIXTURE = Path(__file__).parent / "data" / "previous_main"
GENERATE = ["generate", "--source", "DATA", "--out", "OUT", "--generator", "tiny", "--variants", "1",
            "--shard-size", "2", "--filters", "tiny"]


@pytest.fixture
def previous(tmp_path) -> Path:
    target = tmp_path / "previous_main"
    shutil.copytree(FIXTURE, target)
    return target


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def test_the_previous_output_verifies(previous):
    from cgaug.cli import app

    result = CliRunner().invoke(app, ["shards", "verify", str(previous / "OUT")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ok: 3 rows in 2 shards"


def test_the_same_arguments_give_the_recorded_fingerprint(previous):
    """The flags of GENERATE, as the CLI turns them into a configuration (no YAML, no CGAUG_* environment)."""
    config = load_config(overrides={"run": {"variants": 1, "shard_size": 2}, "generator": {"model": "tiny"},
                                    "filters": {"mode": "tiny"}}, environ={})
    recorded = json.loads((previous / "OUT" / "config.json").read_text())["config_fingerprint"]
    assert recorded == "80503f127d676db7"
    assert config.output_fingerprint() == recorded
    assert json.loads((previous / "OUT" / "manifest.json").read_text())["config_fingerprint"] == recorded


@pytest.mark.slow
def test_generating_again_with_the_same_arguments_changes_nothing(previous, prefect_server):
    before = snapshot(previous / "OUT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGAUG_")} | {"PREFECT_API_URL": prefect_server}
    result = subprocess.run([sys.executable, "-m", "cgaug", *GENERATE, "--no-progress"], cwd=previous, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert (summary["new_samples"], summary["shards_written"], summary["shards_missing"]) == (0, 0, [])
    assert summary["counts"] == {"accepted": 2, "rejected": 1}
    assert "(0 new samples), 0 shards to do" in result.stderr
    after = snapshot(previous / "OUT")
    assert sorted(after) == sorted(before)  # no new file: no report, journal entry, claim or temporary
    assert [name for name in before if after[name] != before[name]] == []  # bytes and mtimes
