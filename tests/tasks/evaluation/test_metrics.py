"""Anomaly and segmentation metrics against independent references (sklearn, Hendrycks' code, cityscapesScripts)."""

from __future__ import annotations

import copy
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from cgaug.labels import CITYSCAPES_LABELS
from cgaug.tasks.evaluation import metrics as metrics_module
from cgaug.tasks.evaluation.metrics import (
    FPR_RULES,
    AnomalyAccumulator,
    ConfusionMatrix,
    anomaly_metrics,
    curve_points,
    fpr_at_recall,
    segmentation_metrics,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def tied_data(seed: int, n: int = 30_000, levels: int = 12, dtype=np.float64):
    """Scores on a few levels (heavy ties), labels 0/1 with void values 255 and 2 mixed in."""
    rng = np.random.default_rng(seed)
    scores = (rng.integers(0, levels, n) / (levels - 1)).astype(dtype)
    labels = (rng.random(n) < 0.05 + 0.4 * scores.astype(np.float64)).astype(np.uint8)
    labels[rng.random(n) < 0.1] = 255
    labels[rng.random(n) < 0.02] = 2
    return scores, labels


def valid(scores, labels):
    keep = (labels == 0) | (labels == 1)
    return scores[keep], labels[keep]


# ------------------------------------------------------------------------------------------- sklearn parity


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("levels", "dtype"), [(12, np.float64), (256, np.float32), (3, np.float16), (40, np.int16)])
def test_auroc_and_ap_equal_sklearn_on_heavily_tied_data(seed, levels, dtype):
    scores, labels = tied_data(seed, levels=levels, dtype=np.float64)
    scores = (scores * (levels - 1)).astype(dtype) if dtype == np.int16 else scores.astype(dtype)
    ours = anomaly_metrics(scores, labels)
    s, y = valid(scores.astype(np.float64), labels)
    assert ours["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-9)
    assert ours["ap"] == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_continuous_scores_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=20_000).astype(np.float32)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-2 * scores))).astype(np.int64)
    ours = anomaly_metrics(scores, labels)
    assert ours["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-9)
    assert ours["ap"] == pytest.approx(sklearn_metrics.average_precision_score(labels, scores), abs=1e-9)
    # Untied scores still separate the rules slightly: "first" takes the first ROC point with TPR >= 0.95,
    # "closest" the recall nearest 0.95 and, among the points with that recall (the negatives scored between
    # two positives), the one with the most false positives; both are checked against their reference.
    fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    assert ours["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-15)
    closest = anomaly_metrics(scores, labels, fpr_rule="closest")["fpr95"]
    assert closest == hendrycks_fpr_at_recall(labels, scores.astype(np.float64))
    assert abs(closest - ours["fpr95"]) < 0.002


@pytest.mark.parametrize("seed", range(4))
def test_fpr95_first_is_the_first_roc_point_reaching_95(seed):
    scores, labels = tied_data(seed)
    s, y = valid(scores, labels)
    fpr, tpr, _ = sklearn_metrics.roc_curve(y, s, drop_intermediate=False)
    expected = fpr[np.argmax(tpr >= 0.95)]
    assert anomaly_metrics(scores, labels, "first")["fpr95"] == pytest.approx(expected, abs=1e-12)


def hendrycks_fpr_at_recall(y_true: np.ndarray, y_score: np.ndarray, recall_level: float = 0.95) -> float:
    """hendrycks/outlier-exposure utils/display_results.py `fpr_and_fdr_at_recall` (positives = 1), as copied
    by PEBAL, RPL and the paper's code; reproduced here as the reference for the "closest" rule."""
    desc = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[desc], y_true[desc]
    distinct = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true, dtype=np.float64)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return fps[cutoff] / np.sum(np.logical_not(y_true))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [3, 12, 255])
def test_fpr95_closest_equals_the_papers_code(seed, levels):
    scores, labels = tied_data(seed, n=5_000, levels=levels)
    s, y = valid(scores, labels)
    assert anomaly_metrics(scores, labels, "closest")["fpr95"] == hendrycks_fpr_at_recall(y, s)


