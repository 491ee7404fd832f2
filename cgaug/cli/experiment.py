"""`cgaug experiment mini`: the miniature baselines-vs-CG-Aug experiment on the CPU (`cgaug.flows.experiment`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


def _seeds(value: str | None) -> list[int] | None:
    """`--seeds 3` means seeds 0, 1, 2; `--seeds 0,5,7` lists them."""
    if value is None:
        return None
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return list(range(int(value)))


@app.command("mini")
def mini(
    out: Annotated[Path, typer.Option("--out", help="Output folder (re-running continues it).")] = Path(
        "experiment-mini"),
    steps: Annotated[str, typer.Option(help="Protocol preset: full (the documented run) or small (a smoke "
                                            "run of a few minutes).")] = "full",
    seeds: Annotated[str | None, typer.Option(help="Number of seeds (3: 0, 1, 2) or a comma-separated list.")] = None,
    train_scenes: Annotated[int | None, typer.Option(help="Clear-day training scenes.")] = None,
    test_scenes: Annotated[int | None, typer.Option(help="Test-world scenes.")] = None,
    height: Annotated[int | None, typer.Option(help="Image height.")] = None,
    width: Annotated[int | None, typer.Option(help="Image width.")] = None,
    closed_epochs: Annotated[int | None, typer.Option(help="Epochs of the closed-world model A.")] = None,
    stage1_epochs: Annotated[int | None, typer.Option(help="Stage-1 epochs of B and C.")] = None,
    stage2_epochs: Annotated[int | None, typer.Option(help="Stage-2 epochs of B and C.")] = None,
) -> None:
    """Closed world (A) vs OOD-only (B) vs CG-Aug (C) in a painted world; writes results.md/.json and figure.png."""
    from cgaug.flows.experiment import experiment_flow
    from cgaug.tasks.experiment.protocol import STEPS, protocol_for

    if steps not in STEPS:
        raise typer.BadParameter(f"expected one of {', '.join(STEPS)}, found {steps!r}", param_hint="--steps")
    protocol = protocol_for(steps, seeds=_seeds(seeds), train_scenes=train_scenes, test_scenes=test_scenes,  # type: ignore[arg-type]
                            height=height, width=width, closed_epochs=closed_epochs, stage1_epochs=stage1_epochs,
                            stage2_epochs=stage2_epochs)
    result = experiment_flow(out=str(out), protocol=protocol)
    typer.echo((out / "results.md").read_text())
    typer.echo(json.dumps({"out": result["out"], "claim": result["claim"], "wall_s": round(result["wall_s"]),
                           "cpu_s": round(result["cpu_s"])}, indent=2))
