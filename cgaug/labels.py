"""Label spaces: the Cityscapes table, the ADE20K-150 palette and the mapping between them.

The Cityscapes table is the official one (`cityscapesscripts.helpers.labels`,
checked against it in the tests) written out here so that the pipeline does
not pull matplotlib and requests at run time. The ADE20K-150 names and colours
ship as `cgaug/data/ade20k_150.json`; the tests check them against
`controlnet_aux.util.ade_palette()`, the palette the seg ControlNet was
trained with (150 entries, no background entry; road and skyscraper share
(140, 140, 140)). The reference's hand-picked OOD class lists (82 training,
32 validation classes) ship as `cgaug/data/ade20k_ood_classes.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, get_args

import numpy as np

from cgaug.records import VOID_TRAIN_ID


@dataclass(frozen=True, slots=True)
class CityscapesLabel:
    name: str
    id: int
    train_id: int
    category: str
    color: tuple[int, int, int]


# name, id, trainId, category, color  (license plate, id -1, never occurs in label files)
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(*row)
    for row in (
        ("unlabeled", 0, 255, "void", (0, 0, 0)),
        ("ego vehicle", 1, 255, "void", (0, 0, 0)),
        ("rectification border", 2, 255, "void", (0, 0, 0)),
        ("out of roi", 3, 255, "void", (0, 0, 0)),
        ("static", 4, 255, "void", (0, 0, 0)),
        ("dynamic", 5, 255, "void", (111, 74, 0)),
        ("ground", 6, 255, "void", (81, 0, 81)),
        ("road", 7, 0, "flat", (128, 64, 128)),
        ("sidewalk", 8, 1, "flat", (244, 35, 232)),
        ("parking", 9, 255, "flat", (250, 170, 160)),
        ("rail track", 10, 255, "flat", (230, 150, 140)),
        ("building", 11, 2, "construction", (70, 70, 70)),
        ("wall", 12, 3, "construction", (102, 102, 156)),
        ("fence", 13, 4, "construction", (190, 153, 153)),
        ("guard rail", 14, 255, "construction", (180, 165, 180)),
        ("bridge", 15, 255, "construction", (150, 100, 100)),
        ("tunnel", 16, 255, "construction", (150, 120, 90)),
        ("pole", 17, 5, "object", (153, 153, 153)),
        ("polegroup", 18, 255, "object", (153, 153, 153)),
        ("traffic light", 19, 6, "object", (250, 170, 30)),
        ("traffic sign", 20, 7, "object", (220, 220, 0)),
        ("vegetation", 21, 8, "nature", (107, 142, 35)),
        ("terrain", 22, 9, "nature", (152, 251, 152)),
        ("sky", 23, 10, "sky", (70, 130, 180)),
        ("person", 24, 11, "human", (220, 20, 60)),
        ("rider", 25, 12, "human", (255, 0, 0)),
        ("car", 26, 13, "vehicle", (0, 0, 142)),
        ("truck", 27, 14, "vehicle", (0, 0, 70)),
        ("bus", 28, 15, "vehicle", (0, 60, 100)),
        ("caravan", 29, 255, "vehicle", (0, 0, 90)),
        ("trailer", 30, 255, "vehicle", (0, 0, 110)),
        ("train", 31, 16, "vehicle", (0, 80, 100)),
        ("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
        ("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    )
)

CITYSCAPES_BY_NAME = {label.name: label for label in CITYSCAPES_LABELS}
NUM_TRAIN_CLASSES = 19
ROAD_LABEL_ID = CITYSCAPES_BY_NAME["road"].id

# The reference's Cityscapes -> ADE20K-150 class table, applied by label id: classes absent here are
# painted black. (The reference applies it by colour, which also paints the other black void classes
# road; docs/fidelity.md.)
CITYSCAPES_TO_ADE: dict[str, str] = {
    "ego vehicle": "road",
    "ground": "road",
    "road": "road",
    "sidewalk": "sidewalk",
    "rail track": "railing",
    "building": "building",
    "wall": "wall",
    "fence": "fence",
    "guard rail": "fence",
    "bridge": "bridge",
    "pole": "pole",
    "polegroup": "pole",
    "traffic light": "traffic light",
    "traffic sign": "signboard",
    "vegetation": "tree",
    "terrain": "grass",
    "sky": "sky",
    "person": "person",
    "rider": "person",
    "car": "car",
    "caravan": "car",
    "truck": "truck",
    "trailer": "truck",
    "bus": "bus",
    "train": "bus",
    "motorcycle": "bicycle",
    "bicycle": "bicycle",
}

LABEL_ID_RANGE = 256  # label files are 8-bit: one lookup-table row per possible value


@cache
def _ade() -> tuple[tuple[str, ...], np.ndarray]:
    data = json.loads(resources.files("cgaug.data").joinpath("ade20k_150.json").read_text())
    return tuple(data["classes"]), np.asarray(data["palette"], dtype=np.uint8)


def ade_classes() -> tuple[str, ...]:
    """The 150 ADE20K class names, in palette order."""
    return _ade()[0]


def ade_palette() -> np.ndarray:
    """The (150, 3) uint8 ADE20K palette the seg ControlNet was trained with."""
    return _ade()[1]


def ade_color(name: str) -> tuple[int, int, int]:
    """The palette colour of an ADE20K-150 class; a clear error names unknown classes."""
    classes = ade_classes()
    if name not in classes:
        raise KeyError(f"unknown ADE20K-150 class {name!r}; expected one of the 150 names in "
                       "cgaug/data/ade20k_150.json (e.g. 'animal', 'box', 'barrel')")
    return tuple(int(c) for c in ade_palette()[classes.index(name)])  # type: ignore[return-value]


OodClassList = Literal["train", "validation", "unmapped"]
OOD_CLASS_LISTS: tuple[str, ...] = get_args(OodClassList)


@cache
def _reference_ood_lists() -> dict[str, tuple[str, ...]]:
    """The reference's hand-picked lists from `cgaug/data/ade20k_ood_classes.json`, by 1-based ADE index.

    The file keeps the reference's indices (its own pickles are 1-based) and the names beside them for
    readers; the indices decide, and a name that disagrees with the class table is a corrupt file.
    """
    data = json.loads(resources.files("cgaug.data").joinpath("ade20k_ood_classes.json").read_text())
    classes = ade_classes()
    lists = {}
    for key in ("train", "validation"):
        names = tuple(classes[i - 1] for i in data[key]["index_1based"])
        if list(names) != data[key]["names"]:
            raise ValueError(f"cgaug/data/ade20k_ood_classes.json: the {key} list's indices name {names}, "
                             f"not {data[key]['names']}; expected 1-based ADE20K-150 indices")
        lists[key] = names
    return lists


def default_ood_classes() -> tuple[str, ...]:
    """The reference's 82 training OOD classes (ADE20K-150 names, in palette order).

    The reference pastes only these hand-picked classes: indoor furniture and objects that could plausibly
    lie on a road, not scenery such as 'mountain', 'sea' or 'floor' that Cityscapes lacks as well.
    """
    return _reference_ood_lists()["train"]


def validation_ood_classes() -> tuple[str, ...]:
    """The reference's 32 validation OOD classes (a subset of the training list, in the reference's order)."""
    return _reference_ood_lists()["validation"]


@cache
def unmapped_ood_classes() -> tuple[str, ...]:
    """Every ADE20K class that no Cityscapes class maps to and whose colour no mapped class uses (131).

    The colour check drops 'skyscraper', which shares road's (140,140,140):
    a pasted skyscraper would be indistinguishable from road in the map.
    """
    mapped = set(CITYSCAPES_TO_ADE.values())
    mapped_colors = {ade_color(name) for name in mapped}
    return tuple(
        name for name in ade_classes() if name not in mapped and ade_color(name) not in mapped_colors
    )


def ood_class_list(name: OodClassList) -> tuple[str, ...]:
    """A named OOD class list: 'train' (the default), 'validation' or 'unmapped'."""
    lists = {"train": default_ood_classes, "validation": validation_ood_classes, "unmapped": unmapped_ood_classes}
    if name not in lists:
        raise KeyError(f"unknown OOD class list {name!r}; expected one of {', '.join(OOD_CLASS_LISTS)}")
    return lists[name]()


@cache
def label_id_to_train_id_lut() -> np.ndarray:
    """A 256-entry lookup table from Cityscapes label ids to train ids; -1 marks unknown ids."""
    lut = np.full(LABEL_ID_RANGE, -1, dtype=np.int16)
    for label in CITYSCAPES_LABELS:
        lut[label.id] = label.train_id
    return lut


@cache
def label_id_to_ade_color_lut() -> np.ndarray:
    """A (256, 3) lookup table from Cityscapes label ids to conditioning-map colours."""
    lut = np.zeros((LABEL_ID_RANGE, 3), dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        ade_name = CITYSCAPES_TO_ADE.get(label.name)
        if ade_name is not None:
            lut[label.id] = ade_color(ade_name)
    return lut


@cache
def train_id_color_lut() -> np.ndarray:
    """A (256, 3) lookup table from train ids to the official Cityscapes colours (void black)."""
    lut = np.zeros((LABEL_ID_RANGE, 3), dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if label.train_id != VOID_TRAIN_ID:
            lut[label.train_id] = label.color
    return lut

