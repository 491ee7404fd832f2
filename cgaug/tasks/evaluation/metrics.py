"""Pixel-level anomaly metrics (AUROC, AP, FPR@95) and segmentation metrics (IoU, accuracy).

Definitions are those of `docs/metrics.md`: positives are label 1 (OOD),
negatives label 0, every other label value is void; a higher score is more
anomalous; pixels are pooled over the whole dataset, never averaged per image.

Why a table of distinct scores. All three anomaly metrics depend on the data
only through, for every distinct score value, how many positives and how many
negatives have that score. Holding that table instead of the pixels makes the
metrics exact with ties (thresholds are the distinct values themselves, no
bins) and lets images be added one at a time: `AnomalyAccumulator` keeps a few
sorted runs of (value, #pos, #neg) and merges them like an LSM tree, so adding
a run costs amortised O(n log n) and nothing holds a float64 copy of every
pixel.

Memory budget of `AnomalyAccumulator` (D = number of distinct score values seen):
- float16 scores, or `precision="float16"`: a fixed dense table of 2 x 65,536
  int64 counters = 1 MiB, whatever the number of pixels.
- float32 scores: the state is at most 2 x 20 bytes x D (a 4-byte value and two
  int64 counts per entry; runs waiting to be merged may repeat a value). D is
  bounded by the score's range, not by the pixel count: a float32 has 2**23
  values per octave, so scores within [1, 64) have D <= 50.3 M, softmax scores
  in [2**-10, 1] D <= 84 M, 8-bit heat maps D <= 256.
- float64 scores: 24 bytes per entry and no range bound; pass
  `precision="float32"` to get the float32 bound.
On top of the state, while it runs: `update` needs ~30 bytes per pixel of that
update (masks, the valid scores and their sort) and, when it merges runs, up to
4 x 20 bytes x D; `compute` needs one merge and a sweep buffer of ~56 MiB.
Measured (benchmarks/metrics.py, 2 shared CPU cores, 10^8 pixels in 10^6-pixel images):
8-bit scores: 1 MiB state, 22 MiB peak, 55 Mpx/s; float32 scores with D = 4.2 M:
127 MiB state, 363 MiB peak, 3.7 Mpx/s; uniform float32 (D = 16.7 M): 386 MiB
state, 1.3 GiB peak, 2.4 Mpx/s. scikit-learn needs 0.55-0.9 GiB and 7-11 s for
10^7 pixels held in memory (about ten times that for 10^8); on the same
10^7-pixel arrays `anomaly_metrics` takes 0.3-0.9 s and agrees to 1e-16.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

FprRule = Literal["first", "closest"]
FPR_RULES: tuple[str, ...] = ("first", "closest")
Precision = Literal["float16", "float32", "float64"]
RECALL_LEVEL = 0.95
POSITIVE = 1
NEGATIVE = 0

_DENSE_BINS = 1 << 16  # every float16 bit pattern
_INT64_SAFE = 1 << 62  # 2*P*N below this: AUROC numerator summed exactly in int64
_SWEEP_CHUNK = 1 << 20  # thresholds per step of the metric sweep


@dataclass(frozen=True)
class ScoreTable:
    """Distinct score values in ascending order with the number of positive and negative pixels at each."""

    values: np.ndarray
    pos: np.ndarray  # int64
    neg: np.ndarray  # int64

    @property
    def positives(self) -> int:
        return int(self.pos.sum())

    @property
    def negatives(self) -> int:
        return int(self.neg.sum())

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.pos.nbytes + self.neg.nbytes)

    def quantile(self, q: float) -> float:
        """The smallest score with at least a fraction `q` of all counted pixels at or below it."""
        counts = np.cumsum(self.pos + self.neg)
        if counts.size == 0 or counts[-1] == 0:
            raise ValueError("no pixels were counted: cannot take a quantile of an empty score table")
        index = int(np.searchsorted(counts, q * counts[-1], side="left"))
        return float(self.values[min(index, counts.size - 1)])


# ---------------------------------------------------------------------------------------------------------
# anomaly metrics from a score table


@dataclass(frozen=True)
class _Chunk:
    """A slice of the thresholds, high to low, with cumulative TP / FP (predicted positive: score >= t)."""

    start: int  # index of the first threshold of the chunk, counted from the highest
    thresholds: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    tp: np.ndarray
    fp: np.ndarray


def _sweep(table: ScoreTable) -> Iterator[_Chunk]:
    """The table from the highest threshold down, `_SWEEP_CHUNK` thresholds at a time.

    Chunks bound the metrics' working memory (cumulative counts, ratios) to ~50 bytes x the chunk,
    whatever the table's size.
    """
    tp0 = fp0 = 0
    hi = table.values.size
    while hi > 0:
        lo = max(0, hi - _SWEEP_CHUNK)
        pos, neg = table.pos[lo:hi][::-1], table.neg[lo:hi][::-1]
        tp, fp = np.cumsum(pos) + tp0, np.cumsum(neg) + fp0
        yield _Chunk(table.values.size - hi, table.values[lo:hi][::-1], pos, neg, tp, fp)
        tp0, fp0, hi = int(tp[-1]), int(fp[-1]), lo


def _check_classes(table: ScoreTable) -> tuple[int, int]:
    n_pos, n_neg = table.positives, table.negatives
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"anomaly metrics need both classes; found {n_pos} positive (label 1) and {n_neg} "
                         "negative (label 0) pixels (every other label value is void)")
    return n_pos, n_neg


def auroc(table: ScoreTable) -> float:
    """Area under the ROC curve, trapezoidal over distinct thresholds (ties count 1/2: sklearn's value).

    Each negative contributes the positives scored strictly above it plus half of those tied with it:
    sum_k neg_k * (2 * TP_{k-1} + pos_k) / (2 P N), summed in exact integers while 2PN < 2**62 (up to
    about 4e9 pixels), in float64 beyond.
    """
    n_pos, n_neg = _check_classes(table)
    exact = 2 * n_pos * n_neg < _INT64_SAFE
    total: int | float = 0
    for c in _sweep(table):
        terms = 2 * (c.tp - c.pos) + c.pos
        total += int(np.dot(c.neg, terms)) if exact else float(np.dot(c.neg.astype(float), terms.astype(float)))
    return total / (2 * n_pos * n_neg)


def average_precision(table: ScoreTable) -> float:
    """Step-sum AP, sum_k (R_k - R_{k-1}) * Prec_k, starting at (recall 0, precision 1): sklearn's value."""
    n_pos, _ = _check_classes(table)
    total = 0.0
    for c in _sweep(table):
        hit = c.pos > 0
        total += float(np.sum(c.pos[hit] / n_pos * (c.tp[hit] / (c.tp[hit] + c.fp[hit]))))
    return total


def fpr_at_recall(table: ScoreTable, rule: FprRule = "first", level: float = RECALL_LEVEL) -> tuple[float, float]:
    """(FPR, threshold) at the operating point for TPR `level`; scores >= threshold count as anomalous.

    rule "first": the first (highest) threshold whose TPR >= level, no interpolation (SMIYC, Fishyscapes).
    rule "closest": Hendrycks' `fpr_and_fdr_at_recall` (copied by PEBAL, RPL and the paper's code): the
    candidates run from the first threshold reaching recall 1 back to the highest threshold, and the
    first candidate minimising |recall - level| in float64 wins. On tied scores it can pick a recall
    below `level` (|0.9 - 0.95| < |1.0 - 0.95| in float64), and on a horizontal ROC segment it picks the
    largest FP (lowest threshold). Its extra final candidate (recall 1, FP 0) ties with the first
    recall-1 threshold, which comes first, so it can never win and is left out here. The candidates are
    scanned chunk by chunk (`_sweep`), a chunk without the recall-1 threshold contributing all of its
    thresholds; among equal distances in different chunks the later (lower-threshold) chunk wins.
    """
    n_pos, n_neg = _check_classes(table)
    if rule not in FPR_RULES:
        raise ValueError(f"unknown FPR rule {rule!r}; expected one of {', '.join(FPR_RULES)}")
    best = (float("inf"), 0.0, 0.0)  # (distance, fpr, threshold)
    for c in _sweep(table):
        recall = c.tp / n_pos
        if rule == "first":
            k = int(np.searchsorted(recall, level, side="left"))
            if k < recall.size:
                return float(c.fp[k] / n_neg), float(c.thresholds[k])
            continue
        full = int(np.searchsorted(c.tp, n_pos, side="left"))  # the first TP == P, if in this chunk
        end = min(full + 1, recall.size)  # candidates: this chunk's thresholds down to that one
        distance = np.abs(recall[:end] - level)
        k = end - 1 - int(np.argmin(distance[::-1]))  # the last minimum = first in the reversed order
        if distance[k] <= best[0]:  # later chunks hold later (lower) thresholds: ties go to them
            best = (float(distance[k]), float(c.fp[k] / n_neg), float(c.thresholds[k]))
        if full < recall.size:
            break
    return best[1], best[2]


def table_metrics(table: ScoreTable, fpr_rule: FprRule = "first") -> dict[str, float]:
    """{'auroc', 'ap', 'fpr95'} of a score table."""
    return {"auroc": auroc(table), "ap": average_precision(table), "fpr95": fpr_at_recall(table, fpr_rule)[0]}


def curve_points(table: ScoreTable, max_points: int | None = None) -> dict[str, np.ndarray]:
    """ROC and PR curves at every distinct threshold (or ~max_points of them, evenly spread, for plots).

    Returns arrays 'threshold', 'fpr', 'tpr', 'precision' (recall = tpr), starting at the (FPR 0, TPR 0,
    precision 1) point above the highest score and ending at (1, 1).
    """
    n_pos, n_neg = _check_classes(table)
    size = table.values.size
    keep = np.arange(size) if max_points is None or size <= max_points else \
        np.unique(np.linspace(0, size - 1, max_points).round().astype(np.int64))
    parts: dict[str, list[np.ndarray]] = {"threshold": [np.array([np.inf])], "fpr": [np.zeros(1)],
                                          "tpr": [np.zeros(1)], "precision": [np.ones(1)]}
    for c in _sweep(table):
        local = keep[(keep >= c.start) & (keep < c.start + c.tp.size)] - c.start
        tp, fp = c.tp[local], c.fp[local]
        parts["threshold"].append(c.thresholds[local].astype(np.float64))
        parts["fpr"].append(fp / n_neg)
        parts["tpr"].append(tp / n_pos)
        parts["precision"].append(tp / (tp + fp))
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


# ---------------------------------------------------------------------------------------------------------
# building score tables


def _valid_scores(scores: np.ndarray, labels: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The positive and the negative scores as 1-D arrays of `dtype`; -0.0 becomes 0.0 (one threshold)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores have shape {scores.shape} but labels {labels.shape}; expected the same shape")
    if not (np.issubdtype(scores.dtype, np.number) or scores.dtype == bool):
        raise TypeError(f"scores must be numeric; found dtype {scores.dtype}")
    out = []
    for value in (POSITIVE, NEGATIVE):
        picked = scores[labels == value].astype(dtype, copy=False)
        if picked.size and np.issubdtype(dtype, np.floating):
            if np.isnan(picked).any():
                raise ValueError(f"scores contain NaN at {int(np.isnan(picked).sum())} labelled pixels; "
                                 "expected finite or infinite numbers")
            picked = picked + dtype.type(0)  # -0.0 + 0.0 == +0.0: one bit pattern per value (dense keys)
        out.append(picked)
    return out[0], out[1]


def _unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(values)
    if values.size == 0:
        return values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    counts = np.diff(np.r_[starts, values.size]).astype(np.int64)
    return values[starts], counts


def _merge(a: ScoreTable, b: ScoreTable) -> ScoreTable:
    """The table of the union of two tables' pixels (values unique and sorted in each); inputs unchanged.

    A linear merge, not a re-sort: the smaller table's values are located in the larger one by binary
    search; values new to the larger table are inserted (one O(n + m) copy) and shared values add their
    counts at their shifted positions.
    """
    if a.values.size < b.values.size:
        a, b = b, a
    if b.values.size == 0:
        return a
    at = np.searchsorted(a.values, b.values)
    shared = at < a.values.size
    shared[shared] = a.values[at[shared]] == b.values[shared]
    new = ~shared
    at_new, at_shared = at[new], at[shared]
    if at_new.size:
        slots = np.zeros(a.values.size + at_new.size, dtype=bool)
        slots[at_new + np.arange(at_new.size)] = True  # where b's new values land (at_new is sorted)
        values, pos, neg = (_interleave(x, y[new], slots) for x, y in
                            ((a.values, b.values), (a.pos, b.pos), (a.neg, b.neg)))
        at_shared = at_shared + np.searchsorted(at_new, at_shared, side="right")  # a's entries moved up
    else:
        values, pos, neg = a.values, a.pos.copy(), a.neg.copy()
    pos[at_shared] += b.pos[shared]  # distinct positions (b's values are unique): no np.add.at needed
    neg[at_shared] += b.neg[shared]
    return ScoreTable(values, pos, neg)


def _interleave(kept: np.ndarray, inserted: np.ndarray, slots: np.ndarray) -> np.ndarray:
    out = np.empty(slots.size, dtype=kept.dtype)
    out[slots] = inserted
    out[~slots] = kept
    return out


def _sparse_table(pos_scores: np.ndarray, neg_scores: np.ndarray) -> ScoreTable:
    pv, pc = _unique_counts(pos_scores)
    nv, nc = _unique_counts(neg_scores)
    return _merge(ScoreTable(pv, pc, np.zeros_like(pc)), ScoreTable(nv, np.zeros_like(nc), nc))


def _float16_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint16 keys of float16 values (negatives: all bits flipped; others: sign bit set)."""
    bits = values.view(np.uint16)
    return np.where(bits & 0x8000, ~bits, bits | 0x8000)


def _float16_from_keys(keys: np.ndarray) -> np.ndarray:
    keys = keys.astype(np.uint16)
    bits = np.where(keys & 0x8000, keys & 0x7FFF, ~keys)
    return bits.astype(np.uint16).view(np.float16)


def _score_dtype(dtype: np.dtype) -> np.dtype:
    """The float type a score dtype is held in exactly (bool/uint8 -> float16, int32 -> float64, ...)."""
    if dtype.kind == "b":
        return np.dtype(np.float16)
    return np.result_type(dtype, np.float16)


class AnomalyAccumulator:
    """Streaming, exact AUROC / AP / FPR@95 over any number of images (memory: see the module docstring).

    Args:
        precision: the float type scores are held in. None takes the first update's type (exact for it);
            later updates must cast to it losslessly, else a clear error. "float16" gives a fixed 1 MiB
            state and is exact for float16-rounded scores (what SMIYC stores); "float32" bounds the state
            of float64 scores.

    `update` may be called with images of any size; `merge` combines accumulators of parallel workers.
    The result equals `anomaly_metrics` on all pixels at once, bit for bit.
    """

    def __init__(self, precision: Precision | None = None):
        self._dtype: np.dtype | None = None if precision is None else np.dtype(precision)
        self._forced = precision is not None
        self._dense: np.ndarray | None = None  # (2, 65536) int64 counts: row 0 positives, row 1 negatives
        self._runs: list[tuple[int, ScoreTable]] = []  # (number of updates merged in, table)

    @property
    def dtype(self) -> np.dtype | None:
        return self._dtype

    def _fix_dtype(self, scores: np.ndarray) -> np.dtype:
        wanted = _score_dtype(np.asarray(scores).dtype)
        if self._dtype is None:
            self._dtype = wanted
        elif not self._forced and not np.can_cast(wanted, self._dtype, casting="safe"):
            raise ValueError(f"scores of dtype {np.asarray(scores).dtype} cannot be held exactly in {self._dtype} "
                             "(the type of the first update); pass precision='float64' (or the wider type) "
                             "when creating the accumulator")
        return self._dtype

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one image (or any array) of scores with its labels (1 = OOD, 0 = in-distribution, else void)."""
        dtype = self._fix_dtype(scores)
        pos, neg = _valid_scores(scores, labels, dtype)
        if dtype == np.float16:
            if self._dense is None:
                self._dense = np.zeros((2, _DENSE_BINS), dtype=np.int64)
            self._dense[0] += np.bincount(_float16_keys(pos), minlength=_DENSE_BINS)
            self._dense[1] += np.bincount(_float16_keys(neg), minlength=_DENSE_BINS)
            return
        if pos.size or neg.size:
            self._push(_sparse_table(pos, neg))

    def _push(self, table: ScoreTable, weight: int = 1) -> None:
        """Add a run and keep the runs small and few.

        Runs merge like a binary counter over the number of updates they hold (O(log n) runs, every entry
        merged O(log n) times). When images repeat the same values (quantised scores), runs overlap; once
        they hold more than twice the entries of the largest run, all are merged. So the state never exceeds
        twice the table of distinct values, and each full merge follows as many new entries as it costs.
        """
        self._runs.append((weight, table))
        while len(self._runs) > 1 and self._runs[-2][0] <= self._runs[-1][0]:
            self._merge_last()
        sizes = [run.values.size for _, run in self._runs]
        if len(sizes) > 1 and sum(sizes) > 2 * max(sizes):
            while len(self._runs) > 1:
                self._merge_last()

    def _merge_last(self) -> None:
        weight, last = self._runs.pop()
        previous_weight, previous = self._runs[-1]
        self._runs[-1] = (previous_weight + weight, _merge(previous, last))

    def merge(self, other: AnomalyAccumulator) -> None:
        """Add every pixel counted by `other` (e.g. another worker's share of the dataset)."""
        if other._dtype is not None:
            self._fix_dtype(np.empty(0, dtype=other._dtype))
        table = other.table()
        if self._dtype == np.float16:
            if self._dense is None:
                self._dense = np.zeros((2, _DENSE_BINS), dtype=np.int64)
            keys = _float16_keys(table.values.astype(np.float16))
            np.add.at(self._dense[0], keys, table.pos)
            np.add.at(self._dense[1], keys, table.neg)
        elif table.values.size:
            weight = sum(w for w, _ in other._runs) or 1
            self._push(ScoreTable(table.values.astype(self._dtype), table.pos, table.neg), weight)

    def table(self) -> ScoreTable:
        """Every distinct score seen, ascending, with its positive and negative counts."""
        if self._dense is not None:
            keys = np.flatnonzero(self._dense.sum(axis=0))
            return ScoreTable(_float16_from_keys(keys), self._dense[0, keys].copy(), self._dense[1, keys].copy())
        while len(self._runs) > 1:
            self._merge_last()
        if self._runs:
            return self._runs[0][1]
        empty = np.zeros(0, dtype=np.int64)
        return ScoreTable(np.zeros(0, dtype=self._dtype or np.float32), empty, empty)

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator's state now (not counting Python object overhead)."""
        dense = self._dense.nbytes if self._dense is not None else 0
        return dense + sum(run.nbytes for _, run in self._runs)

    def compute(self, fpr_rule: FprRule = "first") -> dict[str, float]:
        """{'auroc', 'ap', 'fpr95'} over every pixel added so far."""
        return table_metrics(self.table(), fpr_rule)


def anomaly_metrics(scores: np.ndarray, labels: np.ndarray, fpr_rule: FprRule = "first") -> dict[str, float]:
    """{'auroc', 'ap', 'fpr95'} of per-pixel anomaly scores (higher = more anomalous).

    Args:
        scores: any numeric array; held exactly in its own float type (bool/uint8 as float16).
        labels: same shape; 1 = anomaly (positive), 0 = in-distribution (negative), any other value is void.
        fpr_rule: "first" (default: first threshold with TPR >= 0.95) or "closest" (the paper's code).

    Raises:
        ValueError: shapes differ, a score is NaN, or either class has no pixel.
    """
    accumulator = AnomalyAccumulator()
    accumulator.update(scores, labels)
    return accumulator.compute(fpr_rule)


# ---------------------------------------------------------------------------------------------------------
# segmentation metrics


class ConfusionMatrix:
    """Pixel counts of (ground-truth class, predicted class) over a dataset, void ground truth excluded.

    The matrix has one extra column, "other", for predictions outside 0..num_classes-1 (e.g. 255): they
    are false negatives of the true class and false positives of no class, as in the Cityscapes
    evaluation, where predicting an ignored label id costs recall only.
    """

    def __init__(self, num_classes: int = 19, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        prediction, target = np.asarray(prediction), np.asarray(target)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction has shape {prediction.shape} but target {target.shape}; "
                             "expected the same shape (upsample predictions to the label size)")
        valid = target != self.ignore_index
        truth = target[valid].astype(np.int64)
        if truth.size and (truth.min() < 0 or truth.max() >= self.num_classes):
            bad = np.unique(truth[(truth < 0) | (truth >= self.num_classes)])[:10].tolist()
            raise ValueError(f"target holds values {bad} outside 0..{self.num_classes - 1} and the ignore index "
                             f"{self.ignore_index}; expected train ids")
        predicted = prediction[valid].astype(np.int64)
        predicted = np.where((predicted >= 0) & (predicted < self.num_classes), predicted, self.num_classes)
        cells = self.num_classes * (self.num_classes + 1)
        counts = np.bincount(truth * (self.num_classes + 1) + predicted, minlength=cells)
        self.matrix += counts.reshape(self.num_classes, self.num_classes + 1)

    def merge(self, other: ConfusionMatrix) -> None:
        if other.matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot merge confusion matrices of shapes {other.matrix.shape} and "
                             f"{self.matrix.shape}")
        self.matrix += other.matrix

    def compute(self) -> dict[str, float | list[float]]:
        """mIoU, mAcc (mean per-class recall), aAcc (overall pixel accuracy) and per-class IoU / accuracy.

        Classes absent from both ground truth and prediction have IoU NaN and are skipped by the mean;
        classes absent from the ground truth have accuracy NaN. Means over no class are NaN.
        """
        square = self.matrix[:, : self.num_classes]
        tp = np.diag(square).astype(np.float64)
        gt = self.matrix.sum(axis=1).astype(np.float64)  # TP + FN (FN includes "other" predictions)
        predicted = square.sum(axis=0).astype(np.float64)  # TP + FP, over non-void ground truth only
        union = gt + predicted - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = gt.sum()
        return {
            "miou": _nanmean(iou),
            "macc": _nanmean(acc),
            "aacc": float(tp.sum() / total) if total else float("nan"),
            "iou": iou.tolist(),
            "acc": acc.tolist(),
        }


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def segmentation_metrics(prediction: np.ndarray, target: np.ndarray, num_classes: int = 19,
                         ignore_index: int = 255) -> dict[str, float | list[float]]:
    """mIoU / mAcc / aAcc and per-class IoU and accuracy of train-id maps (see `ConfusionMatrix`)."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    matrix.update(prediction, target)
    return matrix.compute()


# ---------------------------------------------------------------------------------------------------------
# component-level metrics (SMIYC)

F1_THRESHOLDS = np.linspace(0.25, 0.75, 11)


class ComponentMetrics:
    """SegmentMeIfYouCan's component-level metrics: mean sIoU (per GT component), mean PPV (per predicted
    component) and mean F1 over sIoU/PPV thresholds 0.25..0.75 (11 steps), counted over the whole dataset.

    Per frame (research/metrics.md 1.2), in the order of SMIYC's `default_instancer`
    (road-anomaly-benchmark `metrics/instance_segmentation.py`): the prediction is `score > threshold`
    (strict) with void pixels cleared; GT and predicted components are 8-connected; predicted components
    under `min_prediction_size` pixels are dropped; then GT components under `min_gt_size` pixels become
    void and everything is restricted to the remaining non-void pixels (SMIYC: 500/100 on the anomaly
    track, 50/10 on the obstacle track). The order matters: a prediction's size is taken before it loses
    its pixels on a voided small object, and a prediction crossing such an object stays one component.

    For a GT component k, with K the union of the predicted components touching it, sIoU = |k & K| /
    (|K| + |k| - |k & K| - |K on other GT components|), so a prediction covering two neighbouring objects
    is not punished for the other one. The PPV of a predicted component is the fraction of it on GT
    components. At threshold t, TP = #GT components with sIoU >= t, FN = the others, FP = #predicted
    components with PPV < t. SMIYC takes `threshold` as the best-F1 pixel threshold of the same dataset;
    here it is the caller's choice.
    """

    def __init__(self, threshold: float, min_prediction_size: int = 0, min_gt_size: int = 0):
        self.threshold = threshold
        self.min_prediction_size = min_prediction_size
        self.min_gt_size = min_gt_size
        self.siou: list[float] = []
        self.ppv: list[float] = []

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add one frame (labels 1 = anomaly, 0 = in-distribution, 255 = void)."""
        from scipy import ndimage

        scores, labels = np.asarray(scores), np.asarray(labels)
        if scores.shape != labels.shape or scores.ndim != 2:
            raise ValueError(f"expected one frame: 2-D scores and labels of one shape; found {scores.shape} "
                             f"and {labels.shape}")
        eight = np.ones((3, 3), dtype=bool)
        roi = labels != 255
        gt, n_gt = ndimage.label(labels == 1, structure=eight)
        pred, n_pred = ndimage.label((scores > self.threshold) & roi, structure=eight)
        if self.min_prediction_size and n_pred:
            drop = np.bincount(pred.ravel(), minlength=n_pred + 1) < self.min_prediction_size
            drop[0] = False
            pred[drop[pred]] = 0
        if self.min_gt_size and n_gt:
            small = np.bincount(gt.ravel(), minlength=n_gt + 1) < self.min_gt_size
            small[0] = False  # SMIYC's loop also voids the background if it is that small: not copied
            roi &= ~small[gt]  # small GT components become void
            gt[small[gt]] = 0
            pred[~roi] = 0  # components keep their identity: not split where they crossed a voided object
        pred_size = np.bincount(pred.ravel(), minlength=n_pred + 1)
        on_gt = np.bincount(pred[gt > 0], minlength=n_pred + 1)  # pixels of each predicted component on GT
        kept = np.flatnonzero(pred_size[1:]) + 1
        self.ppv.extend((on_gt[kept] / pred_size[kept]).tolist())
        both = (gt > 0) & (pred > 0)
        pairs, counts = np.unique(gt[both].astype(np.int64) * (n_pred + 1) + pred[both], return_counts=True)
        gt_size = np.bincount(gt.ravel(), minlength=n_gt + 1)
        for k in np.flatnonzero(gt_size[1:]) + 1:
            mine = pairs // (n_pred + 1) == k
            touching, inter = pairs[mine] % (n_pred + 1), counts[mine]
            intersection = int(inter.sum())
            other_gt = int((on_gt[touching] - inter).sum())
            union = int(pred_size[touching].sum()) + int(gt_size[k]) - intersection - other_gt
            self.siou.append(intersection / union)

    def compute(self) -> dict[str, float | list[float]]:
        siou, ppv = np.asarray(self.siou), np.asarray(self.ppv)
        f1 = []
        for t in F1_THRESHOLDS:
            tp = int((siou >= t).sum())
            fn, fp = siou.size - tp, int((ppv < t).sum())
            f1.append(2 * tp / (2 * tp + fn + fp) if tp + fn + fp else float("nan"))
        return {"siou": float(siou.mean()) if siou.size else float("nan"),
                "ppv": float(ppv.mean()) if ppv.size else float("nan"),
                "mean_f1": _nanmean(np.asarray(f1)), "f1": f1}
