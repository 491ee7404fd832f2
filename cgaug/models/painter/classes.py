"""From conditioning-map colours back to ADE20K classes, and the look of each class.

The conditioning map is ADE20K-coloured (`cgaug.labels.ade_palette`). Each
pixel's colour is matched exactly against the palette (sorted 24-bit keys and
one `searchsorted`); colours outside it — the black of unmapped Cityscapes
classes, or anything else — get `UNKNOWN`, painted with a neutral texture.
Road and skyscraper share a colour; the tie goes to the class a Cityscapes
class maps to, since that is what compose writes.

Classes that Cityscapes maps to keep a hand-made material (asphalt, facade,
foliage, ...). Every other ADE class is an out-of-distribution object when it
appears: it gets a procedural look of its own, fixed per class index (not per
seed), so the same kind of object looks alike across images while two kinds
differ.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import cache

import numpy as np

from cgaug.labels import CITYSCAPES_TO_ADE, ade_classes, ade_palette

NUM_ADE = 150
UNKNOWN = NUM_ADE  # class index of colours outside the palette
NUM_SLOTS = NUM_ADE + 1

# ADE class -> material painted for it; every mapped ADE class has one
MATERIALS: dict[str, str] = {
    "road": "road", "sidewalk": "sidewalk", "building": "building", "wall": "wall", "fence": "fence",
    "railing": "fence", "bridge": "concrete", "pole": "pole", "traffic light": "traffic_light",
    "signboard": "sign", "tree": "vegetation", "grass": "terrain", "sky": "sky", "person": "person",
    "car": "car", "truck": "car", "bus": "car", "bicycle": "bicycle",
}
THINGS = ("person", "car", "truck", "bus", "bicycle")
"""Countable classes: instances are found for them (and for every OOD class) to colour each one apart."""


def _keys(colors: np.ndarray) -> np.ndarray:
    colors = colors.astype(np.int32)
    return (colors[..., 0] << 16) | (colors[..., 1] << 8) | colors[..., 2]


@cache
def _palette_lookup() -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique palette keys and the class index of each (mapped classes win colour ties)."""
    classes = ade_classes()
    mapped = set(CITYSCAPES_TO_ADE.values())
    keys = _keys(ade_palette())
    # put mapped classes first so that np.unique's first occurrence is the mapped one
    order = sorted(range(NUM_ADE), key=lambda i: (classes[i] not in mapped, i))
    unique, first = np.unique(keys[order], return_index=True)
    return unique, np.asarray(order, np.int16)[first]


def class_map(cond: np.ndarray) -> np.ndarray:
    """(H, W) int16 ADE class indices of an ADE-coloured (H, W, 3) uint8 map; UNKNOWN off-palette."""
    keys = _keys(cond)
    table, index = _palette_lookup()
    pos = np.minimum(np.searchsorted(table, keys), table.size - 1)
    return np.where(table[pos] == keys, index[pos], np.int16(UNKNOWN)).astype(np.int16)


@cache
def class_index(name: str) -> int:
    return ade_classes().index(name)


@cache
def is_thing_lut() -> np.ndarray:
    """(NUM_SLOTS,) bool: classes whose connected regions are instances (things and OOD objects)."""
    lut = ood_lut().copy()
    for name in THINGS:
        lut[class_index(name)] = True
    return lut


@cache
def ood_lut() -> np.ndarray:
    """(NUM_SLOTS,) bool: ADE classes no Cityscapes class maps to (the unknown slot is not OOD)."""
    lut = np.ones(NUM_SLOTS, bool)
    for name in MATERIALS:
        lut[class_index(name)] = False
    lut[UNKNOWN] = False
    lut[class_index("skyscraper")] = False  # never decoded: its colour is road's
    return lut


PATTERNS = ("stripes", "checker", "spots", "noise")


@dataclass(frozen=True, slots=True)
class OodLook:
    """The procedural look of one OOD class: two colours, a pattern, its scale and direction."""

    base: tuple[float, float, float]  # RGB in [0, 1]
    accent: tuple[float, float, float]
    pattern: str
    cells: float  # pattern periods across the object's longer side
    angle: float  # radians, for stripes


@cache
def ood_look(index: int) -> OodLook:
    """Fixed per ADE class index: saturated and mid-bright, so it never reads as grey asphalt."""
    rng = np.random.default_rng([0x00D, index])
    hue = float(rng.random())
    sat = float(rng.uniform(0.6, 0.95))
    val = float(rng.uniform(0.7, 0.95))
    base = colorsys.hsv_to_rgb(hue, sat, val)
    # the accent is a paler shade of the base's hue family, so the object's mean colour keeps the hue
    # and the brightness (complementary or dark accents would average towards the grey of the road)
    accent_hue = (hue + rng.uniform(-0.1, 0.1)) % 1.0
    accent = colorsys.hsv_to_rgb(accent_hue, sat * float(rng.uniform(0.2, 0.45)), min(1.0, val * 1.1))
    return OodLook(base, accent, PATTERNS[index % len(PATTERNS)], float(rng.uniform(2.5, 7.0)),
                   float(rng.uniform(0, np.pi)))
