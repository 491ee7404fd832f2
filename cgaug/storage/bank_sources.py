"""Object bank builders: ADE20K full release, COCO instance annotations, a folder of masks.

Each builder streams candidate objects into `write_bank` and returns counts,
``{"written": n, "skipped_<reason>": m, ...}``, so that a user sees why a
bank is smaller than expected. A bad single object (unreadable file, broken
segmentation) is skipped and counted; a bad *source* (missing index, wrong
JSON structure, unknown class names) is an error that names the file.

Sources are read from local paths; the bank may be written to any fsspec URI.
"""

from __future__ import annotations

import json
import logging
import pickle
import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from cgaug.labels import ade_classes, default_ood_classes
from cgaug.storage.bank import BankItem, EmptyBankError, tight_box, write_bank

log = logging.getLogger(__name__)

DEFAULT_MIN_AREA = 1024
"""COCO's small-object threshold (32x32). Compose scales objects to a 200-500 px longest side, so a
smaller mask would be magnified 6-15x and paste as a blocky outline."""

# ---------------------------------------------------------------------------------------------- shared


def _counts(counter: Counter[str], written: int, keys: Sequence[str]) -> dict[str, int]:
    result = {"written": written}
    result.update({key: counter.get(key, 0) for key in keys})
    result.update({key: n for key, n in sorted(counter.items()) if key not in result})
    return result


def _check_ade_names(names: Iterable[str], what: str) -> None:
    valid = set(ade_classes())
    unknown = sorted(set(names) - valid)
    if unknown:
        raise ValueError(f"{what}: {unknown} are not ADE20K-150 class names; valid names: {sorted(valid)}")


def _read_json(path: Path, what: str) -> object:
    """A JSON file's content; errors name the file and what it was meant to be."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} file not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: {what} is not valid JSON ({error})") from error


def load_class_map(path: str | Path | None) -> dict[str, str | None]:
    """A JSON object {name: ADE20K-150 name or null}; null drops that name. Keys are lower-cased."""
    if path is None:
        return {}
    path = Path(path)
    data = _read_json(path, "class map")
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise ValueError(f"{path}: expected a JSON object mapping names to ADE20K-150 names (or null), "
                         f"found {type(data).__name__}")
    _check_ade_names((v for v in data.values() if v is not None), f"{path}: class map values")
    return {k.strip().lower(): v for k, v in data.items()}


def _truncated(box: tuple[int, int, int, int], height: int, width: int) -> bool:
    """Whether the object touches the image border, i.e. is probably cut off by the frame."""
    x0, y0, x1, y1 = box
    return x0 == 0 or y0 == 0 or x1 == width or y1 == height


def _write(items: Iterator[BankItem], out: str, builder: str, source: str | Path,
           counter: Counter[str], keys: Sequence[str]) -> dict[str, int]:
    try:
        written = write_bank(items, out, builder)
    except EmptyBankError:
        counts = _counts(counter, 0, keys)
        raise EmptyBankError(f"{source}: no object passed the filters, nothing written to {out}; "
                             f"counts: {counts}") from None
    return _counts(counter, written, keys)


# --------------------------------------------------------------------------------------------- ADE20K

ADE_INDEX = "index_ade20k.pkl"
_ADE_CLASS_RANGE = 26 * 256  # R // 10 of an 8-bit channel is at most 25


def ade_fine_to_150(objectnames: Sequence[str], class_map: dict[str, str | None]) -> list[str | None]:
    """The ADE20K-150 class of each fine-grained ADE20K object name, or None.

    `class_map` (lower-cased keys) is looked up by the full name, then by its
    first synonym; otherwise the first synonym itself is kept when it is one
    of the 150 names ("car, auto, automobile" -> "car").
    """
    valid = set(ade_classes())
    result: list[str | None] = []
    for name in objectnames:
        full = str(name).strip().lower()
        first = full.split(",")[0].strip()
        if full in class_map:
            result.append(class_map[full])
        elif first in class_map:
            result.append(class_map[first])
        else:
            result.append(first if first in valid else None)
    return result


def _load_ade_index(root: Path) -> dict:
    """The full release's index. It is a pickle: only open index files you trust."""
    path = root / ADE_INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected the ADE20K full release root "
                                f"(e.g. ADE20K_2021_17_01/) holding {ADE_INDEX}")
    with open(path, "rb") as f:
        index = pickle.load(f)
    if not isinstance(index, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(index).__name__}")
    missing = [key for key in ("filename", "folder", "objectnames") if key not in index]
    if missing:
        raise ValueError(f"{path}: keys {missing} missing; found {sorted(index)}")
    if len(index["filename"]) != len(index["folder"]):
        raise ValueError(f"{path}: 'filename' has {len(index['filename'])} entries but 'folder' has "
                         f"{len(index['folder'])}; expected one folder per image")
    return index


