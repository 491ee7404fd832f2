"""One mergeable statistics record of generated samples, computed from index (or shard) rows.

Every summary of a run reads the same columns, so they all come from this one
record instead of each counting in its own way: the shard quality artifact
and ``OUT/reports/shard-N.json`` (`cgaug.storage.reports`), the run summary,
``cgaug shards stats``, ``cgaug filter stats`` and calibration's score
distributions. In the style of datatrove's ``Stats``: counters per verdict,
reason and gate, the wall time, and ``+`` to combine the records of shards
into the record of a run (``sum(records, GenerationStats())``).

Merging is exact, quantiles included: a gate's record keeps its finite scores
(sorted), and quantiles are always computed from the scores present, with one
quantile set (`QUANTILES`, linear interpolation as numpy's default). A report
written before scores were stored (schema of commit 9224d7e) reads back with
its counts and without scores; `cgaug.storage.reports.read_report` rebuilds
such a shard's record from the shard itself.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from cgaug.storage.schema import VERDICT_ACCEPTED, VERDICT_REJECTED, VERDICT_SKIPPED

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
"""The one quantile set of every score summary (keys ``p05`` ... ``p95``, see `quantile_key`)."""

STATS_COLUMNS = ["verdict", "reasons", "attempt", "attempts", "gates", "prompt_domain", "weather", "time_of_day",
                 "place", "objects", "ood_area"]
"""The metadata columns the record is computed from (present in shards and in the index)."""

NONE_KEY = "none"  # the counter key of a null value


def quantile_key(q: float) -> str:
    """``p05`` for 0.05: the key of a quantile in every summary."""
    return f"p{round(q * 100):02d}"


def quantiles(values: Iterable[float]) -> dict[str, float]:
    """The `QUANTILES` of the finite values ({} when there are none)."""
    finite = np.asarray([v for v in values if v is not None], dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return {}
    return {quantile_key(q): float(value) for q, value in zip(QUANTILES, np.quantile(finite, QUANTILES),
                                                              strict=True)}


def _add_counts(a: Mapping[Any, int], b: Mapping[Any, int]) -> dict[Any, int]:
    merged = dict(a)
    for key, count in b.items():
        merged[key] = merged.get(key, 0) + count
    return merged


def _ordered(counts: Mapping[Any, int]) -> dict[Any, int]:
    """Most frequent first, ties by key: the order a person reads counts in."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def _key(value: Any) -> str:
    return NONE_KEY if value is None else str(value)


@dataclass(frozen=True, slots=True)
class GateStats:
    """One filter gate over every judged generation (first attempts and retries alike)."""

    records: int = 0  # generations the gate judged
    passed: int | None = 0  # of those, passed; None: unknown (read from a report of the old schema)
    scores: tuple[float, ...] = ()  # the finite scores, sorted

    def __add__(self, other: GateStats) -> GateStats:
        passed = None if self.passed is None or other.passed is None else self.passed + other.passed
        return GateStats(self.records + other.records, passed, tuple(heapq.merge(self.scores, other.scores)))

    @property
    def pass_rate(self) -> float | None:
        return None if self.passed is None or not self.records else self.passed / self.records

    def quantiles(self) -> dict[str, float]:
        return quantiles(self.scores)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "passed": self.passed, "scores": list(self.scores)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateStats:
        return cls(int(data["records"]), None if data.get("passed") is None else int(data["passed"]),
                   tuple(sorted(float(s) for s in data.get("scores", ()))))


_COUNTERS = ("verdicts", "reasons", "notes", "dropped", "attempts", "ood_classes", "domains", "weather",
             "time_of_day", "place")
_TOTALS = ("rows", "generations", "generations_judged", "generations_passed", "ood_area_sum", "ood_area_n")


