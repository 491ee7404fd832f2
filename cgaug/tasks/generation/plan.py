"""Plan: the deterministic list of samples to produce, split into shards.

A plan is append-only. Samples already planned keep their shard and seed for
ever, so a shard's inputs never change and any shard can be regenerated
bit-for-bit; new source images or more variants are appended as new shards.
Shards whose file is missing or invalid are simply planned work not done yet.
Storing it (plan.parquet) is `cgaug.storage.plan`.
"""

from __future__ import annotations

from itertools import groupby

from cgaug.config import RunConfig
from cgaug.records import SampleSpec, SourceRecord
from cgaug.seeds import derive_seed, sample_id_for
from cgaug.storage.plan import PlanEntry


def wanted_sources(sources: list[SourceRecord], run: RunConfig) -> list[SourceRecord]:
    """The source images a run covers: sorted by id, the first `limit` of them."""
    ordered = sorted(sources, key=lambda s: s.source_id)
    return ordered[: run.limit] if run.limit is not None else ordered


def extend_plan(existing: list[PlanEntry], sources: list[SourceRecord], run: RunConfig) -> list[PlanEntry]:
    """The plan covering `sources` x `run.variants`, keeping every existing entry unchanged.

    New samples are appended in (source id, variant) order and packed into new
    shards numbered after the last existing shard.
    """
    planned = {entry.spec.sample_id for entry in existing}
    next_shard = max((entry.spec.shard for entry in existing), default=-1) + 1
    new: list[tuple[SourceRecord, int]] = [
        (source, variant)
        for source in wanted_sources(sources, run)
        for variant in range(run.variants)
        if sample_id_for(source.source_id, variant) not in planned
    ]
    entries = list(existing)
    for position, (source, variant) in enumerate(new):
        sample_id = sample_id_for(source.source_id, variant)
        spec = SampleSpec(
            sample_id=sample_id,
            source_id=source.source_id,
            variant=variant,
            attempt=0,
            seed=derive_seed(run.seed, sample_id, variant, 0),
            shard=next_shard + position // run.shard_size,
        )
        entries.append(PlanEntry(spec, source))
    return entries


def shards_of(plan: list[PlanEntry]) -> dict[int, list[PlanEntry]]:
    """Plan entries grouped by shard id, each group in plan order."""
    ordered = sorted(plan, key=lambda e: e.spec.shard)
    return {shard: list(group) for shard, group in groupby(ordered, key=lambda e: e.spec.shard)}
