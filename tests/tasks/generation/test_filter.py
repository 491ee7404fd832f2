"""Gates, the judge and the retry policy, with fake models whose right answers are known."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cgaug.config import CGAugConfig, FilterConfig
from cgaug.models.filters.base import FilterModels
from cgaug.records import OOD_TRAIN_ID, PastedObject
from cgaug.tasks.generation.filter import judge, make_judge
from cgaug.tasks.generation.gates import GATES, FilterInput, passes
from cgaug.tasks.generation.retry import ACCEPT, RECOMPOSE, REJECT, RETRY, next_action
from tests.tasks.generation.fakes import FixedClip, FixedSegmenter, ShiftMasker, square

REPO = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------- gates


def test_threshold_comparisons():
    assert passes(0.7, 0.7, strict=False) and not passes(0.7, 0.7, strict=True)
    assert passes(0.71, 0.7, strict=True)
    assert passes(-5.0, None, strict=True)  # None only records
    assert not passes(float("nan"), 0.0, strict=False)  # no evidence never passes a real threshold


def test_every_gate_names_its_config_fields_and_model():
    """The registry is the one place a gate is declared: its fields and model must exist where they are read."""
    assert len({g.name for g in GATES}) == len(GATES)
    for gate in GATES:
        assert isinstance(FilterConfig.model_fields[gate.switch].default, bool), gate.name
        assert gate.threshold_field in FilterConfig.model_fields and gate.model_field in FilterConfig.model_fields
        assert gate.model in FilterModels.__dataclass_fields__ and gate.reason == f"{gate.name}_low"


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


# --------------------------------------------------------------------------- judging with fake models


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


# --------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_smoke_benchmark_runs(tiny_home):
    """`benchmarks/filtering.py --smoke` end to end (a subprocess: ~10 s of imports and tiny models)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tiny_home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / "filtering.py"), "--smoke", "--batch", "2", "--repeats", "1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "filter / generation" in result.stdout
