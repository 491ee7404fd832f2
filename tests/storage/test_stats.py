"""The statistics record: hand-computed counts and quantiles, exact merges, JSON, old reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cgaug.storage.fs import open_root
from cgaug.storage.reports import ShardQuality, quality_of_shard, read_report
from cgaug.storage.schema import INDEX_SCHEMA
from cgaug.storage.stats import (
    QUANTILES,
    STATS_COLUMNS,
    GateStats,
    GenerationStats,
    quantiles,
    stats_of_rows,
    stats_of_table,
)

PREVIOUS_OUT = Path(__file__).resolve().parents[1] / "data" / "previous_main" / "OUT"


def _gate(attempt, name, score, passed):
    return {"attempt": attempt, "name": name, "score": score, "threshold": 0.5, "passed": passed,
            "reason": None if passed else f"{name}_low"}


def _row(verdict, *, reasons=(), attempt=0, attempts=1, gates=(), weather="rainy", time_of_day="night",
         domain=True, place="Tokyo", objects=("dog",), ood_area=10):
    return {"verdict": verdict, "reasons": list(reasons), "attempt": attempt, "attempts": attempts,
            "gates": list(gates), "prompt_domain": domain, "weather": weather, "time_of_day": time_of_day,
            "place": place, "ood_area": ood_area,
            "objects": [{"class_name": c, "ade_class": c, "object_id": "o", "bank_source_id": "b", "x0": 0,
                         "y0": 0, "x1": 1, "y1": 1, "scale": 1.0, "area": 1} for c in objects]}


ROWS = [
    _row("accepted", reasons=["placement:margin"], gates=[_gate(0, "sam_iou", 0.9, True),
                                                          _gate(0, "clip", 0.3, True)]),
    _row("accepted", attempt=1, attempts=2, weather="clear", time_of_day="day", objects=("dog", "box"),
         ood_area=20, gates=[_gate(0, "sam_iou", 0.2, False), _gate(0, "clip", 0.25, True),
                             _gate(1, "sam_iou", 0.8, True), _gate(1, "clip", 0.1, True)]),
    _row("rejected", reasons=["sam_iou_low"], attempt=2, attempts=3, domain=False, objects=("box",),
         ood_area=None, gates=[_gate(0, "sam_iou", 0.1, False), _gate(1, "sam_iou", 0.3, False),
                               _gate(2, "sam_iou", None, False)]),  # None: a score that could not be computed
    _row("skipped", reasons=["no_road"], attempts=None, weather=None, time_of_day=None, place=None, domain=None,
         objects=(), ood_area=None),
]


def test_counts_by_hand():
    s = stats_of_rows(ROWS, seconds=3.0)
    assert s.rows == 4 and s.verdicts == {"accepted": 2, "rejected": 1, "skipped": 1}
    assert s.reasons == {"sam_iou_low": 1, "no_road": 1}  # rows not accepted
    assert s.notes == {"placement:margin": 1}  # accepted rows' compose notes
    assert s.dropped == {"sam_iou_low": 1}  # the rejected row's kept attempt failed sam_iou
    assert s.attempts == {1: 1, 2: 1, 3: 1} and s.generations == 6  # skipped rows never reach the generator
    assert s.generations_judged == 6 and s.generations_passed == 2  # row 0 attempt 0, row 1 attempt 1
    assert s.judged == 3 and s.acceptance == pytest.approx(2 / 3) and s.attempt_pass_rate == pytest.approx(1 / 3)
    assert s.images_per_second == pytest.approx(2.0)
    assert s.ood_classes == {"dog": 2, "box": 2}
    assert s.domains == {"rainy night": 1, "clear day": 1, "base": 1}
    assert s.weather == {"rainy": 2, "clear": 1} and s.place == {"Tokyo": 3}
    assert s.mean_ood_area == pytest.approx(15.0)  # rows without an area do not count


def test_gates_and_quantiles_by_hand():
    s = stats_of_rows(ROWS)
    assert list(s.gates) == ["sam_iou", "clip"]  # the order the filter ran them in
    sam = s.gates["sam_iou"]
    assert (sam.records, sam.passed, sam.scores) == (6, 2, (0.1, 0.2, 0.3, 0.8, 0.9))
    # numpy's linear interpolation on 5 sorted values: position q * 4
    assert sam.quantiles() == pytest.approx({"p05": 0.12, "p25": 0.2, "p50": 0.3, "p75": 0.8, "p95": 0.88})
    assert s.gates["clip"] == GateStats(3, 3, (0.1, 0.25, 0.3))
    assert s.score_quantiles()["clip"]["n"] == 3 and s.score_quantiles()["clip"]["p50"] == pytest.approx(0.25)
    assert set(quantiles([1.0])) == {"p05", "p25", "p50", "p75", "p95"} and len(QUANTILES) == 5
    assert quantiles([np.nan, None, np.inf]) == {}


def test_merge_adds_counts_and_is_associative():
    parts = [stats_of_rows(ROWS[:1], seconds=1.0), stats_of_rows(ROWS[1:3], seconds=2.5),
             stats_of_rows(ROWS[3:], seconds=None)]
    a, b, c = parts
    assert (a + b) + c == a + (b + c) == sum(parts) == stats_of_rows(ROWS, seconds=3.5)
    assert sum(parts, GenerationStats()) == sum(reversed(parts))  # order of shards does not matter
    assert GenerationStats() + a == a + GenerationStats() == a
    assert (a + b).verdicts == {"accepted": 2, "rejected": 1}
    assert (c + c).seconds is None  # no part measured: unknown, not zero


def test_merged_quantiles_come_from_the_merged_scores():
    merged = stats_of_rows(ROWS[:2]) + stats_of_rows(ROWS[2:])
    assert merged.gates["sam_iou"].scores == (0.1, 0.2, 0.3, 0.8, 0.9)
    assert merged.gates["sam_iou"].quantiles()["p50"] == pytest.approx(0.3)  # not a mean of the parts' medians


def test_json_round_trip():
    record = stats_of_rows(ROWS, seconds=3.0)
    data = json.loads(json.dumps(record.to_dict()))
    assert GenerationStats.from_dict(data) == record
    assert data["quality"] == pytest.approx(2 / 3) and data["attempts"] == {"1": 1, "2": 1, "3": 1}
    assert data["score_quantiles"]["sam_iou"]["n"] == 5
    quality = ShardQuality(3, record)
    assert ShardQuality.from_dict(json.loads(json.dumps(quality.to_dict()))) == quality


def test_filter_summary_and_dataset_summary():
    s = stats_of_rows(ROWS)
    summary = s.filter_summary()
    assert {k: summary[k] for k in ("total", "accepted", "rejected", "unfiltered", "skipped")} == {
        "total": 4, "accepted": 2, "rejected": 1, "unfiltered": 0, "skipped": 1}
    assert summary["dropped_sam_iou_low"] == 1 and summary["attempts"] == {"1": 1, "2": 1, "3": 1}
    assert summary["generations_judged"] == 6 and summary["attempt_pass_rate"] == pytest.approx(1 / 3)
    assert summary["gates"]["sam_iou"]["n"] == 6 and summary["gates"]["sam_iou"]["pass_rate"] == pytest.approx(1 / 3)
    assert summary["gates"]["sam_iou"]["quantiles"]["p95"] == pytest.approx(0.88)
    dataset = s.dataset_summary()
    assert dataset["reasons"] == {"no_road": 1, "placement:margin": 1, "sam_iou_low": 1}  # every row's
    assert dataset["weather"] == {"clear": 1, "rainy": 2} and dataset["mean_ood_area"] == pytest.approx(15.0)


def test_table_input_names_missing_columns():
    schema = pa.schema([INDEX_SCHEMA.field(name) for name in STATS_COLUMNS])
    table = pa.Table.from_pylist(ROWS, schema=schema)
    assert stats_of_table(table) == stats_of_rows(ROWS)
    with pytest.raises(ValueError, match=r"shard 2: lacks columns \['weather'\]"):
        stats_of_table(table.drop(["weather"]), source="shard 2")


def test_reports_of_the_previous_main_still_load(tmp_path):
    """Reports written before gate scores were stored: counts read back; read_report rebuilds from the shard."""
    old = json.loads((PREVIOUS_OUT / "reports" / "shard-00000.json").read_text())
    loaded = ShardQuality.from_dict(old)
    assert loaded.shard == 0 and loaded.stats.rows == old["rows"] and loaded.stats.verdicts == old["verdicts"]
    assert loaded.quality == pytest.approx(old["quality"]) and loaded.stats.seconds == old["seconds"]
    assert loaded.stats.gates["sam_iou"].passed is None  # unknown in the old schema, not zero
    assert loaded.stats.gates["sam_iou"].pass_rate is None

    out = tmp_path / "OUT"
    shutil.copytree(PREVIOUS_OUT, out)
    root = open_root(out, create=False)
    quality, producer = read_report(root, 0)
    assert producer == old["producer"] and quality.stats.seconds == old["seconds"]
    assert quality == quality_of_shard(root, 0, old["seconds"])  # the shard's own record, with the old timing
    assert quality.stats.verdicts == old["verdicts"] and quality.stats.reasons == old["reasons"]
    assert quality.stats.gates["sam_iou"].records >= old["score_quantiles"]["sam_iou"]["n"]  # retries included


def test_damaged_or_missing_report_is_rebuilt_from_the_shard(tmp_path):
    out = tmp_path / "OUT"
    shutil.copytree(PREVIOUS_OUT, out)
    root = open_root(out, create=False)
    (out / "reports" / "shard-00001.json").write_text("{not json")
    (out / "reports" / "shard-00000.json").unlink()
    for shard in (0, 1):
        quality, producer = read_report(root, shard)
        assert producer == {} and quality == quality_of_shard(root, shard)
