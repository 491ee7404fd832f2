"""One planned shard, from its plan entries to a committed file and its report. No Prefect here.

`write_planned_shard` makes a shard's rows (`make_shard_rows`) with this process's
models and writes the shard; `produce_claimed_shard` does that under a claim
(`cgaug.storage.claims`), so two workers on the same output never produce the same
shard, and writes the shard's report and journal entry next to it. Models and the
object bank load once per process and are reused by every shard the process makes.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from cgaug.config import CGAugConfig, FilterConfig
from cgaug.models.filters import load_filter_models
from cgaug.storage.bank import ObjectBank
from cgaug.storage.claims import ClaimInfo, try_claim
from cgaug.storage.fs import open_root
from cgaug.storage.plan import PLAN_FILE, PlanEntry, load_plan
from cgaug.storage.reports import quality_of_shard, write_report
from cgaug.storage.shards import shard_complete, write_shard
from cgaug.tasks.generation.compose import bank_class_filter, usable_classes
from cgaug.tasks.generation.filter import Judge, make_judge
from cgaug.tasks.generation.generate import load_generator
from cgaug.tasks.generation.plan import shards_of
from cgaug.tasks.generation.shard import make_shard_rows

DEFAULT_CLAIM_TTL_S = 300.0  # a producer silent this long is dead; its heartbeat beats every TTL/3

# what happened to a shard in one attempt to produce it
WRITTEN, COMPLETE, CLAIMED = "written", "complete", "claimed"


@cache
def open_bank(path: str, classes: tuple[str, ...] | None) -> ObjectBank:
    """The object bank at `path` (restricted to `classes`), opened once per process."""
    return ObjectBank.open(path, list(classes) if classes is not None else None)


def load_judge(cfg: FilterConfig) -> Judge | None:
    """The quality filter over the per-process cached filter models; None when filtering is off."""
    if cfg.mode == "none":
        return None
    return make_judge(load_filter_models(cfg), cfg)


def planned_entries(out: str, shard_id: int) -> list[PlanEntry]:
    """The plan entries of one shard of `out`.

    Raises:
        KeyError: the shard is not in the plan.
    """
    entries = shards_of(load_plan(out)).get(shard_id)
    if entries is None:
        raise KeyError(f"shard {shard_id} is not in the plan of {open_root(out).uri(PLAN_FILE)}")
    return entries


def write_planned_shard(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int,
                        entries: list[PlanEntry] | None = None) -> dict[str, Any]:
    """Make and commit one planned shard, without a claim; returns its info and counters.

    Callers decide whether the shard still needs producing (`produce_claimed_shard` does, under its
    claim); a valid shard already on disk is never rewritten either way (`write_shard`).
    """
    root = open_root(out)
    entries = entries if entries is not None else planned_entries(out, shard_id)
    object_bank = open_bank(bank, bank_class_filter(config.compose))
    classes = usable_classes(object_bank, config.compose)
    generate, settings = load_generator(config.generator, config.prompts)
    rows, stats = make_shard_rows(entries, source, object_bank, classes, config, generate, settings,
                                  judge=load_judge(config.filters))
    info = write_shard(root, shard_id, rows)
    return {"shard": shard_id, "rows": info.rows, "sha256": info.sha256, "stats": stats.headline()}


def produce_claimed_shard(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int, *,
                          producer: dict[str, Any], claim_ttl_s: float = DEFAULT_CLAIM_TTL_S) -> dict[str, Any]:
    """Claim, make and write, report: {"shard", "status": written|complete|claimed, "rows", "seconds", "detail"}.

    `producer` (host, process, flow run...) goes into the claim, the report and the journal.
    `claimed` means another live producer holds the shard: this one leaves it alone and the
    orchestrator decides whether to wait or try again later.
    """
    root = open_root(out)
    entries = planned_entries(out, shard_id)
    sample_ids = [e.spec.sample_id for e in entries]
    if shard_complete(root, shard_id, sample_ids):
        return {"shard": shard_id, "status": COMPLETE, "rows": len(sample_ids), "seconds": 0.0, "detail": ""}
    claim = try_claim(root, shard_id, claim_ttl_s, owner=producer)
    if isinstance(claim, ClaimInfo):
        return {"shard": shard_id, "status": CLAIMED, "rows": 0, "seconds": 0.0, "detail": claim.describe()}
    try:
        with claim.keep_alive():
            if shard_complete(root, shard_id, sample_ids):  # finished by the previous holder meanwhile
                return {"shard": shard_id, "status": COMPLETE, "rows": len(sample_ids), "seconds": 0.0,
                        "detail": ""}
            start = time.perf_counter()
            result = write_planned_shard(source, out, bank, config, shard_id, entries)
            seconds = time.perf_counter() - start
            write_report(root, quality_of_shard(root, shard_id, seconds), producer)
    finally:
        claim.release()
    return {"shard": shard_id, "status": WRITTEN, "rows": result["rows"], "seconds": seconds,
            "detail": ", ".join(f"{k} {v}" for k, v in sorted(result["stats"].items()))}
