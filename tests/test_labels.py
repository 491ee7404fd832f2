from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cgaug.labels import (
    CITYSCAPES_TO_ADE,
    ade_classes,
    ade_color,
    ade_palette,
    default_ood_classes,
    label_id_to_ade_color_lut,
    ood_class_list,
    unmapped_ood_classes,
    validation_ood_classes,
)


def test_palette_matches_controlnet_aux():
    """The shipped palette is the one the seg ControlNet was trained with (controlnet_aux's copy)."""
    from controlnet_aux.util import ade_palette as reference

    np.testing.assert_array_equal(ade_palette(), np.asarray(reference(), dtype=np.uint8))
    assert len(ade_classes()) == 150
    assert ade_classes()[6] == "road" and ade_classes()[48] == "skyscraper"
    assert ade_color("road") == ade_color("skyscraper") == (140, 140, 140)


# The reference's pickles (MultiShiftSeg CGAug/static_data/ADE_ood_class_idx{,_val}.pkl), as 1-based indices.
REFERENCE_TRAIN = (
    8, 9, 11, 15, 16, 19, 20, 24, 25, 28, 31, 32, 34, 35, 36, 38, 40, 42, 45, 46, 48, 51, 56, 57, 58, 59, 63, 64,
    65, 66, 68, 70, 72, 75, 76, 77, 82, 86, 87, 89, 90, 91, 96, 98, 99, 100, 101, 104, 105, 108, 109, 111, 112,
    113, 115, 116, 118, 119, 120, 121, 123, 125, 126, 127, 130, 131, 132, 133, 134, 135, 136, 138, 139, 140, 142,
    143, 144, 146, 147, 148, 149, 150,
)
REFERENCE_VALIDATION = (
    134, 56, 98, 63, 77, 25, 16, 126, 70, 66, 9, 65, 105, 100, 51, 113, 121, 150, 144, 146, 42, 31, 101, 112, 119,
    96, 125, 35, 82, 32, 38, 72,
)
REFERENCE = Path("/work/shared/reference")  # the reference's lists as extracted for this project


def test_unmapped_ood_classes_exclude_cityscapes_and_road_colour():
    ood = unmapped_ood_classes()
    mapped = set(CITYSCAPES_TO_ADE.values())
    assert not set(ood) & mapped
    assert "skyscraper" not in ood  # painted like road
    assert {"animal", "box", "barrel", "ashcan", "bag", "mountain", "floor"} <= set(ood)
    assert len(ood) == 150 - len(mapped) - 1 == 131
    assert ood_class_list("unmapped") == ood


def test_default_ood_classes_are_the_reference_training_list():
    train, val = default_ood_classes(), validation_ood_classes()
    assert [ade_classes().index(name) + 1 for name in train] == list(REFERENCE_TRAIN)
    assert [ade_classes().index(name) + 1 for name in val] == list(REFERENCE_VALIDATION)
    assert len(train) == len(set(train)) == 82 and len(val) == len(set(val)) == 32
    assert set(val) <= set(train) <= set(unmapped_ood_classes())
    assert {"animal", "box", "barrel", "ashcan", "bag"} <= set(train)  # the fixture bank's classes
    assert not {"mountain", "floor", "skyscraper", "car"} & set(train)
    assert ood_class_list("train") == train and ood_class_list("validation") == val
    with pytest.raises(KeyError, match="unknown OOD class list"):
        ood_class_list("furniture")  # type: ignore[arg-type]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="needs the project's shared reference files")
def test_ood_class_lists_equal_the_reference_by_ade_index():
    lists = json.loads((REFERENCE / "ade20k_ood_classes_reference.json").read_text())
    table = json.loads((REFERENCE / "ade20k_150.json").read_text())["classes"]
    for ours, key in ((default_ood_classes(), "train"), (validation_ood_classes(), "val")):
        indices = [ade_classes().index(name) + 1 for name in ours]  # 1-based, as the reference stores them
        assert indices == lists[f"{key}_idx_1based"]
        assert list(ours) == lists[key] == [table[i - 1].strip() for i in indices]  # the table says "bed "


def test_unmapped_cityscapes_classes_are_black():
    lut = label_id_to_ade_color_lut()
    assert lut[9].tolist() == [0, 0, 0]  # parking
    assert lut[0].tolist() == [0, 0, 0]  # unlabeled
    assert lut[7].tolist() == [140, 140, 140]  # road
