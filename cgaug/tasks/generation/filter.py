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
    FilterInput,
    GateBatch,
    GateResult,
    check_models,
    enabled_gates,
)

if TYPE_CHECKING:
    pass

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


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
