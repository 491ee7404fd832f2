"""`cgaug models`: create generator models that need no download."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Create and inspect generator models.", no_args_is_help=True)


@app.callback()
def _models() -> None:
    """Create and inspect generator models."""  # a callback keeps `tiny` a sub-command even when alone


@app.command()
def tiny(
    dest: Annotated[Path, typer.Argument(
        help="Directory to write the pipeline to (must be missing, empty, or already hold the tiny model).")],
    seed: Annotated[int, typer.Option(
        help="Weight initialisation seed; the same seed gives byte-identical files.")] = 0,
) -> None:
    """Write the tiny random-weight ControlNet pipeline (for tests and demos) to DEST.

    Load it with `generator.model: DEST` and `generator.controlnet: null`, or use
    `generator.model: tiny` for the copy in the user cache.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cgaug.models.tiny import build_tiny_pipeline, count_parameters

    try:
        path = build_tiny_pipeline(dest, seed=seed)
    except FileExistsError as exc:
        raise typer.BadParameter(str(exc), param_hint="DEST") from exc
    typer.echo(f"{path.resolve()}\t{count_parameters(path):,} parameters")
