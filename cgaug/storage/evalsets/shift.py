"""Domain-shift benchmarks with train ids: ACDC-POC, the MUAD challenge subset, Cityscapes val.

- ACDC-POC (naver/poc ``POC_ACDC_VAL``): ``rgb_anon_trainvaltest/rgb_anon/<cond>/val/<seq>/<base>.npz`` holds
  key ``img``, the uint8 *difference* to the ACDC original
  ``<seq>_frame_<n>_rgb_anon.png`` (``<base>`` = ``<seq>_frame_<n>_rgb_anon_<prompt>_<seed>``); the image is
  ``uint8(diff + original)`` with wrap-around, never clipped (the release computed ``poc - original`` in
  uint8). A reconstructed ``<base>.png`` next to it is used as is. Labels:
  ``gt_trainval/gt/<cond>/val/<seq>/<base>.png``, Cityscapes label ids 0..33, inserted OOD objects 100..124
  (100..254 accepted as OOD, as POC's own loaders do), 255 void. Void convention for the OOD map: "poc"
  (default; the POC authors') voids every id outside the 19 evaluated classes, "multishiftseg" (the
  paper's code) voids only id 0 and counts ego vehicle, static, ground... as in-distribution.
- MUAD challenge (``MUAD_challenge/test_sets/test_OOD``): ``leftImg8bit/<id>_leftImg8bit.png`` +
  ``leftLabel/<id>_leftLabel.png``; 0..18 train ids, 19 and 20 OOD, 255 void.
- Cityscapes val through `cgaug.storage.cityscapes` (label ids -> train ids; no OOD labels).
"""

from __future__ import annotations

import io
import posixpath
from typing import Literal

import numpy as np

from cgaug.labels import CITYSCAPES_LABELS
from cgaug.records import SampleSkipped
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

AcdcVoid = Literal["poc", "multishiftseg"]
ACDC_VOID_CONVENTIONS = ("poc", "multishiftseg")
POC_OOD_IDS = range(100, 255)  # the release uses 100..124 (one id per inserted OOD class)
_EVALUATED = {label.id for label in CITYSCAPES_LABELS if label.train_id != VOID}


def acdc_tables(void: AcdcVoid) -> tuple[np.ndarray, np.ndarray]:
    """(OOD table, train-id table) for ACDC-POC label ids under a void convention."""
    if void not in ACDC_VOID_CONVENTIONS:
        raise ValueError(f"unknown ACDC-POC void convention {void!r}; expected one of {ACDC_VOID_CONVENTIONS}")
    ood: dict[int, int] = {}
    for label in CITYSCAPES_LABELS:
        if void == "poc":
            ood[label.id] = ID if label.id in _EVALUATED else VOID
        else:
            ood[label.id] = VOID if label.id == 0 else ID
    ood.update({i: OOD for i in POC_OOD_IDS})
    ood[255] = VOID
    train = {label.id: label.train_id for label in CITYSCAPES_LABELS}
    train.update({i: VOID for i in POC_OOD_IDS})
    train[255] = VOID
    return lookup_table(ood), lookup_table(train)


ACDC_VALUES = "Cityscapes label ids 0..33, OOD object ids 100..254 or 255 (void)"


class AcdcPoc(EvalDataset):
    """ACDC-POC validation (200 frames, one inserted object each) with ACDC originals from `acdc_root`."""

    kind = "acdc_poc"
    has_segmentation = True
    IMAGES = "rgb_anon_trainvaltest/rgb_anon"
    LABELS = "gt_trainval/gt"

    def __init__(self, root: str, acdc_root: str | None = None, void: AcdcVoid = "poc"):
        super().__init__(root)
        self.acdc_root = (acdc_root or self.root).rstrip("/")
        self.void = void
        self.ood_table, self.train_table = acdc_tables(void)

    def samples(self) -> list[EvalSample]:
        found = self.find(self.IMAGES, r"(?P<cond>[^/]+)/val/(?P<seq>[^/]+)/(?P<base>[^/]+_rgb_anon_[^/]+)\.(npz|png)")
        by_base: dict[str, str] = {}
        for m in found:  # a reconstructed .png wins over the .npz difference
            if m.string.endswith(".png") or m["base"] not in by_base:
                by_base[m["base"]] = m.string
        samples = []
        for rel in sorted(by_base.values(), key=posixpath.basename):
            folder, name = posixpath.split(rel)
            base = posixpath.splitext(name)[0]
            label = self.path(self.LABELS, folder, f"{base}.png")
            original = None
            if rel.endswith(".npz"):
                original = posixpath.join(folder, base.split("_rgb_anon_")[0] + "_rgb_anon.png")
            samples.append(EvalSample(base, self.path(self.IMAGES, rel), label, original))
        return require(samples, self.root, f"{self.IMAGES}/<cond>/val/<seq>/<seq>_frame_<n>_rgb_anon_<prompt>_<seed>"
                                           f".npz + {self.LABELS}/<cond>/val/<seq>/<same name>.png")

    def original_candidates(self, relative: str) -> list[str]:
        """Where the ACDC original may be: under the archive's folder name, or unpacked without it."""
        return [posixpath.join(self.acdc_root, self.IMAGES, relative),
                posixpath.join(self.acdc_root, "rgb_anon", relative)]

    def read_image(self, sample: EvalSample) -> np.ndarray:
        if sample.base_path is None:
            return read_rgb(sample.image_path)
        diff = read_difference(sample.image_path)
        candidates = self.original_candidates(sample.base_path)
        for candidate in candidates:
            try:
                original = read_rgb(candidate, "ACDC original image")
            except EvalDataError as error:
                if "no such file" in str(error):
                    continue
                raise
            return reconstruct(diff, original, sample.image_path, candidate)
        raise EvalDataError(f"{sample.image_path}: the ACDC original it is a difference to is missing; looked at "
                            f"{' and '.join(candidates)} (pass the ACDC root that holds rgb_anon/)")

    def read(self, sample: EvalSample) -> EvalItem:
        image = self.read_image(sample)
        raw = read_label(sample.label_path)
        ood = apply_table(raw, self.ood_table, sample.label_path, ACDC_VALUES)
        train = apply_table(raw, self.train_table, sample.label_path, ACDC_VALUES)
        return EvalItem(sample.sample_id, image, ood, train)

    def describe(self) -> str:
        return f"{self.kind} (void convention {self.void}) at {self.root}, originals from {self.acdc_root}"


