"""Shards, the dataset index and the manifest: writing, verifying and reading.

Layout of an output root (design.md, "Storage contract")::

    OUT/shards/shard-00000.parquet ...   rows of SHARD_SCHEMA, blobs as PNG bytes
    OUT/index.parquet                    INDEX_SCHEMA: every non-blob column + shard_file
    OUT/manifest.json                    written last: shard list with rows, bytes, sha256

Commit protocol: a shard is written under a temporary name and renamed, and a
shard that exists and validates is never rewritten, so a retried or resumed
shard task cannot destroy finished work. `write_index` removes the old
manifest before rebuilding and writes the new one last, so a manifest on disk
always describes the shards and index next to it. Whether the dataset is
complete is a comparison with the plan (``OUT/plan.parquet``, when there is
one): the manifest records it (``complete``, ``plan``) and `verify` checks it,
so a dataset with planned samples missing never passes as whole.

manifest.json::

    {"schema_version": 1, "created_at": "2025-01-02T03:04:05+00:00",
     "shards": [{"name": "shards/shard-00000.parquet", "rows": 3, "sha256": "...", "bytes": 29187}],
     "total_rows": 3, "counts": {"skipped": 1, "unfiltered": 2},
     "index": {"name": "index.parquet", "rows": 3, "sha256": "..."},
     "complete": true, "plan": {"samples": 3, "missing": 0, "missing_shards": []},
     ...the caller's keys: config, config_fingerprint, source, bank, generator...}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cgaug.storage.fs import Root, fault_point
from cgaug.storage.layout import INDEX_NAME, MANIFEST_NAME, SHARD_SUFFIX, SHARDS_DIR, shard_label, shard_name
from cgaug.storage.plan import planned_samples
from cgaug.storage.png import decode_png
from cgaug.storage.schema import (
    BLOB_COLUMNS,
    COMPLETE_VERDICTS,
    INDEX_SCHEMA,
    LEGACY_VERSIONS,
    SCHEMA_VERSION,
    SHARD_SCHEMA,
    VERDICT_REJECTED,
    VERDICT_SKIPPED,
    legacy_schema,
    scores_column,
    upgrade_table,
)
from cgaug.storage.stats import STATS_COLUMNS, stats_of_table

logger = logging.getLogger(__name__)

ROW_GROUP_SIZE = 16  # rows hold MBs of PNG at 1024x2048: readers decode one small row group at a time
CORE_BLOBS = ("image_png", "label_png", "cond_png", "ood_mask_png")
META_COLUMNS = tuple(name for name in SHARD_SCHEMA.names if name not in BLOB_COLUMNS)
_COLOR_BLOBS = ("image_png", "cond_png")
_MANIFEST_KEYS = ("schema_version", "created_at", "shards", "total_rows", "counts", "index")
_OPTIONAL_KEYS = ("complete", "plan")  # written since manifests record completeness; absent in older ones
_READ_ERRORS = (OSError, pa.ArrowException)


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """What the manifest records of one shard."""

    name: str
    rows: int
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """manifest.json; `extra` holds the caller's keys (config, fingerprint, source, bank, generator)."""

    schema_version: int
    created_at: str
    shards: tuple[ShardInfo, ...]
    total_rows: int
    counts: dict[str, int]  # rows by verdict
    index: dict[str, Any]  # {name, rows, sha256}
    extra: dict[str, Any] = field(default_factory=dict)
    complete: bool | None = None  # every planned sample present; None: no plan to compare with
    plan: dict[str, Any] | None = None  # {samples, missing, missing_shards}

    def to_dict(self) -> dict[str, Any]:
        core = {
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "shards": [asdict(info) for info in self.shards],
            "total_rows": self.total_rows,
            "counts": self.counts,
            "index": self.index,
        }
        if self.complete is not None:
            core |= {"complete": self.complete, "plan": self.plan}
        return core | self.extra

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Manifest:
        missing = [key for key in _MANIFEST_KEYS if key not in data]
        if missing:
            raise ValueError(f"{source}: manifest lacks keys {missing}; expected {list(_MANIFEST_KEYS)}")
        try:
            shards = tuple(ShardInfo(**entry) for entry in data["shards"])
        except TypeError as error:
            raise ValueError(f"{source}: a 'shards' entry is malformed ({error}); expected objects with "
                             "name, rows, sha256 and bytes") from None
        extra = {key: value for key, value in data.items() if key not in _MANIFEST_KEYS + _OPTIONAL_KEYS}
        return cls(data["schema_version"], data["created_at"], shards, data["total_rows"],
                   dict(data["counts"]), dict(data["index"]), extra, data.get("complete"), data.get("plan"))


