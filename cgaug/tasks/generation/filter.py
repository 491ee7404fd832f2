"""Automatic quality filtering: gates, verdicts, refined labels, noise masks and their statistics.

Pure numpy, no Prefect and no torch: the models that produce masks, pixel
predictions and CLIP similarities come in through three small protocols
(`ObjectMasker`, `PixelModel`, `ClipModel`; implementations in
`cgaug.models.filters`), so every decision made here can be tested with
constructed inputs whose right answer is known.

Gates (the score key doubles as the gate's name; reason code ``{name}_low``):

- ``sam_iou``: SAM prompted with each pasted object's box; IoU of its mask
  with that object's pasted mask, the minimum over objects; passes when it
  *exceeds* the threshold (the reference rejects IoU <= 0.7).
- ``anomaly_mean``: mean anomaly score inside the object's SAM mask (the
  pasted mask when the object gate is off or SAM found nothing), minimum over
  objects. Units are the anomaly model's own (free energy of a segmenter).
- ``clip_image_text``: cosine similarity of the image and its prompt.
- ``clip_object_margin``: for the crop around each object, cos(crop, "a photo
  of a {class}") minus the best cos(crop, Cityscapes class); minimum over objects.
- ``consistency_miou``: mIoU of a Cityscapes segmenter's prediction against
  the label on in-distribution pixels (pasted and void pixels excluded).

Every enabled gate runs on every image, even after another gate failed, so
that scores are complete for auditing and for calibration. Objects-only gates
are not recorded for a sample without objects. A threshold of None records
the score without ever rejecting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.config import FilterConfig
from cgaug.labels import NUM_TRAIN_CLASSES
from cgaug.models.filters.base import FilterModels
from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID, PastedObject

if TYPE_CHECKING:
    import pyarrow as pa

# --------------------------------------------------------------------------- gate registry


@dataclass(frozen=True, slots=True)
class GateSpec:
    """One gate: its score key, the config fields that switch and threshold it, and its comparison."""

    name: str
    switch: str  # FilterConfig bool field
    threshold_field: str  # FilterConfig float | None field
    strict: bool  # pass needs score > threshold (else score >= threshold)
    per_object: bool  # only defined for samples with pasted objects

    @property
    def reason(self) -> str:
        return f"{self.name}_low"


GATES: tuple[GateSpec, ...] = (
    GateSpec("sam_iou", "object_gate", "sam_iou_threshold", strict=True, per_object=True),
    GateSpec("anomaly_mean", "anomaly_gate", "anomaly_threshold", strict=False, per_object=True),
    GateSpec("clip_image_text", "clip_text_gate", "clip_text_threshold", strict=False, per_object=False),
    GateSpec("clip_object_margin", "clip_object_gate", "clip_object_threshold", strict=False, per_object=True),
    GateSpec("consistency_miou", "consistency_gate", "consistency_threshold", strict=False, per_object=False),
)
GATE_BY_NAME = {gate.name: gate for gate in GATES}


def enabled_gates(cfg: FilterConfig) -> tuple[GateSpec, ...]:
    return () if cfg.mode == "none" else tuple(g for g in GATES if getattr(cfg, g.switch))


def passes(score: float, threshold: float | None, strict: bool) -> bool:
    """A score passes its threshold; None never rejects, NaN (no evidence) always does."""
    if threshold is None:
        return True
    if not np.isfinite(score):
        return False
    return score > threshold if strict else score >= threshold


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    score: float
    threshold: float | None
    passed: bool
    reason: str | None  # the gate's reason code when it failed


def gate_result(name: str, score: float, cfg: FilterConfig) -> GateResult:
    spec = GATE_BY_NAME[name]
    threshold = getattr(cfg, spec.threshold_field)
    ok = passes(score, threshold, spec.strict)
    return GateResult(name, float(score), threshold, ok, None if ok else spec.reason)


# --------------------------------------------------------------------------- measures


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree perfectly (1.0)."""
    if a.shape != b.shape:
        raise ValueError(f"mask_iou: masks differ in shape, {a.shape} vs {b.shape}")
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def object_masks(ood_mask: np.ndarray, objects: Sequence[PastedObject]) -> list[np.ndarray]:
    """Each object's pasted pixels: the OOD mask inside its box.

    Compose never lets objects overlap, but their boxes may; where boxes
    overlap, an object's mask also holds its neighbour's pixels there.
    """
    masks = []
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        mask = np.zeros_like(ood_mask, dtype=bool)
        mask[y0:y1, x0:x1] = ood_mask[y0:y1, x0:x1]
        masks.append(mask)
    return masks


