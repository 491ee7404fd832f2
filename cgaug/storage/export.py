"""Export generated samples into the classic Cityscapes folder layout.

Existing data loaders (torchvision's `Cityscapes`, mmsegmentation's
`CityscapesDataset`, most research code) find images and labels by the
``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` and
``gtFine/{split}/{city}/{stem}_gtFine_*.png`` pattern, pairing them through
the shared stem. One source image yields several variants, so the stem is::

    {source_id}_{variant:03d}      e.g. aachen_000000_000019_002

``{city}_{seq}_{frame}`` stays a prefix, and the variant is one more
``_``-separated token before the file type. Loaders that pair files by
replacing the suffix work unchanged; `cityscapesscripts.getCsFileInfo`, which
expects exactly three tokens before the type, does not parse these names.

Files per sample:

- ``_leftImg8bit.png``: the generated image (the stored PNG bytes, unchanged);
- ``_gtFine_labelTrainIds.png``: train ids 0-18, 255 void, and 254 on the
  pasted out-of-distribution objects (the stored PNG bytes, unchanged);
- ``_gtFine_color.png``: the official Cityscapes train-id colours, void black
  and the OOD class white (255, 255, 255), a colour no Cityscapes class uses.

`cgaug_export.json`, written last, maps every exported stem to its sample id
and records the source manifest, since metadata lives in the shards' columns,
not in the exported file names. Skipped samples have no images and are never
exported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from cgaug.labels import train_id_color_lut
from cgaug.records import OOD_TRAIN_ID
from cgaug.storage.fs import Root, open_root
from cgaug.storage.png import decode_png, encode_png
from cgaug.storage.schema import VERDICT_ACCEPTED, VERDICT_SKIPPED, VERDICT_UNFILTERED
from cgaug.storage.shards import iter_rows, read_manifest

OOD_COLOR = (255, 255, 255)
EXPORT_RECORD = "cgaug_export.json"
DEFAULT_VERDICTS = (VERDICT_UNFILTERED, VERDICT_ACCEPTED)


def cityscapes_stem(source_id: str, variant: int) -> str:
    """The file stem of one exported variant (see the module docstring)."""
    return f"{source_id}_{int(variant):03d}"


def color_label(label: np.ndarray) -> np.ndarray:
    """The (H, W, 3) Cityscapes colour picture of a train-id label, OOD in `OOD_COLOR`."""
    lut = train_id_color_lut().copy()
    lut[OOD_TRAIN_ID] = OOD_COLOR
    return lut[label]


def export_cityscapes(root: Root | str | os.PathLike[str], dest: Root | str | os.PathLike[str],
                      verdicts: Iterable[str] = DEFAULT_VERDICTS) -> int:
    """Write the samples with the given verdicts under `dest` in Cityscapes layout.

    Args:
        root: the output root holding shards and manifest.
        dest: the export directory (local path or fsspec URI); files already there are overwritten.
        verdicts: which rows to export; the skipped verdict is refused since those rows have no images.

    Returns:
        The number of samples exported.

    Raises:
        ValueError: `verdicts` includes skipped, a row to export lacks its image
            or label, or two rows map to the same file stem.
    """
    source = root if isinstance(root, Root) else open_root(root, create=False)
    target = dest if isinstance(dest, Root) else open_root(dest)
    wanted = [verdicts] if isinstance(verdicts, str) else list(verdicts)
    if VERDICT_SKIPPED in wanted:
        raise ValueError(f"verdict {VERDICT_SKIPPED!r} cannot be exported: skipped rows carry no images")
    manifest = read_manifest(source)
    exported: dict[str, str] = {}
    for row in iter_rows(source, wanted):
        stem = cityscapes_stem(row["source_id"], row["variant"])
        if stem in exported:
            raise ValueError(f"samples {exported[stem]!r} and {row['sample_id']!r} both export as {stem!r} "
                             "(same source_id and variant); export fewer verdicts")
        _export_row(target, row, stem)
        exported[stem] = row["sample_id"]
    record = {
        "source": source.uri(),
        "manifest_created_at": manifest.created_at,
        "config_fingerprint": manifest.extra.get("config_fingerprint"),
        "verdicts": wanted,
        "stem_format": "{source_id}_{variant:03d}",
        "ood_train_id": OOD_TRAIN_ID,
        "ood_color": list(OOD_COLOR),
        "samples": [{"stem": stem, "sample_id": sample_id} for stem, sample_id in exported.items()],
    }
    target.write_bytes_atomic(EXPORT_RECORD, json.dumps(record, indent=2).encode() + b"\n")
    return len(exported)


def _export_row(target: Root, row: dict[str, Any], stem: str) -> None:
    missing = [column for column in ("image_png", "label_png") if row[column] is None]
    if missing:
        raise ValueError(f"sample {row['sample_id']!r} (verdict {row['verdict']!r}) has no {missing}; "
                         "cannot export it")
    for column, value in (("split", row["split"]), ("city", row["city"]), ("source_id", row["source_id"])):
        if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
            raise ValueError(f"sample {row['sample_id']!r}: column {column!r} is {value!r}, expected a "
                             "non-empty name without '/' (it becomes a folder or file name)")
    split, city = row["split"], row["city"]
    target.write_bytes_atomic(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", row["image_png"])
    target.write_bytes_atomic(f"gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png", row["label_png"])
    colors = color_label(decode_png(row["label_png"]))
    target.write_bytes_atomic(f"gtFine/{split}/{city}/{stem}_gtFine_color.png", encode_png(colors))
