"""`cgaug eval`: evaluate a segmenter on anomaly and domain-shift benchmarks (runs the `cgaug-eval` flow).

Registered by the main command as ``app.command("eval")(eval_command)``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cgaug.config import EvalOptions

KINDS_HELP = ("road_anomaly, smiyc_ra21, smiyc_ro21, fishyscapes_laf, fishyscapes_static, acdc_poc, muad, "
              "cityscapes")


def _size(text: str | None, option: str) -> tuple[int, int] | None:
    """'512x1024' (height x width) or '512' (square) -> (512, 1024)."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) < 1:
        raise typer.BadParameter(f"{text!r}: expected HEIGHTxWIDTH (e.g. 512x1024) or one size", param_hint=option)
    return (values[0], values[-1])


def eval_command(
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", help="'tiny' (random offline test model), a save_pretrained directory or a .pt/.pth file.")],
    dataset: Annotated[list[str], typer.Option(
        "--dataset", help=f"KIND=DIR, repeatable; KIND one of {KINDS_HELP}.")],
    out: Annotated[str, typer.Option("--out", help="Report folder (path or fsspec URI): results.json/.parquet, "
                                                   "curves/, grids/.")],
    fpr_rule: Annotated[str, typer.Option(
        "--fpr-rule", help="FPR@95 rule: 'first' threshold with TPR >= 0.95 (SMIYC), or 'closest' recall "
                           "(the paper's code).")] = "first",
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Evaluate only the first N frames of each dataset (sorted by id).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames per forward pass.")] = 2,
    device: Annotated[str, typer.Option(help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")] = "auto",
    amp: Annotated[bool, typer.Option(help="float16 autocast on CUDA (never on CPU).")] = True,
    window: Annotated[str | None, typer.Option(
        "--window", help="Sliding-window size HEIGHTxWIDTH for large images (default: whole images).")] = None,
    stride: Annotated[str | None, typer.Option(
        "--stride", help="Sliding-window step HEIGHTxWIDTH (default: 2/3 of the window).")] = None,
    examples: Annotated[int, typer.Option(min=0, help="Frames shown in each dataset's visual grid.")] = 4,
    acdc_root: Annotated[str | None, typer.Option(
        "--acdc-root", help="ACDC originals for acdc_poc (folder holding rgb_anon/; default: the acdc_poc DIR).")
    ] = None,
    acdc_void: Annotated[str, typer.Option(
        "--acdc-void", help="acdc_poc void convention: 'poc' (non-evaluated ids void) or 'multishiftseg' "
                            "(only id 0 void).")] = "poc",
    ro21_subset: Annotated[str, typer.Option(
        "--ro21-subset", help="smiyc_ro21 frames: 'official' (the benchmark's 30) or 'all' labelled.")] = "official",
) -> None:
    """Evaluate a segmenter: AUROC / AP / FPR@95 on anomaly benchmarks, mIoU / mAcc on domain-shift ones."""
    from pydantic import ValidationError

    from cgaug.models.segmenters import CheckpointError
    from cgaug.storage.evalsets import EvalDataError, parse_dataset_spec

    try:
        for spec in dataset:
            parse_dataset_spec(spec)
        options = EvalOptions(fpr_rule=fpr_rule, limit=limit, batch_size=batch_size, device=device, amp=amp,
                              window=_size(window, "--window"), stride=_size(stride, "--stride"), examples=examples,
                              acdc_root=acdc_root, acdc_void=acdc_void, ro21_subset=ro21_subset)
    except (ValueError, ValidationError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    from cgaug.flows.evaluate import evaluate_flow

    try:
        summary = evaluate_flow(checkpoint=checkpoint, datasets=list(dataset), out=out, options=options)
    except (CheckpointError, EvalDataError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(json.dumps({"out": summary["out"], "results": summary["results"],
                           "datasets": [{k: r[k] for k in ("name", "images", "auroc", "ap", "fpr95", "miou", "macc")}
                                        for r in summary["datasets"]]}, indent=2))
