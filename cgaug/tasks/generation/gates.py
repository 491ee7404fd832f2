"""The quality filter's gates: one small class per gate, in one registry (`GATES`, in this order).

A gate is its name (the score key, and the stem of its reason code ``{name}_low``), the
`FilterConfig` fields that switch it on and hold its threshold, its comparison, the
model it needs (a `FilterModels` attribute, and the config field that names it, for
errors) and its score computation over a batch. Adding a gate is one class here, with
``@register``, plus its two config fields; the judge, the stored records, the
statistics and the calibration all read the registry.

Gates score a `GateBatch`: the batch of generated images and the model outputs its
gates share (SAM's masks, the segmenter's and the anomaly model's predictions), each
computed at most once and only when a gate asks for it, so every model sees the whole
batch in one call. Scores are sample index -> score; a gate that has nothing to
measure on a sample (objects-only gates on a sample without objects) leaves it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from cgaug.config import FilterConfig
from cgaug.models.filters.base import FilterModels, PixelOutput
from cgaug.records import PastedObject
from cgaug.tasks.generation.geometry import (
    in_distribution,
    mask_iou,
    mean_inside,
    object_masks,
    segmentation_miou,
    worst,
)


@dataclass(frozen=True, slots=True)
class FilterInput:
    """One generated image with what it was generated from (arrays: stays in-process)."""

    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8 train ids, 254 on the pasted pixels
    ood_mask: np.ndarray  # (H, W) bool pasted pixels
    objects: tuple[PastedObject, ...]
    prompt: str


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    score: float
    threshold: float | None
    passed: bool
    reason: str | None  # the gate's reason code when it failed


def passes(score: float, threshold: float | None, strict: bool) -> bool:
    """A score passes its threshold; None never rejects, NaN (no evidence) always does."""
    if threshold is None:
        return True
    if not np.isfinite(score):
        return False
    return score > threshold if strict else score >= threshold


class GateBatch:
    """A batch of generated images and the model outputs its gates share, each computed once, on demand."""

    def __init__(self, inputs: Sequence[FilterInput], models: FilterModels, enabled: frozenset[str]):
        self.inputs = inputs
        self.models = models
        self.enabled = enabled  # names of the gates that run on this batch
        self.images = [item.image for item in inputs]
        self.pasted = [object_masks(item.ood_mask, item.objects) for item in inputs]
        self.with_objects = [i for i, item in enumerate(inputs) if item.objects]
        self.predictions: list[np.ndarray | None] = [None] * len(inputs)  # set by the consistency gate

    @cached_property
    def sam(self) -> dict[int, list[np.ndarray]]:
        """SAM's mask per pasted object, by sample; only when the object gate runs ({} otherwise)."""
        if SamIou.name not in self.enabled:
            return {}
        assert self.models.masker is not None
        found = self.models.masker.masks([self.images[i] for i in self.with_objects],
                                         [[o.box for o in self.inputs[i].objects] for i in self.with_objects])
        return dict(zip(self.with_objects, found, strict=True))

    @cached_property
    def segmentation(self) -> list[PixelOutput]:
        """The Cityscapes segmenter's prediction of every image."""
        assert self.models.segmenter is not None
        return self.models.segmenter.predict(self.images)

    @cached_property
    def anomaly(self) -> list[PixelOutput]:
        """Per-pixel anomaly scores: the anomaly model's when there is one, else the segmenter's."""
        if self.models.anomaly is not None:
            return self.models.anomaly.predict(self.images)
        return self.segmentation

    def confirmed(self, i: int) -> np.ndarray | None:
        """The union of SAM's masks of sample `i` (None: SAM did not run on it)."""
        return np.logical_or.reduce(self.sam[i]) if i in self.sam else None


class Gate:
    """One gate; subclasses set the class attributes and `scores`."""

    name: ClassVar[str]  # score key; reason code f"{name}_low"
    switch: ClassVar[str]  # FilterConfig bool field
    threshold_field: ClassVar[str]  # FilterConfig float | None field
    strict: ClassVar[bool] = False  # pass needs score > threshold (else score >= threshold)
    per_object: ClassVar[bool] = False  # only defined for samples with pasted objects
    model: ClassVar[str]  # the FilterModels attribute it needs
    model_field: ClassVar[str]  # the FilterConfig field naming that model

    @property
    def reason(self) -> str:
        return f"{self.name}_low"

    def required_model(self, models: FilterModels) -> str:
        """The FilterModels attribute this gate needs with these models."""
        return self.model

    def scores(self, batch: GateBatch) -> dict[int, float]:
        """Sample index -> score for the samples this gate measures."""
        raise NotImplementedError

    def result(self, score: float, cfg: FilterConfig) -> GateResult:
        threshold = getattr(cfg, self.threshold_field)
        ok = passes(score, threshold, self.strict)
        return GateResult(self.name, float(score), threshold, ok, None if ok else self.reason)


_registry: list[Gate] = []