# --- writing -----------------------------------------------------------------------------------------


def write_shard(root: Root, shard_id: int, rows: list[dict[str, Any]]) -> ShardInfo:
    """Write one shard atomically, unless a valid one with the same samples is already there.

    Raises:
        ValueError: a row lacks or adds columns, names another shard, repeats a
            sample id, or holds a value that does not fit SHARD_SCHEMA.
        FileExistsError: a valid shard with different samples exists (the plan
            changed under an existing output root).
    """
    name = shard_name(shard_id)
    _check_rows(rows, int(shard_id), name)
    existing = _existing_valid_shard(root, name)
    if existing is not None:
        _check_same_samples(root, existing, [row["sample_id"] for row in rows])
        return existing
    table = _to_table(rows, name)
    root.write_parquet_atomic(name, table, row_group_size=ROW_GROUP_SIZE, fault="while_writing",
                              shard=int(shard_id))
    fault_point("after_commit", int(shard_id))
    return ShardInfo(name, table.num_rows, root.sha256(name), root.size(name))


def shard_complete(root: Root, shard_id: int, expected_sample_ids: list[str]) -> bool:
    """Whether the shard exists, validates and holds exactly the expected samples (resume check)."""
    name = shard_name(shard_id)
    if not root.exists(name):
        return False
    try:
        with root.open_input(name) as f:
            parquet = pq.ParquetFile(f)
            if _schema_problems(parquet.schema_arrow, SHARD_SCHEMA, root.uri(name)):
                return False
            found = parquet.read(columns=["sample_id"]).column(0).to_pylist()
    except _READ_ERRORS:
        return False
    return len(found) == len(expected_sample_ids) and set(found) == set(expected_sample_ids)


def shard_problems(root: Root, name: str, expected_sample_ids: list[str] | None = None) -> list[str]:
    """Every way a shard file fails, reading it whole: schema, sample ids, and each PNG's decodability.

    The check for a shard whose hash no record knows (a commit whose report and journal entry
    were lost to a crash), before it is trusted again. An empty list means it is sound.
    """
    uri = root.uri(name)
    try:
        with root.open_input(name) as f:
            parquet = pq.ParquetFile(f)
            problems = _schema_problems(parquet.schema_arrow, SHARD_SCHEMA, uri)
            if problems:
                return problems
            found = parquet.read(columns=["sample_id"]).column(0).to_pylist()
            if expected_sample_ids is not None and sorted(found) != sorted(expected_sample_ids):
                return [f"{uri}: holds samples {sorted(found)[:5]}, the plan has {sorted(expected_sample_ids)[:5]}"]
            return _verify_blobs(parquet, uri)
    except _READ_ERRORS as error:
        return [f"{uri}: unreadable Parquet ({error})"]


def write_index(root: Root, extra_manifest: dict[str, Any] | None = None) -> Manifest:
    """Rebuild index.parquet from every shard on disk, then write manifest.json last.

    Raises:
        ValueError: `extra_manifest` reuses a reserved key or is not JSON, a
            shard is unreadable or has another schema, or a sample id repeats.
    """
    extra = dict(extra_manifest or {})
    clash = sorted(set(extra) & set(_MANIFEST_KEYS + _OPTIONAL_KEYS))
    if clash:
        raise ValueError(f"extra_manifest keys {clash} are reserved for the manifest itself")
    try:
        json.dumps(extra)  # fail before anything on disk changes
    except TypeError as error:
        raise ValueError(f"extra_manifest must be JSON-serialisable: {error}") from None
    root.remove(MANIFEST_NAME)  # until the new one is written, the root reads as not indexed
    infos, tables = [], []
    for name in root.list(SHARDS_DIR, SHARD_SUFFIX):
        table = _read_shard_metadata(root, name)
        tables.append(table.append_column("shard_file", pa.array([name] * table.num_rows, pa.string())))
        infos.append(ShardInfo(name, table.num_rows, root.sha256(name), root.size(name)))
    index = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
    index = index.cast(INDEX_SCHEMA).sort_by([("shard", "ascending"), ("sample_id", "ascending")])
    duplicates = _duplicates(index.column("sample_id").to_pylist())
    if duplicates:
        raise ValueError(f"{root.uri(SHARDS_DIR)}: sample ids occur in more than one row: {duplicates[:10]}")
    root.write_parquet_atomic(INDEX_NAME, index, fault="during_index")
    complete, plan = _completeness(root, index.column("sample_id").to_pylist())
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        shards=tuple(infos),
        total_rows=index.num_rows,
        counts=_value_counts(index.column("verdict")),
        index={"name": INDEX_NAME, "rows": index.num_rows, "sha256": root.sha256(INDEX_NAME)},
        extra=extra,
        complete=complete,
        plan=plan,
    )
    root.write_bytes_atomic(MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2).encode() + b"\n")
    return manifest


