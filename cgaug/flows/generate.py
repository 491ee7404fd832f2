"""The `cgaug` flow (deployment `cgaug/generate`): plan -> shards -> index -> summary.

Orchestration only: each task calls the pure stage code in `cgaug.tasks` and
`cgaug.storage`, and passes ids, paths and small records (never arrays).
Shards run either in this process (`cgaug.config.Orchestration.in_process`,
the local CLI) or as `cgaug-shard` child runs on the GPU pool (`cgaug.flows.fanout`);
either way a shard that exists and validates is skipped, so a scheduled run
with the same parameters only does what is missing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger, task

from cgaug.config import CGAugConfig, Orchestration
from cgaug.flows.fanout import fan_out
from cgaug.flows.shard import produce_shard_task
from cgaug.storage.fs import open_root
from cgaug.storage.layout import CONFIG_FILE, MANIFEST_NAME, PLAN_FILE, SHARD_SUFFIX, SHARDS_DIR
from cgaug.storage.plan import PlanEntry, PlanMismatch, check_config, load_plan, plan_to_table
from cgaug.tasks.generation.plan import extend_plan, shards_of
from cgaug.tasks.generation.produce import CLAIMED

__all__ = ["PlanMismatch", "generate_dataset_flow", "plan_run"]


def _relative(root: str, path: str) -> str:
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"source file {path} is not under the source root {root}")
    return path[len(prefix):]


def plan_run(source: str, out: str, bank: str, config: CGAugConfig) -> tuple[list[PlanEntry], int]:
    """Extend (or create) the stored plan of `out` for `source` and write it back.

    Returns the plan and how many samples this call added (new source images or variants).
    """
    from cgaug.storage.cityscapes import list_sources

    root = open_root(out)
    check_config(out, config)
    sources = [
        record.__class__(record.source_id, record.city, record.split, _relative(source, record.image_path),
                         _relative(source, record.label_path))
        for record in list_sources(source, config.run.split)
    ]
    existing = load_plan(out)
    plan = extend_plan(existing, sources, config.run)
    if len(plan) != len(existing) or not root.exists(PLAN_FILE):
        root.write_parquet_atomic(PLAN_FILE, plan_to_table(plan))
    if not root.exists(CONFIG_FILE):  # the settings the plan's samples are made with, recorded once
        record = {"config_fingerprint": config.output_fingerprint(), "config": config.model_dump(mode="json"),
                  "source": source, "bank": bank}
        root.write_bytes_atomic(CONFIG_FILE, json.dumps(record, indent=2).encode())
    return plan, len(plan) - len(existing)


def _shard_is_complete(out: str, plan: list[PlanEntry]):
    from cgaug.storage.shards import shard_complete

    root = open_root(out)
    ids = {shard: [e.spec.sample_id for e in entries] for shard, entries in shards_of(plan).items()}
    return lambda shard: shard_complete(root, shard, ids[shard])


def index_dataset(out: str, source: str, bank: str, config: CGAugConfig) -> dict[str, Any]:
    from cgaug.storage.shards import write_index

    manifest = write_index(open_root(out), {
        "config": config.model_dump(mode="json"), "config_fingerprint": config.output_fingerprint(),
        "source": source, "bank": bank,
    })
    return manifest.to_dict()


@task(name="plan")
def plan_task(source: str, out: str, bank: str, config: CGAugConfig) -> dict[str, Any]:
    plan, added = plan_run(source, out, bank, config)
    is_complete = _shard_is_complete(out, plan)
    pending = [shard for shard in shards_of(plan) if not is_complete(shard)]
    get_run_logger().info("plan: %d samples in %d shards (%d new samples), %d shards to do", len(plan),
                          len(shards_of(plan)), added, len(pending))
    return {"samples": len(plan), "shards": len(shards_of(plan)), "new_samples": added, "pending": pending}


@task(name="index")
def index_task(out: str, source: str, bank: str, config: CGAugConfig) -> dict[str, Any]:
    manifest = index_dataset(out, source, bank, config)
    get_run_logger().info("index: %s rows in %d shards", manifest.get("total_rows"), len(manifest["shards"]))
    return manifest


def _wait_for_claims(out: str, orch: Orchestration):
    """Block while live producers elsewhere hold claims on shards about to be relaunched (bounded)."""
    from cgaug.storage.claims import read_claim

    root = open_root(out)

    def wait(shards: list[int]) -> None:
        deadline = time.monotonic() + orch.claim_ttl_s + orch.poll_s
        while time.monotonic() < deadline:
            live = [s for s in shards if (c := read_claim(root, s)) is not None and not c.stale()]
            if not live:
                return
            time.sleep(orch.poll_s)

    return wait


@flow(name="cgaug")
def generate_dataset_flow(source: str, out: str, bank: str, config: CGAugConfig | None = None,
          orchestration: Orchestration | None = None, progress: bool = False) -> dict[str, Any]:
    """Generate (or complete) the augmented dataset `out` from a Cityscapes-format `source`.

    Args:
        source: Cityscapes-format root (local path or fsspec URI; the same path on every worker).
        out: output root (local path or fsspec URI); re-running resumes it.
        bank: object bank Parquet file.
        config: the configuration tree; defaults when omitted.
        orchestration: in-process or fan-out to the GPU pool, retries, quality floor.
        progress: show a progress bar on stderr (local runs).
    """
    from prefect.runtime import flow_run
    from tqdm import tqdm

    from cgaug.flows.monitor import Progress, emit_shard_events, publish_run_summary
    from cgaug.storage.reports import read_report
    from cgaug.tasks.generation.quality import is_low_quality, run_summary_markdown

    config = config or CGAugConfig()
    orch = orchestration or Orchestration()
    logger = get_run_logger()
    plan = plan_task(source, out, bank, config)
    root = open_root(out)
    is_complete = _shard_is_complete(out, load_plan(out))
    tracker = Progress(len(plan["pending"]), out)
    qualities, written, notes = [], [], []
    bar = tqdm(total=len(plan["pending"]), unit="shard", disable=not progress, desc="cgaug")

    def on_done(shard: int) -> None:
        if shard in written:
            return
        written.append(shard)
        quality, _ = read_report(root, shard)
        qualities.append(quality)
        emit_shard_events(out, quality, orch.quality_floor)
        if is_low_quality(quality, orch.quality_floor):
            logger.warning("shard %05d: acceptance %.3f below the floor %.3f", shard, quality.quality,
                           orch.quality_floor)
        tracker.advance()
        bar.update(1)

    if orch.in_process:
        claimed = []
        for shard in plan["pending"]:
            outcome = produce_shard_task(source, out, bank, config, shard, orch.claim_ttl_s, orch.quality_floor)
            if outcome["status"] == CLAIMED:
                notes.append(f"shard {shard:05d} skipped: {outcome['detail']}")
                claimed.append(shard)
            else:
                on_done(shard)
        missing = [s for s in claimed if not is_complete(s)]
    else:
        parameters = {"source": source, "out": out, "bank": bank, "config": config.model_dump(mode="json"),
                      "claim_ttl_s": orch.claim_ttl_s, "quality_floor": orch.quality_floor}
        missing = fan_out(plan["pending"], orch, parameters, str(flow_run.get_id()), flow_run.get_run_count(),
                          is_complete, on_done, _wait_for_claims(out, orch), notes.append)
        for shard in plan["pending"]:
            if shard not in missing:
                on_done(shard)
    bar.close()
    for note in notes:
        logger.warning(note)
    manifest = index_task(out, source, bank, config) if written or not _manifest_current(out) else json.loads(
        root.read_bytes(MANIFEST_NAME))
    skipped = plan["shards"] - len(plan["pending"])
    if plan["new_samples"]:
        notes.insert(0, f"{plan['new_samples']} new samples planned (new source images or variants)")
    if not plan["pending"]:
        notes.insert(0, "nothing to do: every planned shard was already complete")
    if missing:
        notes.append(f"{len(missing)} shards could not be produced: {missing[:50]}")
    publish_run_summary(run_summary_markdown(
        out, sorted(qualities, key=lambda q: q.shard), samples=plan["samples"], shards=plan["shards"],
        skipped=skipped, written=sorted(written), floor=orch.quality_floor, counts=manifest.get("counts", {}),
        notes=notes), out)
    summary = {"out": out, "samples": plan["samples"], "shards": plan["shards"], "new_samples": plan["new_samples"],
               "shards_written": len(written), "shards_missing": missing, "counts": manifest.get("counts", {})}
    logger.info("done: %s", summary)
    if missing:
        raise RuntimeError(f"{len(missing)} shards of {out} are still missing after "
                           f"{orch.child_attempts} attempts: {missing[:50]} (see the run summary)")
    return summary


def _manifest_current(out: str) -> bool:
    """True when manifest.json lists exactly the shards on disk (nothing written since)."""
    root = open_root(out)
    if not root.exists(MANIFEST_NAME):
        return False
    listed = {s["name"] for s in json.loads(root.read_bytes(MANIFEST_NAME)).get("shards", [])}
    return listed == set(root.list(SHARDS_DIR, SHARD_SUFFIX))
