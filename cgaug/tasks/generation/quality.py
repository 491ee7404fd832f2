"""Shard quality: what a person needs to judge a shard in seconds, from its metadata alone.

Computed from a shard's non-blob columns (the same columns `index.parquet`
holds), so it can be rebuilt for any shard at any time and never needs the
images. The orchestration layer turns a `ShardQuality` into a Prefect table
artifact, a run summary and events; nothing here imports Prefect.

Quality of a shard = accepted / judged samples (judged: generated and run
through the filter, i.e. accepted or rejected). Without a filter there is no
quality (None): unfiltered samples are not evidence either way, and a shard
that has none is never called low-quality.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cgaug.storage.schema import VERDICT_ACCEPTED, VERDICT_REJECTED, VERDICT_SKIPPED
from cgaug.tasks.reporting.markdown import table

QUALITY_COLUMNS = ["sample_id", "verdict", "reasons", "scores", "attempts", "weather", "time_of_day",
                   "prompt_domain", "objects"]
QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True, slots=True)
class ShardQuality:
    """One shard's outcome; JSON-friendly (`to_dict`) so it can be stored next to the shard."""

    shard: int
    rows: int
    verdicts: dict[str, int]
    reasons: dict[str, int]  # every reason of every non-accepted row (skips and rejections)
    score_quantiles: dict[str, dict[str, float]]  # gate -> {"p05", "p50", "p95", "n"} over generated rows
    ood_classes: dict[str, int]
    domains: dict[str, int]  # "rainy night", "clear day", "base" (no domain prompt), ...
    generations: int  # generator calls, retries included
    seconds: float | None = None  # wall time of the shard's production, when measured

    @property
    def judged(self) -> int:
        return self.verdicts.get(VERDICT_ACCEPTED, 0) + self.verdicts.get(VERDICT_REJECTED, 0)

    @property
    def quality(self) -> float | None:
        """Acceptance rate among judged samples; None when nothing was judged (no filter)."""
        return self.verdicts.get(VERDICT_ACCEPTED, 0) / self.judged if self.judged else None

    @property
    def images_per_second(self) -> float | None:
        return self.generations / self.seconds if self.seconds else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"quality": self.quality}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardQuality:
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**fields)


def shard_quality(shard: int, table: pa.Table, seconds: float | None = None) -> ShardQuality:
    """The quality record of one shard from its metadata table (QUALITY_COLUMNS at least)."""
    missing = sorted(set(QUALITY_COLUMNS) - set(table.column_names))
    if missing:
        raise ValueError(f"shard {shard}: metadata lacks columns {missing}; expected {QUALITY_COLUMNS}")
    rows = table.select(QUALITY_COLUMNS).to_pylist()
    generated = [r for r in rows if r["verdict"] != VERDICT_SKIPPED]
    reasons = Counter(reason for r in rows if r["verdict"] != VERDICT_ACCEPTED for reason in r["reasons"] or [])
    return ShardQuality(
        shard=shard,
        rows=len(rows),
        verdicts=dict(Counter(r["verdict"] for r in rows)),
        reasons=dict(reasons.most_common()),
        score_quantiles=_score_quantiles(generated),
        ood_classes=dict(Counter(o["class_name"] for r in generated for o in r["objects"] or []).most_common()),
        domains=dict(Counter(_domain(r) for r in generated).most_common()),
        generations=sum(int(r["attempts"] or 1) for r in generated),
        seconds=seconds,
    )


def _domain(row: dict[str, Any]) -> str:
    return f"{row['weather']} {row['time_of_day']}" if row["prompt_domain"] else "base"


