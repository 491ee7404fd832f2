"""The `cgaug-shard` flow on its own: one planned shard with the tiny generator, as a GPU worker runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgaug.config import CGAugConfig
from cgaug.flows.shard import produce_shards_flow
from cgaug.storage.fs import open_root
from cgaug.storage.plan import PlanMismatch
from cgaug.storage.reports import journal, read_report
from cgaug.storage.shards import verify, write_index
from cgaug.tasks.generation.run import plan_run


def _config(**run) -> CGAugConfig:
    return CGAugConfig.model_validate({"run": {"variants": 1, "shard_size": 2, "limit": 2, **run},
                                       "generator": {"model": "tiny"}})


def _produce(dataset: Path, out: Path, config: CGAugConfig) -> list[dict]:
    return produce_shards_flow(source=str(dataset), out=str(out), bank=str(dataset / "bank.parquet"),
                               shard_ids=[0], config=config)


def test_one_shard_is_written_verified_reported_and_journaled_once(dataset, tiny_home, tmp_path):
    out = tmp_path / "out"
    plan, _ = plan_run(str(dataset), str(out), str(dataset / "bank.parquet"), _config())

    [outcome] = _produce(dataset, out, _config())

    assert outcome["shard"] == 0 and outcome["status"] == "written" and outcome["rows"] == len(plan) == 2
    assert "unfiltered 2" in outcome["detail"]
    root = open_root(str(out))
    write_index(root)
    assert verify(root) == []
    quality, producer = read_report(root, 0)
    assert quality.stats.rows == 2 and quality.stats.verdicts == {"unfiltered": 2} and quality.stats.seconds > 0
    assert producer["flow_run"] and producer["pid"] > 0  # named after the flow run that made it
    [entry] = journal(root)[0]
    assert entry["rows"] == 2 and entry["producer"] == producer

    [again] = _produce(dataset, out, _config())  # a complete shard is left alone
    assert again["status"] == "complete" and len(journal(root)[0]) == 1

    with pytest.raises(PlanMismatch, match=r"run\.seed"):
        _produce(dataset, out, _config(seed=9))
