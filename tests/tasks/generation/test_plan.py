from __future__ import annotations

from cgaug.config import RunConfig
from cgaug.records import SourceRecord
from cgaug.seeds import derive_seed
from cgaug.tasks.generation.plan import extend_plan, shards_of


def _sources(n: int) -> list[SourceRecord]:
    return [SourceRecord(f"aachen_{i:06d}_000019", "aachen", "train", f"a/{i}.png", f"b/{i}.png")
            for i in range(n)]


def test_shards_and_seeds():
    plan = extend_plan([], _sources(6), RunConfig(variants=2, shard_size=4, seed=7))
    assert len(plan) == 12
    assert [len(g) for g in shards_of(plan).values()] == [4, 4, 4]
    first = plan[0].spec
    assert first.sample_id == "aachen_000000_000019__v000"
    assert first.seed == derive_seed(7, first.sample_id, 0, 0)
    assert len({e.spec.seed for e in plan}) == 12


def test_deterministic_and_order_independent():
    a = extend_plan([], _sources(5), RunConfig(shard_size=2))
    b = extend_plan([], list(reversed(_sources(5))), RunConfig(shard_size=2))
    assert a == b


def test_incremental_keeps_existing_entries():
    run = RunConfig(variants=1, shard_size=4)
    first = extend_plan([], _sources(6), run)  # shards 0 (4) and 1 (2)
    again = extend_plan(first, _sources(6), run)
    assert again == first  # nothing new to plan
    more = extend_plan(first, _sources(9), RunConfig(variants=2, shard_size=4))
    assert more[: len(first)] == first
    new = more[len(first):]
    assert len(new) == 18 - 6
    assert min(e.spec.shard for e in new) == 2  # appended after the existing shards


def test_limit_takes_first_sources_by_id():
    plan = extend_plan([], list(reversed(_sources(5))), RunConfig(limit=2))
    assert [e.spec.source_id for e in plan] == ["aachen_000000_000019", "aachen_000001_000019"]

