"""One shard's work: read -> compose -> prompt -> generate -> rows. No Prefect here.

Bad input never stops the shard: a sample whose files are missing,
unreadable or invalid, or that has no road to paste on, becomes a `skipped`
row with its reason (unless `run.on_error == "raise"`), and every other
sample is still generated. Generation is batched across the shard's good
samples, one seed per sample, so batching never changes a sample.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cgaug.config import CGAugConfig
from cgaug.records import Composition, Prompt, SampleSkipped, SourceRecord, Stats
from cgaug.seeds import stage_rng
from cgaug.storage.cityscapes import read_pair
from cgaug.storage.png import encode_png
from cgaug.storage.schema import VERDICT_SKIPPED, VERDICT_UNFILTERED, empty_row
from cgaug.tasks.compose import MaskBank, compose
from cgaug.tasks.plan import PlanEntry
from cgaug.tasks.prompts import sample_prompt

log = logging.getLogger(__name__)

Generate = Callable[[list[np.ndarray], list[str], list[str], list[int]], list[np.ndarray]]
"""Images for (conditioning maps, prompts, negative prompts, seeds), at the maps' resolution."""


@dataclass(frozen=True, slots=True)
class Prepared:
    entry: PlanEntry
    composition: Composition
    prompt: Prompt


def resolve_source(source_root: str, record: SourceRecord) -> SourceRecord:
    """The plan stores paths relative to the source root; this makes them readable again."""
    root = source_root.rstrip("/")
    return replace(record, image_path=f"{root}/{record.image_path}", label_path=f"{root}/{record.label_path}")


def prepare(entry: PlanEntry, source_root: str, bank: MaskBank, classes: tuple[str, ...],
            cfg: CGAugConfig) -> tuple[Prepared, dict[str, int]]:
    """Compose and prompt one sample; raises SampleSkipped for bad input."""
    _, label_ids = read_pair(resolve_source(source_root, entry.source))
    composition, failures = compose(label_ids, bank, cfg.compose, stage_rng(entry.spec.seed, "compose"),
                                    classes)
    names = [obj.class_name for obj in composition.objects]
    prompt = sample_prompt(names, cfg.prompts, stage_rng(entry.spec.seed, "prompt"))
    return Prepared(entry, composition, prompt), failures


def _identity(entry: PlanEntry, fingerprint: str) -> dict[str, Any]:
    row = empty_row()
    spec, source = entry.spec, entry.source
    row.update(sample_id=spec.sample_id, source_id=spec.source_id, city=source.city, split=source.split,
               variant=spec.variant, attempt=spec.attempt, seed=spec.seed, shard=spec.shard,
               config_fingerprint=fingerprint, created_at=dt.datetime.now(dt.UTC), scores={})
    return row


def skipped_row(entry: PlanEntry, skip: SampleSkipped, fingerprint: str) -> dict[str, Any]:
    row = _identity(entry, fingerprint)
    row.update(verdict=VERDICT_SKIPPED, reasons=[skip.reason], detail=skip.detail, objects=[], num_objects=0)
    return row


def generated_row(prepared: Prepared, image: np.ndarray, settings: dict[str, Any], fingerprint: str,
                  notes: dict[str, int]) -> dict[str, Any]:
    comp, prompt = prepared.composition, prepared.prompt
    row = _identity(prepared.entry, fingerprint)
    row.update(settings)
    row.update(
        verdict=VERDICT_UNFILTERED,
        reasons=[f"{key}:{value}" for key, value in sorted(notes.items())],
        prompt=prompt.text, negative_prompt=prompt.negative, prompt_domain=prompt.domain,
        weather=prompt.weather, time_of_day=prompt.time_of_day, place=prompt.place,
        objects_phrase=prompt.objects_phrase,
        objects=[{"class_name": o.class_name, "ade_class": o.ade_class, "object_id": o.object_id,
                  "bank_source_id": o.bank_source_id, "x0": o.box[0], "y0": o.box[1], "x1": o.box[2],
                  "y1": o.box[3], "scale": o.scale, "area": o.area} for o in comp.objects],
        num_objects=len(comp.objects), ood_area=int(comp.ood_mask.sum()),
        height=comp.label.shape[0], width=comp.label.shape[1],
        image_png=encode_png(image), label_png=encode_png(comp.label), cond_png=encode_png(comp.cond_map),
        ood_mask_png=encode_png(comp.ood_mask),
    )
    return row


def run_shard(entries: list[PlanEntry], source_root: str, bank: MaskBank, classes: tuple[str, ...],
              cfg: CGAugConfig, generate: Generate, settings: Callable[[int, int], dict[str, Any]],
              on_sample: Callable[[int], None] | None = None) -> tuple[list[dict[str, Any]], Stats]:
    """Rows for every planned sample of one shard, in plan order.

    Args:
        entries: the shard's plan entries.
        source_root: root of the Cityscapes-format source the plan's relative paths start from.
        bank: object bank; `classes` the pre-validated classes to paste.
        cfg: the run's configuration.
        generate: the batched generator (see `Generate`).
        settings: generator settings for the shard columns, given the label (height, width).
        on_sample: progress callback, called with the number of samples just finished.
    """
    stats = Stats()
    fingerprint = cfg.output_fingerprint()
    rows: dict[str, dict[str, Any]] = {}
    ready: list[tuple[Prepared, dict[str, int]]] = []
    for entry in entries:
        try:
            ready.append(prepare(entry, source_root, bank, classes, cfg))
        except SampleSkipped as skip:
            if cfg.run.on_error == "raise":
                raise
            log.warning("skipped %s: %s", entry.spec.sample_id, skip)
            stats.add(f"skipped_{skip.reason}")
            rows[entry.spec.sample_id] = skipped_row(entry, skip, fingerprint)
            if on_sample:
                on_sample(1)
    # Same-size maps go through the generator together; sizes rarely differ within a dataset.
    by_size: dict[tuple[int, int], list[tuple[Prepared, dict[str, int]]]] = {}
    for item in ready:
        by_size.setdefault(item[0].composition.label.shape, []).append(item)
    for (height, width), group in by_size.items():
        images = generate([p.composition.cond_map for p, _ in group], [p.prompt.text for p, _ in group],
                          [p.prompt.negative for p, _ in group], [p.entry.spec.seed for p, _ in group])
        shard_settings = settings(height, width)
        for (prepared, notes), image in zip(group, images, strict=True):
            rows[prepared.entry.spec.sample_id] = generated_row(prepared, image, shard_settings, fingerprint, notes)
            stats.add("generated")
            for key, value in notes.items():
                stats.add(key, value)
        if on_sample:
            on_sample(len(group))
    stats.add("total", len(entries))
    return [rows[entry.spec.sample_id] for entry in entries], stats