def read_difference(path: str) -> np.ndarray:
    data = read_bytes(path, "POC difference image")
    try:
        with np.load(io.BytesIO(data)) as archive:
            if "img" not in archive:
                raise EvalDataError(f"{path}: no array 'img' (found {', '.join(archive.files) or 'none'}); "
                                    "expected the POC difference image under key 'img'")
            diff = archive["img"]
    except (ValueError, OSError) as error:
        if isinstance(error, EvalDataError):
            raise
        raise EvalDataError(f"{path}: not a readable .npz archive ({error})") from None
    if diff.dtype != np.uint8 or diff.ndim != 3 or diff.shape[2] != 3:
        raise EvalDataError(f"{path}: 'img' is {diff.dtype} {diff.shape}; expected a uint8 (H, W, 3) difference")
    return diff


def reconstruct(diff: np.ndarray, original: np.ndarray, diff_path: str = "difference",
                original_path: str = "original") -> np.ndarray:
    """The POC image: uint8 `diff + original` modulo 256 (the inverse of the release's uint8 subtraction)."""
    if diff.shape != original.shape:
        raise EvalDataError(f"{diff_path} is {diff.shape} but its original {original_path} is {original.shape}; "
                            "expected the same size")
    return np.add(diff, original, dtype=np.uint8)  # uint8 arithmetic wraps around: no clipping


MUAD_TABLES = (lookup_table([(range(19), ID), ((19, 20), OOD), ((255,), VOID)]),
               lookup_table({**{i: i for i in range(19)}, 19: VOID, 20: VOID, 255: VOID}))
MUAD_VALUES = "train ids 0..18, OOD 19 or 20, or 255 (void)"


class Muad(EvalDataset):
    """MUAD challenge OOD test subset."""

    kind = "muad"
    has_segmentation = True

    def samples(self) -> list[EvalSample]:
        samples = []
        for m in self.find("leftImg8bit", r"(?P<id>[^/]+)_leftImg8bit\.png"):
            label = f"{m['id']}_leftLabel.png"
            if not self.isfile("leftLabel", label):
                raise EvalDataError(f"{self.path('leftLabel', label)}: no such file (the label of "
                                    f"{self.path('leftImg8bit', m.string)})")
            samples.append(EvalSample(m["id"], self.path("leftImg8bit", m.string), self.path("leftLabel", label)))
        return require(samples, self.root, "leftImg8bit/<id>_leftImg8bit.png + leftLabel/<id>_leftLabel.png")

    def read(self, sample: EvalSample) -> EvalItem:
        raw = read_label(sample.label_path)
        ood = apply_table(raw, MUAD_TABLES[0], sample.label_path, MUAD_VALUES)
        train = apply_table(raw, MUAD_TABLES[1], sample.label_path, MUAD_VALUES)
        return EvalItem(sample.sample_id, read_rgb(sample.image_path), ood, train)


class CityscapesVal(EvalDataset):
    """Cityscapes val (in-distribution reference: segmentation only)."""

    kind = "cityscapes"
    has_ood = False
    has_segmentation = True
    split = "val"

    def samples(self) -> list[EvalSample]:
        from cgaug.storage.cityscapes import list_sources

        return [EvalSample(r.source_id, r.image_path, r.label_path) for r in list_sources(self.root, self.split)]

    def read(self, sample: EvalSample) -> EvalItem:
        from cgaug.records import SourceRecord
        from cgaug.storage.cityscapes import read_image, read_label_ids, to_train_ids

        record = SourceRecord(sample.sample_id, sample.sample_id.split("_")[0], self.split, sample.image_path,
                              sample.label_path)
        try:
            image, label_ids = read_image(record), read_label_ids(record)
        except SampleSkipped as skipped:
            raise EvalDataError(skipped.detail) from None
        return EvalItem(sample.sample_id, image, None, to_train_ids(label_ids))
