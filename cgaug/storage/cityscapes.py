"""Reading a Cityscapes-format dataset root (local path or fsspec URI).

Samples are found by the official naming (``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png``
and ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``), so a root unpacked
from the official archives works as is. A stem that has only one of its two
files is still listed, with the expected path of the missing one: the run then
records it as a bad sample with a reason instead of silently producing fewer
samples than the dataset holds.

Every per-sample failure is a `SampleSkipped` with a stable reason code, so
that statistics can count them; the detail names the file.
"""

from __future__ import annotations

import io
import posixpath
import re

import fsspec
import numpy as np
from PIL import Image

from cgaug.labels import label_id_to_train_id_lut
from cgaug.records import SampleSkipped, SourceRecord

IMAGE_DIR = "leftImg8bit"
LABEL_DIR = "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

# the stem must start with the name of the city folder it sits in, as in the official archives
_STEM = r"(?P<city>[^/_]+)/(?P<stem>(?P=city)_\d{6}_\d{6})"
_PATTERNS = {
    IMAGE_DIR: re.compile(_STEM + re.escape(IMAGE_SUFFIX)),
    LABEL_DIR: re.compile(_STEM + re.escape(LABEL_SUFFIX)),
}
_LAYOUT = (f"{IMAGE_DIR}/{{split}}/<city>/<city>_<seq:06d>_<frame:06d>{IMAGE_SUFFIX} and "
           f"{LABEL_DIR}/{{split}}/<city>/<city>_<seq:06d>_<frame:06d>{LABEL_SUFFIX}")

_IMAGE_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr"}
_LABEL_MODES_8 = {"L", "P"}  # P: palette indices are the ids, as some label tools save them
_LABEL_MODES_16 = {"I;16", "I;16B", "I;16L", "I"}  # Pillow opens 16-bit grey PNGs as I;16 (older: I)


def list_sources(root: str, split: str) -> list[SourceRecord]:
    """Every sample stem of `split` under `root`, sorted by source id."""
    fs, base = fsspec.core.url_to_fs(root)
    base = base.rstrip("/")
    shown_root = str(root).rstrip("/")
    stems: dict[str, str] = {}  # stem -> city
    present = []
    for top, pattern in _PATTERNS.items():
        directory = f"{base}/{top}/{split}"
        if not fs.isdir(directory):
            continue
        present.append(top)
        for path in fs.find(directory):
            match = pattern.fullmatch(posixpath.relpath(path, directory))
            if match:
                stems[match["stem"]] = match["city"]
    layout = _LAYOUT.format(split=split)
    if not present:
        raise FileNotFoundError(
            f"{shown_root}: no Cityscapes split {split!r}: neither {IMAGE_DIR}/{split} nor "
            f"{LABEL_DIR}/{split} exists; expected {layout}{_available_splits(fs, base)}")
    if not stems:
        raise FileNotFoundError(
            f"{shown_root}: split {split!r} holds no samples; looked for {layout} (found the folder(s) "
            f"{', '.join(f'{top}/{split}' for top in present)} but no file named that way)")
    return [
        SourceRecord(
            source_id=stem,
            city=city,
            split=split,
            image_path=f"{shown_root}/{IMAGE_DIR}/{split}/{city}/{stem}{IMAGE_SUFFIX}",
            label_path=f"{shown_root}/{LABEL_DIR}/{split}/{city}/{stem}{LABEL_SUFFIX}",
        )
        for stem, city in sorted(stems.items())
    ]


def _available_splits(fs: fsspec.AbstractFileSystem, base: str) -> str:
    """A hint listing the splits that do exist, for the error about a mistyped one."""
    directory = f"{base}/{IMAGE_DIR}"
    if not fs.isdir(directory):
        return f" (there is no {IMAGE_DIR}/ folder at all)"
    names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(directory, detail=False) if fs.isdir(p))
    return f" (splits found under {IMAGE_DIR}/: {', '.join(names) or 'none'})"


