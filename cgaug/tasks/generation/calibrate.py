"""Calibration: filter thresholds suggested from the scores of a run.

The scores come from the index's `gates` column, which holds every gate of
every generation (first attempts and retries alike), so the distributions are
those of the generator's output, not of what the filter let through.

`--target-accept` is the fraction of generations that should pass the filter
(all gates together). Two suggestions per gate:

- ``alone``: the threshold at which this gate by itself passes that fraction;
- ``joint``: thresholds that each pass the same fraction r of generations,
  with r chosen (on the run's own scores, correlations included) so that all
  gates together pass the target fraction. These are the ones to use.

With `max_attempts` tries, a sample's chance to be accepted is about
1 - (1 - target)^max_attempts if attempts were independent; printed for reference.
Pure numpy/pyarrow; the plots use the one chart style of `cgaug.tasks.reporting.charts`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cgaug.storage.fs import Root
from cgaug.storage.layout import CONFIG_FILE, INDEX_NAME
from cgaug.storage.stats import quantiles as score_quantiles
from cgaug.tasks.generation.gates import GATE_BY_NAME, GATES

BISECTION_STEPS = 40


@dataclass(frozen=True, slots=True)
class GateCalibration:
    name: str
    threshold_field: str  # the FilterConfig key to set
    n: int  # generations with a score for this gate
    quantiles: dict[str, float]  # cgaug.storage.stats.QUANTILES of the gate's scores
    current: float | None  # the run's threshold (None: recorded only)
    current_pass_rate: float | None  # the fraction of generations the current threshold passes
    alone: float  # this gate by itself passes `target`
    joint: float  # with the other gates' joint thresholds, all together pass `target`


@dataclass(frozen=True, slots=True)
class Calibration:
    target: float
    generations: int
    per_gate_rate: float  # the pass rate each joint threshold gives its gate
    joint_pass_rate: float  # measured: generations passing every joint threshold
    max_attempts: int | None
    sample_acceptance: float | None  # 1 - (1 - target)^max_attempts
    gates: tuple[GateCalibration, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def yaml_snippet(self) -> str:
        """The suggested thresholds as a config file section."""
        lines = ["filters:"] + [f"  {g.threshold_field}: {g.joint:.6g}" for g in self.gates]
        return "\n".join(lines)


def read_attempt_scores(root: Root) -> tuple[list[str], np.ndarray]:
    """(gate names, scores) with one row per judged generation of the run, one column per gate.

    A gate without a record for a generation (a sample without objects) is +inf (it never
    rejected it); a recorded score that could not be computed is -inf (it always rejects).

    Raises:
        FileNotFoundError: no index.
        ValueError: the index holds no gate records (the run did not filter).
    """
    if not root.exists(INDEX_NAME):
        raise FileNotFoundError(f"{root.uri(INDEX_NAME)}: no index; calibrate reads a finished (indexed) run")
    table = root.read_parquet(INDEX_NAME, columns=["sample_id", "gates"])
    return attempt_scores(table, root.uri(INDEX_NAME))


def attempt_scores(table: pa.Table, source: str = INDEX_NAME) -> tuple[list[str], np.ndarray]:
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for sample_id, records in zip(table.column("sample_id").to_pylist(), table.column("gates").to_pylist(),
                                  strict=True):
        for record in records or []:
            score = record["score"]
            rows.setdefault((sample_id, record["attempt"]), {})[record["name"]] = \
                -np.inf if score is None else float(score)
    if not rows:
        raise ValueError(f"{source}: no gate scores; calibrate needs a run made with a quality filter "
                         "(cgaug generate --filters tiny|default)")
    present = {name for scores in rows.values() for name in scores}
    names = [g.name for g in GATES if g.name in present] + sorted(present - set(GATE_BY_NAME))
    matrix = np.full((len(rows), len(names)), np.inf)
    for r, scores in enumerate(rows.values()):
        for c, name in enumerate(names):
            matrix[r, c] = scores.get(name, np.inf)
    return names, matrix


def threshold_for_rate(values: np.ndarray, rate: float, strict: bool) -> float:
    """A threshold that passes the fraction `rate` of `values` (ties at the cut pass too)."""
    ordered = np.sort(values[np.isfinite(values)])
    if ordered.size == 0:
        return float("nan")
    rejected = min(int(np.floor((1.0 - rate) * ordered.size + 1e-9)), ordered.size)
    if rejected == ordered.size:  # nothing may pass: just above the maximum
        return float(ordered[-1]) if strict else float(np.nextafter(ordered[-1], np.inf))
    cut = float(ordered[rejected])
    return float(np.nextafter(cut, -np.inf)) if strict else cut


def pass_matrix(matrix: np.ndarray, names: list[str], thresholds: list[float]) -> np.ndarray:
    passed = np.ones(matrix.shape, dtype=bool)
    for c, (name, threshold) in enumerate(zip(names, thresholds, strict=True)):
        strict = GATE_BY_NAME[name].strict if name in GATE_BY_NAME else False
        column = matrix[:, c]
        passed[:, c] = column > threshold if strict else column >= threshold
    return passed


def calibrate(names: list[str], matrix: np.ndarray, target: float, current: dict[str, float | None] | None = None,
              max_attempts: int | None = None) -> Calibration:
    """Suggested thresholds for `target` acceptance per generation (see the module docstring)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target acceptance: expected a fraction in (0, 1], found {target}")
    current = current or {}
    strict = [GATE_BY_NAME[n].strict if n in GATE_BY_NAME else False for n in names]

    def joint_thresholds(rate: float) -> list[float]:
        return [threshold_for_rate(matrix[:, c], rate, strict[c]) for c in range(len(names))]

    def joint_rate(rate: float) -> float:
        return float(pass_matrix(matrix, names, joint_thresholds(rate)).all(axis=1).mean())

    low, high = target, 1.0  # each gate must pass at least `target`; passing everything is the upper end
    if joint_rate(low) < target:
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            low, high = (low, middle) if joint_rate(middle) >= target else (middle, high)
        rate = high
    else:
        rate = low
    joint = joint_thresholds(rate)
    gates = []
    for c, name in enumerate(names):
        values = matrix[:, c][np.isfinite(matrix[:, c])]
        threshold = current.get(name)
        current_rate = None if threshold is None else float(
            pass_matrix(matrix[:, [c]], [name], [threshold]).mean())
        field = GATE_BY_NAME[name].threshold_field if name in GATE_BY_NAME else name
        gates.append(GateCalibration(
            name=name, threshold_field=field, n=int(values.size),
            quantiles=score_quantiles(values),
            current=threshold, current_pass_rate=current_rate,
            alone=threshold_for_rate(matrix[:, c], target, strict[c]), joint=joint[c]))
    acceptance = None if max_attempts is None else 1.0 - (1.0 - target) ** max_attempts
    return Calibration(target=target, generations=int(matrix.shape[0]), per_gate_rate=rate,
                       joint_pass_rate=joint_rate(rate), max_attempts=max_attempts,
                       sample_acceptance=acceptance, gates=tuple(gates))


