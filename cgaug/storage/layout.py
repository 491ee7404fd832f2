"""Every name under an output root ``OUT/``, in one place.

The layout is a contract between processes that never share memory (the
parent run, child runs on other machines, the CLI, a person with DuckDB), so
a name spelled twice is a name that can drift. Modules build paths with the
constants and functions here, relative to the root (`cgaug.storage.fs.Root`
joins them)::

    OUT/plan.parquet                       the run's deterministic sample plan
    OUT/config.json                        the settings the plan's samples are made with
    OUT/shards/shard-00007.parquet         one unit of work (rows of SHARD_SCHEMA)
    OUT/index.parquet                      metadata rows of every shard, no blobs
    OUT/manifest.json                      written last: shard list, counts, hashes
    OUT/claims/shard-00007.json            who is producing a shard right now
    OUT/reports/shard-00007.json           the producer's statistics record of a shard
    OUT/journal/shard-00007.<token>.json   one entry per shard commit (audit trail)
    OUT/quarantine/<batch>/shards/...      files set aside as damaged by a resuming run, never deleted
    OUT/quarantine/<batch>/reasons.json    why each file of the batch was set aside
    OUT/calibration/<gate>.png             `cgaug filter calibrate` plots (default folder)

A training run directory has its own layout (`cgaug.tasks.training.loop`);
its ``config.json`` is not this one.
"""

from __future__ import annotations

from numbers import Integral

PLAN_FILE = "plan.parquet"
CONFIG_FILE = "config.json"
SHARDS_DIR = "shards"
SHARD_SUFFIX = ".parquet"
INDEX_NAME = "index.parquet"
MANIFEST_NAME = "manifest.json"
CLAIMS_DIR = "claims"
REPORTS_DIR = "reports"
JOURNAL_DIR = "journal"
QUARANTINE_DIR = "quarantine"
CALIBRATION_DIR = "calibration"

MAX_SHARD_ID = 99_999  # five digits keep the lexical order of shard files equal to their numeric order


def shard_label(shard_id: int) -> str:
    """The shard's name without folder or suffix, e.g. ``shard-00007`` (files, claims, reports, the UI)."""
    if isinstance(shard_id, bool) or not isinstance(shard_id, Integral) or not (
            0 <= shard_id <= MAX_SHARD_ID):
        raise ValueError(f"shard id must be an integer in 0..{MAX_SHARD_ID}, found {shard_id!r}")
    return f"shard-{int(shard_id):05d}"


def shard_name(shard_id: int) -> str:
    """The root-relative path of a shard, e.g. ``shards/shard-00007.parquet``."""
    return f"{SHARDS_DIR}/{shard_label(shard_id)}{SHARD_SUFFIX}"


def claim_name(shard_id: int) -> str:
    """The claim file of a shard, e.g. ``claims/shard-00007.json``."""
    return f"{CLAIMS_DIR}/{shard_label(shard_id)}.json"


def report_name(shard_id: int) -> str:
    """The report of a shard, e.g. ``reports/shard-00007.json``."""
    return f"{REPORTS_DIR}/{shard_label(shard_id)}.json"


def journal_name(shard_id: int, token: str) -> str:
    """One journal entry of a shard commit; the token keeps entries of repeated commits apart."""
    return f"{JOURNAL_DIR}/{shard_label(shard_id)}.{token}.json"


def quarantine_name(batch: str, path: str) -> str:
    """Where a damaged file is set aside, keeping its root-relative path: ``quarantine/<batch>/<path>``."""
    return f"{QUARANTINE_DIR}/{batch}/{path}"


def quarantine_reasons(batch: str) -> str:
    """The record of why each file of a quarantine batch was set aside."""
    return f"{QUARANTINE_DIR}/{batch}/reasons.json"