def _load(path: str, *, what: str, missing: str, unreadable: str) -> Image.Image:
    """A fully decoded image; truncated or corrupt files fail here rather than later as garbage.

    `verify` checks every chunk (and its CRC) up to the end marker and `load`
    decodes all pixels, so a cut file fails even where a caller has switched
    on Pillow's LOAD_TRUNCATED_IMAGES.
    """
    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SampleSkipped(missing, f"{path}: no such file (the {what} of this sample)") from None
    except OSError as error:
        raise SampleSkipped(unreadable, f"{path}: cannot read the {what}: {error}") from None
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error... on bad files
        raise SampleSkipped(unreadable, f"{path}: not a readable {what} ({len(data)} bytes; "
                                        f"{type(error).__name__}: {error})") from None
    return image


def read_image(rec: SourceRecord) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image of a sample; grey and alpha images are converted to RGB."""
    image = _load(rec.image_path, what="image", missing="missing_image", unreadable="unreadable_image")
    if image.mode not in _IMAGE_MODES:
        bands = "/".join(image.getbands())
        raise SampleSkipped("unreadable_image", f"{rec.image_path}: image mode {image.mode} ({bands}); "
                                                "expected an 8-bit RGB, RGBA or grey image")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def read_label_ids(rec: SourceRecord) -> np.ndarray:
    """The (H, W) uint8 Cityscapes label ids of a sample, every value checked against the table."""
    image = _load(rec.label_path, what="labelIds file", missing="missing_label",
                  unreadable="unreadable_label")
    if image.mode not in _LABEL_MODES_8 | _LABEL_MODES_16:
        raise SampleSkipped("bad_label_format", _bad_format_detail(rec.label_path, image))
    ids = np.asarray(image)
    _check_known_ids(rec.label_path, ids)
    return ids.astype(np.uint8, copy=False)


def _bad_format_detail(path: str, image: Image.Image) -> str:
    bands = image.getbands()
    hint = " (is this the _gtFine_color.png file?)" if len(bands) >= 3 else ""
    return (f"{path}: label image mode {image.mode} with {len(bands)} channel(s) ({'/'.join(bands)}); "
            f"expected a single-channel 8- or 16-bit PNG of Cityscapes label ids{hint}")


def _check_known_ids(path: str, ids: np.ndarray) -> None:
    if ids.dtype == np.uint8:
        counts = np.bincount(ids.ravel(), minlength=256)
        values = np.flatnonzero(counts)
    else:
        values, counts_found = np.unique(ids, return_counts=True)
        counts = dict(zip(values.tolist(), counts_found.tolist(), strict=True))
    lut = label_id_to_train_id_lut()
    unknown = [int(v) for v in values if not 0 <= v < lut.size or lut[v] < 0]
    if unknown:
        pixels = sum(int(counts[v]) for v in unknown)
        shown = ", ".join(map(str, unknown[:20])) + (" ..." if len(unknown) > 20 else "")
        raise SampleSkipped("unknown_label_id",
                            f"{path}: label ids [{shown}] ({pixels} pixels) are not in the Cityscapes table "
                            "(valid ids 0..33); is this a trainIds or instanceIds file?")


def read_pair(rec: SourceRecord) -> tuple[np.ndarray, np.ndarray]:
    """(image, label ids) of a sample, checked to have the same size."""
    image = read_image(rec)
    label_ids = read_label_ids(rec)
    if image.shape[:2] != label_ids.shape:
        (ih, iw), (lh, lw) = image.shape[:2], label_ids.shape
        raise SampleSkipped("size_mismatch", f"image {rec.image_path} is {iw}x{ih} (WxH) but its label "
                                             f"{rec.label_path} is {lw}x{lh}; expected the same size")
    return image, label_ids


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Train ids (uint8, 255 = void) of a Cityscapes label-id map."""
    ids = np.asarray(label_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"label ids must be an integer array; found dtype {ids.dtype}")
    lut = label_id_to_train_id_lut()
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= lut.size):
        raise ValueError(f"label ids must lie in 0..{lut.size - 1}; found {int(ids.min())}..{int(ids.max())}")
    train = lut[ids]
    if ids.size and int(train.min()) < 0:
        unknown = np.unique(ids[train < 0]).tolist()
        raise ValueError(f"label ids {unknown} are not in the Cityscapes table (valid ids 0..33)")
    return train.astype(np.uint8)