def _missing(planned: dict[str, int], present: Iterable[str]) -> tuple[int, list[int]]:
    missing = planned.keys() - set(present)
    return len(missing), sorted({planned[sample_id] for sample_id in missing})


def _completeness(root: Root, present: list[str]) -> tuple[bool | None, dict[str, Any] | None]:
    planned = planned_samples(root)
    if planned is None:
        return None, None
    count, shards = _missing(planned, present)
    return count == 0, {"samples": len(planned), "missing": count, "missing_shards": shards}


def incomplete_message(missing: int, planned: int, shards: list[int]) -> str:
    """The one line that says a dataset lacks planned samples, and in which shards they belong."""
    shown = ", ".join(shard_label(s) for s in shards[:20]) + (", ..." if len(shards) > 20 else "")
    return f"incomplete: {missing} of {planned} planned samples missing (shards {shown})"


def _check_rows(rows: list[dict[str, Any]], shard_id: int, name: str) -> None:
    expected = set(SHARD_SCHEMA.names)
    seen: set[str] = set()
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{name}: row {position} is a {type(row).__name__}, expected a dict")
        sample_id = row.get("sample_id")
        missing, extra = sorted(expected - row.keys()), sorted(row.keys() - expected)
        if missing or extra:
            found = [f"{label} columns {names}" for label, names in (("missing", missing), ("unknown", extra))
                     if names]
            raise ValueError(f"{name}: sample {sample_id!r} (row {position}) has {' and '.join(found)}; "
                             "rows need exactly the SHARD_SCHEMA columns "
                             "(start from cgaug.storage.schema.empty_row())")
        if not isinstance(sample_id, str) or not sample_id:
            raise ValueError(f"{name}: row {position} has sample_id {sample_id!r}, "
                             "expected a non-empty string")
        if sample_id in seen:
            raise ValueError(f"{name}: sample {sample_id!r} occurs twice")
        seen.add(sample_id)
        if row["shard"] != shard_id:
            raise ValueError(f"{name}: sample {sample_id!r} has shard={row['shard']!r}, expected {shard_id}")
        if row["verdict"] == VERDICT_SKIPPED:
            blobs = [column for column in BLOB_COLUMNS if row[column] is not None]
            if blobs:
                raise ValueError(f"{name}: skipped sample {sample_id!r} carries blobs {blobs}; "
                                 "skipped rows keep metadata only")


def _to_table(rows: list[dict[str, Any]], name: str) -> pa.Table:
    rows = [row | {"scores": scores_column(row["scores"])} for row in rows]  # a {gate: score} dict is fine too
    try:
        return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as error:
        raise ValueError(_locate_bad_value(rows, name, error)) from error


def _locate_bad_value(rows: list[dict[str, Any]], name: str, error: Exception) -> str:
    """Name the sample and column behind a conversion error (only runs once something failed)."""
    for column in SHARD_SCHEMA:
        for row in rows:
            value = row[column.name]
            try:
                pa.array([value], type=column.type)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as cause:
                shown = repr(value)
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                return (f"{name}: sample {row['sample_id']!r}, column {column.name!r}: expected "
                        f"{column.type}, found {shown} ({type(value).__name__}): {cause}")
    return f"{name}: rows do not fit SHARD_SCHEMA: {error}"


