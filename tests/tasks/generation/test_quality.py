"""Shard quality as shown in the UI: the table, the low-quality verdict and the run summary."""

from __future__ import annotations

import pytest

from cgaug.storage.reports import ShardQuality
from cgaug.storage.stats import GenerationStats, stats_of_rows
from cgaug.tasks.generation.quality import is_low_quality, quality_table, run_summary_markdown


def _gate(attempt, score, passed):
    return {"attempt": attempt, "name": "sam_iou", "score": score, "threshold": 0.5, "passed": passed,
            "reason": None if passed else "sam_iou_low"}


def _row(verdict, reasons=(), gates=(), attempts=1, weather="rainy", time_of_day="night", domain=True,
         objects=("dog",)):
    return {"verdict": verdict, "reasons": list(reasons), "attempt": max(attempts or 1, 1) - 1, "attempts": attempts,
            "gates": list(gates), "prompt_domain": domain, "weather": weather, "time_of_day": time_of_day,
            "place": "Tokyo", "ood_area": 4, "objects": [{"class_name": c} for c in objects]}


@pytest.fixture
def quality() -> ShardQuality:
    rows = [
        _row("accepted", gates=[_gate(0, 0.9, True)]),
        _row("accepted", gates=[_gate(0, 0.1, False), _gate(1, 0.8, True)], attempts=2, weather="clear",
             time_of_day="day"),
        _row("rejected", ("sam_iou_low",), [_gate(0, 0.2, False), _gate(1, 0.3, False), _gate(2, 0.1, False)],
             attempts=3, objects=("box",)),
        _row("skipped", ("no_road",), attempts=None, domain=False, objects=()),
    ]
    return ShardQuality(4, stats_of_rows(rows, seconds=2.0))


def test_unfiltered_shards_have_no_quality_and_are_never_low():
    unfiltered = ShardQuality(0, stats_of_rows([_row("unfiltered"), _row("unfiltered")]))
    assert unfiltered.quality is None
    assert not is_low_quality(unfiltered, 0.9)
    assert quality_table(unfiltered, 0.9)[0]["value"] == "shard-00000: not filtered"


def test_floor(quality):
    assert quality.quality == pytest.approx(2 / 3)
    assert is_low_quality(quality, 0.7) and not is_low_quality(quality, 0.6) and not is_low_quality(quality, None)


def test_table_leads_with_the_verdict(quality):
    rows = quality_table(quality, floor=0.7)
    assert rows[0] == {"metric": "shard", "value": "shard-00004: LOW QUALITY"}
    values = {r["metric"]: r["value"] for r in rows}
    assert values["acceptance"] == "0.667 (floor 0.7)"
    assert values["dropped by reason"] == "no_road 1, sam_iou_low 1"
    # every generation's score: 0.1 0.1 0.2 0.3 0.8 0.9; p05 at position 0.25, p50 at 2.5
    assert values["score sam_iou"] == "p05 0.1 · p50 0.25 · p95 0.875 (n=6)"
    assert values["generations"] == "6 (1.5 per sample)" and values["wall time"] == "2.0 s, 3 images/s"
    assert values["domains"] == "rainy night 2, clear day 1"
    assert quality_table(quality, floor=0.5)[0]["value"] == "shard-00004: ok"


def test_run_summary_lists_the_worst_and_slowest(quality):
    good = ShardQuality(9, GenerationStats(rows=2, verdicts={"accepted": 2}, generations=2, seconds=9.0))
    text = run_summary_markdown("/data/out", [quality, good], samples=6, shards=3, skipped=1, written=[4, 9],
                                floor=0.7, counts={"accepted": 4, "rejected": 1}, notes=["1 new samples planned"])
    assert "**Acceptance (this run):** 0.8 (4/5 judged) · **low-quality shards:** 1 (floor 0.7)" in text
    worst = text.split("## Worst shards")[1]
    assert worst.index("shard-00004") < worst.index("shard-00009")
    slowest = text.split("## Slowest shards")[1]
    assert slowest.index("shard-00009") < slowest.index("shard-00004")
    assert "- 1 new samples planned" in text and "`/data/out`" in text