@dataclass(frozen=True, slots=True)
class GenerationStats:
    """What happened to a set of samples (a shard, a run); `+` combines records of disjoint sets.

    Prompt attributes, OOD classes, attempts and areas count generated (not skipped) rows;
    verdicts and reasons count every row.
    """

    rows: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # every reason of every row not accepted
    notes: dict[str, int] = field(default_factory=dict)  # reasons of accepted rows (compose notes)
    dropped: dict[str, int] = field(default_factory=dict)  # rejected rows by gate failed on the kept attempt
    attempts: dict[int, int] = field(default_factory=dict)  # generated rows by generations made for them
    generations: int = 0  # generator calls, retries included
    generations_judged: int = 0  # generations the filter judged
    generations_passed: int = 0  # of those, passed every gate
    gates: dict[str, GateStats] = field(default_factory=dict)  # in the order the filter runs them
    ood_classes: dict[str, int] = field(default_factory=dict)  # pasted objects by class
    domains: dict[str, int] = field(default_factory=dict)  # "rainy night", "clear day", "base" (no domain)
    weather: dict[str, int] = field(default_factory=dict)
    time_of_day: dict[str, int] = field(default_factory=dict)
    place: dict[str, int] = field(default_factory=dict)
    ood_area_sum: int = 0  # pasted OOD pixels, over rows that record an area
    ood_area_n: int = 0
    seconds: float | None = None  # wall time of production, when measured (summed over merged records)

    def __add__(self, other: GenerationStats) -> GenerationStats:
        if not isinstance(other, GenerationStats):
            return NotImplemented
        merged: dict[str, Any] = {name: getattr(self, name) + getattr(other, name) for name in _TOTALS}
        merged |= {name: _add_counts(getattr(self, name), getattr(other, name)) for name in _COUNTERS}
        gates = dict(self.gates)
        for name, gate in other.gates.items():
            gates[name] = gates[name] + gate if name in gates else gate
        times = [s for s in (self.seconds, other.seconds) if s is not None]
        return GenerationStats(**merged, gates=gates, seconds=sum(times) if times else None)

    def __radd__(self, other: Any) -> GenerationStats:
        return self if other == 0 else NotImplemented  # sum(records) without a start value

    # --- derived -------------------------------------------------------------------------------------

    @property
    def judged(self) -> int:
        """Samples the filter decided on (accepted or rejected)."""
        return self.verdicts.get(VERDICT_ACCEPTED, 0) + self.verdicts.get(VERDICT_REJECTED, 0)

    @property
    def acceptance(self) -> float | None:
        """Accepted / judged samples; None when nothing was judged (no filter: no evidence either way)."""
        return self.verdicts.get(VERDICT_ACCEPTED, 0) / self.judged if self.judged else None

    @property
    def attempt_pass_rate(self) -> float | None:
        """Judged generations that passed every gate."""
        return self.generations_passed / self.generations_judged if self.generations_judged else None

    @property
    def images_per_second(self) -> float | None:
        return self.generations / self.seconds if self.seconds else None

    @property
    def mean_ood_area(self) -> float | None:
        return self.ood_area_sum / self.ood_area_n if self.ood_area_n else None

    def score_quantiles(self) -> dict[str, dict[str, float]]:
        """Per gate: the `QUANTILES` of its scores and their number ``n``."""
        return {name: gate.quantiles() | {"n": len(gate.scores)} for name, gate in self.gates.items()
                if gate.scores}

    # --- JSON ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``score_quantiles`` and ``quality`` (the acceptance) are derived, for readers."""
        data: dict[str, Any] = {"rows": self.rows}
        data |= {name: _ordered(getattr(self, name)) for name in _COUNTERS if name != "attempts"}
        data["attempts"] = {str(k): v for k, v in sorted(self.attempts.items())}
        data |= {name: getattr(self, name) for name in _TOTALS if name != "rows"}
        data["gates"] = {name: gate.to_dict() for name, gate in self.gates.items()}
        data["score_quantiles"] = self.score_quantiles()
        data["seconds"] = self.seconds
        data["quality"] = self.acceptance
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationStats:
        """The record of `to_dict`, or of a report of the old schema (counts only, gates without scores)."""
        values: dict[str, Any] = {name: int(data[name]) for name in _TOTALS if name in data}
        values |= {name: dict(data[name]) for name in _COUNTERS if name in data and name != "attempts"}
        values["attempts"] = {int(k): int(v) for k, v in data.get("attempts", {}).items()}
        if "gates" in data:
            values["gates"] = {name: GateStats.from_dict(gate) for name, gate in data["gates"].items()}
        else:  # old schema: only the number of scores per gate survives
            values["gates"] = {name: GateStats(records=int(summary.get("n", 0)), passed=None)
                               for name, summary in data.get("score_quantiles", {}).items()}
        values["seconds"] = data.get("seconds")
        return cls(**values)

    # --- views ---------------------------------------------------------------------------------------

    def headline(self) -> dict[str, int]:
        """Flat counts for one log line: rows, verdicts, generations, drops by gate, attempts histogram."""
        out = {"total": self.rows, **{verdict: n for verdict, n in sorted(self.verdicts.items())},
               "generations": self.generations}
        out |= {f"dropped_{reason}": n for reason, n in sorted(self.dropped.items())}
        out |= {f"attempts_{k}": n for k, n in sorted(self.attempts.items())}
        return out

    def filter_summary(self) -> dict[str, Any]:
        """The filter's record (``cgaug filter stats``): verdict totals, ``dropped_<reason>``, attempts
        histogram, the pass rate of judged generations and, per gate, records, pass rate, quantiles."""
        out: dict[str, Any] = {"total": self.rows}
        out |= {verdict: self.verdicts.get(verdict, 0) for verdict in ("accepted", "rejected", "unfiltered",
                                                                        "skipped")}
        out |= {f"dropped_{reason}": count for reason, count in sorted(self.dropped.items())}
        out["attempts"] = {str(k): v for k, v in sorted(self.attempts.items())}
        out["generations_judged"] = self.generations_judged
        out["attempt_pass_rate"] = self.attempt_pass_rate
        out["gates"] = {name: {"n": gate.records, "pass_rate": gate.pass_rate, "quantiles": gate.quantiles()}
                        for name, gate in self.gates.items()}
        return out

    def dataset_summary(self) -> dict[str, Any]:
        """Verdicts, every reason, prompt attributes, OOD classes and area (``cgaug shards stats``)."""
        by_key = {name: dict(sorted(getattr(self, name).items()))
                  for name in ("verdicts", "weather", "time_of_day", "place", "ood_classes")}
        return {"rows": self.rows, **by_key, "reasons": dict(sorted(_add_counts(self.reasons, self.notes).items())),
                "mean_ood_area": self.mean_ood_area}


