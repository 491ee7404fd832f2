"""The small records that move between pipeline stages.

Stages exchange these frozen dataclasses, never dicts of arrays, so that every
boundary has one documented shape. Records that cross a Prefect task boundary
hold only ids, paths and scalars; arrays live in `Composition` and
`GeneratedImage`, which stay inside one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OOD_TRAIN_ID = 254
"""Train id written into labels where a novel (out-of-distribution) object was pasted."""

VOID_TRAIN_ID = 255
"""Train id of pixels that no Cityscapes evaluation class covers."""

Box = tuple[int, int, int, int]
"""x0, y0, x1, y1 in label pixels, exclusive ends: where a pasted object is, and a prompt for SAM."""


class SampleSkipped(Exception):
    """A sample that cannot be produced; the run records `reason` and goes on.

    `reason` is a short stable code (e.g. ``no_road``) that is counted in
    statistics; `detail` is the human explanation naming file and field.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Cityscapes-format training pair, addressed by path or URI."""

    source_id: str  # "{city}_{seq:06d}_{frame:06d}", the Cityscapes stem
    city: str
    split: str
    image_path: str
    label_path: str  # the *_gtFine_labelIds.png file


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """One planned output sample; its inputs are fixed once planned."""

    sample_id: str
    source_id: str
    variant: int
    attempt: int
    seed: int
    shard: int


@dataclass(frozen=True, slots=True)
class PastedObject:
    """Where and what a pasted novel object is, in label pixel coordinates."""

    class_name: str  # the name used in the prompt (e.g. "dog")
    ade_class: str  # the ADE20K-150 class whose colour paints it (e.g. "animal")
    object_id: str  # id of the mask in the object bank
    bank_source_id: str  # where the bank took the mask from (image / annotation id)
    box: Box  # after clipping
    scale: float  # resize factor applied to the bank mask
    area: int  # pixels of the object actually written into the label


@dataclass(frozen=True, slots=True)
class Composition:
    """The compose stage's output for one sample (arrays: stays in-process)."""

    cond_map: np.ndarray  # (H, W, 3) uint8, ADE20K palette colours or black
    label: np.ndarray  # (H, W) uint8 train ids; 254 on the OOD mask, 255 void
    ood_mask: np.ndarray  # (H, W) bool
    objects: tuple[PastedObject, ...]


@dataclass(frozen=True, slots=True)
class Prompt:
    """A sampled prompt with every attribute kept as its own field."""

    text: str
    negative: str
    domain: bool  # whether the place/weather/time form of the template was used
    weather: str | None
    time_of_day: str | None
    place: str | None
    objects_phrase: str
