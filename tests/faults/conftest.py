"""Fault-injection fixtures: a small source (64x128, tiny generator, 2 samples per shard) and a finished output.

Kills are real SIGKILLs of a `cgaug generate` subprocess at named points of a shard's life
(`cgaug.storage.fs.fault_point`, armed by the test-only ``_CGAUG_FAULT`` variable); damage is
done to a copy of a finished output. Every test then reruns and checks the same invariants
(`assert_whole`): rows = plan exactly once, verify passes, no temporary file or claim remains.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cgaug.config import CGAugConfig
from cgaug.storage.fs import TMP_MARKER, open_root
from cgaug.storage.shards import verify

SHARDS = 3  # 3 images x 2 variants, 2 samples per shard


@pytest.fixture(autouse=True)
def _prefect(prefect_server):
    return prefect_server


def fault_config() -> CGAugConfig:
    return CGAugConfig.model_validate({"run": {"variants": 2, "shard_size": 2}, "generator": {"model": "tiny"}})


def cli_args(source: Path, out: Path) -> list[str]:
    """The `cgaug generate` arguments of `fault_config`."""
    return ["generate", "--source", str(source), "--out", str(out), "--generator", "tiny", "--variants", "2",
            "--shard-size", "2", "--no-progress"]


@pytest.fixture(scope="session")
def small_source(tmp_path_factory) -> Path:
    from cgaug.fixtures import write_fixture_dataset

    root = tmp_path_factory.mktemp("small")
    write_fixture_dataset(root, images=3, height=64, width=128)
    return root


def run_flow(source: Path, out: Path | str) -> dict:
    from cgaug.flows.generate import generate_dataset_flow

    return generate_dataset_flow(source=str(source), out=str(out), bank=str(source / "bank.parquet"),
                                 config=fault_config())


@pytest.fixture(scope="session")
def finished(small_source, tiny_home, tmp_path_factory, prefect_server) -> Path:
    """A complete output of `fault_config` (treat as read-only: copy it with `copy_of`)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    run_flow(small_source, out)
    return out


@pytest.fixture
def copy_of(finished, tmp_path):
    def copy() -> Path:
        target = tmp_path / "out"
        shutil.copytree(finished, target)
        return target
    return copy


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.parquet"))}


def debris(out: Path) -> list[str]:
    """Temporary files and claims anywhere under `out` (none may survive a successful run)."""
    temps = [str(p.relative_to(out)) for p in out.rglob(f"*{TMP_MARKER}*")]
    claims = [str(p.relative_to(out)) for p in (out / "claims").glob("*")] if (out / "claims").exists() else []
    return sorted(temps + claims)


def assert_whole(out: Path) -> None:
    """Rows = plan, each exactly once; verify passes (with every PNG decoded); no debris."""
    planned = pq.read_table(out / "plan.parquet", columns=["sample_id"]).column(0).to_pylist()
    rows = pq.read_table(out / "index.parquet", columns=["sample_id"]).column(0).to_pylist()
    assert sorted(rows) == sorted(planned) and len(set(rows)) == len(rows) == SHARDS * 2
    assert verify(open_root(str(out))) == []
    assert debris(out) == []
