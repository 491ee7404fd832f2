"""Producing one planned shard outside Prefect: the claim decides who works, a complete shard is left alone."""

from __future__ import annotations

import pytest

from cgaug.config import CGAugConfig, RunConfig
from cgaug.records import SourceRecord
from cgaug.storage.claims import read_claim, try_claim
from cgaug.storage.fs import open_root
from cgaug.storage.plan import write_plan
from cgaug.tasks.generation.plan import extend_plan
from cgaug.tasks.generation.produce import CLAIMED, planned_entries, produce_claimed_shard


@pytest.fixture
def planned(tmp_path) -> str:
    """An output root planned with two shards of two samples (sources that do not exist: nothing may run)."""
    sources = [SourceRecord(f"aachen_{i:06d}_000019", "aachen", "train", f"a/{i}.png", f"b/{i}.png")
               for i in range(4)]
    out = str(tmp_path / "out")
    write_plan(out, extend_plan([], sources, RunConfig(shard_size=2)))
    return out


def test_planned_entries_are_the_shards_and_an_unknown_shard_is_refused(planned):
    assert [e.spec.shard for e in planned_entries(planned, 1)] == [1, 1]
    with pytest.raises(KeyError, match=r"shard 7 is not in the plan of .*plan\.parquet"):
        planned_entries(planned, 7)


def test_a_shard_claimed_by_a_live_producer_is_left_alone(planned):
    root = open_root(planned)
    other = try_claim(root, 0, 300.0, owner={"host": "elsewhere", "pid": 1})

    outcome = produce_claimed_shard("unused-source", planned, "unused-bank", CGAugConfig(), 0,
                                    producer={"host": "here", "pid": 2})

    assert outcome["status"] == CLAIMED and outcome["rows"] == 0 and "elsewhere" in outcome["detail"]
    assert not root.exists("shards/shard-00000.parquet")
    assert read_claim(root, 0).token == other.info.token  # still the other producer's claim
