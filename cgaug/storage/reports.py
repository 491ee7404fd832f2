"""Per-shard production reports: ``OUT/reports/shard-00007.json``, written once, right after the shard.

A report is the producer's account of one shard: its statistics record
(`cgaug.storage.stats.GenerationStats`, timing included) and who made it
(flow run, worker, host). It lives next to the data, not in the
orchestrator, so a parent run on another machine (or a person, or a later
audit) can read what a child run did without Prefect result storage. The
shard itself stays the source of truth: a missing or damaged report, or one
of the old schema (written before reports kept gate scores), is rebuilt from
the shard's metadata (keeping the old report's timing and producer).

The report and the journal entry record the shard file's sha256, so a later
run can tell a committed shard from a damaged one by hashing it
(`cgaug.storage.recovery`); a crash between a shard's commit and its report
is repaired by `write_report(..., recovered=True)` from the shard's own contents.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from cgaug.storage.fs import Root
from cgaug.storage.layout import JOURNAL_DIR, journal_name, report_name, shard_name
from cgaug.storage.stats import STATS_COLUMNS, GenerationStats, stats_of_table


@dataclass(frozen=True, slots=True)
class ShardQuality:
    """One shard's statistics record; stored flat as ``{"shard": N, ...record}``."""

    shard: int
    stats: GenerationStats

    @property
    def quality(self) -> float | None:
        """Acceptance rate among judged samples; None when nothing was judged (no filter)."""
        return self.stats.acceptance

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard} | self.stats.to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardQuality:
        return cls(int(data["shard"]), GenerationStats.from_dict(data))


def write_report(root: Root, quality: ShardQuality, producer: dict[str, Any], *, report: bool = True,
                 recovered: bool = False) -> None:
    """Write the report, and append the write to the journal (one new file per shard commit).

    Both record the shard file's sha256 and size. `report=False` writes the journal entry only
    (a report survived the crash); `recovered` marks records rebuilt by a later run.
    """
    name = shard_name(quality.shard)
    digest = {"sha256": root.sha256(name), "bytes": root.size(name)} | ({"recovered": True} if recovered else {})
    if report:
        data = quality.to_dict() | {"producer": producer} | digest
        root.write_bytes_atomic(report_name(quality.shard), json.dumps(data, indent=2).encode() + b"\n")
    entry = {"shard": quality.shard, "rows": quality.stats.rows, "at": time.time(), "producer": producer} | digest
    root.write_bytes_atomic(journal_name(quality.shard, uuid.uuid4().hex), json.dumps(entry).encode())


def journal(root: Root) -> dict[int, list[dict[str, Any]]]:
    """Every recorded shard commit, by shard: the audit trail of who wrote what, and how often."""
    writes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for name in root.list(JOURNAL_DIR, ".json"):
        try:
            entry = json.loads(root.read_bytes(name))
            writes[int(entry["shard"])].append(entry)
        except (ValueError, TypeError, KeyError):
            continue  # an unreadable entry records nothing; the shards stay the truth
    return {shard: sorted(entries, key=lambda e: e["at"]) for shard, entries in sorted(writes.items())}


def read_report(root: Root, shard_id: int) -> tuple[ShardQuality, dict[str, Any]]:
    """The shard's report; rebuilt from the shard when it is missing, damaged or of the old schema."""
    name = report_name(shard_id)
    if root.exists(name):
        try:
            data = json.loads(root.read_bytes(name))
            producer = dict(data.get("producer", {}))
            if "gates" not in data:  # old schema: counts only; the shard has the scores
                return quality_of_shard(root, shard_id, data.get("seconds")), producer
            return ShardQuality.from_dict(data), producer
        except (ValueError, TypeError, KeyError, AttributeError):
            pass  # a damaged report is rebuilt below: the shard is the truth
    return quality_of_shard(root, shard_id), {}


def quality_of_shard(root: Root, shard_id: int, seconds: float | None = None) -> ShardQuality:
    """The quality record of a committed shard, from its metadata columns only (no blob is read)."""
    name = shard_name(shard_id)
    with root.open_input(name) as f:
        table = pq.read_table(f, columns=STATS_COLUMNS)
    return ShardQuality(int(shard_id), stats_of_table(table, seconds, root.uri(name)))
