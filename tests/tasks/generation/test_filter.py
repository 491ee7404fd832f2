"""Gate logic, label refinement and the bounded regeneration loop, on constructed inputs with known answers."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cgaug.config import CGAugConfig, FilterConfig
from cgaug.models.filters.base import FilterModels, PixelOutput
from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID, PastedObject
from cgaug.seeds import derive_seed
from cgaug.storage.fs import open_root
from cgaug.storage.png import decode_png
from cgaug.storage.schema import SHARD_SCHEMA
from cgaug.storage.shards import verify, write_index, write_shard
from cgaug.tasks.generation.filter import (
    ACCEPT,
    RECOMPOSE,
    REJECT,
    RETRY,
    FilterInput,
    disagreement,
    filter_stats,
    judge,
    make_judge,
    mask_iou,
    next_action,
    passes,
    refine_label,
    segmentation_miou,
    worst,
)

REPO = Path(__file__).resolve().parents[2]


def square(h: int, w: int, y: int, x: int, side: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y:y + side, x:x + side] = True
    return mask


def shifted(mask: np.ndarray, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    if dx >= 0:
        out[:, dx:] = mask[:, : mask.shape[1] - dx]
    else:
        out[:, :dx] = mask[:, -dx:]
    return out


# --------------------------------------------------------------------------- measures


@pytest.mark.parametrize("side,k", [(20, 0), (20, 5), (20, 10), (30, 7)])
def test_iou_of_a_square_shifted_by_k_pixels(side, k):
    a = square(64, 96, 10, 10, side)
    expected = (side - k) / (side + k)  # overlap side x (side-k), union side x (side+k)
    assert mask_iou(a, shifted(a, k)) == pytest.approx(expected)


def test_iou_edge_cases():
    a = square(16, 16, 0, 0, 4)
    assert mask_iou(a, square(16, 16, 8, 8, 4)) == 0.0
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        mask_iou(a, a[:8])


def test_threshold_comparisons():
    assert passes(0.7, 0.7, strict=False) and not passes(0.7, 0.7, strict=True)
    assert passes(0.71, 0.7, strict=True)
    assert passes(-5.0, None, strict=True)  # None only records
    assert not passes(float("nan"), 0.0, strict=False)  # no evidence never passes a real threshold


def test_miou_by_hand():
    label = np.array([[0, 0, 1, 1, 255, 254]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1, 2, 2]], dtype=np.uint8)
    valid = label < 19
    # class 0: I=1, U=2; class 1: I=2, U=3; void/OOD pixels ignored
    assert segmentation_miou(pred, label, valid) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # a predicted class absent from the label counts with IoU 0
    pred2 = np.array([[0, 0, 1, 5, 0, 0]], dtype=np.uint8)
    assert segmentation_miou(pred2, label, valid) == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert np.isnan(segmentation_miou(pred, label, np.zeros_like(valid)))


def test_disagreement_only_on_in_distribution_pixels():
    label = np.array([[0, 1, 255, 254]], dtype=np.uint8)
    pred = np.array([[0, 2, 3, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(disagreement(pred, label), [[False, True, False, False]])


def test_the_worst_object_decides_and_a_missing_score_is_never_skipped():
    assert worst([0.9, 0.4, 0.8]) == 0.4
    assert np.isnan(worst([float("nan"), 1.0])) and np.isnan(worst([1.0, float("nan")]))


def test_filter_config_presets_and_fingerprint():
    tiny = FilterConfig(mode="tiny", max_attempts=5, sam_iou_threshold=0.4)
    assert tiny.sam_model == tiny.segmenter_model == tiny.clip_model == "tiny"
    assert tiny.sam_iou_threshold == 0.4 and tiny.max_attempts == 5  # explicit values win over the preset
    assert FilterConfig().sam_model == "facebook/sam-vit-huge" and FilterConfig().max_attempts == 3
    off = CGAugConfig()
    assert off.output_fingerprint() == CGAugConfig.model_validate(
        {"filters": {"sam_iou_threshold": 0.1}}).output_fingerprint()  # filtering off: its settings change nothing
    on = CGAugConfig.model_validate({"filters": {"mode": "default"}})
    assert on.output_fingerprint() != off.output_fingerprint()
    assert on.output_fingerprint() != CGAugConfig.model_validate(
        {"filters": {"mode": "default", "sam_iou_threshold": 0.8}}).output_fingerprint()
    assert on.output_fingerprint() == CGAugConfig.model_validate(
        {"filters": {"mode": "default", "batch_size": 1, "device": "cpu"}}).output_fingerprint()
    with pytest.raises(ValueError, match="max_attempts"):
        FilterConfig(max_attempts=0)


# --------------------------------------------------------------------------- labels


def _pasted_scene():
    base = np.zeros((32, 48), dtype=np.uint8)  # road everywhere
    base[:8] = 10  # sky
    pasted = square(32, 48, 12, 12, 10)
    label = base.copy()
    label[pasted] = OOD_TRAIN_ID
    return base, pasted, label


def test_refined_label_void_policy_puts_254_only_on_the_sam_mask():
    base, pasted, label = _pasted_scene()
    sam = shifted(pasted, 3)  # confirms 7 of 10 columns, adds 3 new ones
    refined, ood = refine_label(label, base, pasted, sam)
    np.testing.assert_array_equal(ood, sam)
    np.testing.assert_array_equal(refined == OOD_TRAIN_ID, sam)
    assert (refined[pasted & ~sam] == VOID_TRAIN_ID).all() and (pasted & ~sam).sum() == 30
    untouched = ~(pasted | sam)
    np.testing.assert_array_equal(refined[untouched], base[untouched])


def test_refined_label_original_policy_and_intersection_region():
    base, pasted, label = _pasted_scene()
    sam = shifted(pasted, 3)
    refined, ood = refine_label(label, base, pasted, sam, ood_region="intersection", keep_unconfirmed_as="original")
    np.testing.assert_array_equal(ood, pasted & sam)
    np.testing.assert_array_equal(refined[~ood], base[~ood])  # everything else is the label before pasting
    with pytest.raises(ValueError, match="keep_unconfirmed_as"):
        refine_label(label, base, pasted, sam, keep_unconfirmed_as="guess")


# --------------------------------------------------------------------------- judging with fake models


@dataclass
class ShiftMasker:
    """SAM stand-in: the pasted pixels inside each box, shifted right by `dx` pixels."""

    dx: int
    calls: list = field(default_factory=list)

    def masks(self, images, boxes):
        self.calls.append(len(images))
        out = []
        for image, image_boxes in zip(images, boxes, strict=True):
            masks = []
            for x0, y0, x1, y1 in image_boxes:
                mask = np.zeros(image.shape[:2], dtype=bool)
                mask[y0:y1, x0:x1] = image[y0:y1, x0:x1, 0] == 200  # the fake generator draws objects at 200
                masks.append(shifted(mask, self.dx))
            out.append(masks)
        return out


@dataclass
class FixedSegmenter:
    """Predicts the label's own class except where told; anomaly 5 on object pixels, 0 elsewhere."""

    wrong: np.ndarray | None = None  # pixels predicted as class 18

    def predict(self, images):
        out = []
        for image in images:
            ids = np.zeros(image.shape[:2], dtype=np.uint8)  # the fake labels are road (0) in-distribution
            if self.wrong is not None:
                ids[self.wrong] = 18
            out.append(PixelOutput(ids, np.where(image[..., 0] == 200, 5.0, 0.0).astype(np.float32)))
        return out