def _find_seg(root: Path, folder: str, filename: str) -> Path | None:
    """The image's `_seg.png`. Index folders start with the release directory
    (``ADE20K_2021_17_01/images/...``), so they resolve against the root's parent;
    other layouts are tried too, so that a renamed or moved root still works."""
    stem = Path(filename).stem
    folder_path = Path(folder)
    candidates = [root.parent / folder_path, root / folder_path]
    if root.name in folder_path.parts:
        after = folder_path.parts[folder_path.parts.index(root.name) + 1:]
        candidates.append(root.joinpath(*after))
    for directory in candidates:
        seg = directory / f"{stem}_seg.png"
        if seg.is_file():
            return seg
    return None


def _ade_images(index: dict, wanted_lut: np.ndarray) -> list[int]:
    """Image numbers that may hold a wanted class; `objectPresence` (C x N counts) spares reading the rest."""
    n = len(index["filename"])
    presence = index.get("objectPresence")
    if presence is None:
        return list(range(n))
    presence = np.asarray(presence)
    fine = len(index["objectnames"])
    if presence.ndim != 2 or presence.shape != (fine, n):
        log.warning("%s: objectPresence has shape %s, expected (%d, %d); scanning every image",
                    ADE_INDEX, presence.shape, fine, n)
        return list(range(n))
    wanted_rows = np.flatnonzero(wanted_lut[1:fine + 1])
    return [int(i) for i in np.flatnonzero(presence[wanted_rows].sum(axis=0) > 0)]


def decode_ade_seg(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class, instance) maps of an ADE20K `_seg.png` RGB array.

    Class = R // 10 * 256 + G: 0 is unlabeled, c > 0 is ``objectnames[c - 1]``.
    The B channel holds the instance: pixels sharing a B value are one instance
    (the toolkit's `loadAde20K` numbers the distinct B values).
    """
    if seg.ndim != 3 or seg.shape[2] < 3:
        raise ValueError(f"expected an RGB _seg.png, found shape {seg.shape}")
    classes = (seg[..., 0] // 10).astype(np.int32) * 256 + seg[..., 1].astype(np.int32)
    return classes, seg[..., 2]


def _ade_instances(classes: np.ndarray, instances: np.ndarray, wanted: np.ndarray
                   ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(class value, B value, ys, xs) per instance of a wanted class, without full-image masks."""
    ys, xs = np.nonzero(wanted[classes])
    if ys.size == 0:
        return
    keys = classes[ys, xs].astype(np.int64) * 256 + instances[ys, xs]
    order = np.argsort(keys, kind="stable")
    keys, ys, xs = keys[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], keys.size]
    for start, end in zip(starts, ends, strict=True):
        key = int(keys[start])
        yield key // 256, key % 256, ys[start:end], xs[start:end]


