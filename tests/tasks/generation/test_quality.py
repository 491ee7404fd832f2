"""Shard quality records, hand-computed on a small metadata table."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cgaug.storage.schema import INDEX_SCHEMA
from cgaug.tasks.generation.quality import (
    QUALITY_COLUMNS,
    ShardQuality,
    is_low_quality,
    quality_table,
    run_summary_markdown,
    shard_quality,
)


def _row(verdict, reasons=(), scores=None, attempts=1, weather="rainy", time_of_day="night", domain=True,
         objects=("dog",)):
    return {"sample_id": f"s{id(reasons)}-{verdict}-{attempts}", "verdict": verdict, "reasons": list(reasons),
            "scores": list((scores or {}).items()), "attempts": attempts, "weather": weather,
            "time_of_day": time_of_day, "prompt_domain": domain,
            "objects": [{"class_name": c, "ade_class": c, "object_id": "o", "bank_source_id": "b", "x0": 0,
                         "y0": 0, "x1": 1, "y1": 1, "scale": 1.0, "area": 1} for c in objects]}


def _table(rows):
    schema = pa.schema([INDEX_SCHEMA.field(name) for name in QUALITY_COLUMNS])
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.fixture
def quality() -> ShardQuality:
    rows = [
        _row("accepted", scores={"sam_iou": 0.9}, attempts=1),
        _row("accepted", scores={"sam_iou": 0.8}, attempts=2, weather="clear", time_of_day="day"),
        _row("rejected", ("sam_iou_low",), {"sam_iou": 0.1}, attempts=3, objects=("box",)),
        _row("skipped", ("no_road",), attempts=None, domain=False, objects=()),
    ]
    return shard_quality(4, _table(rows), seconds=2.0)


def test_counts_and_rates_by_hand(quality):
    assert quality.rows == 4
    assert quality.verdicts == {"accepted": 2, "rejected": 1, "skipped": 1}
    assert quality.reasons == {"sam_iou_low": 1, "no_road": 1}
    assert quality.judged == 3 and quality.quality == pytest.approx(2 / 3)
    assert quality.generations == 1 + 2 + 3  # skipped rows never reached the generator
    assert quality.images_per_second == pytest.approx(3.0)
    assert quality.ood_classes == {"dog": 2, "box": 1}
    assert quality.domains == {"rainy night": 2, "clear day": 1}
    sam = quality.score_quantiles["sam_iou"]
    assert sam["n"] == 3 and sam["p50"] == pytest.approx(0.8)
    assert sam["p05"] == pytest.approx(0.1 + 0.05 * 2 * (0.8 - 0.1))  # linear interpolation, numpy's default


def test_round_trips_through_json(quality):
    import json

    again = ShardQuality.from_dict(json.loads(json.dumps(quality.to_dict())))
    assert again == quality and again.to_dict()["quality"] == pytest.approx(2 / 3)


def test_unfiltered_shards_have_no_quality_and_are_never_low():
    unfiltered = shard_quality(0, _table([_row("unfiltered"), _row("unfiltered", attempts=1)]))
    assert unfiltered.quality is None
    assert not is_low_quality(unfiltered, 0.9)


def test_floor(quality):
    assert is_low_quality(quality, 0.7) and not is_low_quality(quality, 0.6) and not is_low_quality(quality, None)


def test_table_leads_with_the_verdict(quality):
    rows = quality_table(quality, floor=0.7)
    assert rows[0] == {"metric": "shard", "value": "shard-00004: LOW QUALITY"}
    values = {r["metric"]: r["value"] for r in rows}
    assert values["acceptance"] == "0.667 (floor 0.7)"
    assert values["dropped by reason"] == "no_road 1, sam_iou_low 1"
    assert values["score sam_iou"].startswith("p05 0.17 · p50 0.8")
    assert quality_table(quality, floor=0.5)[0]["value"] == "shard-00004: ok"


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks columns \['weather'\]"):
        shard_quality(0, _table([_row("accepted")]).drop(["weather"]))


def test_run_summary_lists_the_worst_and_slowest(quality):
    good = ShardQuality(9, 2, {"accepted": 2}, {}, {}, {}, {}, 2, seconds=9.0)
    text = run_summary_markdown("/data/out", [quality, good], samples=6, shards=3, skipped=1, written=[4, 9],
                                floor=0.7, counts={"accepted": 4, "rejected": 1}, notes=["1 new samples planned"])
    assert "**Acceptance (this run):** 0.8 (4/5 judged) · **low-quality shards:** 1 (floor 0.7)" in text
    worst = text.split("## Worst shards")[1]
    assert worst.index("shard-00004") < worst.index("shard-00009")
    slowest = text.split("## Slowest shards")[1]
    assert slowest.index("shard-00009") < slowest.index("shard-00004")
    assert "- 1 new samples planned" in text and "`/data/out`" in text
