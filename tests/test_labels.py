from __future__ import annotations

import numpy as np

from cgaug.labels import (
    CITYSCAPES_TO_ADE,
    ade_classes,
    ade_color,
    ade_palette,
    default_ood_classes,
    label_id_to_ade_color_lut,
)


def test_palette_matches_controlnet_aux():
    """The shipped palette is the one the seg ControlNet was trained with (controlnet_aux's copy)."""
    from controlnet_aux.util import ade_palette as reference

    np.testing.assert_array_equal(ade_palette(), np.asarray(reference(), dtype=np.uint8))
    assert len(ade_classes()) == 150
    assert ade_classes()[6] == "road" and ade_classes()[48] == "skyscraper"
    assert ade_color("road") == ade_color("skyscraper") == (140, 140, 140)


def test_default_ood_classes_exclude_cityscapes_and_road_colour():
    ood = set(default_ood_classes())
    mapped = set(CITYSCAPES_TO_ADE.values())
    assert not ood & mapped
    assert "skyscraper" not in ood  # painted like road
    assert {"animal", "box", "barrel", "ashcan", "bag"} <= ood
    assert len(ood) == 150 - len(mapped) - 1


def test_unmapped_cityscapes_classes_are_black():
    lut = label_id_to_ade_color_lut()
    assert lut[9].tolist() == [0, 0, 0]  # parking
    assert lut[0].tolist() == [0, 0, 0]  # unlabeled
    assert lut[7].tolist() == [140, 140, 140]  # road
