"""Automatic quality filtering: the judge, and the records it leaves in a shard and their statistics.

Pure numpy, no Prefect and no torch: the models that produce masks, pixel
predictions and CLIP similarities come in through three small protocols
(`cgaug.models.filters.base`), so every decision made here can be tested with
constructed inputs whose right answer is known.

The gates themselves (what each scores, its threshold field, the model it
needs) are `cgaug.tasks.generation.gates`; the masks and measures they use
are `cgaug.tasks.generation.geometry`; what happens after a verdict (retry,
recompose, reject) is `cgaug.tasks.generation.retry`.

Every enabled gate runs on every image, even after another gate failed, so
that scores are complete for auditing and for calibration. Objects-only gates
are not recorded for a sample without objects. A threshold of None records
the score without ever rejecting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.config import FilterConfig
from cgaug.models.filters.base import FilterModels
from cgaug.tasks.generation.gates import (
    GATE_BY_NAME,
    GATES,
    FilterInput,
    GateBatch,
    GateResult,
    check_models,
    enabled_gates,
)

if TYPE_CHECKING:
    import pyarrow as pa

# --------------------------------------------------------------------------- judging


@dataclass(frozen=True, slots=True)
class Judgement:
    gates: tuple[GateResult, ...]
    confirmed: np.ndarray | None  # union of the SAM masks (None: the object gate did not run)
    prediction: np.ndarray | None  # the segmenter's train ids (None: no Cityscapes segmenter ran)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def reasons(self) -> list[str]:
        return [g.reason for g in self.gates if g.reason is not None]

    @property
    def scores(self) -> dict[str, float]:
        return {g.name: g.score for g in self.gates}


Judge = Callable[[Sequence[FilterInput]], list[Judgement]]
"""Verdicts for a batch of generated images (`make_judge`)."""


def judge(inputs: Sequence[FilterInput], models: FilterModels, cfg: FilterConfig) -> list[Judgement]:
    """Run every enabled gate on a batch of generated images (each model sees the whole batch).

    Raises:
        ValueError: a gate is on but the model it needs was not given.
    """
    gates = enabled_gates(cfg)
    check_models(gates, models, cfg)
    batch = GateBatch(inputs, models, frozenset(g.name for g in gates))
    scores: list[dict[str, float]] = [{} for _ in inputs]
    for gate in gates:
        for i, score in gate.scores(batch).items():
            scores[i][gate.name] = score
    return [Judgement(tuple(g.result(item[g.name], cfg) for g in gates if g.name in item), batch.confirmed(i),
                      batch.predictions[i])
            for i, item in enumerate(scores)]


def make_judge(models: FilterModels, cfg: FilterConfig) -> Judge:
    """`judge` bound to its models and settings: the callable the shard loop takes."""
    return partial(judge, models=models, cfg=cfg)


# --------------------------------------------------------------------------- records


def gate_records(judgement: Judgement, attempt: int) -> list[dict[str, Any]]:
    """Rows of the shard's `gates` column for one attempt."""
    return [{"attempt": attempt, "name": g.name, "score": _finite_or_none(g.score), "threshold": g.threshold,
             "passed": g.passed, "reason": g.reason} for g in judgement.gates]


def stored_scores(judgement: Judgement) -> dict[str, float]:
    """The `scores` column: the stored attempt's scores, NaN (no evidence) left out."""
    return {name: score for name, score in judgement.scores.items() if np.isfinite(score)}


def last_attempt_reasons(records: Sequence[dict[str, Any]], attempt: int) -> list[str]:
    """The reason codes of the gates that failed on the stored attempt (why a rejected sample was dropped)."""
    return [r["reason"] for r in records if r["attempt"] == attempt and r["reason"] is not None]


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# --------------------------------------------------------------------------- statistics

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def filter_stats(index: pa.Table) -> dict[str, Any]:
    """The filter's record for a shard or a run, from index (or shard) columns.

    total, accepted, rejected, unfiltered, skipped, ``dropped_<reason>`` (rejected samples by the
    gates that failed on their last attempt), ``attempts`` (histogram of generations per sample),
    ``attempt_pass_rate`` (generations that passed every gate) and, per gate, the number of
    scores, their pass rate and quantiles over every attempt.
    """
    verdicts = index.column("verdict").to_pylist()
    attempts = index.column("attempts").to_pylist() if "attempts" in index.column_names else [None] * len(verdicts)
    gates = index.column("gates").to_pylist() if "gates" in index.column_names else [None] * len(verdicts)
    out: dict[str, Any] = {"total": len(verdicts)}
    for verdict in ("accepted", "rejected", "unfiltered", "skipped"):
        out[verdict] = verdicts.count(verdict)
    stored = index.column("attempt").to_pylist()
    dropped: dict[str, int] = {}
    for verdict, records, attempt in zip(verdicts, gates, stored, strict=True):
        if verdict == "rejected":
            for reason in last_attempt_reasons(records or [], attempt):
                dropped[f"dropped_{reason}"] = dropped.get(f"dropped_{reason}", 0) + 1
    out.update(sorted(dropped.items()))
    histogram: dict[str, int] = {}
    for verdict, count in zip(verdicts, attempts, strict=True):
        if verdict != "skipped" and count is not None:
            histogram[str(count)] = histogram.get(str(count), 0) + 1
    out["attempts"] = dict(sorted(histogram.items(), key=lambda kv: int(kv[0])))
    out.update(_gate_summary([g for g in gates if g]))
    return out


def _gate_summary(rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
    by_gate: dict[str, list[dict[str, Any]]] = {}
    outcome: dict[tuple[int, int], bool] = {}  # (row, attempt) -> passed every gate
    for row_number, records in enumerate(rows):
        for record in records:
            by_gate.setdefault(record["name"], []).append(record)
            key = (row_number, record["attempt"])
            outcome[key] = outcome.get(key, True) and bool(record["passed"])
    summary: dict[str, Any] = {"generations_judged": len(outcome),
                               "attempt_pass_rate": (sum(outcome.values()) / len(outcome)) if outcome else None}
    gates = {}
    for name in sorted(by_gate, key=lambda n: [g.name for g in GATES].index(n) if n in GATE_BY_NAME else 99):
        records = by_gate[name]
        values = np.asarray([r["score"] for r in records if r["score"] is not None], dtype=float)
        gates[name] = {
            "n": len(records),
            "pass_rate": sum(bool(r["passed"]) for r in records) / len(records),
            "quantiles": {str(q): float(np.quantile(values, q)) for q in QUANTILES} if values.size else {},
        }
    summary["gates"] = gates
    return summary
