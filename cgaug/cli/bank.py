"""`cgaug bank`: build and inspect object banks (the OOD masks that compose pastes onto road)."""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Build and inspect object banks: Parquet files of out-of-distribution object masks.",
    no_args_is_help=True,
)


class BankSource(StrEnum):
    ade20k = "ade20k"
    coco = "coco"
    folder = "folder"


def _split_classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    classes = [c.strip() for c in text.split(",") if c.strip()]
    if not classes:
        raise typer.BadParameter("expected comma-separated class names, found none", param_hint="--classes")
    return classes


@app.command()
def build(
    src: Annotated[Path, typer.Argument(
        help="ade20k: the full release root holding index_ade20k.pkl; coco: an instances_*.json file; "
             "folder: a directory of {class}/*.png masks.")],
    source: Annotated[BankSource, typer.Option("--from", help="Which kind of source SRC is.")],
    out: Annotated[str, typer.Option(
        help="Bank file to write (local path or fsspec URI), e.g. bank.parquet.")],
    classes: Annotated[str | None, typer.Option(
        help="Comma-separated classes to keep: ADE20K-150 names (ade20k), COCO names (coco) or sub-folder "
             "names (folder). Default: the reference's 82 training OOD classes (ade20k), the classes "
             "Cityscapes lacks (coco), all (folder).")] = None,
    min_area: Annotated[int | None, typer.Option(
        min=1, help="Smallest object in pixels. Default: 1024 (ade20k, coco), 1 (folder).")] = None,
    class_map: Annotated[Path | None, typer.Option(
        help="JSON {name: ADE20K-150 name or null}: fine ADE20K object names (ade20k), COCO names (coco) "
             "or sub-folder names (folder) to the class whose colour paints them; it wins over defaults.")
    ] = None,
    include_crowd: Annotated[bool, typer.Option(
        help="coco only: keep crowd annotations (one mask over several objects).")] = False,
    drop_truncated: Annotated[bool, typer.Option(
        help="ade20k, coco: skip objects touching the image border (probably cut off).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Build an object bank from ADE20K, COCO or a folder of masks; prints the counts as JSON."""
    from cgaug.storage import bank_sources as bs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    class_list = _split_classes(classes)
    try:
        if source is BankSource.ade20k:
            counts = bs.build_from_ade20k(src, out, classes=class_list, class_map=class_map,
                                          min_area=min_area or bs.DEFAULT_MIN_AREA,
                                          drop_truncated=drop_truncated, progress=progress)
        elif source is BankSource.coco:
            counts = bs.build_from_coco(src, out, classes=class_list, ade_map=class_map,
                                        min_area=min_area or bs.DEFAULT_MIN_AREA, include_crowd=include_crowd,
                                        drop_truncated=drop_truncated, progress=progress)
        else:
            counts = bs.build_from_folder(src, out, classes=class_list, class_map=class_map,
                                          min_area=min_area or 1, progress=progress)
    except (FileNotFoundError, NotADirectoryError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(json.dumps(counts, indent=2))


@app.command()
def stats(
    bank: Annotated[str, typer.Argument(help="Bank file (local path or fsspec URI).")],
) -> None:
    """Print a bank's entries per class, ADE class and source as JSON."""
    from cgaug.storage.bank import bank_stats

    try:
        result = bank_stats(bank)
    except (FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error
    typer.echo(json.dumps(result, indent=2))
