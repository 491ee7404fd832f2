"""Anomaly-segmentation benchmarks: RoadAnomaly, SegmentMeIfYouCan (RA21, RO21), Fishyscapes.

Layouts and values (see research/metrics.md section 3):
- RoadAnomaly, preprocessed release (Synboost/PEBAL; what the paper's code reads):
  ``original/<name>.jpg`` + ``labels/<name>.png``, 0 = normal, 1 = anomaly (the root may also be the folder
  holding ``road_anomaly/``). Raw EPFL release (``RoadAnomaly_jpg``): ``frame_list.json`` listing the image
  files, ``frames/<name>.jpg`` + ``frames/<name>.labels/labels_semantic.png``, 0 = normal, 2 = anomaly.
- SMIYC RoadAnomaly21 (``dataset_AnomalyTrack``): ``images/<fid>.jpg`` + ``labels_masks/<fid>_labels_semantic.png``
  for the labelled validation frames only (test labels are hidden); 0 / 1 / 255 void.
- SMIYC RoadObstacle21 (``dataset_ObstacleTrack``): ``images/<fid>.webp``, same label naming, 0 = road,
  1 = obstacle, 255 = off-road. The benchmark's ``ObstacleTrack-validation`` keeps frames of the
  ``validation`` scene whose id does not start with validation_19 or validation_21..29 (30 frames);
  ``subset="all"`` keeps every labelled frame, as loaders that glob the label folder do.
- Fishyscapes Lost & Found / Static, preprocessed layout (Synboost/RPL): ``<Split>/original/<name>.png`` +
  ``<Split>/labels/<name>.png``, 0 / 1 / 255; the root is the split folder or the folder holding it.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import ClassVar, Literal

from cgaug.storage.evalsets.base import (
    ID,
    OOD,
    VOID,
    EvalDataError,
    EvalDataset,
    EvalItem,
    EvalSample,
    apply_table,
    lookup_table,
    read_bytes,
    read_label,
    read_rgb,
    require,
)

BINARY_TABLE = lookup_table({0: ID, 1: OOD, 255: VOID})
BINARY_VALUES = "0 (in-distribution), 1 (anomaly) or 255 (void)"
# raw EPFL RoadAnomaly: 0 = normal, 2 = anomaly; 1 (road, in the labelling tool's default classes) is
# in-distribution and 255 void, should a file carry them
EPFL_TABLE = lookup_table({0: ID, 1: ID, 2: OOD, 255: VOID})
EPFL_VALUES = "0 (normal) or 2 (anomaly) (raw EPFL RoadAnomaly)"


class _BinaryLabelled(EvalDataset):
    """Datasets whose label files already hold 0 / 1 / 255."""

    table = BINARY_TABLE
    values = BINARY_VALUES

    def read(self, sample: EvalSample) -> EvalItem:
        raw = read_label(sample.label_path)
        ood = apply_table(raw, self.table, sample.label_path, self.values)
        return EvalItem(sample.sample_id, read_rgb(sample.image_path), ood, None)


class RoadAnomaly(_BinaryLabelled):
    """RoadAnomaly (60 frames) in either release; the layout is detected from the files present."""

    kind = "road_anomaly"
    LAYOUT = ("original/<name>.jpg + labels/<name>.png (preprocessed, 0/1), or frame_list.json + "
              "frames/<name>.jpg + frames/<name>.labels/labels_semantic.png (raw EPFL, 0/2)")

    def __init__(self, root: str):
        super().__init__(root)
        if not self.isfile("frame_list.json") and not self.isdir("original") and self.isdir("road_anomaly"):
            self.__init__(self.path("road_anomaly"))  # the folder holding the preprocessed release
            return
        self.raw = self.isfile("frame_list.json")
        self.table = EPFL_TABLE if self.raw else BINARY_TABLE
        self.values = EPFL_VALUES if self.raw else BINARY_VALUES

    def samples(self) -> list[EvalSample]:
        return self._raw_samples() if self.raw else self._preprocessed_samples()

    def _preprocessed_samples(self) -> list[EvalSample]:
        images = {m["name"]: m.string for m in self.find("original", r"(?P<name>[^/]+)\.(jpg|jpeg|png)")}
        samples = []
        for name, image in sorted(images.items()):
            label = self.path("labels", f"{name}.png")
            if not self.isfile("labels", f"{name}.png"):
                raise EvalDataError(f"{label}: no such file (the label of {self.path('original', image)})")
            samples.append(EvalSample(name, self.path("original", image), label))
        return require(samples, self.root, self.LAYOUT)

    def _raw_samples(self) -> list[EvalSample]:
        listing = self.path("frame_list.json")
        try:
            names = json.loads(read_bytes(listing, "frame list"))
        except json.JSONDecodeError as error:
            raise EvalDataError(f"{listing}: not JSON ({error}); expected a list of image file names") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise EvalDataError(f"{listing}: expected a JSON list of image file names, found {type(names).__name__}")
        samples = []
        for name in sorted(names):
            stem = posixpath.splitext(posixpath.basename(name))[0]
            samples.append(EvalSample(stem, self.path("frames", posixpath.basename(name)),
                                      self.path("frames", f"{stem}.labels", "labels_semantic.png")))
        return require(samples, listing, self.LAYOUT)

    def describe(self) -> str:
        return f"{self.kind} ({'raw EPFL, 2 = anomaly' if self.raw else 'preprocessed, 1 = anomaly'}) at {self.root}"


class _SmiycTrack(_BinaryLabelled):
    image_suffix: ClassVar[str]
    LABEL_SUFFIX = "_labels_semantic.png"

    def labelled(self) -> list[EvalSample]:
        labels = {m["fid"] for m in self.find("labels_masks", r"(?P<fid>[^/]+)" + re.escape(self.LABEL_SUFFIX))}
        samples = []
        for fid in sorted(labels):
            image = self.path("images", f"{fid}{self.image_suffix}")
            if not self.isfile("images", f"{fid}{self.image_suffix}"):
                raise EvalDataError(f"{image}: no such file (the image of "
                                    f"{self.path('labels_masks', fid + self.LABEL_SUFFIX)})")
            samples.append(EvalSample(fid, image, self.path("labels_masks", fid + self.LABEL_SUFFIX)))
        return samples

    def layout(self) -> str:
        return f"images/<fid>{self.image_suffix} + labels_masks/<fid>{self.LABEL_SUFFIX}"


class SmiycAnomalyTrack(_SmiycTrack):
    """SMIYC RoadAnomaly21 validation frames (the only ones with public labels)."""

    kind = "smiyc_ra21"
    image_suffix = ".jpg"

    def samples(self) -> list[EvalSample]:
        return require(self.labelled(), self.root, self.layout())


OBSTACLE_EXCLUDED_PREFIXES = ("validation_19", *(f"validation_{n}" for n in range(21, 30)))
"""The SMIYC benchmark's `ObstacleTrack-validation` drops frames whose id starts with these (40 -> 30)."""