def mean_inside(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of `values` on the mask; NaN for an empty mask (no evidence, so the gate fails)."""
    return float(values[mask].mean()) if mask.any() else float("nan")


def segmentation_miou(prediction: np.ndarray, label: np.ndarray, valid: np.ndarray,
                      num_classes: int = NUM_TRAIN_CLASSES) -> float:
    """mIoU on the valid pixels over the classes present in the label or the prediction there.

    NaN when no pixel is valid (nothing to agree on).
    """
    pred, true = prediction[valid].astype(np.int64), label[valid].astype(np.int64)
    if true.size == 0:
        return float("nan")
    pred = np.where(pred < num_classes, pred, num_classes)  # anything else counts as a wrong class
    size = num_classes + 1
    confusion = np.bincount(true * size + pred, minlength=size * size).reshape(size, size)[:num_classes]
    intersection = np.diag(confusion[:, :num_classes]).astype(float)
    union = confusion.sum(axis=1) + confusion[:, :num_classes].sum(axis=0) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean())


def worst(values: Iterable[float]) -> float:
    """The sample's score from its objects' scores: the minimum, NaN if any object has no score
    (Python's `min` would silently skip a NaN depending on its position)."""
    found = [float(v) for v in values]
    return float("nan") if any(np.isnan(found)) else min(found)


def in_distribution(label: np.ndarray) -> np.ndarray:
    """Pixels labelled with one of the 19 Cityscapes train classes (not void, not OOD)."""
    return label < NUM_TRAIN_CLASSES


def disagreement(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The pixel noise mask: in-distribution pixels where the segmenter predicts another class."""
    return in_distribution(label) & (prediction != label)


def refine_label(label: np.ndarray, base_label: np.ndarray, pasted: np.ndarray, confirmed: np.ndarray,
                 ood_region: str = "sam", keep_unconfirmed_as: str = "void") -> tuple[np.ndarray, np.ndarray]:
    """The accepted sample's label and OOD mask, from the pasted label and SAM's masks.

    Args:
        label: the composition's train ids (254 on the pasted pixels).
        base_label: the train ids before pasting (for ``keep_unconfirmed_as="original"``).
        pasted: the pasted pixels; `confirmed` the union of SAM's masks.
        ood_region: ``sam`` makes every SAM pixel OOD (the reference: the generator does not follow
            the pasted mask exactly, SAM follows the image), ``intersection`` only pasted pixels SAM confirmed.
        keep_unconfirmed_as: pasted pixels outside the OOD region become void (``void``) or get their
            class from before pasting back (``original``, the reference's behaviour).

    Returns:
        (label, ood_mask) with ``label == 254`` exactly on ``ood_mask``.
    """
    if ood_region not in ("sam", "intersection"):
        raise ValueError(f"filters.ood_region: expected 'sam' or 'intersection', found {ood_region!r}")
    if keep_unconfirmed_as not in ("void", "original"):
        raise ValueError(f"filters.keep_unconfirmed_as: expected 'void' or 'original', found "
                         f"{keep_unconfirmed_as!r}")
    region = confirmed if ood_region == "sam" else confirmed & pasted
    refined = label.copy()
    unconfirmed = pasted & ~region
    refined[unconfirmed] = VOID_TRAIN_ID if keep_unconfirmed_as == "void" else base_label[unconfirmed]
    refined[region] = OOD_TRAIN_ID
    # an original class that was itself 254 cannot occur (sources hold no OOD ids), but keep the invariant
    ood = refined == OOD_TRAIN_ID
    return refined, ood


# --------------------------------------------------------------------------- judging


@dataclass(frozen=True, slots=True)
class FilterInput:
    """One generated image with what it was generated from (arrays: stays in-process)."""

    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8 train ids, 254 on the pasted pixels
    ood_mask: np.ndarray  # (H, W) bool pasted pixels
    objects: tuple[PastedObject, ...]
    prompt: str


@dataclass(frozen=True, slots=True)
class Judgement:
    gates: tuple[GateResult, ...]
    confirmed: np.ndarray | None  # union of the SAM masks (None: the object gate did not run)
    prediction: np.ndarray | None  # the segmenter's train ids (None: no Cityscapes segmenter ran)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def reasons(self) -> list[str]:
        return [g.reason for g in self.gates if g.reason is not None]

    @property
    def scores(self) -> dict[str, float]:
        return {g.name: g.score for g in self.gates}


def judge(inputs: Sequence[FilterInput], models: FilterModels, cfg: FilterConfig) -> list[Judgement]:
    """Run every enabled gate on a batch of generated images (each model sees the whole batch).

    Raises:
        ValueError: a gate is on but the model it needs was not given.
    """
    gates = {g.name for g in enabled_gates(cfg)}
    _check_models(gates, models, cfg)
    scores: list[dict[str, float]] = [{} for _ in inputs]
    pasted = [object_masks(item.ood_mask, item.objects) for item in inputs]
    with_objects = [i for i, item in enumerate(inputs) if item.objects]
    sam = _sam_masks(inputs, with_objects, models) if "sam_iou" in gates else {}
    for i, masks in sam.items():
        scores[i]["sam_iou"] = worst(mask_iou(m, p) for m, p in zip(masks, pasted[i], strict=True))
    predictions: list[np.ndarray | None] = [None] * len(inputs)
    if gates & {"anomaly_mean", "consistency_miou"}:
        predictions = _pixel_gates(inputs, gates, models, sam, pasted, with_objects, scores)
    if gates & {"clip_image_text", "clip_object_margin"}:
        _clip_gates(inputs, gates, models, cfg, with_objects, scores)
    judgements = []
    for i, item_scores in enumerate(scores):
        results = tuple(gate_result(g.name, item_scores[g.name], cfg) for g in GATES if g.name in item_scores)
        confirmed = np.logical_or.reduce(sam[i]) if i in sam else None
        judgements.append(Judgement(results, confirmed, predictions[i]))
    return judgements


def make_judge(models: FilterModels, cfg: FilterConfig) -> Callable[[Sequence[FilterInput]], list[Judgement]]:
    """`judge` bound to its models and settings: the callable `run_shard` takes."""
    return partial(judge, models=models, cfg=cfg)


def _check_models(gates: set[str], models: FilterModels, cfg: FilterConfig) -> None:
    needs = {"sam_iou": ("masker", "sam_model"), "clip_image_text": ("clip", "clip_model"),
             "clip_object_margin": ("clip", "clip_model"), "consistency_miou": ("segmenter", "segmenter_model"),
             "anomaly_mean": ("anomaly" if models.anomaly is not None else "segmenter", "segmenter_model")}
    for gate in sorted(gates):
        attribute, field = needs[gate]
        if getattr(models, attribute) is None:
            raise ValueError(f"filter gate {gate} is on (filters.{GATE_BY_NAME[gate].switch}) but no model "
                             f"was loaded for it (filters.{field} = {getattr(cfg, field)!r})")


def _sam_masks(inputs: Sequence[FilterInput], with_objects: list[int],
               models: FilterModels) -> dict[int, list[np.ndarray]]:
    assert models.masker is not None
    found = models.masker.masks([inputs[i].image for i in with_objects],
                                [[o.box for o in inputs[i].objects] for i in with_objects])
    return dict(zip(with_objects, found, strict=True))


def _pixel_gates(inputs: Sequence[FilterInput], gates: set[str], models: FilterModels,
                 sam: dict[int, list[np.ndarray]], pasted: list[list[np.ndarray]], with_objects: list[int],
                 scores: list[dict[str, float]]) -> list[np.ndarray | None]:
    images = [item.image for item in inputs]
    need_segmenter = "consistency_miou" in gates or models.anomaly is None
    seg = models.segmenter.predict(images) if need_segmenter and models.segmenter else [None] * len(inputs)
    anomaly = models.anomaly.predict(images) if models.anomaly is not None else seg
    if "anomaly_mean" in gates:
        for i in with_objects:
            regions = [s if s.any() else p for s, p in zip(sam[i], pasted[i], strict=True)] if i in sam \
                else pasted[i]
            scores[i]["anomaly_mean"] = worst(mean_inside(anomaly[i].anomaly, r) for r in regions)
    predictions: list[np.ndarray | None] = [None] * len(inputs)
    if "consistency_miou" in gates:
        for i, item in enumerate(inputs):
            if seg[i].train_ids is None:
                raise ValueError("filters.segmenter_model does not predict Cityscapes classes; "
                                 "the consistency gate needs one")
            predictions[i] = seg[i].train_ids
            scores[i]["consistency_miou"] = segmentation_miou(seg[i].train_ids, item.label,
                                                              in_distribution(item.label))
    return predictions


def _clip_gates(inputs: Sequence[FilterInput], gates: set[str], models: FilterModels, cfg: FilterConfig,
                with_objects: list[int], scores: list[dict[str, float]]) -> None:
    assert models.clip is not None
    if "clip_image_text" in gates:
        sims = models.clip.image_text([item.image for item in inputs], [item.prompt for item in inputs])
        for i, sim in enumerate(sims):
            scores[i]["clip_image_text"] = sim
    if "clip_object_margin" in gates and with_objects:
        margins = models.clip.object_margins(
            [inputs[i].image for i in with_objects], [[o.box for o in inputs[i].objects] for i in with_objects],
            [[o.class_name for o in inputs[i].objects] for i in with_objects])
        for i, per_object in zip(with_objects, margins, strict=True):
            scores[i]["clip_object_margin"] = worst(per_object)


# --------------------------------------------------------------------------- regeneration


ACCEPT, RETRY, RECOMPOSE, REJECT = "accept", "retry", "recompose", "reject"


def next_action(passed: bool, attempt: int, first_attempt: int, recomposed: bool, cfg: FilterConfig) -> str:
    """What to do after attempt `attempt` of a composition whose first attempt was `first_attempt`.

    Each composition gets at most `max_attempts` generations; with `recompose_after_last_failure`,
    one new composition gets as many again. So a sample never takes more than 2 x max_attempts.
    """
    if passed:
        return ACCEPT
    if attempt + 1 < first_attempt + cfg.max_attempts:
        return RETRY
    if cfg.recompose_after_last_failure and not recomposed:
        return RECOMPOSE
    return REJECT


def gate_records(judgement: Judgement, attempt: int) -> list[dict[str, Any]]:
    """Rows of the shard's `gates` column for one attempt."""
    return [{"attempt": attempt, "name": g.name, "score": _finite_or_none(g.score), "threshold": g.threshold,
             "passed": g.passed, "reason": g.reason} for g in judgement.gates]


def stored_scores(judgement: Judgement) -> dict[str, float]:
    """The `scores` column: the stored attempt's scores, NaN (no evidence) left out."""
    return {name: score for name, score in judgement.scores.items() if np.isfinite(score)}


def last_attempt_reasons(records: Sequence[dict[str, Any]], attempt: int) -> list[str]:
    """The reason codes of the gates that failed on the stored attempt (why a rejected sample was dropped)."""
    return [r["reason"] for r in records if r["attempt"] == attempt and r["reason"] is not None]


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# --------------------------------------------------------------------------- statistics

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def filter_stats(index: pa.Table) -> dict[str, Any]:
    """The filter's record for a shard or a run, from index (or shard) columns.

    total, accepted, rejected, unfiltered, skipped, ``dropped_<reason>`` (rejected samples by the
    gates that failed on their last attempt), ``attempts`` (histogram of generations per sample),
    ``attempt_pass_rate`` (generations that passed every gate) and, per gate, the number of
    scores, their pass rate and quantiles over every attempt.
    """
    verdicts = index.column("verdict").to_pylist()
    attempts = index.column("attempts").to_pylist() if "attempts" in index.column_names else [None] * len(verdicts)
    gates = index.column("gates").to_pylist() if "gates" in index.column_names else [None] * len(verdicts)
    out: dict[str, Any] = {"total": len(verdicts)}
    for verdict in ("accepted", "rejected", "unfiltered", "skipped"):
        out[verdict] = verdicts.count(verdict)
    stored = index.column("attempt").to_pylist()
    dropped: dict[str, int] = {}
    for verdict, records, attempt in zip(verdicts, gates, stored, strict=True):
        if verdict == "rejected":
            for reason in last_attempt_reasons(records or [], attempt):
                dropped[f"dropped_{reason}"] = dropped.get(f"dropped_{reason}", 0) + 1
    out.update(sorted(dropped.items()))
    histogram: dict[str, int] = {}
    for verdict, count in zip(verdicts, attempts, strict=True):
        if verdict != "skipped" and count is not None:
            histogram[str(count)] = histogram.get(str(count), 0) + 1
    out["attempts"] = dict(sorted(histogram.items(), key=lambda kv: int(kv[0])))
    out.update(_gate_summary([g for g in gates if g]))
    return out


def _gate_summary(rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    by_gate: dict[str, list[dict[str, Any]]] = {}
    outcome: dict[tuple[int, int], bool] = {}  # (row, attempt) -> passed every gate
    for row_number, records in enumerate(rows):
        for record in records:
            by_gate.setdefault(record["name"], []).append(record)
            key = (row_number, record["attempt"])
            outcome[key] = outcome.get(key, True) and bool(record["passed"])
    summary: dict[str, Any] = {"generations_judged": len(outcome),
                               "attempt_pass_rate": (sum(outcome.values()) / len(outcome)) if outcome else None}
    gates = {}
    for name in sorted(by_gate, key=lambda n: [g.name for g in GATES].index(n) if n in GATE_BY_NAME else 99):
        records = by_gate[name]
        values = np.asarray([r["score"] for r in records if r["score"] is not None], dtype=float)
        gates[name] = {
            "n": len(records),
            "pass_rate": sum(bool(r["passed"]) for r in records) / len(records),
            "quantiles": {str(q): float(np.quantile(values, q)) for q in QUANTILES} if values.size else {},
        }
    summary["gates"] = gates
    return summary