def register(cls: type[Gate]) -> type[Gate]:
    """Add a gate to `GATES`; the order of registration is the order of scores, reasons and reports."""
    if any(gate.name == cls.name for gate in _registry):
        raise ValueError(f"a gate named {cls.name!r} is registered twice")
    _registry.append(cls())
    return cls


@register
class SamIou(Gate):
    """SAM prompted with each pasted object's box; IoU of its mask with that object's pasted mask, minimum
    over objects. Passes when it *exceeds* the threshold (the reference rejects IoU <= 0.7)."""

    name = "sam_iou"
    switch, threshold_field = "object_gate", "sam_iou_threshold"
    strict, per_object = True, True
    model, model_field = "masker", "sam_model"

    def scores(self, batch: GateBatch) -> dict[int, float]:
        return {i: worst(mask_iou(m, p) for m, p in zip(masks, batch.pasted[i], strict=True))
                for i, masks in batch.sam.items()}


@register
class AnomalyMean(Gate):
    """Mean anomaly score inside each object's SAM mask (its pasted mask when the object gate is off or SAM
    found nothing), minimum over objects. Units are the anomaly model's own (a segmenter's free energy)."""

    name = "anomaly_mean"
    switch, threshold_field = "anomaly_gate", "anomaly_threshold"
    per_object = True
    model, model_field = "anomaly", "segmenter_model"

    def required_model(self, models: FilterModels) -> str:
        return "anomaly" if models.anomaly is not None else "segmenter"

    def scores(self, batch: GateBatch) -> dict[int, float]:
        out = {}
        for i in batch.with_objects:
            regions = [s if s.any() else p for s, p in zip(batch.sam[i], batch.pasted[i], strict=True)] \
                if i in batch.sam else batch.pasted[i]
            out[i] = worst(mean_inside(batch.anomaly[i].anomaly, r) for r in regions)
        return out


@register
class ClipImageText(Gate):
    """Cosine similarity of the whole image and its prompt."""

    name = "clip_image_text"
    switch, threshold_field = "clip_text_gate", "clip_text_threshold"
    model, model_field = "clip", "clip_model"

    def scores(self, batch: GateBatch) -> dict[int, float]:
        assert batch.models.clip is not None
        sims = batch.models.clip.image_text(batch.images, [item.prompt for item in batch.inputs])
        return dict(enumerate(sims))


@register
class ClipObjectMargin(Gate):
    """For the crop around each object: cos(crop, "a photo of a {class}") minus the best cos(crop, Cityscapes
    class); minimum over objects."""

    name = "clip_object_margin"
    switch, threshold_field = "clip_object_gate", "clip_object_threshold"
    per_object = True
    model, model_field = "clip", "clip_model"

    def scores(self, batch: GateBatch) -> dict[int, float]:
        assert batch.models.clip is not None
        if not batch.with_objects:
            return {}
        objects = [batch.inputs[i].objects for i in batch.with_objects]
        margins = batch.models.clip.object_margins([batch.images[i] for i in batch.with_objects],
                                                   [[o.box for o in objs] for objs in objects],
                                                   [[o.class_name for o in objs] for objs in objects])
        return {i: worst(per_object) for i, per_object in zip(batch.with_objects, margins, strict=True)}


@register
class ConsistencyMiou(Gate):
    """mIoU of a Cityscapes segmenter's prediction against the label on in-distribution pixels (pasted and
    void pixels excluded). Its prediction is kept (`GateBatch.predictions`) for the pixel noise mask."""

    name = "consistency_miou"
    switch, threshold_field = "consistency_gate", "consistency_threshold"
    model, model_field = "segmenter", "segmenter_model"

    def scores(self, batch: GateBatch) -> dict[int, float]:
        out = {}
        for i, (item, predicted) in enumerate(zip(batch.inputs, batch.segmentation, strict=True)):
            if predicted.train_ids is None:
                raise ValueError("filters.segmenter_model does not predict Cityscapes classes; "
                                 "the consistency gate needs one")
            batch.predictions[i] = predicted.train_ids
            out[i] = segmentation_miou(predicted.train_ids, item.label, in_distribution(item.label))
        return out


GATES: tuple[Gate, ...] = tuple(_registry)
GATE_BY_NAME: dict[str, Gate] = {gate.name: gate for gate in GATES}


def enabled_gates(cfg: FilterConfig) -> tuple[Gate, ...]:
    return () if cfg.mode == "none" else tuple(g for g in GATES if getattr(cfg, g.switch))


def check_models(gates: Sequence[Gate], models: FilterModels, cfg: FilterConfig) -> None:
    """Raises ValueError naming the switch and the model field of the first gate (by name) without its model."""
    for gate in sorted(gates, key=lambda g: g.name):
        if getattr(models, gate.required_model(models)) is None:
            raise ValueError(f"filter gate {gate.name} is on (filters.{gate.switch}) but no model was loaded "
                             f"for it (filters.{gate.model_field} = {getattr(cfg, gate.model_field)!r})")