class SmiycObstacleTrack(_SmiycTrack):
    """SMIYC RoadObstacle21 validation frames: the benchmark's 30-frame subset, or every labelled frame."""

    kind = "smiyc_ro21"
    image_suffix = ".webp"

    def __init__(self, root: str, subset: Literal["official", "all"] = "official"):
        if subset not in ("official", "all"):
            raise ValueError(f"unknown RoadObstacle21 subset {subset!r}; expected 'official' or 'all'")
        super().__init__(root)
        self.subset = subset

    def samples(self) -> list[EvalSample]:
        samples = self.labelled()
        if self.subset == "official":
            samples = [s for s in samples if s.sample_id.split("_")[0] == "validation"
                       and not s.sample_id.startswith(OBSTACLE_EXCLUDED_PREFIXES)]
        return require(samples, self.root, f"{self.layout()} with <fid> = validation_<n>")

    def describe(self) -> str:
        return f"{self.kind} ({self.subset} validation subset) at {self.root}"


class _Fishyscapes(_BinaryLabelled):
    split: ClassVar[str]

    def __init__(self, root: str):
        super().__init__(root)
        if not self.isdir("original") and self.isdir(self.split):
            self.__init__(self.path(self.split))

    def samples(self) -> list[EvalSample]:
        samples = []
        for m in self.find("original", r"(?P<name>[^/]+)\.(png|jpg)"):
            name = m["name"]
            label = self.path("labels", f"{name}.png")
            if not self.isfile("labels", f"{name}.png"):
                raise EvalDataError(f"{label}: no such file (the label of {self.path('original', m.string)})")
            samples.append(EvalSample(name, self.path("original", m.string), label))
        return require(samples, self.root, f"[{self.split}/]original/<name>.png + [{self.split}/]labels/<name>.png")


class FishyscapesLostAndFound(_Fishyscapes):
    kind = "fishyscapes_laf"
    split = "LostAndFound"


class FishyscapesStatic(_Fishyscapes):
    kind = "fishyscapes_static"
    split = "Static"
