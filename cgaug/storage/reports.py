"""Per-shard production reports: ``OUT/reports/shard-00007.json``, written once, right after the shard.

A report is the producer's account of one shard: its quality record
(`cgaug.tasks.generation.quality.ShardQuality`), how long it took and who made it (flow
run, worker, host). It lives next to the data, not in the orchestrator, so a
parent run on another machine (or a person, or a later audit) can read what
a child run did without Prefect result storage. The shard itself stays the
source of truth: a missing report is rebuilt from the shard's metadata
(without timing).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from typing import Any

import pyarrow.parquet as pq

from cgaug.storage.fs import Root
from cgaug.storage.shards import shard_name
from cgaug.tasks.generation.quality import QUALITY_COLUMNS, ShardQuality, shard_quality

REPORTS_DIR = "reports"
JOURNAL_DIR = "journal"


def report_name(shard_id: int) -> str:
    return f"{REPORTS_DIR}/shard-{int(shard_id):05d}.json"


def write_report(root: Root, quality: ShardQuality, producer: dict[str, Any]) -> None:
    """Write the report, and append the write to the journal (one new file per shard commit)."""
    data = quality.to_dict() | {"producer": producer}
    root.write_bytes_atomic(report_name(quality.shard), json.dumps(data, indent=2).encode() + b"\n")
    entry = {"shard": quality.shard, "rows": quality.rows, "at": time.time(), "producer": producer}
    root.write_bytes_atomic(f"{JOURNAL_DIR}/shard-{quality.shard:05d}.{uuid.uuid4().hex}.json",
                            json.dumps(entry).encode())


def journal(root: Root) -> dict[int, list[dict[str, Any]]]:
    """Every recorded shard commit, by shard: the audit trail of who wrote what, and how often."""
    writes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for name in root.list(JOURNAL_DIR, ".json"):
        entry = json.loads(root.read_bytes(name))
        writes[int(entry["shard"])].append(entry)
    return {shard: sorted(entries, key=lambda e: e["at"]) for shard, entries in sorted(writes.items())}


def read_report(root: Root, shard_id: int) -> tuple[ShardQuality, dict[str, Any]]:
    """The shard's report; rebuilt from the shard (no timing, producer unknown) when it is missing."""
    name = report_name(shard_id)
    if root.exists(name):
        try:
            data = json.loads(root.read_bytes(name))
            return ShardQuality.from_dict(data), dict(data.get("producer", {}))
        except (ValueError, TypeError, KeyError):
            pass  # a damaged report is rebuilt below: the shard is the truth
    return quality_of_shard(root, shard_id), {}


def quality_of_shard(root: Root, shard_id: int, seconds: float | None = None) -> ShardQuality:
    """The quality record of a committed shard, from its metadata columns only (no blob is read)."""
    with root.open(shard_name(shard_id)) as f:
        table = pq.read_table(f, columns=QUALITY_COLUMNS)
    return shard_quality(shard_id, table, seconds)
