"""Per-shard reports and the journal: written next to the data, read back, rebuilt from the shard when missing.

Written against the public functions and the JSON keys readers use (``reports/shard-N.json``:
shard, rows, verdicts, reasons, seconds, producer; journal entries: shard, rows, at, producer),
not against the record class that holds them.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cgaug.storage.fs import Root, open_root
from cgaug.storage.reports import journal, quality_of_shard, read_report, write_report
from cgaug.storage.shards import write_shard
from tests.storage.test_schema import full_row

PREVIOUS_OUT = Path(__file__).parents[1] / "data" / "previous_main" / "OUT"
SHARD = 7
PRODUCER = {"host": "vm", "pid": 12, "flow_run": "run-a"}


def write_three_rows(root: Root) -> None:
    """accepted after 2 attempts, rejected (sam_iou_low) after 1, skipped (no_road, never generated)."""
    accepted = full_row("s0") | {"shard": SHARD}
    rejected = full_row("s1") | {"shard": SHARD, "verdict": "rejected", "reasons": ["sam_iou_low"], "attempts": 1}
    skipped = full_row("s2") | {"shard": SHARD, "verdict": "skipped", "reasons": ["no_road"]}
    skipped.update(dict.fromkeys(["image_png", "label_png", "cond_png", "ood_mask_png", "noise_mask_png"]))
    write_shard(root, SHARD, [accepted, rejected, skipped])


def report_json(root: Root) -> dict:
    return json.loads(root.read_bytes(f"reports/shard-{SHARD:05d}.json"))


def test_a_written_report_is_read_back_with_its_producer_and_timing(root):
    write_three_rows(root)
    write_report(root, quality_of_shard(root, SHARD, seconds=2.5), PRODUCER)
    data = report_json(root)
    assert {k: data[k] for k in ("shard", "rows", "verdicts", "reasons", "seconds", "producer")} == {
        "shard": SHARD, "rows": 3, "verdicts": {"accepted": 1, "rejected": 1, "skipped": 1},
        "reasons": {"sam_iou_low": 1, "no_road": 1}, "seconds": 2.5, "producer": PRODUCER}
    assert (data["sha256"], data["bytes"]) == (root.sha256(f"shards/shard-{SHARD:05d}.parquet"),
                                               root.size(f"shards/shard-{SHARD:05d}.parquet"))
    assert [entry["sha256"] for entry in journal(root)[SHARD]] == [data["sha256"]]  # the commit's hash, twice
    record, producer = read_report(root, SHARD)
    assert producer == PRODUCER
    assert record.to_dict() == {k: v for k, v in data.items() if k not in ("producer", "sha256", "bytes")}


def test_each_commit_adds_one_journal_file_and_keeps_the_earlier_ones(root):
    write_three_rows(root)
    quality = quality_of_shard(root, SHARD)
    write_report(root, quality, PRODUCER)
    write_report(root, quality, PRODUCER | {"flow_run": "run-b"})
    assert len(root.list("journal", ".json")) == 2
    entries = journal(root)[SHARD]
    assert [e["producer"]["flow_run"] for e in entries] == ["run-a", "run-b"]  # oldest first
    assert all(e["shard"] == SHARD and e["rows"] == 3 for e in entries) and entries[0]["at"] <= entries[1]["at"]
    assert report_json(root)["producer"]["flow_run"] == "run-b"  # the report is the latest commit's


@pytest.mark.parametrize("damage", [None, b"{not json", b'{"shard": 7}'])
def test_a_missing_or_damaged_report_is_rebuilt_from_the_shard_without_timing(root, damage):
    write_three_rows(root)
    if damage is not None:
        root.write_bytes_atomic(f"reports/shard-{SHARD:05d}.json", damage)
    record, producer = read_report(root, SHARD)
    data = record.to_dict()
    assert producer == {} and data["seconds"] is None
    assert (data["shard"], data["rows"]) == (SHARD, 3)
    assert data["verdicts"] == {"accepted": 1, "rejected": 1, "skipped": 1}
    assert data["reasons"] == {"sam_iou_low": 1, "no_road": 1}


def test_concurrent_writers_of_one_shard_each_get_their_own_journal_file(tmp_path):
    root = open_root(tmp_path)
    write_three_rows(root)
    quality = quality_of_shard(root, SHARD)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: write_report(root, quality, PRODUCER | {"pid": i}), range(16)))
    assert sorted(e["producer"]["pid"] for e in journal(root)[SHARD]) == list(range(16))
    assert report_json(root)["producer"]["pid"] in range(16)  # whole, from one writer: never interleaved
    leftovers = [p.name for d in ("reports", "journal") for p in (tmp_path / d).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_reports_of_the_previous_main_still_load():
    root = open_root(PREVIOUS_OUT, create=False)
    record, producer = read_report(root, 0)
    data = record.to_dict()
    assert producer["flow_run"] == "be21d99b-d13c-4b62-a35c-4a6503230fb7"
    assert data["verdicts"] == {"rejected": 1, "accepted": 1} and data["seconds"] == pytest.approx(10.079, abs=1e-3)
    assert sorted(journal(root)) == [0, 1]
