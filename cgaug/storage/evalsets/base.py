"""What every evaluation dataset shares: the sample and item records, file reading, label mapping.

Labels are read raw (`np.asarray(Image.open(p))`): never `.convert('L')`,
which turns palette indices into luminance. Each dataset maps its raw values
through a 256-entry lookup table to 0 (in-distribution) / 1 (OOD) / 255
(void) and, where it has them, to train ids; a value the table does not list
is an error naming the file and the values, because silently treating it as
void would change the metric (e.g. raw RoadAnomaly's 2 read as 0/1 data).
"""

from __future__ import annotations

import io
import posixpath
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import fsspec
import numpy as np
from PIL import Image

ID, OOD, VOID = 0, 1, 255
UNKNOWN = -1  # lookup-table entry of a raw value the dataset does not define


class EvalDataError(ValueError):
    """A dataset file that is missing, unreadable or holds values its format does not allow."""


@dataclass(frozen=True, slots=True)
class EvalSample:
    """One evaluation frame, addressed by path or URI (only these cross process boundaries)."""

    sample_id: str
    image_path: str
    label_path: str
    base_path: str | None = None  # ACDC-POC: the original image the stored difference is added to


@dataclass(frozen=True)
class EvalItem:
    """A decoded frame: image (H, W, 3) uint8; labels (h, w) uint8 at their own (full) resolution."""

    sample_id: str
    image: np.ndarray
    ood: np.ndarray | None  # 0 in-distribution, 1 OOD, 255 void; None where the dataset has no OOD labels
    train_ids: np.ndarray | None  # Cityscapes train ids 0..18, 255 void; None where the dataset has none


class EvalDataset(ABC):
    """A benchmark dataset at `root` (a local path or an fsspec URI)."""

    kind: ClassVar[str]
    has_ood: ClassVar[bool] = True
    has_segmentation: ClassVar[bool] = False

    def __init__(self, root: str):
        self.root = str(root).rstrip("/") or "/"
        self.fs, base = fsspec.core.url_to_fs(self.root)
        self.base = base.rstrip("/") or "/"
        if not self.fs.isdir(self.base):
            raise FileNotFoundError(f"{self.root}: no such directory (the {self.kind} dataset root)")

    def path(self, *parts: str) -> str:
        """The address of `parts` under the root, as given by the user (path or URI)."""
        return posixpath.join(self.root, *parts)

    def find(self, folder: str, pattern: str) -> list[re.Match[str]]:
        """Matches of `pattern` against the paths of every file below `folder`, relative to it, sorted."""
        directory = posixpath.join(self.base, folder) if folder else self.base
        if not self.fs.isdir(directory):
            return []
        regex = re.compile(pattern)
        found = (regex.fullmatch(posixpath.relpath(p, directory)) for p in self.fs.find(directory))
        return sorted((m for m in found if m), key=lambda m: m.string)

    def isdir(self, *parts: str) -> bool:
        return bool(self.fs.isdir(posixpath.join(self.base, *parts)))

    def isfile(self, *parts: str) -> bool:
        return bool(self.fs.isfile(posixpath.join(self.base, *parts)))

    @abstractmethod
    def samples(self) -> list[EvalSample]:
        """Every labelled frame of the benchmark split, sorted by id (raises if there is none)."""

    @abstractmethod
    def read(self, sample: EvalSample) -> EvalItem:
        """The decoded frame with its labels mapped to 0/1/255 and train ids."""

    def describe(self) -> str:
        return f"{self.kind} at {self.root}"


def require(samples: list[EvalSample], where: str, expected: str) -> list[EvalSample]:
    if not samples:
        raise FileNotFoundError(f"{where}: no labelled frames found; expected {expected}")
    return samples


def read_bytes(path: str, what: str) -> bytes:
    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise EvalDataError(f"{path}: no such file (the {what})") from None
    except OSError as error:
        raise EvalDataError(f"{path}: cannot read the {what}: {error}") from None


def _open_image(path: str, what: str) -> Image.Image:
    data = read_bytes(path, what)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... on bad files
        raise EvalDataError(f"{path}: not a readable {what} ({len(data)} bytes; {type(error).__name__}: "
                            f"{error})") from None
    return image


def read_rgb(path: str, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB; grey, palette and alpha images are converted (these are pictures, not labels)."""
    image = _open_image(path, what)
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr"):
        raise EvalDataError(f"{path}: {what} mode {image.mode}; expected an 8-bit RGB or grey picture")
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)


def read_label(path: str, what: str = "label") -> np.ndarray:
    """(H, W) raw label values; an RGB file whose three channels agree is read as its first channel."""
    image = _open_image(path, what)
    array = np.asarray(image)
    if array.ndim == 3:
        if array.shape[2] >= 3 and (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all():
            array = array[..., 0]
        else:
            raise EvalDataError(f"{path}: {what} has {array.shape[2]} differing channels (mode {image.mode}); "
                                "expected a single-channel PNG of label values (is this a colour file?)")
    return array


def lookup_table(mapping: dict[int, int] | Iterable[tuple[Iterable[int], int]]) -> np.ndarray:
    """A 256-entry int16 table (UNKNOWN elsewhere) from {raw: mapped} or [(raw values, mapped), ...]."""
    table = np.full(256, UNKNOWN, dtype=np.int16)
    items = mapping.items() if isinstance(mapping, dict) else mapping
    for raw, mapped in items:
        table[list(raw) if not isinstance(raw, int) else raw] = mapped
    return table


def apply_table(label: np.ndarray, table: np.ndarray, path: str, allowed: str) -> np.ndarray:
    """`label` mapped through `table`; any value it does not define is an error listing the values."""
    if label.dtype != np.uint8:
        if label.size and (int(label.min()) < 0 or int(label.max()) > 255):
            raise EvalDataError(f"{path}: label values {int(label.min())}..{int(label.max())}; expected {allowed}")
        label = label.astype(np.uint8)
    mapped = table[label]
    if label.size and int(mapped.min()) == UNKNOWN:
        bad = np.unique(label[mapped == UNKNOWN])
        shown = ", ".join(map(str, bad[:12].tolist())) + (" ..." if bad.size > 12 else "")
        raise EvalDataError(f"{path}: label values [{shown}] ({int((mapped == UNKNOWN).sum())} pixels) are not "
                            f"defined by this format; expected {allowed}")
    return mapped.astype(np.uint8)
