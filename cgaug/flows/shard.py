"""The `cgaug-shard` flow: produce a few planned shards on one GPU worker.

One child run of the `cgaug` parent, scheduled on the GPU pool (deployment
`cgaug-shard/gpu`); the parent's in-process mode calls the same `shard_task`.
Each shard is claimed first (`cgaug.storage.claims`), so two workers on the
same output never produce the same shard; its quality report is written
next to it and published as the `cgaug-shard-quality` table artifact.
Models load once per process and are reused by every shard the run holds.
"""

from __future__ import annotations

import os
import socket
import time
from functools import cache
from typing import Any

from prefect import flow, get_run_logger, task

from cgaug.config import CGAugConfig
from cgaug.storage.claims import ClaimInfo, try_claim
from cgaug.storage.fs import open_root
from cgaug.tasks.generation.plan import PlanEntry, plan_from_table, shards_of

PLAN_FILE = "plan.parquet"
CONFIG_FILE = "config.json"
DEFAULT_CLAIM_TTL_S = 300.0  # a producer silent this long is dead; its heartbeat beats every TTL/3

# what happened to a shard in one attempt to produce it
WRITTEN, COMPLETE, CLAIMED = "written", "complete", "claimed"


def load_plan(out: str) -> list[PlanEntry]:
    root = open_root(out)
    return plan_from_table(root.read_parquet(PLAN_FILE)) if root.exists(PLAN_FILE) else []


class PlanMismatch(ValueError):
    """An output directory planned with settings that change sample content."""


def check_config(out: str, config: CGAugConfig) -> None:
    """Refuse to extend an output made with different content settings: its samples would disagree."""
    import json

    root = open_root(out)
    if not root.exists(CONFIG_FILE):
        return
    recorded = json.loads(root.read_bytes(CONFIG_FILE))
    if recorded.get("config_fingerprint") != config.output_fingerprint():
        old, new = recorded.get("config", {}), config.model_dump(mode="json")
        changed = sorted(f"{section}.{key}" for section in new for key in new[section]
                         if old.get(section, {}).get(key) != new[section][key])
        raise PlanMismatch(
            f"{root.uri()} was generated with other settings (fingerprint {recorded.get('config_fingerprint')}, "
            f"now {config.output_fingerprint()}; differing: {', '.join(changed) or 'unknown'}). "
            "Use a new output directory, or the recorded settings (config.json there).")


@cache
def _bank(path: str, classes: tuple[str, ...] | None):
    from cgaug.storage.bank import ObjectBank

    return ObjectBank.open(path, list(classes) if classes is not None else None)


def _generator(config: CGAugConfig):
    """The (generate, settings) pair for `run_shard`, over the per-process cached pipeline."""
    from cgaug.models.generator import generate, generation_size, generator_settings, load_pipeline

    gen_cfg = config.generator
    pipe = load_pipeline(gen_cfg)

    def run(cond_maps, prompts, negatives, seeds, **photo_inputs):
        return generate(pipe, gen_cfg, cond_maps, prompts, negatives, seeds, **photo_inputs)

    def settings(height: int, width: int) -> dict[str, Any]:
        return generator_settings(gen_cfg, generation_size(height, width, gen_cfg))

    return run, settings


def _judge(config: CGAugConfig):
    """The quality filter for `run_shard` over the per-process cached filter models; None when off."""
    if config.filters.mode == "none":
        return None
    from cgaug.models.filters import load_filter_models
    from cgaug.tasks.generation.filter import make_judge

    return make_judge(load_filter_models(config.filters), config.filters)


def _entries(out: str, shard_id: int) -> list[PlanEntry]:
    entries = shards_of(load_plan(out)).get(shard_id)
    if entries is None:
        raise KeyError(f"shard {shard_id} is not in the plan of {open_root(out).uri(PLAN_FILE)}")
    return entries


def generate_shard(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int,
                   entries: list[PlanEntry] | None = None) -> dict[str, Any]:
    """Produce and commit one planned shard; returns its info and counters.

    Callers decide whether the shard still needs producing (`produce_shard` does, under its claim);
    a valid shard already on disk is never rewritten either way (`write_shard`).
    """
    from cgaug.storage.shards import write_shard
    from cgaug.tasks.generation.compose import bank_class_filter, usable_classes
    from cgaug.tasks.generation.shard import run_shard

    root = open_root(out)
    entries = entries if entries is not None else _entries(out, shard_id)
    object_bank = _bank(bank, bank_class_filter(config.compose))
    classes = usable_classes(object_bank, config.compose)
    run, settings = _generator(config)
    rows, stats = run_shard(entries, source, object_bank, classes, config, run, settings,
                            judge=_judge(config))
    info = write_shard(root, shard_id, rows)
    return {"shard": shard_id, "rows": info.rows, "sha256": info.sha256, "stats": stats.counts}