class FixedClip:
    def __init__(self, text: float = 0.3, margin: float = 0.1):
        self.text, self.margin = text, margin

    def image_text(self, images, texts):
        return [self.text] * len(images)

    def object_margins(self, images, boxes, names):
        return [[self.margin] * len(b) for b in boxes]


def _input(with_object: bool = True) -> FilterInput:
    h, w = 40, 64
    ood = square(h, w, 10, 20, 12) if with_object else np.zeros((h, w), bool)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[ood] = 200
    label = np.zeros((h, w), dtype=np.uint8)
    label[ood] = OOD_TRAIN_ID
    objects = (PastedObject("dog", "animal", "o1", "src", (20, 10, 32, 22), 1.0, int(ood.sum())),) if with_object \
        else ()
    return FilterInput(image, label, ood, objects, "a dog on the road")


def _cfg(**changes) -> FilterConfig:
    base = {"mode": "default", "sam_iou_threshold": 0.7, "anomaly_threshold": 1.0, "clip_text_threshold": 0.2,
            "clip_object_threshold": 0.0, "consistency_threshold": 0.5}
    return FilterConfig.model_validate({**base, **changes})


def _models(dx: int = 0, **kwargs) -> FilterModels:
    return FilterModels(masker=ShiftMasker(dx), segmenter=FixedSegmenter(**kwargs), clip=FixedClip())


