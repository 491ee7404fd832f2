"""The `cgaug` flow: plan -> per shard (compose -> prompt -> generate -> write) -> index.

Orchestration only: each task calls the pure stage code in `cgaug.tasks` and
`cgaug.storage`, and passes ids, paths and small records (never arrays).
Heavy objects (the object bank, the generator pipeline) are loaded once per
worker process and reused by every shard it runs.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from prefect import flow, get_run_logger, task

from cgaug.config import CGAugConfig
from cgaug.storage.fs import Root, open_root
from cgaug.tasks.plan import PlanEntry, extend_plan, plan_from_table, plan_to_table, shards_of

PLAN_FILE = "plan.parquet"
CONFIG_FILE = "config.json"


class PlanMismatch(ValueError):
    """An output directory planned with settings that change sample content."""


def _relative(root: str, path: str) -> str:
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"source file {path} is not under the source root {root}")
    return path[len(prefix):]


def load_plan(out: Root) -> list[PlanEntry]:
    return plan_from_table(out.read_parquet(PLAN_FILE)) if out.exists(PLAN_FILE) else []


def _check_config(out: Root, config: CGAugConfig) -> None:
    """Refuse to extend an output made with different content settings: its samples would disagree."""
    if not out.exists(CONFIG_FILE):
        return
    recorded = json.loads(out.read_bytes(CONFIG_FILE))
    if recorded.get("config_fingerprint") != config.output_fingerprint():
        old, new = recorded.get("config", {}), config.model_dump(mode="json")
        changed = sorted(f"{section}.{key}" for section in new for key in new[section]
                         if old.get(section, {}).get(key) != new[section][key])
        raise PlanMismatch(
            f"{out.uri()} was generated with other settings (fingerprint {recorded.get('config_fingerprint')}, "
            f"now {config.output_fingerprint()}; differing: {', '.join(changed) or 'unknown'}). "
            "Use a new output directory, or the recorded settings (config.json there).")


def plan_run(source: str, out: str, bank: str, config: CGAugConfig) -> list[PlanEntry]:
    """Extend (or create) the stored plan of `out` for `source` and write it back."""
    from cgaug.storage.cityscapes import list_sources

    root = open_root(out)
    _check_config(root, config)
    sources = [
        record.__class__(record.source_id, record.city, record.split, _relative(source, record.image_path),
                         _relative(source, record.label_path))
        for record in list_sources(source, config.run.split)
    ]
    existing = load_plan(root)
    plan = extend_plan(existing, sources, config.run)
    if len(plan) != len(existing) or not root.exists(PLAN_FILE):
        root.write_parquet_atomic(PLAN_FILE, plan_to_table(plan))
    if not root.exists(CONFIG_FILE):  # the settings the plan's samples are made with, recorded once
        record = {"config_fingerprint": config.output_fingerprint(), "config": config.model_dump(mode="json"),
                  "source": source, "bank": bank}
        root.write_bytes_atomic(CONFIG_FILE, json.dumps(record, indent=2).encode())
    return plan


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
    from cgaug.tasks.filter import make_judge

    return make_judge(load_filter_models(config.filters), config.filters)


def generate_shard(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int) -> dict[str, Any]:
    """Produce and commit one shard unless a valid copy exists; returns its info and counters."""
    from cgaug.storage.shards import shard_complete, write_shard
    from cgaug.tasks.compose import usable_classes
    from cgaug.tasks.shard import run_shard

    root = open_root(out)
    entries = shards_of(load_plan(root)).get(shard_id)
    if entries is None:
        raise KeyError(f"shard {shard_id} is not in the plan of {root.uri()}")
    if shard_complete(root, shard_id, [e.spec.sample_id for e in entries]):
        return {"shard": shard_id, "written": False, "rows": len(entries), "stats": {}}
    object_bank = _bank(bank, tuple(config.compose.ood_classes) if config.compose.ood_classes else None)
    classes = usable_classes(object_bank, config.compose)
    run, settings = _generator(config)
    rows, stats = run_shard(entries, source, object_bank, classes, config, run, settings,
                            judge=_judge(config))
    info = write_shard(root, shard_id, rows)
    return {"shard": shard_id, "written": True, "rows": info.rows, "sha256": info.sha256,
            "stats": stats.counts}


def pending_shards(out: str, plan: list[PlanEntry]) -> list[int]:
    from cgaug.storage.shards import shard_complete

    root = open_root(out)
    return [shard for shard, entries in shards_of(plan).items()
            if not shard_complete(root, shard, [e.spec.sample_id for e in entries])]


def index_dataset(out: str, source: str, bank: str, config: CGAugConfig) -> dict[str, Any]:
    from cgaug.storage.shards import write_index

    manifest = write_index(open_root(out), {
        "config": config.model_dump(mode="json"), "config_fingerprint": config.output_fingerprint(),
        "source": source, "bank": bank,
    })
    return manifest.to_dict()


@task(name="plan")
def plan_task(source: str, out: str, bank: str, config: CGAugConfig) -> dict[str, Any]:
    plan = plan_run(source, out, bank, config)
    pending = pending_shards(out, plan)
    get_run_logger().info("plan: %d samples in %d shards, %d to do", len(plan), len(shards_of(plan)),
                          len(pending))
    return {"samples": len(plan), "shards": len(shards_of(plan)), "pending": pending}


@task(name="shard", task_run_name="shard-{shard_id:05d}")
def shard_task(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int) -> dict[str, Any]:
    result = generate_shard(source, out, bank, config, shard_id)
    get_run_logger().info("shard %05d: %s", shard_id, result["stats"] or "already complete")
    return result


@task(name="index")
def index_task(out: str, source: str, bank: str, config: CGAugConfig) -> dict[str, Any]:
    manifest = index_dataset(out, source, bank, config)
    get_run_logger().info("index: %s rows in %d shards", manifest.get("total_rows"), len(manifest["shards"]))
    return manifest


@flow(name="cgaug")
def cgaug(source: str, out: str, bank: str, config: CGAugConfig | None = None,
          progress: bool = False) -> dict[str, Any]:
    """Generate (or complete) the augmented dataset `out` from a Cityscapes-format `source`.

    Args:
        source: Cityscapes-format root (local path or fsspec URI).
        out: output root (local path or fsspec URI); re-running resumes it.
        bank: object bank Parquet file.
        config: the configuration tree; defaults when omitted.
        progress: show a progress bar on stderr (local runs).
    """
    from tqdm import tqdm

    config = config or CGAugConfig()
    logger = get_run_logger()
    plan = plan_task(source, out, bank, config)
    results = []
    with tqdm(total=len(plan["pending"]), unit="shard", disable=not progress, desc="cgaug") as bar:
        for shard_id in plan["pending"]:
            results.append(shard_task(source, out, bank, config, shard_id))
            bar.update(1)
    if not any(r["written"] for r in results) and _manifest_current(out):
        logger.info("nothing to do: %s is complete", out)
        manifest = json.loads(open_root(out).read_bytes("manifest.json"))
    else:
        manifest = index_task(out, source, bank, config)
    summary = {"out": out, "samples": plan["samples"], "shards": plan["shards"],
               "shards_written": sum(r["written"] for r in results), "counts": manifest.get("counts", {})}
    logger.info("done: %s", summary)
    return summary


def _manifest_current(out: str) -> bool:
    """True when manifest.json lists exactly the shards on disk (nothing written since)."""
    root = open_root(out)
    if not root.exists("manifest.json"):
        return False
    listed = {s["name"] for s in json.loads(root.read_bytes("manifest.json")).get("shards", [])}
    return listed == set(root.list("shards", ".parquet"))