def test_fpr95_closest_beyond_one_sweep_chunk_of_distinct_scores():
    """1.5 M distinct, weakly separated scores: more thresholds than one sweep chunk (2**20), in memory and
    streamed in chunks, against the sort-based reference over all 1.5 M scores at once."""
    rng = np.random.default_rng(2024)
    labels = (rng.random(1_500_000) < 0.2).astype(np.uint8)
    scores = rng.normal(size=labels.size) + 0.3 * labels  # positives N(0.3, 1), negatives N(0, 1)
    assert np.unique(scores).size == scores.size > 1 << 20
    expected = hendrycks_fpr_at_recall(labels, scores)
    assert anomaly_metrics(scores, labels, "closest")["fpr95"] == expected
    accumulator = AnomalyAccumulator()
    for part in np.array_split(np.arange(scores.size), 7):
        accumulator.update(scores[part], labels[part])
    assert accumulator.compute("closest")["fpr95"] == expected
    # Sanity: weak separation puts the 95%-recall point deep in the negatives, far from both ends.
    assert 0.8 < expected < 0.95


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
@pytest.mark.parametrize("seed", range(3))
def test_every_metric_is_independent_of_the_sweep_chunk(monkeypatch, chunk, seed):
    """Tiny sweep chunks put chunk boundaries at every kind of threshold (ties, the recall-1 point)."""
    scores, labels = tied_data(seed, n=3_000, levels=40)
    whole = {rule: anomaly_metrics(scores, labels, rule) for rule in FPR_RULES}
    points = curve_points(*_table(scores, labels))
    monkeypatch.setattr(metrics_module, "_SWEEP_CHUNK", chunk)
    s, y = valid(scores, labels)
    assert anomaly_metrics(scores, labels, "closest")["fpr95"] == hendrycks_fpr_at_recall(y, s)
    for rule in FPR_RULES:
        assert anomaly_metrics(scores, labels, rule) == pytest.approx(whole[rule], abs=1e-12)
    for name, values in curve_points(*_table(scores, labels)).items():
        np.testing.assert_allclose(values, points[name], atol=1e-15, err_msg=name)


def pos_neg(positive_scores: list[float], negative_scores: list[float]):
    scores = np.asarray(positive_scores + negative_scores)
    labels = np.r_[np.ones(len(positive_scores)), np.zeros(len(negative_scores))].astype(np.uint8)
    return scores, labels


def test_fpr95_rules_on_example_a_crossing_positive_tied_with_negatives():
    # 10 positives: 9 at 0.9 and 1 at 0.3; 10 negatives: 4 at 0.3 and 6 at 0.1.
    # Thresholds high to low: t=0.9 -> TP 9 (recall 0.9), FP 0; t=0.3 -> TP 10 (recall 1.0), FP 4; t=0.1 -> FP 10.
    # first: the first threshold with recall >= 0.95 is 0.3, where FP = 4 of 10 negatives -> 0.4.
    # closest: candidates t=0.3 (recall 1.0) then t=0.9 (recall 0.9); in float64 |0.9-0.95| = 0.04999..
    # is smaller than |1.0-0.95| = 0.05000..04, so recall 0.9 wins with FP 0 -> 0.0, a recall below 95%.
    scores, labels = pos_neg([0.9] * 9 + [0.3], [0.3] * 4 + [0.1] * 6)
    assert anomaly_metrics(scores, labels, "first")["fpr95"] == 0.4
    assert anomaly_metrics(scores, labels, "closest")["fpr95"] == 0.0
    assert fpr_at_recall(*_table(scores, labels), "first")[1] == pytest.approx(0.3)  # the chosen threshold


