"""The `cgaug` flow (deployment `cgaug/generate`): plan -> shards -> index -> summary.

Orchestration only: each task calls the pure stage code in `cgaug.tasks` and
`cgaug.storage`, and passes ids, paths and small records (never arrays).
Shards run either in this process (`cgaug.config.Orchestration.in_process`,
the local CLI) or as `cgaug-shard` child runs on the GPU pool (`cgaug.flows.fanout`);
either way a shard that exists and validates is skipped, so a scheduled run
with the same parameters only does what is missing.

Failure model: inputs are validated at the boundary
(`cgaug.tasks.generation.run.check_inputs`, before anything is planned or
created; `InputError`). A run starts by repairing what an
earlier run left behind (`cgaug.storage.recovery`: debris swept, damaged shards
set aside into ``OUT/quarantine/`` and redone, lost reports rebuilt). A shard
that a live producer holds is waited for, never failed. A run that ends with
planned samples missing says so in one line, in the run summary and in the
manifest, and raises `RunIncomplete`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task

from cgaug.config import CGAugConfig, Orchestration
from cgaug.flows.fanout import ChildFailed, fan_out
from cgaug.flows.shard import produce_shard_task, producer_identity
from cgaug.storage.fs import open_root
from cgaug.storage.layout import MANIFEST_NAME
from cgaug.storage.plan import load_plan
from cgaug.tasks.generation.plan import shards_of
from cgaug.tasks.generation.produce import CLAIMED
from cgaug.tasks.generation.run import (
    RunIncomplete,
    check_inputs,
    index_dataset,
    plan_run,
    planned_ids,
    shard_is_complete,
)

__all__ = ["generate_dataset_flow"]


@task(name="plan")
def plan_task(source: str, out: str, bank: str, config: CGAugConfig, claim_ttl_s: float = 300.0
              ) -> dict[str, Any]:
    from cgaug.storage.recovery import recover

    logger = get_run_logger()
    plan, added = plan_run(source, out, bank, config)
    repair = recover(open_root(out), claim_ttl_s, planned_ids(plan), producer_identity())
    for note in repair.notes():
        logger.warning("resume: %s", note)
    is_complete = shard_is_complete(out, plan)
    pending = [shard for shard in shards_of(plan) if not is_complete(shard)]
    logger.info("plan: %d samples in %d shards (%d new samples), %d shards to do", len(plan),
                len(shards_of(plan)), added, len(pending))
    return {"samples": len(plan), "shards": len(shards_of(plan)), "new_samples": added, "pending": pending,
            "repairs": repair.notes(), "index_current": repair.index_current}


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
            live = [s for s in shards if (c := read_claim(root, s)) is not None and not c.dead()]
            if not live:
                return
            time.sleep(orch.poll_s)

    return wait


def _produce_in_process(source: str, out: str, bank: str, config: CGAugConfig, orch: Orchestration,
                        pending: list[int], on_done: Callable[[int], None]) -> None:
    """Produce `pending` here. A shard that another live producer holds is waited for, with a progress
    line, and then found complete, or taken over once that producer dies or gives it up unfinished."""
    from cgaug.storage.claims import read_claim

    logger = get_run_logger()
    root = open_root(out)
    todo, said = list(pending), 0.0
    while todo:
        waiting = []
        for shard in todo:
            claim = read_claim(root, shard)
            if claim is not None and not claim.dead():
                waiting.append(shard)  # theirs for now: no task run per poll
                continue
            outcome = produce_shard_task(source, out, bank, config, shard, orch.claim_ttl_s, orch.quality_floor)
            if outcome["status"] == CLAIMED:
                waiting.append(shard)
            else:
                on_done(shard)
        todo = waiting
        if todo:
            if time.monotonic() - said >= 30.0:
                holders = [f"shard {s:05d} {c.describe()}" for s in todo[:3] if (c := read_claim(root, s))]
                logger.info("waiting for %d shards that another live producer is making: %s", len(todo),
                            "; ".join(holders) or "claims just released")
                said = time.monotonic()
            time.sleep(orch.poll_s)


@flow(name="cgaug")
def generate_dataset_flow(source: str, out: str, bank: str, config: CGAugConfig | None = None,
          orchestration: Orchestration | None = None, progress: bool = False, force: bool = False) -> dict[str, Any]:
    """Generate (or complete) the augmented dataset `out` from a Cityscapes-format `source`.

    Args:
        source: Cityscapes-format root (local path or fsspec URI; the same path on every worker).
        out: output root (local path or fsspec URI); re-running resumes and repairs it.
        bank: object bank Parquet file.
        config: the configuration tree; defaults when omitted.
        orchestration: in-process or fan-out to the GPU pool, retries, claim TTL, quality floor.
        progress: show a progress bar on stderr (local runs).
        force: write into a non-empty local folder that is not a cgaug output.

    Raises:
        InputError: an input is unusable (nothing is planned or created).
        RunIncomplete: planned samples are still missing at the end (what exists is indexed).
    """
    from prefect.runtime import flow_run
    from tqdm import tqdm

    from cgaug.flows.monitor import Progress, emit_shard_events, publish_run_summary
    from cgaug.storage.reports import read_report
    from cgaug.storage.shards import incomplete_message
    from cgaug.tasks.generation.quality import is_low_quality, run_summary_markdown

    config = config or CGAugConfig()
    orch = orchestration or Orchestration()
    logger = get_run_logger()
    check_inputs(source, out, bank, config, force=force)
    plan = plan_task(source, out, bank, config, orch.claim_ttl_s)
    root = open_root(out)
    is_complete = shard_is_complete(out, load_plan(out))
    tracker = Progress(len(plan["pending"]), out)
    qualities, written, notes = [], [], list(plan["repairs"])
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

    failure = None
    if orch.in_process:
        _produce_in_process(source, out, bank, config, orch, plan["pending"], on_done)
    else:
        parameters = {"source": source, "out": out, "bank": bank, "config": config.model_dump(mode="json"),
                      "claim_ttl_s": orch.claim_ttl_s, "quality_floor": orch.quality_floor}
        try:
            fan_out(plan["pending"], orch, parameters, str(flow_run.get_id()), flow_run.get_run_count(),
                              is_complete, on_done, _wait_for_claims(out, orch), notes.append)
        except ChildFailed as error:
            failure = str(error)
            notes.append(failure)
        for shard in plan["pending"]:
            if is_complete(shard):
                on_done(shard)
    bar.close()
    for note in notes[len(plan["repairs"]):]:
        logger.warning(note)
    current = plan["index_current"] and not written
    manifest = json.loads(root.read_bytes(MANIFEST_NAME)) if current else index_task(out, source, bank, config)
    skipped = plan["shards"] - len(plan["pending"])
    if plan["new_samples"]:
        notes.insert(0, f"{plan['new_samples']} new samples planned (new source images or variants)")
    if not plan["pending"]:
        notes.insert(0, "nothing to do: every planned shard was already complete")
    gaps = manifest.get("plan") or {}
    incomplete = manifest.get("complete") is False
    if incomplete:
        line = f"{incomplete_message(gaps['missing'], gaps['samples'], gaps['missing_shards'])} in {out}"
        notes.append(line + "; run the same command again to complete it")
        logger.error(line)
    publish_run_summary(run_summary_markdown(
        out, sorted(qualities, key=lambda q: q.shard), samples=plan["samples"], shards=plan["shards"],
        skipped=skipped, written=sorted(written), floor=orch.quality_floor, counts=manifest.get("counts", {}),
        notes=notes), out)
    summary = {"out": out, "samples": plan["samples"], "shards": plan["shards"], "new_samples": plan["new_samples"],
               "shards_written": len(written), "shards_missing": gaps.get("missing_shards", []),
               "complete": manifest.get("complete"), "counts": manifest.get("counts", {})}
    logger.info("done: %s", summary)
    if failure is not None:
        raise ChildFailed(failure)
    if incomplete:
        attempts = "" if orch.in_process else f" after {orch.child_attempts} launches per shard"
        raise RunIncomplete(f"{incomplete_message(gaps['missing'], gaps['samples'], gaps['missing_shards'])} "
                            f"in {out}{attempts}. What exists is indexed; run the same command again to "
                            "produce the rest (the run summary and the log say why they are missing).")
    return summary