def _existing_valid_shard(root: Root, name: str) -> ShardInfo | None:
    """The info of a shard already on disk if it validates; an invalid one is logged, to be replaced."""
    if not root.exists(name):
        return None
    try:
        with root.open_input(name) as f:
            parquet = pq.ParquetFile(f)
            problems = _schema_problems(parquet.schema_arrow, SHARD_SCHEMA, root.uri(name))
            rows = parquet.metadata.num_rows
    except _READ_ERRORS as error:
        problems = [f"{root.uri(name)}: unreadable Parquet footer ({error})"]
    if problems:
        logger.warning("replacing invalid shard: %s", "; ".join(problems))
        return None
    return ShardInfo(name, rows, root.sha256(name), root.size(name))


def _check_same_samples(root: Root, existing: ShardInfo, sample_ids: list[str]) -> None:
    found = root.read_parquet(existing.name, columns=["sample_id"]).column(0).to_pylist()
    if sorted(found) != sorted(sample_ids):
        only_old, only_new = sorted(set(found) - set(sample_ids)), sorted(set(sample_ids) - set(found))
        raise FileExistsError(
            f"{root.uri(existing.name)} already exists and validates but holds other samples "
            f"(only in the file: {only_old[:5]}, only in the new rows: {only_new[:5]}); a finished shard "
            "is never rewritten: use a new output root or remove the shard")


def _read_shard_metadata(root: Root, name: str) -> pa.Table:
    try:
        with root.open_input(name) as f:
            parquet = pq.ParquetFile(f)
            problems = _schema_problems(parquet.schema_arrow, SHARD_SCHEMA, root.uri(name))
            if problems:
                raise ValueError("; ".join(problems))
            return upgrade_table(parquet.read(columns=list(META_COLUMNS)))
    except _READ_ERRORS as error:
        raise ValueError(f"{root.uri(name)}: not a readable Parquet shard ({error})") from error


# --- verification --------------------------------------------------------------------------------------


def verify(root: Root, *, decode_blobs: bool = True) -> list[str]:
    """Every way the output root departs from its manifest; an empty list means it is intact.

    Checks the manifest, each listed shard (presence, size, sha256, schema,
    row count, and with `decode_blobs` every PNG's decodability and size),
    unlisted shards, sample-id uniqueness, the index against the shards, and
    completeness against the plan: every planned sample present exactly once
    (a skipped or rejected one with its reason).
    """
    try:
        manifest = read_manifest(root)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    problems: list[str] = []
    if manifest.schema_version != SCHEMA_VERSION and manifest.schema_version not in LEGACY_VERSIONS:
        problems.append(f"{root.uri(MANIFEST_NAME)}: schema_version {manifest.schema_version}, "
                        f"expected {SCHEMA_VERSION}")
    listed = [info.name for info in manifest.shards]
    problems += [f"{root.uri(MANIFEST_NAME)}: shard {name} is listed twice" for name in _duplicates(listed)]
    ids_by_shard: dict[str, list[str]] = {}
    for info in manifest.shards:
        problems += _verify_shard(root, info, ids_by_shard, decode_blobs)
    problems += [f"{root.uri(name)}: shard file is not listed in {MANIFEST_NAME}"
                 for name in root.list(SHARDS_DIR, SHARD_SUFFIX) if name not in listed]
    listed_rows = sum(info.rows for info in manifest.shards)
    if manifest.total_rows != listed_rows:
        problems.append(f"{root.uri(MANIFEST_NAME)}: total_rows is {manifest.total_rows}, "
                        f"the shard entries add up to {listed_rows}")
    all_ids = [sample_id for ids in ids_by_shard.values() for sample_id in ids]
    duplicates = _duplicates(all_ids)
    if duplicates:
        problems.append(f"{root.uri(SHARDS_DIR)}: sample ids occur more than once: {duplicates[:10]}")
    complete = len(ids_by_shard) == len(set(listed))
    problems += _verify_index(root, manifest, ids_by_shard if complete else None, listed_rows)
    return problems + _verify_plan(root, manifest, all_ids)


def _verify_plan(root: Root, manifest: Manifest, present: list[str]) -> list[str]:
    try:
        planned = planned_samples(root)
    except ValueError as error:
        return [str(error)]
    if planned is None:
        return []
    problems = []
    missing, shards = _missing(planned, present)
    if missing:
        problems.append(f"{incomplete_message(missing, len(planned), shards)} in {root.uri()}")
    if manifest.complete is False and not missing:
        problems.append(f"{root.uri(MANIFEST_NAME)}: says the dataset is incomplete, but every planned sample "
                        "is present: rerun the generation to rebuild the manifest")
    return problems