def producer_identity() -> dict[str, Any]:
    """Who produces a shard: host, process, and the Prefect flow run / worker when there is one."""
    from prefect.runtime import flow_run

    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    run_id = flow_run.get_id()
    if run_id:
        identity["flow_run"] = str(run_id)
        identity["flow_run_name"] = flow_run.get_name()
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu:
        identity["gpu"] = gpu
    return identity


def produce_shard(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int, *,
                  claim_ttl_s: float = DEFAULT_CLAIM_TTL_S, producer: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Claim, produce, report: {"shard", "status": written|complete|claimed, "rows", "seconds", "detail"}.

    `claimed` means another live producer holds the shard: this one leaves it alone and the
    orchestrator decides whether to wait or try again later.
    """
    from cgaug.storage.reports import quality_of_shard, write_report
    from cgaug.storage.shards import shard_complete

    root = open_root(out)
    entries = _entries(out, shard_id)
    sample_ids = [e.spec.sample_id for e in entries]
    if shard_complete(root, shard_id, sample_ids):
        return {"shard": shard_id, "status": COMPLETE, "rows": len(sample_ids), "seconds": 0.0, "detail": ""}
    producer = producer or producer_identity()
    claim = try_claim(root, shard_id, claim_ttl_s, owner=producer)
    if isinstance(claim, ClaimInfo):
        return {"shard": shard_id, "status": CLAIMED, "rows": 0, "seconds": 0.0, "detail": claim.describe()}
    try:
        with claim.keep_alive():
            if shard_complete(root, shard_id, sample_ids):  # finished by the previous holder meanwhile
                return {"shard": shard_id, "status": COMPLETE, "rows": len(sample_ids), "seconds": 0.0,
                        "detail": ""}
            start = time.perf_counter()
            result = generate_shard(source, out, bank, config, shard_id, entries)
            seconds = time.perf_counter() - start
            write_report(root, quality_of_shard(root, shard_id, seconds), producer)
    finally:
        claim.release()
    return {"shard": shard_id, "status": WRITTEN, "rows": result["rows"], "seconds": seconds,
            "detail": ", ".join(f"{k} {v}" for k, v in sorted(result["stats"].items()))}


@task(name="shard", task_run_name="shard-{shard_id:05d}")
def shard_task(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int,
               claim_ttl_s: float = DEFAULT_CLAIM_TTL_S, quality_floor: float | None = None) -> dict[str, Any]:
    from cgaug.flows.monitor import publish_shard_preview, publish_shard_quality

    outcome = produce_shard(source, out, bank, config, shard_id, claim_ttl_s=claim_ttl_s)
    get_run_logger().info("shard %05d: %s %s", shard_id, outcome["status"], outcome["detail"])
    if outcome["status"] == WRITTEN:
        publish_shard_quality(out, shard_id, quality_floor)
        publish_shard_preview(out, shard_id)
    return outcome


@flow(name="cgaug-shard", log_prints=True)
def cgaug_shard(source: str, out: str, bank: str, shard_ids: list[int], config: CGAugConfig | None = None,
                claim_ttl_s: float = DEFAULT_CLAIM_TTL_S, quality_floor: float | None = None
                ) -> list[dict[str, Any]]:
    """Produce planned shards of `out` (the parent `cgaug` has written the plan) on this worker.

    Args:
        source: Cityscapes-format root, as the parent was given it.
        out: output root holding plan.parquet.
        bank: object bank Parquet file.
        shard_ids: the plan's shard ids to produce, in order.
        config: the parent's configuration (its fingerprint must match OUT/config.json).
        claim_ttl_s: seconds without a heartbeat after which a claim counts as abandoned.
        quality_floor: acceptance rate under which the quality artifact flags the shard.
    """
    config = config or CGAugConfig()
    check_config(out, config)
    return [shard_task(source, out, bank, config, shard_id, claim_ttl_s, quality_floor) for shard_id in shard_ids]