def test_perfect_mask_passes_every_gate_with_known_scores():
    [result] = judge([_input()], _models(dx=0), _cfg())
    assert result.passed and result.reasons == []
    assert result.scores == pytest.approx({"sam_iou": 1.0, "anomaly_mean": 5.0, "clip_image_text": 0.3,
                                           "clip_object_margin": 0.1, "consistency_miou": 1.0})
    np.testing.assert_array_equal(result.confirmed, _input().ood_mask)


def test_shifted_mask_has_the_known_iou_and_the_threshold_decides():
    item = _input()
    [result] = judge([item], _models(dx=3), _cfg())
    assert result.scores["sam_iou"] == pytest.approx(9 / 15)  # 12-px square shifted by 3
    assert not result.passed and result.reasons == ["sam_iou_low"]
    [lenient] = judge([item], _models(dx=3), _cfg(sam_iou_threshold=0.5))
    assert lenient.passed


def test_disjoint_mask_fails_the_object_gate_and_anomaly_uses_the_pasted_mask_when_sam_is_empty():
    [result] = judge([_input()], _models(dx=50), _cfg())  # shifted out of the image: SAM found nothing
    assert result.scores["sam_iou"] == 0.0
    assert result.scores["anomaly_mean"] == pytest.approx(5.0)  # fell back to the pasted mask
    assert result.reasons == ["sam_iou_low"]


def test_each_gate_fails_with_its_own_reason_code():
    item = _input()
    wrong = np.zeros(item.label.shape, bool)
    wrong[30:, :] = True  # 10 of 40 rows of road predicted as bicycle
    models = FilterModels(masker=ShiftMasker(0), segmenter=FixedSegmenter(wrong), clip=FixedClip(0.1, -0.2))
    [result] = judge([item], models, _cfg(anomaly_threshold=6.0))
    road = (item.label < 19).sum()
    expected_miou = ((road - wrong.sum()) / road + 0.0) / 2  # road IoU and bicycle IoU 0
    assert result.scores["consistency_miou"] == pytest.approx(expected_miou)
    assert result.reasons == ["anomaly_mean_low", "clip_image_text_low", "clip_object_margin_low",
                              "consistency_miou_low"]


def test_gates_switch_off_record_only_and_need_their_models():
    item = _input()
    [result] = judge([item], FilterModels(masker=ShiftMasker(3)), _cfg(
        anomaly_gate=False, clip_text_gate=False, clip_object_gate=False, consistency_gate=False,
        sam_iou_threshold=None))
    assert list(result.scores) == ["sam_iou"] and result.passed  # recorded, never rejects
    assert result.gates[0].threshold is None
    with pytest.raises(ValueError, match="clip_text_gate"):
        judge([item], FilterModels(masker=ShiftMasker(0)), _cfg(anomaly_gate=False, consistency_gate=False,
                                                                  clip_object_gate=False))