def _verify_shard(root: Root, info: ShardInfo, ids_by_shard: dict[str, list[str]], decode: bool) -> list[str]:
    uri = root.uri(info.name)
    if not root.exists(info.name):
        return [f"{uri}: listed in {MANIFEST_NAME} but missing"]
    problems = []
    size = root.size(info.name)
    if size != info.bytes:
        problems.append(f"{uri}: {size} bytes, manifest says {info.bytes}")
    digest = root.sha256(info.name)
    if digest != info.sha256:
        problems.append(f"{uri}: sha256 {digest}, manifest says {info.sha256}")
    try:
        with root.open_input(info.name) as f:
            parquet = pq.ParquetFile(f)
            schema_problems = _schema_problems(parquet.schema_arrow, SHARD_SCHEMA, uri)
            if schema_problems:
                return problems + schema_problems
            if parquet.metadata.num_rows != info.rows:
                problems.append(f"{uri}: {parquet.metadata.num_rows} rows, manifest says {info.rows}")
            table = parquet.read(columns=["sample_id", "verdict", "reasons"])
            ids_by_shard[info.name] = table.column("sample_id").to_pylist()
            problems += [f"{uri}: sample {row['sample_id']!r} is {row['verdict']} without a reason"
                         for row in table.to_pylist()
                         if row["verdict"] in (VERDICT_SKIPPED, VERDICT_REJECTED) and not row["reasons"]]
            if decode:
                problems += _verify_blobs(parquet, uri)
    except _READ_ERRORS as error:
        problems.append(f"{uri}: unreadable Parquet ({error})")
    return problems


def _verify_blobs(parquet: pq.ParquetFile, uri: str) -> list[str]:
    columns = ["sample_id", "verdict", "height", "width", *BLOB_COLUMNS]
    problems = []
    for group in range(parquet.num_row_groups):
        for row in parquet.read_row_group(group, columns=columns).to_pylist():
            prefix = f"{uri}: sample {row['sample_id']!r}"
            problems += [f"{prefix}: {problem}" for problem in _row_blob_problems(row)]
    return problems


def _row_blob_problems(row: dict[str, Any]) -> list[str]:
    if row["verdict"] == VERDICT_SKIPPED:
        return [f"skipped row carries {column}" for column in BLOB_COLUMNS if row[column] is not None]
    required = CORE_BLOBS if row["verdict"] in COMPLETE_VERDICTS else ()
    problems = [f"verdict {row['verdict']!r} but {column} is null"
                for column in required if row[column] is None]
    present = [column for column in BLOB_COLUMNS if row[column] is not None]
    if present and (row["height"] is None or row["width"] is None):
        return [*problems, f"has blobs but height={row['height']!r}, width={row['width']!r}"]
    for column in present:
        expected = (row["height"], row["width"], *((3,) if column in _COLOR_BLOBS else ()))
        try:
            array = decode_png(row[column])
        except ValueError as error:  # decode_png turns every PIL failure into "corrupt PNG blob"
            problems.append(f"{column} does not decode as PNG ({type(error).__name__}: {error})")
            continue
        if array.shape != expected or array.dtype != np.uint8:
            problems.append(f"{column} decodes to {array.dtype} {array.shape}, expected uint8 {expected} "
                            "(from the height and width columns)")
    return problems


def _verify_index(root: Root, manifest: Manifest, ids_by_shard: dict[str, list[str]] | None,
                  listed_rows: int) -> list[str]:
    name = manifest.index.get("name", INDEX_NAME)
    uri = root.uri(name)
    if not root.exists(name):
        return [f"{uri}: index missing"]
    problems = []
    digest = root.sha256(name)
    if digest != manifest.index.get("sha256"):
        problems.append(f"{uri}: sha256 {digest}, manifest says {manifest.index.get('sha256')}")
    try:
        with root.open_input(name) as f:
            parquet = pq.ParquetFile(f)
            problems += _schema_problems(parquet.schema_arrow, INDEX_SCHEMA, uri)
            index = parquet.read(columns=["sample_id", "shard_file"])
    except _READ_ERRORS as error:
        return [*problems, f"{uri}: unreadable Parquet ({error})"]
    if index.num_rows != manifest.index.get("rows"):
        problems.append(f"{uri}: {index.num_rows} rows, manifest says {manifest.index.get('rows')}")
    if index.num_rows != listed_rows:
        problems.append(f"{uri}: {index.num_rows} rows, the shards hold {listed_rows}")
    if ids_by_shard is not None:
        problems += _index_vs_shards(uri, index, ids_by_shard)
    return problems


