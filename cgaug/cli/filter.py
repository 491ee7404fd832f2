"""`cgaug filter`: tune the quality filter from a run's own scores, and summarise what it did."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cgaug.storage.layout import CALIBRATION_DIR, INDEX_NAME

app = typer.Typer(help="Tune and inspect the automatic quality filter.", no_args_is_help=True)

OutArgument = Annotated[str, typer.Argument(
    help="Output root of a generation run made with --filters tiny|default (local path or fsspec URI).")]


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=1)


@app.command()
def calibrate(
    out: OutArgument,
    target_accept: Annotated[float, typer.Option(
        "--target-accept", min=0.0, max=1.0,
        help="Fraction of generated images that should pass every gate together.")] = 0.7,
    plots: Annotated[str | None, typer.Option(
        "--plots", help="Folder (path or fsspec URI) for the score-distribution PNGs "
                        f"[default: OUT/{CALIBRATION_DIR}].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
) -> None:
    """Suggest per-gate thresholds for a target acceptance from the scores in OUT/index.parquet."""
    from cgaug.storage.fs import open_root
    from cgaug.tasks.generation.calibrate import calibrate_run, write_plots

    if target_accept <= 0.0:
        raise typer.BadParameter(f"expected a fraction in (0, 1], found {target_accept}",
                                 param_hint="--target-accept")
    try:
        root = open_root(out, create=False)
        result, names, matrix = calibrate_run(root, target_accept)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(error) from error
    written = write_plots(open_root(plots or f"{out.rstrip('/')}/{CALIBRATION_DIR}"), result, names, matrix)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "plots": written}, indent=2))
        return
    _print_table(result)
    typer.echo("\nSuggested configuration (joint thresholds):\n" + result.yaml_snippet())
    typer.echo("\nplots: " + ", ".join(written))


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    table = Table(title=f"{result.generations} judged generations, target {result.target:.0%} passing all gates")
    for column in ("gate", "n", "q05", "median", "q95", "current", "passes now", "alone", "joint"):
        table.add_column(column, justify="left" if column == "gate" else "right")
    for gate in result.gates:
        rate = "-" if gate.current_pass_rate is None else f"{gate.current_pass_rate:.0%}"
        table.add_row(gate.name, str(gate.n), fmt(gate.quantiles.get("p05")), fmt(gate.quantiles.get("p50")),
                      fmt(gate.quantiles.get("p95")), fmt(gate.current), rate, fmt(gate.alone), fmt(gate.joint))
    console = Console()
    if not console.is_terminal:  # piped output: wide enough for the numbers, not the 80-column default
        console = Console(width=130)
    console.print(table)
    note = (f"each joint threshold passes {result.per_gate_rate:.1%} of its gate's scores; together they pass "
            f"{result.joint_pass_rate:.1%} of generations")
    if result.sample_acceptance is not None:
        note += (f"; with max_attempts={result.max_attempts}, about {result.sample_acceptance:.1%} of samples "
                 "would be accepted (if attempts were independent)")
    console.print(note)


@app.command()
def stats(out: OutArgument) -> None:
    """Print the filter's record as JSON: accepted, dropped_<reason>, attempts histogram, score quantiles."""
    from cgaug.storage.fs import open_root
    from cgaug.storage.stats import STATS_COLUMNS, stats_of_table

    try:
        root = open_root(out, create=False)
        if not root.exists(INDEX_NAME):
            raise FileNotFoundError(f"{root.uri(INDEX_NAME)}: no index; is {out} a finished cgaug run?")
        record = stats_of_table(root.read_parquet(INDEX_NAME, columns=STATS_COLUMNS), source=root.uri(INDEX_NAME))
    except (FileNotFoundError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(json.dumps(record.filter_summary(), indent=2))
