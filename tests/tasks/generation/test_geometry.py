"""Masks, measures and refined labels of the quality filter, on constructed inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID, PastedObject
from cgaug.tasks.generation.geometry import (
    disagreement,
    mask_iou,
    object_masks,
    refine_label,
    segmentation_miou,
    worst,
)
from tests.tasks.generation.fakes import shifted, square

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


def test_object_masks_are_the_pasted_pixels_inside_each_box():
    ood = square(20, 30, 2, 2, 6) | square(20, 30, 10, 20, 5)
    objects = [PastedObject("dog", "animal", f"o{i}", "src", box, 1.0, 0)
               for i, box in enumerate([(0, 0, 10, 10), (18, 8, 30, 20)])]

    first, second = object_masks(ood, objects)

    np.testing.assert_array_equal(first, square(20, 30, 2, 2, 6))
    np.testing.assert_array_equal(second, square(20, 30, 10, 20, 5))


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