def _index_vs_shards(uri: str, index: pa.Table, ids_by_shard: dict[str, list[str]]) -> list[str]:
    in_shards = {sample_id: name for name, ids in ids_by_shard.items() for sample_id in ids}
    in_index = dict(zip(index.column("sample_id").to_pylist(), index.column("shard_file").to_pylist(),
                        strict=True))
    problems = []
    only_index, only_shards = sorted(in_index.keys() - in_shards), sorted(in_shards.keys() - in_index)
    if only_index or only_shards:
        problems.append(f"{uri}: sample ids differ from the shards' (only in the index: {only_index[:5]}, "
                        f"only in shards: {only_shards[:5]})")
    moved = sorted(s for s in in_index.keys() & in_shards.keys() if in_index[s] != in_shards[s])
    if moved:
        problems.append(f"{uri}: shard_file is wrong for samples {moved[:5]}")
    duplicates = _duplicates(index.column("sample_id").to_pylist())
    if duplicates:
        problems.append(f"{uri}: sample ids occur more than once: {duplicates[:10]}")
    return problems


def _schema_problems(found: pa.Schema, expected: pa.Schema, uri: str) -> list[str]:
    """Differences in column names, order and types, and in the schema version stamp.

    A file stamped with a legacy version is compared with the schema that version wrote: it stays
    valid (readers upgrade it with `upgrade_table`), so an output of an earlier release resumes.
    """
    problems = []
    version = (found.metadata or {}).get(b"cgaug.schema_version", b"<none>").decode()
    legacy = version in {str(v) for v in LEGACY_VERSIONS}
    if legacy:
        expected = legacy_schema(expected, int(version))
    elif version != str(SCHEMA_VERSION):
        problems.append(f"{uri}: schema version {version}, expected {SCHEMA_VERSION}")
    found_fields = [(f.name, f.type) for f in found]
    expected_fields = [(f.name, f.type) for f in expected]
    if [n for n, _ in found_fields] != [n for n, _ in expected_fields]:
        missing = [n for n, _ in expected_fields if n not in found.names]
        unknown = [n for n, _ in found_fields if n not in expected.names]
        problems.insert(0, f"{uri}: columns differ from the schema (missing {missing}, unknown {unknown}"
                           f"{', or in another order' if not (missing or unknown) else ''})")
    else:
        pairs = zip(found_fields, expected_fields, strict=True)
        problems[:0] = [f"{uri}: column {name!r} is {found_type}, expected {expected_type}"
                        for (name, found_type), (_, expected_type) in pairs
                        if not found_type.equals(expected_type)]
    return problems