def _domain(row: Mapping[str, Any]) -> str:
    return f"{row['weather']} {row['time_of_day']}" if row["prompt_domain"] else "base"


def stats_of_rows(rows: Iterable[Mapping[str, Any]], seconds: float | None = None) -> GenerationStats:
    """The record of metadata rows (dicts with `STATS_COLUMNS` at least)."""
    counters: dict[str, dict[Any, int]] = {name: {} for name in _COUNTERS}
    totals = dict.fromkeys(_TOTALS, 0)
    gates: dict[str, list[float]] = {}
    gate_records: dict[str, list[int]] = {}  # name -> [records, passed]

    def count(name: str, key: Any) -> None:
        counters[name][key] = counters[name].get(key, 0) + 1

    for row in rows:
        totals["rows"] += 1
        verdict = row["verdict"]
        count("verdicts", _key(verdict))
        for reason in row["reasons"] or []:
            count("notes" if verdict == VERDICT_ACCEPTED else "reasons", _key(reason))
        records = row["gates"] or []
        if verdict == VERDICT_REJECTED:
            for record in records:
                if record["attempt"] == row["attempt"] and record["reason"] is not None:
                    count("dropped", record["reason"])
        outcome: dict[int, bool] = {}  # attempt -> passed every gate
        for record in records:
            tally = gate_records.setdefault(record["name"], [0, 0])
            tally[0] += 1
            tally[1] += bool(record["passed"])
            score = gates.setdefault(record["name"], [])
            if record["score"] is not None and np.isfinite(record["score"]):
                score.append(float(record["score"]))
            outcome[record["attempt"]] = outcome.get(record["attempt"], True) and bool(record["passed"])
        totals["generations_judged"] += len(outcome)
        totals["generations_passed"] += sum(outcome.values())
        if verdict == VERDICT_SKIPPED:
            continue
        if row["attempts"] is not None:
            count("attempts", int(row["attempts"]))
        totals["generations"] += int(row["attempts"] or 1)
        for name in ("weather", "time_of_day", "place"):
            count(name, _key(row[name]))
        count("domains", _domain(row))
        for obj in row["objects"] or []:
            count("ood_classes", _key(obj["class_name"]))
        if row["ood_area"] is not None:
            totals["ood_area_sum"] += int(row["ood_area"])
            totals["ood_area_n"] += 1
    return GenerationStats(
        **totals, **counters, seconds=seconds,
        gates={name: GateStats(tally[0], tally[1], tuple(sorted(gates[name])))
               for name, tally in gate_records.items()})


def stats_of_table(table: pa.Table, seconds: float | None = None, source: str = "metadata") -> GenerationStats:
    """The record of an index or shard table.

    Raises:
        ValueError: the table lacks some of `STATS_COLUMNS` (named, with `source`).
    """
    missing = sorted(set(STATS_COLUMNS) - set(table.column_names))
    if missing:
        raise ValueError(f"{source}: lacks columns {missing}; statistics need {STATS_COLUMNS}")
    return stats_of_rows(table.select(STATS_COLUMNS).to_pylist(), seconds)
