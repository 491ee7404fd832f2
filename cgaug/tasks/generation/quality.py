"""Shard quality as a person sees it: the quality table, the low-quality verdict, the run summary.

The numbers come from the shard's statistics record
(`cgaug.storage.stats.GenerationStats`, stored in its report by
`cgaug.storage.reports`), computed from metadata alone, so any shard can be
judged at any time without its images. The orchestration layer hands these
tables and markdown to Prefect; nothing here imports Prefect.

Quality of a shard = accepted / judged samples (judged: generated and run
through the filter, i.e. accepted or rejected). Without a filter there is no
quality (None): unfiltered samples are not evidence either way, and a shard
that has none is never called low-quality.
"""

from __future__ import annotations

from cgaug.storage.layout import shard_label
from cgaug.storage.reports import ShardQuality
from cgaug.storage.schema import VERDICT_ACCEPTED
from cgaug.storage.stats import GenerationStats
from cgaug.tasks.reporting.markdown import table

TABLE_QUANTILES = ("p05", "p50", "p95")  # of the record's quantile set: what the shard table shows


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
    s = quality.stats
    verdict = "LOW QUALITY" if is_low_quality(quality, floor) else (
        "ok" if quality.quality is not None else "not filtered")
    acceptance = _fmt(quality.quality)
    rows = [
        ("shard", f"{shard_label(quality.shard)}: {verdict}"),
        ("acceptance", f"{acceptance} (floor {_fmt(floor)})" if floor is not None else acceptance),
        ("samples", f"{s.rows} rows: " + _top(s.verdicts)),
        ("dropped by reason", _top(s.reasons, 6)),
    ]
    rows += [(f"score {gate}", " · ".join(f"{key} {_fmt(q.get(key))}" for key in TABLE_QUANTILES)
              + f" (n={q['n']})") for gate, q in s.score_quantiles().items()]
    rows += [
        ("OOD classes", _top(s.ood_classes, 6)),
        ("domains", _top(s.domains, 6)),
        ("generations", f"{s.generations} ({_fmt(s.generations / max(s.rows, 1))} per sample)"),
        ("wall time", "–" if s.seconds is None else  # model loading of a fresh worker process included
         f"{s.seconds:.1f} s, {_fmt(s.images_per_second)} images/s"),
    ]
    return [{"metric": metric, "value": value} for metric, value in rows]


def run_summary_markdown(out: str, qualities: list[ShardQuality], *, samples: int, shards: int, skipped: int,
                         written: list[int], floor: float | None, counts: dict[str, int],
                         notes: list[str] | None = None, worst: int = 5) -> str:
    """The per-run markdown summary: totals, acceptance, slowest and worst shards, where the data is."""
    total = sum((q.stats for q in qualities), GenerationStats())
    judged, accepted = total.judged, total.verdicts.get(VERDICT_ACCEPTED, 0)
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
        slow = sorted((q for q in qualities if q.stats.seconds is not None), key=lambda q: -(q.stats.seconds or 0))
        lines += ["## Worst shards (lowest acceptance)", "",
                  *table(["shard", "acceptance", "rows", "top reasons"],
                         [(shard_label(q.shard), _fmt(q.quality), q.stats.rows, _top(q.stats.reasons, 3))
                          for q in worst_q]),
                  ""]
        lines += ["## Slowest shards", "",
                  *table(["shard", "seconds", "images/s"],
                         [(shard_label(q.shard), f"{q.stats.seconds:.1f}", _fmt(q.stats.images_per_second))
                          for q in slow[:worst]]),
                  ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    lines += [f"Inspect: `cgaug shards stats {out}` · verify: `cgaug shards verify {out}`"]
    return "\n".join(lines)