def test_fpr95_rules_on_example_b_horizontal_roc_segment_at_95():
    # 20 positives: 19 at 0.9, 1 at 0.2; 20 negatives: 5 at 0.5, 15 at 0.1.
    # t=0.9 -> TP 19 (recall exactly 0.95), FP 0; t=0.5 -> TP 19, FP 5; t=0.2 -> TP 20, FP 5; t=0.1 -> FP 20.
    # first: t=0.9 already reaches 0.95 -> FPR 0/20 = 0.0.
    # closest: candidates t=0.2 (recall 1), t=0.5 (0.95, FP 5), t=0.9 (0.95, FP 0); the first minimum of
    # |recall - 0.95| in that order is t=0.5, the largest FP on the horizontal segment -> 5/20 = 0.25.
    scores, labels = pos_neg([0.9] * 19 + [0.2], [0.5] * 5 + [0.1] * 15)
    assert anomaly_metrics(scores, labels, "first")["fpr95"] == 0.0
    assert anomaly_metrics(scores, labels, "closest")["fpr95"] == 0.25


def test_fpr95_rules_agree_without_ties_example_c():
    # continuous, untied: recall first reaches 0.95 after the 9 positives .95...55 and the 5 negatives .5...3 above
    # the last positive (.1): FP = 5 of 10 -> both rules give 0.5
    scores, labels = pos_neg([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.1],
                             [0.5, 0.45, 0.4, 0.35, 0.3, 0.05, 0.04, 0.03, 0.02, 0.01])
    assert anomaly_metrics(scores, labels, "first")["fpr95"] == 0.5
    assert anomaly_metrics(scores, labels, "closest")["fpr95"] == 0.5


def test_ap_is_the_step_sum_with_the_recall_zero_anchor():
    # y = [0,1,1,0,1] with descending scores: precision at each positive is 1/2, 2/3, 3/5 -> AP = (1/2+2/3+3/5)/3
    # (a trapezoid over the PR points without the (0, 1) anchor would give 0.4611)
    result = anomaly_metrics(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([0, 1, 1, 0, 1]))
    assert result["ap"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3, abs=1e-15)
    # tied example A: sklearn's 0.9714 (step sum), not a trapezoid's 0.9857
    scores, labels = pos_neg([0.9] * 9 + [0.3], [0.3] * 4 + [0.1] * 6)
    assert anomaly_metrics(scores, labels)["ap"] == pytest.approx(0.9 + 0.1 * 10 / 14, abs=1e-15)


def _table(scores, labels):
    accumulator = AnomalyAccumulator()
    accumulator.update(scores, labels)
    return (accumulator.table(),)


def test_curve_points_match_sklearn_roc_and_pr():
    scores, labels = tied_data(7, levels=9)
    points = curve_points(*_table(scores, labels))
    s, y = valid(scores, labels)
    fpr, tpr, _ = sklearn_metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(points["fpr"], fpr, atol=1e-15)
    np.testing.assert_allclose(points["tpr"], tpr, atol=1e-15)
    precision, recall, _ = sklearn_metrics.precision_recall_curve(y, s)
    np.testing.assert_allclose(points["precision"][1:], precision[::-1][1:], atol=1e-15)
    np.testing.assert_allclose(points["tpr"][1:], recall[::-1][1:], atol=1e-15)


# ------------------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.uint8])
def test_streaming_equals_in_memory_exactly(dtype):
    rng = np.random.default_rng(3)
    scores, labels = tied_data(11, n=60_000, levels=97)
    scores = (scores * 96).astype(dtype) if dtype == np.uint8 else scores.astype(dtype)
    whole = {rule: anomaly_metrics(scores, labels, rule) for rule in ("first", "closest")}
    cuts = np.sort(rng.choice(np.arange(1, scores.size), 25, replace=False))
    chunks = list(zip(np.split(scores, cuts), np.split(labels, cuts), strict=True))
    order = rng.permutation(len(chunks))
    first, second = AnomalyAccumulator(), AnomalyAccumulator()
    for i in order:  # any order, any chunking, two workers merged
        (first if i % 2 else second).update(chunks[i][0].reshape(-1, 1), chunks[i][1].reshape(-1, 1))
    first.merge(second)
    for rule in ("first", "closest"):
        assert first.compute(rule) == whole[rule]  # bit-identical, not approximately equal