def _duplicates(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: set[str] = set()
    for value in values:
        (repeated if value in seen else seen).add(value)
    return sorted(repeated)


def _value_counts(array: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in pc.value_counts(array).to_pylist():
        key = "none" if item["values"] is None else str(item["values"])
        counts[key] = counts.get(key, 0) + int(item["counts"])
    return dict(sorted(counts.items()))


# --- reading -------------------------------------------------------------------------------------------


def read_manifest(root: Root) -> Manifest:
    """The parsed manifest.json.

    Raises:
        FileNotFoundError: the root has no manifest (not indexed, or not an output root).
        ValueError: the manifest is not JSON or lacks keys.
    """
    uri = root.uri(MANIFEST_NAME)
    if not root.exists(MANIFEST_NAME):
        raise FileNotFoundError(f"{uri}: no manifest; the output root is not indexed yet (write_index "
                                "runs at the end of a generation run) or is not a cgaug output root")
    try:
        data = json.loads(root.read_bytes(MANIFEST_NAME))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{uri}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{uri}: expected a JSON object, found {type(data).__name__}")
    return Manifest.from_dict(data, uri)


def stats(root: Root) -> dict[str, Any]:
    """Dataset statistics from the manifest and the index (no blob is read).

    The `GenerationStats` view of the index: prompt attributes, OOD classes and
    the mean OOD area count generated (non-skipped) rows only; verdicts and
    reasons count every row.
    """
    manifest = read_manifest(root)
    name = manifest.index.get("name", INDEX_NAME)
    summary = stats_of_table(root.read_parquet(name, columns=STATS_COLUMNS), source=root.uri(name)).dataset_summary()
    return {"rows": summary.pop("rows"), "shards": len(manifest.shards),
            "bytes": sum(info.bytes for info in manifest.shards), **summary}


def read_sample(root: Root, sample_id: str) -> dict[str, Any]:
    """One row with its blobs decoded (see `decode_row`), found through the index.

    Raises:
        KeyError: the index has no such sample, or names a shard that lacks it.
    """
    index = root.read_parquet(INDEX_NAME, columns=["sample_id", "shard_file"])
    hits = index.filter(pc.equal(index.column("sample_id"), sample_id))
    if hits.num_rows == 0:
        raise KeyError(f"sample {sample_id!r} is not in {root.uri(INDEX_NAME)} ({index.num_rows} samples)")
    name = hits.column("shard_file")[0].as_py()
    with root.open_input(name) as f:
        parquet = pq.ParquetFile(f)
        for group in range(parquet.num_row_groups):
            ids = parquet.read_row_group(group, columns=["sample_id"]).column(0).to_pylist()
            if sample_id in ids:
                row = parquet.read_row_group(group).slice(ids.index(sample_id), 1).to_pylist()[0]
                return decode_row(row)
    raise KeyError(f"{root.uri(INDEX_NAME)} places sample {sample_id!r} in {root.uri(name)}, which lacks it; "
                   "the index is stale: rebuild it with write_index")


def iter_rows(root: Root, verdicts: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Raw rows (blobs as PNG bytes) of every manifest shard, in shard and row order.

    One row group is in memory at a time; `verdicts` keeps only rows with
    those verdicts (None keeps all).
    """
    wanted = None if verdicts is None else ({verdicts} if isinstance(verdicts, str) else set(verdicts))
    for info in read_manifest(root).shards:
        with root.open_input(info.name) as f:
            parquet = pq.ParquetFile(f)
            for group in range(parquet.num_row_groups):
                if wanted is not None:
                    found = set(parquet.read_row_group(group, columns=["verdict"]).column(0).to_pylist())
                    if not found & wanted:
                        continue
                for row in parquet.read_row_group(group).to_pylist():
                    if wanted is None or row["verdict"] in wanted:
                        yield row


def read_shard_rows(root: Root, shard_id: int, positions: list[int] | None = None,
                    columns_first: str = "verdict") -> tuple[list[Any], list[dict[str, Any]]]:
    """One column of every row of a shard, and the decoded rows at `positions` (None: none).

    Only the row groups holding the wanted rows are read, so previews of large shards stay cheap.
    `positions` may be a function of the first column: pass None, inspect, then call again.
    """
    name = shard_name(shard_id)
    with root.open_input(name) as f:
        parquet = pq.ParquetFile(f)
        first = parquet.read(columns=[columns_first]).column(0).to_pylist()
        starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
        rows = []
        for position in positions or []:
            group = int(np.searchsorted(starts, position, side="right") - 1)
            table = parquet.read_row_group(group).slice(position - int(starts[group]), 1)
            rows.append(decode_row(table.to_pylist()[0]))
    return first, rows


def iter_samples(root: Root, verdicts: str | Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Like `iter_rows`, with blobs decoded by `decode_row`."""
    for row in iter_rows(root, verdicts):
        yield decode_row(row)


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """A shard row with its PNG columns replaced by arrays; absent blobs become None.

    image (H,W,3) uint8, label (H,W) uint8 train ids, cond (H,W,3) uint8,
    ood_mask (H,W) bool, noise_mask (H,W) bool.
    """
    sample = {key: value for key, value in row.items() if key not in BLOB_COLUMNS}

    def blob(column: str, *, mask: bool = False) -> np.ndarray | None:
        data = row.get(column)
        return None if data is None else decode_png(data, mask=mask)

    sample["image"] = blob("image_png")
    sample["label"] = blob("label_png")
    sample["cond"] = blob("cond_png")
    sample["ood_mask"] = blob("ood_mask_png", mask=True)
    sample["noise_mask"] = blob("noise_mask_png", mask=True)
    return sample
