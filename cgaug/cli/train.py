"""`cgaug train`: two-stage noise-aware training (runs the `cgaug-train` flow locally).

Registered by the main command as ``app.command("train")(train_command)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer


def train_command(
    source: Annotated[str | None, typer.Option(
        "--source", help="Cityscapes-format root with the original images (path or fsspec URI).")] = None,
    shards: Annotated[str | None, typer.Option(
        "--shards", help="cgaug output root whose accepted samples are the augmented images.")] = None,
    out: Annotated[str | None, typer.Option(
        "--out", help="Run directory: config, checkpoints/, metrics.json, model.pt, loss_curves.png.")] = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="Continue the run in RUN_DIR from its last checkpoint (no other input needed).")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="tiny (small random-weight model, CPU in a minute), deeplab or mask2former "
                         "[default: deeplab].")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", exists=True, dir_okay=False, help="YAML file with TrainConfig sections.")] = None,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", min=1, help="At most K optimizer steps per epoch (smoke runs).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        "--checkpoint", help="Closed-world model: a .pt/.pth state dict or a save_pretrained directory.")] = None,
    bank: Annotated[str | None, typer.Option(
        "--bank", help="Object bank for the anomaly mix [default: SOURCE/bank.parquet].")] = None,
    validation: Annotated[list[str] | None, typer.Option(
        "--validation", help="KIND=DIR evaluation set or shards=OUT[@SPLIT], repeatable.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N [default: auto].")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed [default: 0].")] = None,
) -> None:
    """Train a segmenter that generalises to covariate shift and flags semantic shift (method.md, Part 2)."""
    from cgaug.config import ConfigError, load_train_config
    from cgaug.models.segmenters import CheckpointError
    from cgaug.tasks.training.dataset import TrainDataError
    from cgaug.tasks.training.loop import RunDirError

    if preset == "tiny":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if resume is not None:
            if any(v is not None for v in (source, shards, out, preset, config, max_steps, checkpoint, bank)):
                raise typer.BadParameter("--resume RUN_DIR takes everything from RUN_DIR/config.json; "
                                         "pass no other input or setting", param_hint="--resume")
            cfg = None
        else:
            missing = [flag for flag, value in (("--source", source), ("--shards", shards), ("--out", out))
                       if value is None]
            if missing:
                raise typer.BadParameter(f"a new run needs {', '.join(missing)} (or --resume RUN_DIR)")
            cfg = load_train_config(config, preset=preset, overrides={
                "run": {"max_steps_per_epoch": max_steps, "device": device, "seed": seed,
                        "validation": list(validation) if validation else None},
                "model": {"checkpoint": checkpoint},
            })
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    from cgaug.flows.train import train_flow

    try:
        if resume is not None:
            summary = train_flow(out=resume, resume=True)
        else:
            summary = train_flow(out=out, source=source, shards=shards, config=cfg, bank=bank)
    except (CheckpointError, TrainDataError, RunDirError, FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(json.dumps(summary, indent=2))
