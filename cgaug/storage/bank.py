"""The object bank: out-of-distribution object masks in one Parquet file.

A bank row is one binary object mask cropped to its tight box, plus where it
came from and which ADE20K-150 class paints it in the conditioning map. The
builders in `bank_sources` fill it from ADE20K, COCO or a folder of masks;
the compose stage reads it through `ObjectBank`.

Why one Parquet file: a bank is written once and read by every worker, and
the ordinary tools (pyarrow, pandas, DuckDB) can audit it. The masks are small
PNGs, so even a large bank stays in memory as one compact pyarrow column and
is decoded per access; the metadata columns are turned into Python lists once
so that sampling an object costs no Arrow round trip.
"""

from __future__ import annotations

import os
import posixpath
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from cgaug.labels import ade_classes
from cgaug.storage.fs import Root, open_input
from cgaug.storage.png import decode_png, encode_png

BANK_SCHEMA_VERSION = 1
VERSION_KEY = b"cgaug.bank_schema_version"
BUILDER_KEY = b"cgaug.bank_builder"
SOURCES = ("ade20k", "coco", "folder")

BANK_SCHEMA = pa.schema([
    pa.field("object_id", pa.string(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),  # the name used in prompts
    pa.field("ade_class", pa.string(), nullable=False),  # the ADE20K-150 class whose colour paints it
    pa.field("source", pa.string(), nullable=False),  # ade20k | coco | folder
    pa.field("source_id", pa.string(), nullable=False),  # the image file (ADE20K, COCO) or mask file (folder);
    # COCO banks built before the anomaly mix accepted COCO hold the annotation id here
    pa.field("mask_png", pa.binary(), nullable=False),  # bool mask cropped to its box, PNG
    pa.field("height", pa.int32(), nullable=False),  # crop size
    pa.field("width", pa.int32(), nullable=False),
    pa.field("x0", pa.int32(), nullable=False),  # box in the source image, exclusive ends
    pa.field("y0", pa.int32(), nullable=False),
    pa.field("x1", pa.int32(), nullable=False),
    pa.field("y1", pa.int32(), nullable=False),
    pa.field("area", pa.int64(), nullable=False),  # mask pixels
])

_METADATA_COLUMNS = [name for name in BANK_SCHEMA.names if name != "mask_png"]
_ROW_GROUP_SIZE = 1024  # rows per Parquet row group, and per batch held in memory while writing
_MASK_CACHE_SIZE = 256


class EmptyBankError(ValueError):
    """A bank with no objects: nothing to paste, so every consumer would fail later and less clearly."""


@dataclass(frozen=True, slots=True)
class BankItem:
    """One object on its way into a bank.

    `mask` may be the whole source image or any window of it: `origin` is the
    (x, y) of ``mask[0, 0]`` in the source image, so that builders that find
    an instance's pixels directly need not allocate a full-image mask.
    `write_bank` crops it to the tight box and records the box in
    source-image coordinates.
    """

    object_id: str
    class_name: str
    ade_class: str
    source: str
    source_id: str
    mask: np.ndarray
    origin: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class BankEntry:
    """The metadata of one bank object; its mask comes from `ObjectBank.mask`."""

    object_id: str
    class_name: str
    ade_class: str
    source: str
    source_id: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the source image, exclusive ends
    area: int


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) with exclusive ends of the nonzero pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _row(item: BankItem, valid_ade: frozenset[str]) -> dict | None:
    """The Parquet row of `item`, or None when its mask is empty."""
    if item.source not in SOURCES:
        raise ValueError(f"object {item.object_id!r}: source {item.source!r} is not one of {SOURCES}")
    if item.ade_class not in valid_ade:
        raise ValueError(f"object {item.object_id!r}: ade_class {item.ade_class!r} is not an ADE20K-150 "
                         "class name (see cgaug.labels.ade_classes())")
    if item.mask.ndim != 2:
        raise ValueError(f"object {item.object_id!r}: expected a 2-D mask, found shape {item.mask.shape}")
    mask = item.mask.astype(bool, copy=False)
    box = tight_box(mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    crop = mask[y0:y1, x0:x1]
    ox, oy = item.origin
    return {
        "object_id": item.object_id, "class_name": item.class_name, "ade_class": item.ade_class,
        "source": item.source, "source_id": item.source_id, "mask_png": encode_png(crop),
        "height": y1 - y0, "width": x1 - x0,
        "x0": ox + x0, "y0": oy + y0, "x1": ox + x1, "y1": oy + y1, "area": int(crop.sum()),
    }


def _root_and_name(uri: str) -> tuple[Root, str]:
    """The directory of `uri` as a `Root` (created when local) and the file name in it."""
    if not uri:
        raise ValueError("bank path is empty; expected a local path or an fsspec URI such as s3://b/bank.parquet")
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    directory, name = posixpath.split(path.rstrip("/"))
    if not name:
        raise ValueError(f"bank path {uri!r} names a directory; expected a file such as bank.parquet")
    if isinstance(fs, LocalFileSystem):
        os.makedirs(directory, exist_ok=True)
    return Root(fs=fs, path=directory or "/"), name


def write_bank(items: Iterable[BankItem], out: str | os.PathLike[str], builder: str) -> int:
    """Write `items` as a bank at `out` (local path or fsspec URI), atomically; returns the rows written.

    Masks are cropped to their tight box; empty masks are skipped. Object ids
    must be unique, since compose records them to make samples traceable.
    Rows are streamed in row groups, so a bank from a whole dataset never sits
    in memory as Python objects. Raises `EmptyBankError` (and leaves no file)
    when no object remains.
    """
    out = os.fspath(out)
    metadata = {VERSION_KEY: str(BANK_SCHEMA_VERSION).encode(), BUILDER_KEY: builder.encode()}
    schema = BANK_SCHEMA.with_metadata(metadata)
    written = 0

    def stream(f: IO[bytes]) -> None:
        nonlocal written
        with pq.ParquetWriter(f, schema) as writer:
            for batch in _row_batches(items):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
            if written == 0:
                raise EmptyBankError(f"no objects to write to {out}: every candidate was skipped or empty")

    root, name = _root_and_name(out)
    root.write_atomic(name, stream)
    return written


def _row_batches(items: Iterable[BankItem]) -> Iterator[list[dict]]:
    valid_ade = frozenset(ade_classes())
    seen: set[str] = set()
    batch: list[dict] = []
    for item in items:
        if item.object_id in seen:
            raise ValueError(f"duplicate object_id {item.object_id!r}; object ids must be unique in a bank")
        seen.add(item.object_id)
        row = _row(item, valid_ade)
        if row is not None:
            batch.append(row)
        if len(batch) == _ROW_GROUP_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_schema(path: str, schema: pa.Schema) -> None:
    """Refuse files that are not banks of this version, naming the first problem."""
    version = (schema.metadata or {}).get(VERSION_KEY)
    if version is None:
        raise ValueError(f"{path}: not an object bank: file metadata lacks {VERSION_KEY.decode()!r} "
                         "(build one with `cgaug bank build`)")
    if version.decode() != str(BANK_SCHEMA_VERSION):
        raise ValueError(f"{path}: object bank schema version {version.decode()!r}, expected "
                         f"{BANK_SCHEMA_VERSION}; rebuild the bank with this version of cgaug")
    for field in BANK_SCHEMA:
        index = schema.get_field_index(field.name)
        if index < 0:
            raise ValueError(f"{path}: not an object bank: column {field.name!r} missing "
                             f"(expected {field.type}); found columns {schema.names}")
        if not schema.field(index).type.equals(field.type):
            raise ValueError(f"{path}: column {field.name!r} has type {schema.field(index).type}, "
                             f"expected {field.type}")


class ObjectBank:
    """A read-only object bank, optionally restricted to some classes.

    Indices run over the (filtered) rows in file order; they are what
    `indices_of` returns and what `entry` and `mask` take.
    """

    def __init__(self, path: str, table: pa.Table, builder: str) -> None:
        self.path = path
        self.builder = builder
        self._blobs = table.column("mask_png")
        meta = {name: table.column(name).to_pylist() for name in _METADATA_COLUMNS}
        self._meta = meta
        names = np.asarray(meta["class_name"], dtype=object)
        self._by_class = {str(c): np.flatnonzero(names == c) for c in sorted(set(meta["class_name"]))}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def open(cls, path: str | os.PathLike[str], classes: list[str] | None = None) -> ObjectBank:
        """Open the bank at `path` (local path or fsspec URI), keeping only `classes` when given."""
        path = os.fspath(path)
        fs, fs_path = fsspec.core.url_to_fs(path)
        try:
            with open_input(fs, fs_path) as f:
                parquet = pq.ParquetFile(f)
                _check_schema(path, parquet.schema_arrow)
                table = parquet.read(columns=BANK_SCHEMA.names)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such object bank file") from None
        except pa.ArrowInvalid as error:
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from error
        builder = (parquet.schema_arrow.metadata or {}).get(BUILDER_KEY, b"").decode()
        if table.num_rows == 0:
            raise EmptyBankError(f"{path}: the object bank has no objects")
        if classes is not None:
            table = _filter_classes(path, table, classes)
        bank = cls(path, table, builder)
        bank._check_usable()
        return bank

    def _check_usable(self) -> None:
        """Refuse a bank in which no mask has a pixel: every paste would fail, and be blamed on the road.

        Masks are decoded only until the first non-empty one (the first, in any real bank).
        """
        for i, area in enumerate(self._meta["area"]):
            if area > 0:
                try:
                    if self.mask(i).any():
                        return
                except ValueError:
                    continue  # an unreadable mask is not a usable one
        raise EmptyBankError(
            f"{self.path}: none of the {len(self)} objects has a usable mask (every mask is empty or "
            "unreadable), so nothing could be pasted; rebuild the bank from masks with foreground pixels "
            "(`cgaug bank build`)")

    def __len__(self) -> int:
        return len(self._meta["object_id"])

    def __repr__(self) -> str:
        return f"ObjectBank({self.path!r}, {len(self)} objects, {len(self._by_class)} classes)"

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names present, sorted."""
        return tuple(self._by_class)

    def indices_of(self, class_name: str) -> np.ndarray:
        """The row indices of `class_name`, ascending."""
        try:
            return self._by_class[class_name].copy()
        except KeyError:
            raise KeyError(f"class {class_name!r} is not in object bank {self.path}; "
                           f"available: {list(self._by_class)}") from None

    def entry(self, i: int) -> BankEntry:
        m = self._meta
        i = self._check_index(i)
        return BankEntry(
            object_id=m["object_id"][i], class_name=m["class_name"][i], ade_class=m["ade_class"][i],
            source=m["source"][i], source_id=m["source_id"][i],
            box=(m["x0"][i], m["y0"][i], m["x1"][i], m["y1"][i]), area=m["area"][i],
        )

    def mask(self, i: int) -> np.ndarray:
        """The object's bool mask, cropped to its box; read-only because it is shared through the cache."""
        i = self._check_index(i)
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            return cached
        mask = self._decode(i)
        mask.flags.writeable = False
        self._cache[i] = mask
        if len(self._cache) > _MASK_CACHE_SIZE:
            self._cache.popitem(last=False)
        return mask

    def _decode(self, i: int) -> np.ndarray:
        object_id = self._meta["object_id"][i]
        try:
            mask = decode_png(self._blobs[i].as_py(), mask=True)
        except Exception as error:  # PIL raises several types for corrupt data
            raise ValueError(f"{self.path}: object {object_id!r}: mask_png is not a readable PNG "
                             f"({error})") from error
        expected = (self._meta["height"][i], self._meta["width"][i])
        if mask.shape != expected:
            raise ValueError(f"{self.path}: object {object_id!r}: mask is {mask.shape[0]}x{mask.shape[1]}, "
                             f"expected height x width {expected[0]}x{expected[1]}")
        return mask

    def _check_index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"object index {i} out of range for object bank {self.path} "
                             f"({len(self)} objects)")
        return i


def _filter_classes(path: str, table: pa.Table, classes: list[str]) -> pa.Table:
    present = sorted(set(table.column("class_name").to_pylist()))
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"{path}: classes {missing} are not in the object bank; available: {present}")
    if not classes:
        raise EmptyBankError(f"{path}: the class filter is empty, so no object remains; available: {present}")
    return table.filter(pc.is_in(table.column("class_name"), value_set=pa.array(classes, pa.string())))


def bank_stats(path: str) -> dict:
    """Entry counts per class, ADE class and source, for `cgaug bank stats` and audits."""
    bank = ObjectBank.open(path)
    meta = bank._meta
    return {
        "path": path,
        "builder": bank.builder,
        "schema_version": BANK_SCHEMA_VERSION,
        "entries": len(bank),
        "classes": _counts(meta["class_name"]),
        "ade_classes": _counts(meta["ade_class"]),
        "sources": _counts(meta["source"]),
    }


def _counts(values: list[str]) -> dict[str, int]:
    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}