def test_float16_state_is_fixed_and_exact_for_signed_zero_and_infinities():
    scores = np.array([-0.0, 0.0, np.inf, -np.inf, 1.5, -2.25, 1.5, 0.0], dtype=np.float16)
    labels = np.array([1, 0, 1, 0, 0, 1, 1, 0])
    accumulator = AnomalyAccumulator()
    accumulator.update(scores, labels)
    assert accumulator.nbytes == 2 * 65_536 * 8
    assert accumulator.table().values.tolist() == [-np.inf, -2.25, 0.0, 1.5, np.inf]  # -0.0 and 0.0: one value
    result = accumulator.compute()
    finite = np.clip(scores.astype(np.float64), -1e6, 1e6)  # same order; sklearn refuses infinities
    assert result["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, finite), abs=1e-12)
    assert result["ap"] == pytest.approx(sklearn_metrics.average_precision_score(labels, finite), abs=1e-12)


def weighted_reference(pos_counts: np.ndarray, neg_counts: np.ndarray) -> dict[str, float]:
    """sklearn on one weighted sample per (score level, class): exact for any pixel count."""
    levels = np.arange(pos_counts.size, dtype=np.float64)
    s, y = np.r_[levels, levels], np.r_[np.ones(levels.size), np.zeros(levels.size)]
    w = np.r_[pos_counts, neg_counts].astype(np.float64)
    fpr, tpr, _ = sklearn_metrics.roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    return {"auroc": sklearn_metrics.roc_auc_score(y, s, sample_weight=w),
            "ap": sklearn_metrics.average_precision_score(y, s, sample_weight=w),
            "fpr95": fpr[np.argmax(tpr >= 0.95)]}


def test_1e8_pixels_stream_in_bounded_memory():
    """10^8 pixels of 8-bit scores in 100 images: state 1 MiB, peak < 24 MiB (float64 pairs would be 1.6 GB)."""
    chunk, chunks = 1_000_000, 100
    rng = np.random.default_rng(0)
    accumulator = AnomalyAccumulator()
    pos_counts, neg_counts = np.zeros(256, np.int64), np.zeros(256, np.int64)
    tracemalloc.start()
    try:
        for _ in range(chunks):
            scores = rng.integers(0, 256, chunk, dtype=np.uint8)
            labels = (rng.integers(0, 1024, chunk, dtype=np.uint16) < 8 + scores // 4).astype(np.uint8)
            labels[:1000] = 255
            accumulator.update(scores, labels)
            pos_counts += np.bincount(scores[labels == 1], minlength=256)
            neg_counts += np.bincount(scores[labels == 0], minlength=256)
        result = accumulator.compute()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pos_counts.sum() + neg_counts.sum() == chunks * (chunk - 1000)
    assert accumulator.nbytes == 1 << 20
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    reference = weighted_reference(pos_counts, neg_counts)
    assert result["auroc"] == pytest.approx(reference["auroc"], abs=1e-9)
    assert result["ap"] == pytest.approx(reference["ap"], abs=1e-9)
    assert result["fpr95"] == pytest.approx(reference["fpr95"], abs=1e-12)


def _float32_stream(pixels: int, chunk: int, levels: int) -> dict:
    """Stream float32 scores k / levels (exact in float32); measure the accumulator's own allocations.

    tracemalloc's peak is reset before each accumulator call, so the numbers exclude the test's data.
    """
    rng = np.random.default_rng(1)
    accumulator = AnomalyAccumulator()
    pos_counts, neg_counts = np.zeros(levels, np.int64), np.zeros(levels, np.int64)
    extra = {"update": 0, "compute": 0}
    tracemalloc.start()
    try:
        for _ in range(pixels // chunk):
            k = rng.integers(0, levels, chunk)
            labels = (rng.random(chunk, dtype=np.float32) < 0.02 + 0.1 * k / levels).astype(np.uint8)
            scores = (k / levels).astype(np.float32)
            pos_counts += np.bincount(k[labels == 1], minlength=levels)
            neg_counts += np.bincount(k[labels == 0], minlength=levels)
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            accumulator.update(scores, labels)
            extra["update"] = max(extra["update"], tracemalloc.get_traced_memory()[1] - before)
            del k, labels, scores
        state = accumulator.nbytes
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = accumulator.compute()
        extra["compute"] = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return {"result": result, "reference": weighted_reference(pos_counts, neg_counts), "state": state,
            "distinct": accumulator.table().values.size, **extra}


def _check_float32_stream(pixels: int, chunk: int, levels: int) -> None:
    run = _float32_stream(pixels, chunk, levels)
    distinct = run["distinct"]
    assert distinct == levels
    # the budget (metrics.py docstring): state <= 2 x 20 B per distinct value; on top of it, an update needs
    # ~30 B per pixel of the update and a merge <= 4 x 20 B per distinct value; compute a merge and the sweep
    assert run["state"] <= 2 * 20 * distinct
    assert run["update"] <= 4 * 20 * distinct + 32 * chunk, f"update transient {run['update'] / 2**20:.0f} MiB"
    assert run["compute"] <= 4 * 20 * distinct + (64 << 20), f"compute transient {run['compute'] / 2**20:.0f} MiB"
    for key in ("auroc", "ap", "fpr95"):
        assert run["result"][key] == pytest.approx(run["reference"][key], abs=1e-9)


def test_float32_stream_memory_is_bounded_by_distinct_values():
    start = time.perf_counter()
    _check_float32_stream(pixels=4_000_000, chunk=500_000, levels=1 << 18)
    assert time.perf_counter() - start < 30


@pytest.mark.slow
def test_float32_stream_of_1e8_pixels():
    _check_float32_stream(pixels=100_000_000, chunk=2_000_000, levels=1 << 22)


def test_precision_float16_bounds_float32_scores():
    scores, labels = tied_data(5, levels=50, dtype=np.float32)
    accumulator = AnomalyAccumulator(precision="float16")
    accumulator.update(scores, labels)
    assert accumulator.nbytes == 1 << 20
    assert accumulator.compute() == anomaly_metrics(scores.astype(np.float16), labels)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        anomaly_metrics(np.zeros(4), np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        anomaly_metrics(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"0 positive \(label 1\)"):
        anomaly_metrics(np.array([0.1, 0.2]), np.array([0, 255]))
    with pytest.raises(ValueError, match="unknown FPR rule"):
        anomaly_metrics(np.array([0.1, 0.2]), np.array([0, 1]), fpr_rule="middle")  # type: ignore[arg-type]
    accumulator = AnomalyAccumulator()
    accumulator.update(np.zeros(3, np.float32), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="float64"):
        accumulator.update(np.zeros(3, np.float64), np.array([0, 1, 0]))


# ------------------------------------------------------------------------------------------- segmentation


def test_segmentation_metrics_by_hand():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    prediction = np.array([[0, 1, 1, 1], [2, 7, 0, 255]])
    result = segmentation_metrics(prediction, target)
    # class 0: TP 1, FN 1, FP 0 (the 0 on void is free) -> IoU 1/2, acc 1/2
    # class 1: TP 2, FP 1 -> IoU 2/3, acc 1; class 2: TP 1, FN 1 -> 1/2; class 7: FP 1, no GT -> IoU 0, acc NaN
    assert result["iou"][:3] == [0.5, 2 / 3, 0.5] and result["iou"][7] == 0.0
    assert np.isnan(result["iou"][3]) and np.isnan(result["acc"][7])
    assert result["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5 + 0.0) / 4)
    assert result["macc"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert result["aacc"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match=r"outside 0\.\.18"):
        segmentation_metrics(np.zeros((1, 2)), np.array([[3, 19]]))


def test_miou_equals_cityscapes_official_evaluation(tmp_path):
    """Label-id PNGs through cityscapesscripts' evaluateImgLists vs our confusion matrix on train ids."""
    evaluation = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    rng = np.random.default_rng(0)
    train_to_id = {label.train_id: label.id for label in CITYSCAPES_LABELS if label.train_id != 255}
    id_to_train = np.full(256, 255, np.uint8)
    for label in CITYSCAPES_LABELS:
        id_to_train[label.id] = label.train_id
    present = [7, 8, 11, 21, 23, 24, 26]  # road, sidewalk, building, vegetation, sky, person, car (others absent)
    ignored = [0, 1, 4, 5]  # unlabeled, ego vehicle, static, dynamic: void in the evaluation
    matrix = ConfusionMatrix()
    predictions, truths = [], []
    for i in range(3):
        gt = rng.choice(present + ignored, size=(32, 48)).astype(np.uint8)
        pred_train = np.where(rng.random(gt.shape) < 0.7, id_to_train[gt], rng.choice([0, 1, 2, 8, 10, 11, 13],
                                                                                         size=gt.shape))
        pred_train = np.where(pred_train == 255, 0, pred_train).astype(np.uint8)
        pred_ids = np.vectorize(train_to_id.get)(pred_train).astype(np.uint8)
        pred_ids[:2, :4] = 4  # a predicted ignored label id ("static"): a false negative, not a false positive
        pred_train[:2, :4] = 255
        gt[5, :] = 17  # pole: present in the ground truth, never predicted
        pred_train[6, :3], pred_ids[6, :3] = 16, 31  # train: predicted, absent from the ground truth
        for name, array in (("gt", gt), ("pred", pred_ids)):
            path = tmp_path / f"{name}{i}_gtFine_labelIds.png"
            Image.fromarray(array).save(path)
            (truths if name == "gt" else predictions).append(str(path))
        matrix.update(pred_train, id_to_train[gt])
    args = copy.copy(evaluation.args)
    args.evalInstLevelScore, args.JSONOutput, args.quiet, args.colorized = False, False, True, False
    args.bold = args.nocol = ""
    official = evaluation.evaluateImgLists(predictions, truths, args)
    ours = matrix.compute()
    for train_id, label_id in train_to_id.items():
        name = next(label.name for label in CITYSCAPES_LABELS if label.id == label_id)
        expected = official["classScores"][name]
        assert (np.isnan(expected) and np.isnan(ours["iou"][train_id])) or \
            ours["iou"][train_id] == pytest.approx(expected, abs=1e-12), name
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-12)
    assert sum(not np.isnan(v) for v in ours["iou"]) == 9  # 8 classes present + train (predicted only)


# ------------------------------------------------------------------------------------------- components (SMIYC)


def test_component_metrics_toy_1_partial_hit_and_false_positive():
    from cgaug.tasks.evaluation.metrics import ComponentMetrics

    labels = np.zeros((8, 10), np.uint8)
    labels[1:3, 1:3] = 1  # GT component A (4 px)
    labels[5:7, 6:8] = 1  # GT component B (4 px), never predicted
    labels[5, 0:2] = 255  # void
    scores = np.zeros((8, 10))
    scores[1:3, 1:5] = 1.0  # 8 px: A plus 4 background pixels
    scores[4:6, 0:2] = 1.0  # 2 px on background + 2 px on void (cleared before labelling)
    metrics = ComponentMetrics(threshold=0.5)
    metrics.update(scores, labels)
    # sIoU(A) = 4 / (8 + 4 - 4 - 0) = 0.5, sIoU(B) = 0; PPV = 4/8 and 0/2.
    assert sorted(metrics.siou) == [0.0, 0.5] and sorted(metrics.ppv) == [0.0, 0.5]
    result = metrics.compute()
    # t <= 0.5 (6 of 11 thresholds): TP 1, FN 1, FP 1 -> F1 0.5; above: TP 0 -> 0. Mean 6 * 0.5 / 11.
    assert result["f1"][:6] == [0.5] * 6 and result["f1"][6:] == [0.0] * 5
    assert result["mean_f1"] == pytest.approx(3 / 11)
    assert result["siou"] == 0.25 and result["ppv"] == 0.25


def test_component_metrics_toy_2_one_prediction_over_two_neighbours():
    from cgaug.tasks.evaluation.metrics import ComponentMetrics

    labels = np.zeros((6, 8), np.uint8)
    labels[2:4, 1:3] = 1
    labels[2:4, 4:6] = 1  # two 4-px blobs one column apart (not 8-connected)
    scores = np.zeros((6, 8))
    scores[2:4, 1:6] = 1.0  # one 10-px prediction over both and the gap
    metrics = ComponentMetrics(threshold=0.5)
    metrics.update(scores, labels)
    # sIoU = 4 / (10 + 4 - 4 - 4) = 2/3 for each (the other blob is not counted against it); PPV = 8/10
    assert metrics.siou == pytest.approx([2 / 3, 2 / 3]) and metrics.ppv == [0.8]
    assert metrics.compute()["mean_f1"] == pytest.approx(9 / 11)  # thresholds 0.25..0.65 pass, 0.70 and 0.75 fail


def test_component_size_filters():
    from cgaug.tasks.evaluation.metrics import ComponentMetrics

    labels = np.zeros((8, 8), np.uint8)
    labels[0:3, 0] = 1  # a 3-px GT component: void under min_gt_size=4
    labels[5:7, 5:7] = 1
    scores = np.zeros((8, 8))
    scores[0:3, 0] = 1.0  # predicted on the now-void small object: cleared
    scores[5:7, 5:7] = 1.0
    scores[3, 3:5] = 1.0  # a 2-px prediction: dropped under min_prediction_size=3
    metrics = ComponentMetrics(threshold=0.5, min_prediction_size=3, min_gt_size=4)
    metrics.update(scores, labels)
    assert metrics.siou == [1.0] and metrics.ppv == [1.0]


def test_component_size_is_taken_before_small_gt_objects_become_void():
    """SMIYC filters predicted components by size first and voids small GT objects afterwards."""
    from cgaug.tasks.evaluation.metrics import ComponentMetrics

    labels = np.zeros((10, 10), np.uint8)
    labels[1, 1:4] = 1  # a 3-px GT object: void under min_gt_size=4
    labels[5:8, 5:8] = 1  # a 9-px GT object
    scores = np.zeros((10, 10))
    scores[1, 1:8] = 1.0  # 7 px: the small object (3) and 4 background pixels to its right
    scores[5:8, 5:8] = 1.0  # exactly the 9-px object
    metrics = ComponentMetrics(threshold=0.5, min_prediction_size=6, min_gt_size=4)
    metrics.update(scores, labels)
    # SMIYC order: the row-1 component has 7 px >= 6 and stays; voiding the small object then leaves its
    # 4 background pixels, none on GT: PPV 0, a false positive at every threshold. The 9-px object is
    # predicted exactly: sIoU 1, PPV 1. (Voiding first would leave a 4-px component, dropped as < 6.)
    assert metrics.siou == [1.0] and metrics.ppv == [0.0, 1.0]
    # Every threshold: TP 1, FN 0, FP 1 -> F1 2/3.
    assert metrics.compute()["mean_f1"] == pytest.approx(2 / 3)


def test_component_crossing_a_voided_small_object_stays_one_component():
    from cgaug.tasks.evaluation.metrics import ComponentMetrics

    labels = np.zeros((6, 12), np.uint8)
    labels[2, 4:6] = 1  # a 2-px GT object: void under min_gt_size=3
    labels[1:5, 8:11] = 1  # a 12-px GT object, two columns right of it (not 8-connected)
    scores = np.zeros((6, 12))
    scores[2, 1:10] = 1.0  # one 9-px line: 3 background, 2 on the small object, 2 background, 2 on the big one
    metrics = ComponentMetrics(threshold=0.5, min_gt_size=3)
    metrics.update(scores, labels)
    # SMIYC order: the line is labelled before the small object becomes void, so it stays one component,
    # restricted to the 7 pixels left in the ROI (cols 1-3 and 6-9), 2 of them on the big object:
    # PPV = 2/7; sIoU(big) = 2 / (7 + 12 - 2 - 0) = 2/17. (Voiding first would split it into a 3-px
    # component with PPV 0 and a 4-px one with PPV 1/2, and give sIoU 2 / (4 + 12 - 2) = 1/7.)
    assert metrics.siou == pytest.approx([2 / 17]) and metrics.ppv == pytest.approx([2 / 7])
