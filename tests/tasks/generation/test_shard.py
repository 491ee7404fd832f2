"""The shard loop (`make_shard_rows`): rows of skipped, generated and filtered samples, bounded retries with
derived seeds, and every attempt's gate records, with a fake generator and fake filter models."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cgaug.config import CGAugConfig
from cgaug.models.filters.base import FilterModels
from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID, SampleSkipped
from cgaug.seeds import derive_seed
from cgaug.storage.fs import open_root
from cgaug.storage.png import decode_png
from cgaug.storage.schema import SHARD_SCHEMA, scores_column
from cgaug.storage.shards import verify, write_index, write_shard
from cgaug.storage.stats import stats_of_table
from cgaug.tasks.generation.filter import judge, make_judge
from tests.tasks.generation.fakes import FixedSegmenter, ShiftMasker, shifted


class FakeGenerator:
    """Draws every pasted object at 200 (so ShiftMasker finds it) and records every call."""

    def __init__(self, object_colors: np.ndarray):
        self.object_colors = object_colors  # (K, 3) the ADE colours the bank paints objects with
        self.calls: list[tuple[list[np.ndarray], list[str], list[int]]] = []

    def __call__(self, cond_maps, prompts, negatives, seeds):
        self.calls.append(([c.copy() for c in cond_maps], list(prompts), list(seeds)))
        images = []
        for cond, seed in zip(cond_maps, seeds, strict=True):
            image = np.full(cond.shape, seed % 97, dtype=np.uint8)
            image[pasted_pixels(cond, self.object_colors)] = 200
            images.append(image)
        return images


def pasted_pixels(cond: np.ndarray, colors: np.ndarray) -> np.ndarray:
    return (cond[:, :, None, :] == colors[None, None]).all(-1).any(-1)


@dataclass
class Shard:
    """Three fixture images planned as one shard, and a way to run it with a judge."""

    source: Path
    bank: object
    colors: np.ndarray
    done: list[int] = field(default_factory=list)  # the progress callback's calls

    def run(self, cfg: CGAugConfig, judge=None, models: FilterModels | None = None, entries=None):
        from cgaug.tasks.generation.compose import usable_classes
        from cgaug.tasks.generation.shard import make_shard_rows

        entries = entries if entries is not None else self.entries(cfg)
        self.done.clear()
        if judge is None and models is not None:
            judge = make_judge(models, cfg.filters)
        generator = FakeGenerator(self.colors)
        rows, stats = make_shard_rows(entries, str(self.source), self.bank, usable_classes(self.bank, cfg.compose),
                                      cfg, generator, lambda h, w: {}, on_sample=self.done.append, judge=judge)
        return entries, rows, stats, generator

    def entries(self, cfg: CGAugConfig):
        from cgaug.storage.cityscapes import list_sources
        from cgaug.tasks.generation.plan import extend_plan

        prefix = str(self.source) + "/"
        sources = [r.__class__(r.source_id, r.city, r.split, r.image_path.removeprefix(prefix),
                               r.label_path.removeprefix(prefix)) for r in list_sources(str(self.source), "train")]
        return extend_plan([], sources[:3], cfg.run)


@pytest.fixture(scope="module")
def shard(dataset) -> Shard:
    from cgaug.labels import ade_color
    from cgaug.storage.bank import ObjectBank

    bank = ObjectBank.open(str(dataset / "bank.parquet"))
    colors = np.asarray(sorted({ade_color(bank.entry(i).ade_class) for i in range(len(bank))}), dtype=np.uint8)
    return Shard(dataset, bank, colors)


def _config(**filters) -> CGAugConfig:
    return CGAugConfig.model_validate({
        "run": {"seed": 7, "variants": 1},
        "filters": {"mode": "default", "anomaly_gate": False, "clip_text_gate": False,
                    "clip_object_gate": False, "consistency_gate": False, **filters}})


def _write_and_verify(rows: list[dict], tmp_path: Path) -> None:
    root = open_root(str(tmp_path / "out"))
    write_shard(root, 0, rows)  # the rows fit the schema
    write_index(root)
    assert verify(root) == []


def test_a_gate_that_always_rejects_gives_exactly_max_attempts_batched_regenerations(shard, tmp_path):
    cfg = _config(max_attempts=3, sam_iou_threshold=1.0)  # IoU > 1 is impossible
    entries, rows, stats, generator = shard.run(cfg, models=FilterModels(masker=ShiftMasker(0)))
    _write_and_verify(rows, tmp_path)
    assert len(generator.calls) == 3  # one batched call per round, all rejected samples together
    assert [len(call[2]) for call in generator.calls] == [len(entries)] * 3
    for attempt, (conds, prompts, seeds) in enumerate(generator.calls):
        expected = [e.spec.seed if attempt == 0 else derive_seed(7, e.spec.sample_id, e.spec.variant, attempt)
                    for e in entries]
        assert seeds == expected
        for cond, first in zip(conds, generator.calls[0][0], strict=True):
            np.testing.assert_array_equal(cond, first)  # the same composition every time
        assert prompts == generator.calls[0][1]
    for row in rows:
        assert row["verdict"] == "rejected" and row["attempts"] == 3 and row["attempt"] == 2
        assert [(g["attempt"], g["name"], g["passed"]) for g in row["gates"]] == \
            [(a, "sam_iou", False) for a in range(3)]
        assert row["reasons"][0] == "sam_iou_low" and row["image_png"] is not None
        assert row["image_seed"] == derive_seed(7, row["sample_id"], row["variant"], 2)
        assert "rejected after 3" in row["detail"]
    assert stats.verdicts["rejected"] == stats.dropped["sam_iou_low"] == len(entries)
    assert stats.verdicts.get("accepted", 0) == 0 and stats.generations == 3 * len(entries)
    table = pa.Table.from_pylist([row | {"scores": scores_column(row["scores"])} for row in rows], schema=SHARD_SCHEMA)
    summary = stats_of_table(table).filter_summary()  # the one statistics record
    assert summary["accepted"] == 0 and summary["rejected"] == len(entries)
    assert summary["dropped_sam_iou_low"] == len(entries) and summary["attempts"] == {"3": len(entries)}
    assert summary["gates"]["sam_iou"]["n"] == 3 * len(entries) and summary["gates"]["sam_iou"]["pass_rate"] == 0
    assert summary["attempt_pass_rate"] == 0.0


def test_accepted_samples_get_the_sam_label_and_a_noise_mask(shard, tmp_path):
    cfg = _config(max_attempts=2, sam_iou_threshold=0.3, consistency_gate=True, consistency_threshold=None)
    models = FilterModels(masker=ShiftMasker(2), segmenter=FixedSegmenter())
    entries, rows, stats, generator = shard.run(cfg, models=models)
    _write_and_verify(rows, tmp_path)
    assert len(generator.calls) == 1 and stats.verdicts["accepted"] == len(entries)
    for row in rows:
        assert row["verdict"] == "accepted" and row["attempts"] == 1
        assert all(":" in reason for reason in row["reasons"])  # compose notes only
        cond, label = decode_png(row["cond_png"]), decode_png(row["label_png"])
        ood = decode_png(row["ood_mask_png"], mask=True)
        pasted = pasted_pixels(cond, shard.colors)
        sam = shifted(pasted, 2)
        np.testing.assert_array_equal(ood, sam)
        np.testing.assert_array_equal(label == OOD_TRAIN_ID, sam)
        assert (pasted & ~sam).any() and (label[pasted & ~sam] == VOID_TRAIN_ID).all()
        assert row["ood_area"] == int(sam.sum())
        noise = decode_png(row["noise_mask_png"], mask=True)
        np.testing.assert_array_equal(noise, (label < 19) & (label != 0))  # the fake segmenter says road
        assert set(row["scores"]) == {"sam_iou", "consistency_miou"}


def test_original_policy_gives_pasted_pixels_their_class_back(shard):
    from cgaug.storage.cityscapes import read_label_ids
    from cgaug.tasks.generation.compose import train_ids
    from cgaug.tasks.generation.shard import resolve_source

    cfg = _config(sam_iou_threshold=0.3, keep_unconfirmed_as="original", ood_region="intersection")
    entries, rows, _, _ = shard.run(cfg, models=FilterModels(masker=ShiftMasker(2)))
    for row, entry in zip(rows, entries, strict=True):
        base = train_ids(read_label_ids(resolve_source(str(shard.source), entry.source)))
        label, cond = decode_png(row["label_png"]), decode_png(row["cond_png"])
        pasted = pasted_pixels(cond, shard.colors)
        confirmed = pasted & shifted(pasted, 2)
        np.testing.assert_array_equal(label == OOD_TRAIN_ID, confirmed)
        np.testing.assert_array_equal(label[~confirmed], base[~confirmed])


def test_rejected_samples_are_regenerated_together_until_they_pass(shard):
    cfg = _config(max_attempts=3)
    rounds = []

    def judge_by_round(inputs):
        """Round 1 rejects everything, round 2 all but the first sample, round 3 accepts it."""
        rounds.append(len(inputs))
        results = judge(inputs, FilterModels(masker=ShiftMasker(0 if len(rounds) > 1 else 500)), cfg.filters)
        if len(rounds) == 2:
            results[0] = judge([inputs[0]], FilterModels(masker=ShiftMasker(500)), cfg.filters)[0]
        return results

    entries, rows, stats, generator = shard.run(cfg, judge=judge_by_round)
    first = entries[0].spec.sample_id
    assert rounds == [len(entries), len(entries), 1]
    assert [len(call[2]) for call in generator.calls] == rounds
    by_id = {row["sample_id"]: row for row in rows}
    assert by_id[first]["attempts"] == 3 and by_id[first]["verdict"] == "accepted"
    assert [g["passed"] for g in by_id[first]["gates"]] == [False, False, True]
    assert all(r["attempts"] == 2 and r["verdict"] == "accepted" for s, r in by_id.items() if s != first)
    assert stats.attempts[2] == len(entries) - 1 and stats.attempts[3] == 1


def test_recompose_after_the_last_failure_is_bounded_too(shard, tmp_path):
    cfg = _config(max_attempts=2, sam_iou_threshold=1.0, recompose_after_last_failure=True)
    entries, rows, stats, generator = shard.run(cfg, models=FilterModels(masker=ShiftMasker(0)))
    _write_and_verify(rows, tmp_path)
    assert len(generator.calls) == 4
    assert stats.reasons["recomposed"] + stats.notes.get("recomposed", 0) == len(entries)
    for row, entry in zip(rows, entries, strict=True):
        assert row["attempts"] == 4 and row["verdict"] == "rejected" and "recomposed" in row["reasons"]
        assert row["seed"] == derive_seed(7, entry.spec.sample_id, entry.spec.variant, 2)  # the new composition's
        assert row["image_seed"] == derive_seed(7, entry.spec.sample_id, entry.spec.variant, 3)
    changed = [not np.array_equal(a, b) for a, b in zip(generator.calls[1][0], generator.calls[2][0], strict=True)]
    assert any(changed)


def test_without_a_filter_rows_are_unfiltered_with_one_attempt(shard):
    cfg = CGAugConfig.model_validate({"run": {"seed": 7}})
    entries, rows, stats, _ = shard.run(cfg)
    for row, entry in zip(rows, entries, strict=True):
        assert row["verdict"] == "unfiltered" and row["attempts"] == 1 and row["gates"] == []
        assert row["seed"] == row["image_seed"] == entry.spec.seed and row["attempt"] == 0
    assert stats.generations_judged == 0 and stats.verdicts["unfiltered"] == len(entries)


# --------------------------------------------------------------------------- bad input


def _with_missing_image(entries: list, index: int) -> list:
    broken = entries[index]
    return [*entries[:index], replace(broken, source=replace(broken.source, image_path="nowhere/gone.png")),
            *entries[index + 1:]]


def test_a_bad_sample_becomes_a_skipped_row_and_the_rest_is_generated(shard, tmp_path):
    cfg = CGAugConfig.model_validate({"run": {"seed": 7}})
    entries = _with_missing_image(shard.entries(cfg), 1)

    _, rows, stats, generator = shard.run(cfg, entries=entries)

    _write_and_verify(rows, tmp_path)
    assert [row["sample_id"] for row in rows] == [e.spec.sample_id for e in entries]  # plan order
    skipped = rows[1]
    assert skipped["verdict"] == "skipped" and skipped["reasons"] == ["missing_image"]
    assert "gone.png" in skipped["detail"] and skipped["attempts"] == 0 and skipped["image_png"] is None
    assert [row["verdict"] for row in rows[::2]] == ["unfiltered"] * 2
    assert generator.calls[0][2] == [entries[0].spec.seed, entries[2].spec.seed]  # the skipped one is not generated
    assert stats.verdicts["skipped"] == stats.reasons["missing_image"] == 1 and stats.verdicts["unfiltered"] == 2
    assert stats.rows == 3 and sum(shard.done) == 3  # progress counts every sample once


def test_a_skipped_sample_is_never_judged_or_retried(shard):
    cfg = _config(max_attempts=2, sam_iou_threshold=1.0)
    entries = _with_missing_image(shard.entries(cfg), 0)

    _, rows, stats, generator = shard.run(cfg, models=FilterModels(masker=ShiftMasker(0)), entries=entries)

    assert rows[0]["verdict"] == "skipped" and rows[0]["gates"] == [] and rows[0]["scores"] == {}
    assert [len(call[2]) for call in generator.calls] == [2, 2]
    assert [row["verdict"] for row in rows[1:]] == ["rejected"] * 2
    assert stats.generations == 4 and sum(shard.done) == 3


def test_on_error_raise_stops_at_the_first_bad_sample(shard):
    cfg = CGAugConfig.model_validate({"run": {"seed": 7, "on_error": "raise"}})

    with pytest.raises(SampleSkipped, match=r"gone\.png"):
        shard.run(cfg, entries=_with_missing_image(shard.entries(cfg), 2))


# --------------------------------------------------------------------------- every reason recorded


def test_every_failing_gate_of_every_attempt_is_recorded(shard, tmp_path):
    cfg = _config(max_attempts=2, consistency_gate=True, consistency_threshold=0.5)
    everywhere = np.ones(_image_shape(shard), bool)  # the segmenter predicts class 18 on every pixel
    models = FilterModels(masker=ShiftMasker(500), segmenter=FixedSegmenter(everywhere))

    entries, rows, stats, generator = shard.run(cfg, models=models)

    _write_and_verify(rows, tmp_path)
    assert len(generator.calls) == 2
    for row, entry in zip(rows, entries, strict=True):
        assert row["verdict"] == "rejected" and (row["attempt"], row["attempts"]) == (1, 2)
        assert [(g["attempt"], g["name"], g["reason"]) for g in row["gates"]] == [
            (a, name, f"{name}_low") for a in (0, 1) for name in ("sam_iou", "consistency_miou")]
        assert row["reasons"][:2] == ["sam_iou_low", "consistency_miou_low"]
        assert "sam_iou 0 <= " in row["detail"] and "consistency_miou" in row["detail"]
        assert row["image_seed"] == derive_seed(7, entry.spec.sample_id, entry.spec.variant, 1)
        assert row["seed"] == entry.spec.seed  # the composition's seed: never recomposed
    assert stats.dropped["sam_iou_low"] == stats.dropped["consistency_miou_low"] == len(entries)
    assert stats.attempts[2] == len(entries)


def _image_shape(shard: Shard) -> tuple[int, int]:
    """(height, width) of the fixture images."""
    from cgaug.storage.cityscapes import read_label_ids
    from cgaug.tasks.generation.shard import resolve_source

    entry = shard.entries(CGAugConfig())[0]
    return read_label_ids(resolve_source(str(shard.source), entry.source)).shape