def _score_quantiles(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_gate: dict[str, list[float]] = {}
    for row in rows:
        for gate, score in (row["scores"] or []):  # a map column reads back as (key, value) pairs
            if score is not None and np.isfinite(score):
                by_gate.setdefault(gate, []).append(float(score))
    return {
        gate: {f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES} | {"n": len(values)}
        for gate, values in sorted(by_gate.items())
    }


def is_low_quality(quality: ShardQuality, floor: float | None) -> bool:
    """Below the floor; a shard without a quality (nothing judged) or without a floor never is."""
    return floor is not None and quality.quality is not None and quality.quality < floor


# --- presentation: what the Prefect UI shows -------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _top(counts: dict[str, int], n: int = 4) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v}" for k, v in items[:n])
    return text + (f", +{len(items) - n} more" if len(items) > n else "") if items else "–"


def quality_table(quality: ShardQuality, floor: float | None = None) -> list[dict[str, str]]:
    """Rows of (metric, value): a verdict line first, then the details a reviewer scans."""
    q = quality
    verdict = "LOW QUALITY" if is_low_quality(q, floor) else ("ok" if q.quality is not None else "not filtered")
    rows = [
        ("shard", f"shard-{q.shard:05d}: {verdict}"),
        ("acceptance", f"{_fmt(q.quality)} (floor {_fmt(floor)})" if floor is not None else _fmt(q.quality)),
        ("samples", f"{q.rows} rows: " + _top(q.verdicts)),
        ("dropped by reason", _top(q.reasons, 6)),
    ]
    rows += [(f"score {gate}", f"p05 {_fmt(s['p05'])} · p50 {_fmt(s['p50'])} · p95 {_fmt(s['p95'])} (n={s['n']})")
             for gate, s in q.score_quantiles.items()]
    rows += [
        ("OOD classes", _top(q.ood_classes, 6)),
        ("domains", _top(q.domains, 6)),
        ("generations", f"{q.generations} ({_fmt(q.generations / max(q.rows, 1))} per sample)"),
        ("wall time", "–" if q.seconds is None else  # model loading of a fresh worker process included
         f"{q.seconds:.1f} s, {_fmt(q.images_per_second)} images/s"),
    ]
    return [{"metric": metric, "value": value} for metric, value in rows]


def run_summary_markdown(out: str, qualities: list[ShardQuality], *, samples: int, shards: int, skipped: int,
                         written: list[int], floor: float | None, counts: dict[str, int],
                         notes: list[str] | None = None, worst: int = 5) -> str:
    """The per-run markdown summary: totals, acceptance, slowest and worst shards, where the data is."""
    judged = sum(q.judged for q in qualities)
    accepted = sum(q.verdicts.get(VERDICT_ACCEPTED, 0) for q in qualities)
    low = [q for q in qualities if is_low_quality(q, floor)]
    lines = [
        "# cgaug run summary",
        "",
        f"**Output:** `{out}`  ",
        f"**Planned:** {samples} samples in {shards} shards · **written this run:** {len(written)} shards · "
        f"**already complete:** {skipped} shards  ",
        f"**Acceptance (this run):** {_fmt(accepted / judged if judged else None)} "
        f"({accepted}/{judged} judged) · **low-quality shards:** {len(low)}"
        + (f" (floor {_fmt(floor)})" if floor is not None else ""),
        "",
        *table(["verdict", "rows"], sorted(counts.items())),
        "",
    ]
    if qualities:
        worst_q = sorted(qualities, key=lambda q: (q.quality if q.quality is not None else 2.0, q.shard))[:worst]
        slow = sorted((q for q in qualities if q.seconds is not None), key=lambda q: -(q.seconds or 0))[:worst]
        lines += ["## Worst shards (lowest acceptance)", "",
                  *table(["shard", "acceptance", "rows", "top reasons"],
                         [(f"shard-{q.shard:05d}", _fmt(q.quality), q.rows, _top(q.reasons, 3)) for q in worst_q]),
                  ""]
        lines += ["## Slowest shards", "",
                  *table(["shard", "seconds", "images/s"],
                         [(f"shard-{q.shard:05d}", f"{q.seconds:.1f}", _fmt(q.images_per_second)) for q in slow]),
                  ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    lines += [f"Inspect: `cgaug shards stats {out}` · verify: `cgaug shards verify {out}`"]
    return "\n".join(lines)
