"""One shard's work: read -> compose -> prompt -> generate -> [filter -> regenerate] -> rows. No Prefect here.

Bad input never stops the shard: a sample whose files are missing,
unreadable or invalid, or that has no road to paste on, becomes a `skipped`
row with its reason (unless `run.on_error == "raise"`), and every other
sample is still generated. Generation is batched across the shard's good
samples, one seed per sample, so batching never changes a sample.

With a quality filter (`judge`), generation runs in rounds: every image of a
round is judged in one batch; the rejected ones go into the next round
together, each with the same composition and prompt and the seed of its next
attempt (`derive_seed(run.seed, sample_id, variant, attempt)`). A composition
gets at most `filters.max_attempts` generations (optionally one re-composition
gets as many again), so the loop always ends; a sample that never passes is
written as `rejected`, with its last image, its reasons and every attempt's
gate records. Accepted samples get the refined label and the noise mask.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cgaug.config import CGAugConfig
from cgaug.records import Composition, Prompt, SampleSkipped, SourceRecord
from cgaug.seeds import derive_seed, stage_rng
from cgaug.storage.cityscapes import read_pair
from cgaug.storage.plan import PlanEntry
from cgaug.storage.png import encode_png
from cgaug.storage.schema import (
    VERDICT_ACCEPTED,
    VERDICT_REJECTED,
    VERDICT_SKIPPED,
    VERDICT_UNFILTERED,
    empty_row,
)
from cgaug.storage.stats import GenerationStats, stats_of_rows
from cgaug.tasks.generation.compose import MaskBank, compose, train_ids
from cgaug.tasks.generation.filter import Judge, Judgement, gate_records, stored_scores
from cgaug.tasks.generation.gates import GATE_BY_NAME, FilterInput
from cgaug.tasks.generation.generate import Generate, Settings
from cgaug.tasks.generation.geometry import disagreement, refine_label
from cgaug.tasks.generation.prompts import sample_prompt
from cgaug.tasks.generation.retry import RECOMPOSE, RETRY, next_action

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    entry: PlanEntry
    composition: Composition
    prompt: Prompt
    seed: int = -1  # seed of the composition and prompt; -1: the plan's (entry.spec.seed)
    base_label: np.ndarray | None = None  # train ids before pasting, kept only when a label policy needs them
    photo: np.ndarray | None = None  # the source photo, kept only for a photo condition

    @property
    def compose_seed(self) -> int:
        return self.entry.spec.seed if self.seed < 0 else self.seed


def resolve_source(source_root: str, record: SourceRecord) -> SourceRecord:
    """The plan stores paths relative to the source root; this makes them readable again."""
    root = source_root.rstrip("/")
    return replace(record, image_path=f"{root}/{record.image_path}", label_path=f"{root}/{record.label_path}")


def prepare(entry: PlanEntry, source_root: str, bank: MaskBank, classes: tuple[str, ...],
            cfg: CGAugConfig, seed: int | None = None) -> tuple[Prepared, dict[str, int]]:
    """Compose and prompt one sample (from `seed`, default the plan's); raises SampleSkipped for bad input."""
    seed = entry.spec.seed if seed is None else seed
    photo, label_ids = read_pair(resolve_source(source_root, entry.source))
    composition, failures = compose(label_ids, bank, cfg.compose, stage_rng(seed, "compose"), classes)
    names = [obj.class_name for obj in composition.objects]
    prompt = sample_prompt(names, cfg.prompts, stage_rng(seed, "prompt"))
    keep_base = cfg.filters.mode != "none" and cfg.filters.keep_unconfirmed_as == "original"
    keep_photo = cfg.generator.photo_control != "none"
    return Prepared(entry, composition, prompt, seed, train_ids(label_ids) if keep_base else None,
                    photo if keep_photo else None), failures


def _identity(entry: PlanEntry, fingerprint: str) -> dict[str, Any]:
    row = empty_row()
    spec, source = entry.spec, entry.source
    row.update(sample_id=spec.sample_id, source_id=spec.source_id, city=source.city, split=source.split,
               variant=spec.variant, attempt=spec.attempt, attempts=0, seed=spec.seed, shard=spec.shard,
               config_fingerprint=fingerprint, created_at=dt.datetime.now(dt.UTC), scores={}, gates=[])
    return row


def skipped_row(entry: PlanEntry, skip: SampleSkipped, fingerprint: str) -> dict[str, Any]:
    row = _identity(entry, fingerprint)
    row.update(verdict=VERDICT_SKIPPED, reasons=[skip.reason], detail=skip.detail, objects=[], num_objects=0)
    return row


def generated_row(prepared: Prepared, image: np.ndarray, settings: dict[str, Any], fingerprint: str,
                  notes: dict[str, int]) -> dict[str, Any]:
    """The row of an unfiltered sample (the filter's outcome is applied on top by `make_shard_rows`)."""
    comp, prompt = prepared.composition, prepared.prompt
    row = _identity(prepared.entry, fingerprint)
    row.update(settings)
    row.update(
        verdict=VERDICT_UNFILTERED,
        reasons=[f"{key}:{value}" for key, value in sorted(notes.items())],
        attempts=1, seed=prepared.compose_seed, image_seed=prepared.compose_seed,
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


@dataclass(slots=True)
class _Sample:
    """A sample going through the generate -> judge rounds."""

    prepared: Prepared
    notes: dict[str, int]
    attempt: int = 0  # attempt number of the image being made now
    first_attempt: int = 0  # the current composition's first attempt
    recomposed: bool = False
    generations: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # `gates` records of every attempt
    extra_reasons: list[str] = field(default_factory=list)

    def image_seed(self, run_seed: int) -> int:
        """The plan's seed for attempt 0 (the run without a filter makes the same image), then derived."""
        spec = self.prepared.entry.spec
        if self.attempt == 0:
            return spec.seed
        return derive_seed(run_seed, spec.sample_id, spec.variant, self.attempt)


def filtered_row(sample: _Sample, image: np.ndarray, judgement: Judgement, settings: dict[str, Any],
                 fingerprint: str, run_seed: int, cfg: CGAugConfig) -> dict[str, Any]:
    """The final row of a judged sample: accepted with its refined label, or rejected with its reasons."""
    comp = sample.prepared.composition
    row = generated_row(sample.prepared, image, settings, fingerprint, sample.notes)
    row.update(attempt=sample.attempt, attempts=sample.generations, image_seed=sample.image_seed(run_seed),
               gates=list(sample.history), scores=stored_scores(judgement))
    label, ood = comp.label, comp.ood_mask
    if judgement.passed:
        if judgement.confirmed is not None:
            base = sample.prepared.base_label
            label, ood = refine_label(comp.label, base if base is not None else comp.label, comp.ood_mask,
                                      judgement.confirmed, cfg.filters.ood_region, cfg.filters.keep_unconfirmed_as)
        row.update(verdict=VERDICT_ACCEPTED, reasons=row["reasons"] + sample.extra_reasons,
                   label_png=encode_png(label), ood_mask_png=encode_png(ood), ood_area=int(ood.sum()))
    else:
        row.update(verdict=VERDICT_REJECTED, reasons=judgement.reasons + row["reasons"] + sample.extra_reasons,
                   detail=_rejection_detail(judgement, sample.generations))
    if judgement.prediction is not None:
        row["noise_mask_png"] = encode_png(disagreement(judgement.prediction, label))
    return row


def _rejection_detail(judgement: Judgement, generations: int) -> str:
    failed = [f"{g.name} {g.score:.4g} {'<=' if GATE_BY_NAME[g.name].strict else '<'} {g.threshold:.4g}"
              for g in judgement.gates if not g.passed and g.threshold is not None]
    return f"rejected after {generations} generation(s); last attempt: {'; '.join(failed)}"


def make_shard_rows(entries: list[PlanEntry], source_root: str, bank: MaskBank, classes: tuple[str, ...],
                    cfg: CGAugConfig, generate: Generate, settings: Settings,
                    on_sample: Callable[[int], None] | None = None,
                    judge: Judge | None = None) -> tuple[list[dict[str, Any]], GenerationStats]:
    """Rows for every planned sample of one shard, in plan order, and their statistics record.

    The record is computed from the rows (`cgaug.storage.stats`, the one record every summary
    uses), so what the loop reports and what a reader of the shard finds cannot disagree.

    Args:
        entries: the shard's plan entries.
        source_root: root of the Cityscapes-format source the plan's relative paths start from.
        bank: object bank; `classes` the pre-validated classes to paste.
        cfg: the run's configuration.
        generate: the batched generator (see `Generate`).
        settings: generator settings for the shard columns, given the label (height, width).
        on_sample: progress callback, called with the number of samples just finished.
        judge: the quality filter (see `Judge`); None writes every sample `unfiltered`.
    """
    fingerprint = cfg.output_fingerprint()
    rows: dict[str, dict[str, Any]] = {}
    pending: list[_Sample] = []
    for entry in entries:
        try:
            pending.append(_Sample(*prepare(entry, source_root, bank, classes, cfg)))
        except SampleSkipped as skip:
            if cfg.run.on_error == "raise":
                raise
            log.warning("skipped %s: %s", entry.spec.sample_id, skip)
            rows[entry.spec.sample_id] = skipped_row(entry, skip, fingerprint)
            if on_sample:
                on_sample(1)
    context = _Context(source_root, bank, classes, cfg, generate, settings, judge, fingerprint, rows)
    while pending:  # each round shrinks: a sample leaves after at most 2 x max_attempts rounds
        pending = _round(pending, context, on_sample)
    ordered = [rows[entry.spec.sample_id] for entry in entries]
    return ordered, stats_of_rows(ordered)


@dataclass(frozen=True, slots=True)
class _Context:
    source_root: str
    bank: MaskBank
    classes: tuple[str, ...]
    cfg: CGAugConfig
    generate: Generate
    settings: Settings
    judge: Judge | None
    fingerprint: str
    rows: dict[str, dict[str, Any]]


def _round(pending: list[_Sample], ctx: _Context, on_sample: Callable[[int], None] | None) -> list[_Sample]:
    """Generate (and judge) every pending sample once; returns the samples to try again."""
    run_seed = ctx.cfg.run.seed
    again: list[_Sample] = []
    # Same-size maps go through the generator together; sizes rarely differ within a dataset.
    by_size: dict[tuple[int, int], list[_Sample]] = {}
    for sample in pending:
        by_size.setdefault(sample.prepared.composition.label.shape, []).append(sample)
    for (height, width), group in by_size.items():
        preps = [s.prepared for s in group]
        photo_inputs = {} if preps[0].photo is None else {
            "photos": [p.photo for p in preps], "photo_masks": [p.composition.ood_mask for p in preps]}
        images = ctx.generate([p.composition.cond_map for p in preps], [p.prompt.text for p in preps],
                              [p.prompt.negative for p in preps], [s.image_seed(run_seed) for s in group],
                              **photo_inputs)
        shard_settings = ctx.settings(height, width)
        if ctx.judge is None:
            for sample, image in zip(group, images, strict=True):
                _finish(ctx, sample, generated_row(sample.prepared, image, shard_settings, ctx.fingerprint,
                                                   sample.notes))
            if on_sample:
                on_sample(len(group))
            continue
        judgements = ctx.judge([_filter_input(p, image) for p, image in zip(preps, images, strict=True)])
        finished = 0
        for sample, image, judgement in zip(group, images, judgements, strict=True):
            follow = _after_judgement(sample, judgement, ctx)
            if follow is not None:
                again.append(follow)
                continue
            _finish(ctx, sample, filtered_row(sample, image, judgement, shard_settings, ctx.fingerprint,
                                              run_seed, ctx.cfg))
            finished += 1
        if on_sample and finished:
            on_sample(finished)
    return again


def _after_judgement(sample: _Sample, judgement: Judgement, ctx: _Context) -> _Sample | None:
    """Record the attempt; the sample to generate next round, or None when it is final."""
    sample.generations += 1
    sample.history.extend(gate_records(judgement, sample.attempt))
    action = next_action(judgement.passed, sample.attempt, sample.first_attempt, sample.recomposed,
                         ctx.cfg.filters)
    if action == RETRY:
        sample.attempt += 1
        return sample
    if action == RECOMPOSE:
        return _recompose(sample, ctx)
    return None  # accepted or finally rejected


def _recompose(sample: _Sample, ctx: _Context) -> _Sample | None:
    """A new composition and prompt for a sample whose compositions all failed; None when none fits."""
    spec = sample.prepared.entry.spec
    attempt = sample.attempt + 1
    seed = derive_seed(ctx.cfg.run.seed, spec.sample_id, spec.variant, attempt)
    try:
        prepared, notes = prepare(sample.prepared.entry, ctx.source_root, ctx.bank, ctx.classes, ctx.cfg, seed)
    except SampleSkipped as skip:
        sample.extra_reasons.append(f"recompose_failed_{skip.reason}")
        return None
    return _Sample(prepared, notes, attempt=attempt, first_attempt=attempt, recomposed=True,
                   generations=sample.generations, history=sample.history,
                   extra_reasons=[*sample.extra_reasons, "recomposed"])


def _finish(ctx: _Context, sample: _Sample, row: dict[str, Any]) -> None:
    ctx.rows[sample.prepared.entry.spec.sample_id] = row


def _filter_input(prepared: Prepared, image: np.ndarray) -> FilterInput:
    comp = prepared.composition
    return FilterInput(image=image, label=comp.label, ood_mask=comp.ood_mask, objects=comp.objects,
                       prompt=prepared.prompt.text)