def _window_mask(ys: np.ndarray, xs: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    mask[ys - y0, xs - x0] = True
    return mask


def build_from_ade20k(root: str | Path, out: str, classes: Sequence[str] | None = None,
                      min_area: int = DEFAULT_MIN_AREA, class_map: str | Path | None = None,
                      drop_truncated: bool = False, progress: bool = False) -> dict[str, int]:
    """Build a bank from the ADE20K full release (``ADE20K_2021_17_01``): one entry per instance.

    Fine object names map to ADE20K-150 classes by their first synonym, or by
    `class_map` (a JSON file {fine name: ADE20K-150 name or null}) which wins.
    Only instances of `classes` (default: `default_ood_classes()`, the reference's
    82 training OOD classes) with at least `min_area` pixels are kept;
    class_name and ade_class are both the ADE20K-150 name.
    """
    root = Path(root)
    wanted_classes = list(default_ood_classes() if classes is None else classes)
    _check_ade_names(wanted_classes, "ADE20K classes")
    index = _load_ade_index(root)
    mapped = ade_fine_to_150(index["objectnames"], load_class_map(class_map))
    wanted_lut = np.zeros(max(_ADE_CLASS_RANGE, len(mapped) + 1), dtype=bool)  # by class value
    wanted_lut[1:len(mapped) + 1] = [ade in set(wanted_classes) for ade in mapped]
    counter: Counter[str] = Counter()
    keys = ("skipped_small", "skipped_truncated", "skipped_missing_seg", "skipped_unreadable_seg")

    def items() -> Iterator[BankItem]:
        images = _ade_images(index, wanted_lut)
        for i in tqdm(images, desc="ADE20K images", unit="img", disable=not progress):
            folder, filename = str(index["folder"][i]), str(index["filename"][i])
            source_id = f"{folder}/{filename}"
            seg_path = _find_seg(root, folder, filename)
            if seg_path is None:
                counter["skipped_missing_seg"] += 1
                log.debug("%s: no _seg.png found", source_id)
                continue
            try:
                with Image.open(seg_path) as image:
                    classes_map, instances = decode_ade_seg(np.asarray(image.convert("RGB")))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                counter["skipped_unreadable_seg"] += 1
                log.warning("%s: unreadable (%s); skipped", seg_path, error)
                continue
            height, width = classes_map.shape
            for value, b, ys, xs in _ade_instances(classes_map, instances, wanted_lut):
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                if ys.size < min_area:
                    counter["skipped_small"] += 1
                elif drop_truncated and _truncated(box, height, width):
                    counter["skipped_truncated"] += 1
                else:
                    ade = str(mapped[value - 1])  # wanted_lut only selects mapped classes
                    yield BankItem(object_id=f"ade20k:{source_id}:{value}.{b}", class_name=ade,
                                   ade_class=ade, source="ade20k", source_id=source_id,
                                   mask=_window_mask(ys, xs, box), origin=(box[0], box[1]))

    return _write(items(), out, "ade20k", root, counter, keys)


# ----------------------------------------------------------------------------------------------- COCO

COCO_EXCLUDED = frozenset({
    # Cityscapes classes (or what they are painted as): pasting them would teach "known class = OOD".
    "person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "traffic light", "stop sign",
    # street furniture that appears in Cityscapes scenes under void labels, so it is not novel there.
    "fire hydrant", "parking meter",
})
"""COCO categories left out by default."""

COCO_TO_ADE: dict[str, str | None] = {
    "airplane": "airplane", "boat": "boat", "bench": "bench",
    **dict.fromkeys(
        ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"), "animal"),
    "backpack": "bag", "handbag": "bag", "suitcase": "bag",
    "umbrella": None, "tie": "apparel",
    "frisbee": "plaything", "kite": "plaything", "teddy bear": "plaything", "sports ball": "ball",
    "skis": None, "snowboard": None, "skateboard": None, "surfboard": None,
    "baseball bat": None, "baseball glove": None, "tennis racket": None,
    "bottle": "bottle", "wine glass": "glass", "cup": "glass",
    "fork": None, "knife": None, "spoon": None, "bowl": None,
    **dict.fromkeys(
        ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"),
        "food"),
    "chair": "chair", "couch": "sofa", "potted plant": "plant", "bed": "bed", "dining table": "table",
    "toilet": "toilet", "tv": "television receiver", "laptop": "computer",
    "mouse": None, "remote": None, "keyboard": None, "cell phone": None,
    "microwave": "microwave", "oven": "oven", "toaster": None, "sink": "sink", "refrigerator": "refrigerator",
    "book": "book", "clock": "clock", "vase": "vase", "scissors": None, "hair drier": None,
    "toothbrush": None,
}
"""COCO name -> ADE20K-150 class that paints it; None: no ADE class fits, the object is skipped."""


def rle_string_to_counts(text: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' `rleFrString`).

    Each count is a little-endian sequence of 5-bit groups stored as chr(48 + g),
    bit 0x20 meaning "more groups follow" and bit 0x10 of the last group the
    sign; from the fourth count on, counts are stored as differences to the count two
    places back.
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError(f"compressed RLE ends inside a count at character {pos}")
            group = ord(text[pos]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"compressed RLE has an invalid character {text[pos]!r} at {pos}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_decode(counts: Sequence[int] | str, size: Sequence[int]) -> np.ndarray:
    """The (h, w) bool mask of a COCO RLE: runs alternate 0/1 starting with 0, in column-major order."""
    if len(size) != 2:
        raise ValueError(f"RLE size must be [height, width], found {size!r}")
    height, width = int(size[0]), int(size[1])
    runs = np.asarray(rle_string_to_counts(counts) if isinstance(counts, str) else counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any():
        raise ValueError("RLE counts must be a flat list of non-negative run lengths")
    if int(runs.sum()) != height * width:
        raise ValueError(f"RLE counts sum to {int(runs.sum())}, expected height*width = {height * width}")
    flat = np.repeat(np.arange(runs.size) % 2 == 1, runs)
    return flat.reshape((height, width), order="F")


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons ([x0, y0, x1, y1, ...] each) at the image size; their union is the mask."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    drawn = 0
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            continue  # not a polygon (COCO has a few two-point "polygons")
        points = [(float(x), float(y)) for x, y in zip(poly[0::2], poly[1::2], strict=True)]
        draw.polygon(points, fill=1, outline=1)
        drawn += 1
    if drawn == 0:
        raise ValueError("segmentation has no polygon with at least 3 points")
    return np.asarray(image) > 0


def coco_segmentation_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """The mask of a COCO `segmentation` (polygons, uncompressed or compressed RLE) at the image size."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image size [{height}, {width}]")
        return rle_decode(segmentation["counts"], size)
    raise ValueError(f"segmentation is neither a polygon list nor an RLE dict: {type(segmentation).__name__}")


def _load_coco(path: Path) -> dict:
    data = _read_json(path, "COCO annotation")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a COCO instances JSON object, found {type(data).__name__}")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(f"{path}: keys {missing} missing; expected COCO instance annotations "
                         "(e.g. instances_train2017.json)")
    return data


def build_from_coco(annotations_json: str | Path, out: str, classes: Sequence[str] | None = None,
                    min_area: int = DEFAULT_MIN_AREA, ade_map: str | Path | None = None,
                    include_crowd: bool = False, drop_truncated: bool = False,
                    progress: bool = False) -> dict[str, int]:
    """Build a bank from COCO instance annotations; class_name keeps the COCO name.

    `classes` are COCO category names (default: all in the file except
    `COCO_EXCLUDED`). The paint colour comes from `COCO_TO_ADE`, overridden by
    `ade_map` (JSON {COCO name: ADE20K-150 name or null}); a class without an
    ADE class is skipped and counted. Crowd annotations (one mask over many
    objects) are skipped unless `include_crowd`.

    source_id is the image's file name (``file_name``, else the last part of
    ``coco_url`` as in LVIS), so that the training anomaly mix finds the
    object's pixels under the images folder (``data.bank_images=COCO/train2017``);
    object_id keeps the annotation id (``coco:{annotation id}:0``), which is unique.
    """
    path = Path(annotations_json)
    data = _load_coco(path)
    try:
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = {int(im["id"]): (_coco_file_name(im), int(im["height"]), int(im["width"]))
                  for im in data["images"]}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: malformed 'categories' or 'images' entry ({error!r}); expected "
                         "categories with id and name, images with id, height and width") from error
    available = sorted(set(categories.values()))
    wanted = set(available) - COCO_EXCLUDED if classes is None else set(classes)
    unknown = sorted(wanted - set(available))
    if unknown:
        raise ValueError(f"{path}: classes {unknown} are not COCO categories in this file; "
                         f"available: {available}")
    table = {**COCO_TO_ADE, **load_class_map(ade_map)}
    counter: Counter[str] = Counter()
    keys = ("skipped_small", "skipped_crowd", "skipped_no_ade_class", "skipped_bad_segmentation",
            "skipped_missing_image", "skipped_truncated")

    def items() -> Iterator[BankItem]:
        annotations = sorted(data["annotations"], key=lambda a: int(a.get("id", -1)))
        for ann in tqdm(annotations, desc="COCO annotations", unit="ann", disable=not progress):
            item = _coco_item(ann, categories, images, wanted, table, min_area, include_crowd,
                              drop_truncated, counter)
            if item is not None:
                yield item

    return _write(items(), out, "coco", path, counter, keys)


def _coco_file_name(image: dict) -> str:
    """The image file an annotation's pixels are in: `file_name` (COCO), else the end of `coco_url` (LVIS).

    Without either, the image id stands in: such a bank still serves compose (masks only), and the
    anomaly mix refuses it by name (`BankObjects`) instead of looking for a file that has no name.
    """
    name = image.get("file_name") or posixpath.basename(str(image.get("coco_url") or ""))
    return str(name or image["id"])


def _coco_item(ann: dict, categories: dict[int, str], images: dict[int, tuple[str, int, int]],
               wanted: set[str], table: dict[str, str | None], min_area: int, include_crowd: bool,
               drop_truncated: bool, counter: Counter[str]) -> BankItem | None:
    name = categories.get(int(ann.get("category_id", -1)))
    if name not in wanted:
        return None
    if ann.get("iscrowd", 0) and not include_crowd:
        counter["skipped_crowd"] += 1
        return None
    ade = table.get(name.lower())
    if ade is None:
        counter["skipped_no_ade_class"] += 1
        return None
    image = images.get(int(ann.get("image_id", -1)))
    if image is None:
        counter["skipped_missing_image"] += 1
        return None
    file_name, height, width = image
    try:
        mask = coco_segmentation_mask(ann.get("segmentation"), height, width)
    except (ValueError, TypeError) as error:
        counter["skipped_bad_segmentation"] += 1
        log.warning("COCO annotation %s: bad segmentation (%s); skipped", ann.get("id"), error)
        return None
    box = tight_box(mask)
    if box is None or int(mask.sum()) < min_area:
        counter["skipped_small"] += 1
        return None
    if drop_truncated and _truncated(box, height, width):
        counter["skipped_truncated"] += 1
        return None
    return BankItem(object_id=f"coco:{ann.get('id')}:0", class_name=name, ade_class=ade, source="coco",
                    source_id=file_name, mask=mask)


# --------------------------------------------------------------------------------------------- folder


def read_mask_png(path: Path) -> np.ndarray:
    """A binary mask from a PNG: alpha > 0 when the image has transparency, else any nonzero channel."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            return np.asarray(image.convert("RGBA"))[..., 3] > 0
        array = np.asarray(image)
    return array.any(axis=2) if array.ndim == 3 else array != 0


def build_from_folder(folder: str | Path, out: str, class_map: str | Path | None = None,
                      classes: Sequence[str] | None = None, min_area: int = 1,
                      progress: bool = False) -> dict[str, int]:
    """Build a bank from ``{folder}/{class}/*.png`` binary masks; class_name is the sub-folder name.

    ade_class is the `class_map` entry (JSON {class: ADE20K-150 name}) when
    there is one, else the class itself when it is an ADE20K-150 name;
    otherwise it is an error. Unreadable PNGs are skipped and counted.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory; expected {{folder}}/{{class}}/*.png masks")
    class_dirs = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not class_dirs:
        raise ValueError(f"{root}: no class sub-folders; expected {{folder}}/{{class}}/*.png masks")
    if classes is not None:
        unknown = sorted(set(classes) - set(class_dirs))
        if unknown:
            raise ValueError(f"{root}: classes {unknown} have no sub-folder; available: {sorted(class_dirs)}")
        class_dirs = {name: d for name, d in class_dirs.items() if name in set(classes)}
    ade_of = _folder_ade_classes(root, list(class_dirs), load_class_map(class_map))
    counter: Counter[str] = Counter()
    keys = ("skipped_small", "skipped_empty", "skipped_unreadable")

    def items() -> Iterator[BankItem]:
        files = [(name, f) for name, d in class_dirs.items() for f in sorted(d.iterdir())
                 if f.is_file() and f.suffix.lower() == ".png" and not f.name.startswith(".")]
        for name, file in tqdm(files, desc="mask files", unit="file", disable=not progress):
            try:
                mask = read_mask_png(file)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                counter["skipped_unreadable"] += 1
                log.warning("%s: unreadable mask (%s); skipped", file, error)
                continue
            area = int(mask.sum())
            if area == 0:
                counter["skipped_empty"] += 1
                continue
            if area < min_area:
                counter["skipped_small"] += 1
                continue
            source_id = f"{name}/{file.name}"
            yield BankItem(object_id=f"folder:{source_id}:0", class_name=name, ade_class=ade_of[name],
                           source="folder", source_id=source_id, mask=mask)

    return _write(items(), out, "folder", root, counter, keys)


def _folder_ade_classes(root: Path, names: list[str], class_map: dict[str, str | None]) -> dict[str, str]:
    valid = set(ade_classes())
    result: dict[str, str] = {}
    unmapped = []
    for name in names:
        ade = class_map.get(name.lower()) or (name if name in valid else None)
        if ade is None:
            unmapped.append(name)
        else:
            result[name] = ade
    if unmapped:
        raise ValueError(f"{root}: class folders {unmapped} are not ADE20K-150 names and have no --class-map "
                         f"entry; map them to one of: {sorted(valid)}")
    return result