def test_samples_without_objects_skip_the_object_gates():
    [result] = judge([_input(with_object=False)], _models(), _cfg())
    assert set(result.scores) == {"clip_image_text", "consistency_miou"}
    assert result.confirmed is None and result.passed


def test_every_model_sees_the_whole_batch_once():
    models = _models()
    make_judge(models, _cfg())([_input(), _input(False), _input()])
    assert models.masker.calls == [2]  # the two images with objects, in one call


# --------------------------------------------------------------------------- attempts


def test_next_action_is_bounded():
    cfg = _cfg(max_attempts=3)
    assert [next_action(False, a, 0, False, cfg) for a in range(3)] == [RETRY, RETRY, REJECT]
    assert next_action(True, 0, 0, False, cfg) == ACCEPT
    again = _cfg(max_attempts=3, recompose_after_last_failure=True)
    assert next_action(False, 2, 0, False, again) == RECOMPOSE
    assert [next_action(False, a, 3, True, again) for a in (3, 4, 5)] == [RETRY, RETRY, REJECT]


# --------------------------------------------------------------------------- the shard loop


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

    def run(self, cfg: CGAugConfig, judge=None, models: FilterModels | None = None):
        from cgaug.tasks.generation.compose import usable_classes
        from cgaug.tasks.generation.shard import run_shard

        entries = self.entries(cfg)
        if judge is None and models is not None:
            judge = make_judge(models, cfg.filters)
        generator = FakeGenerator(self.colors)
        rows, stats = run_shard(entries, str(self.source), self.bank, usable_classes(self.bank, cfg.compose), cfg,
                                generator, lambda h, w: {}, judge=judge)
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
    assert stats.counts["rejected"] == stats.counts["dropped_sam_iou_low"] == len(entries)
    assert stats.counts.get("accepted", 0) == 0 and stats.counts["generations"] == 3 * len(entries)
    summary = filter_stats(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA))
    assert summary["accepted"] == 0 and summary["rejected"] == len(entries)
    assert summary["dropped_sam_iou_low"] == len(entries) and summary["attempts"] == {"3": len(entries)}
    assert summary["gates"]["sam_iou"]["n"] == 3 * len(entries) and summary["gates"]["sam_iou"]["pass_rate"] == 0
    assert summary["attempt_pass_rate"] == 0.0


def test_accepted_samples_get_the_sam_label_and_a_noise_mask(shard, tmp_path):
    cfg = _config(max_attempts=2, sam_iou_threshold=0.3, consistency_gate=True, consistency_threshold=None)
    models = FilterModels(masker=ShiftMasker(2), segmenter=FixedSegmenter())
    entries, rows, stats, generator = shard.run(cfg, models=models)
    _write_and_verify(rows, tmp_path)
    assert len(generator.calls) == 1 and stats.counts["accepted"] == len(entries)
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
    assert stats.counts["attempts_2"] == len(entries) - 1 and stats.counts["attempts_3"] == 1


def test_recompose_after_the_last_failure_is_bounded_too(shard, tmp_path):
    cfg = _config(max_attempts=2, sam_iou_threshold=1.0, recompose_after_last_failure=True)
    entries, rows, stats, generator = shard.run(cfg, models=FilterModels(masker=ShiftMasker(0)))
    _write_and_verify(rows, tmp_path)
    assert len(generator.calls) == 4
    assert stats.counts["recomposed"] == len(entries)
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
    assert "generations" not in stats.counts and stats.counts["generated"] == len(entries)


@pytest.mark.slow
def test_smoke_benchmark_runs(tiny_home):
    """`benchmarks/filtering.py --smoke` end to end (a subprocess: ~10 s of imports and tiny models)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tiny_home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / "filtering.py"), "--smoke", "--batch", "2", "--repeats", "1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "filter / generation" in result.stdout
