"""Masks and labels of the quality filter: overlap, per-object masks, agreement, refined labels. Pure numpy.

The measures the gates (`cgaug.tasks.generation.gates`) score with, and the label and noise
mask an accepted sample is stored with. Each has a right answer that can be worked out by
hand, which is how `tests/tasks/generation/test_geometry.py` checks them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from cgaug.labels import NUM_TRAIN_CLASSES
from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID, PastedObject


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