def run_thresholds(root: Root) -> tuple[dict[str, float | None], int | None]:
    """The thresholds and max_attempts the run was made with (from its config.json), if recorded."""
    if not root.exists(CONFIG_FILE):
        return {}, None
    filters = json.loads(root.read_bytes(CONFIG_FILE)).get("config", {}).get("filters") or {}
    thresholds = {g.name: filters.get(g.threshold_field) for g in GATES if g.threshold_field in filters}
    return thresholds, filters.get("max_attempts")


def calibrate_run(root: Root, target: float) -> tuple[Calibration, list[str], np.ndarray]:
    names, matrix = read_attempt_scores(root)
    current, max_attempts = run_thresholds(root)
    return calibrate(names, matrix, target, current, max_attempts), names, matrix


def plot_png(name: str, values: np.ndarray, calibration: GateCalibration, target: float) -> bytes:
    """A histogram of one gate's scores with the current and suggested thresholds, as PNG bytes."""
    from cgaug.tasks.reporting.charts import COLORS, chart, png

    finite = values[np.isfinite(values)]
    with chart() as (figure, axes):
        axes.hist(finite, bins=max(10, min(60, finite.size // 4 or 10)), color=COLORS["main"], alpha=0.85)
        lines = [("current", calibration.current, COLORS["alert"], "--"),
                 (f"alone ({target:.0%})", calibration.alone, COLORS["neutral"], ":"),
                 (f"joint ({target:.0%} all gates)", calibration.joint, COLORS["good"], "-")]
        for label, value, color, style in lines:
            if value is not None and np.isfinite(value):
                axes.axvline(value, color=color, linestyle=style, label=f"{label}: {value:.4g}")
        axes.set_title(f"{name}: {finite.size} generations")
        axes.set_xlabel(f"score (filters.{calibration.threshold_field})")
        axes.set_ylabel("generations")
        axes.legend()
        return png(figure)


def write_plots(plots: Root, calibration: Calibration, names: list[str], matrix: np.ndarray) -> list[str]:
    """One PNG per gate (`{gate}.png`), each written atomically; returns their URIs."""
    written = []
    for c, gate in enumerate(calibration.gates):
        name = f"{names[c]}.png"
        plots.write_bytes_atomic(name, plot_png(gate.name, matrix[:, c], gate, calibration.target))
        written.append(plots.uri(name))
    return written
