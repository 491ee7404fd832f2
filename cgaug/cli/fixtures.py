"""`cgaug fixtures`: a synthetic Cityscapes-format dataset plus object masks, for trying the pipeline.

Exposed as the plain function `fixtures_command`; the main command registers
it with ``app.command("fixtures")(fixtures_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def fixtures_command(
    dest: Annotated[Path, typer.Argument(
        help="Dataset root to write: leftImg8bit/ and gtFine/ go here; object masks in bank_masks/, their "
             "pixels in bank_images/, the object bank in bank.parquet.")],
    images: Annotated[int, typer.Option("--images", min=1, help="Number of street scenes to write.")] = 6,
    split: Annotated[str, typer.Option(help="Split folder name (train, val, ...).")] = "train",
    seed: Annotated[int, typer.Option(
        help="Seed of the scenes and masks: the same seed writes the same bytes.")] = 0,
    height: Annotated[int, typer.Option(min=64, help="Image height in pixels (Cityscapes: 1024).")] = 256,
    width: Annotated[int, typer.Option(min=64, help="Image width in pixels (Cityscapes: 2048).")] = 512,
) -> None:
    """Write synthetic street scenes in the exact Cityscapes layout, plus an object bank with pixels."""
    from cgaug.fixtures import BANK_FILE, CITIES, MASKS_DIR, OBJECT_IMAGES_DIR, write_fixture_dataset

    try:
        source_ids, counts = write_fixture_dataset(dest, images=images, split=split, seed=seed, height=height,
                                                   width=width)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    cities = sorted({sid.split("_")[0] for sid in source_ids}, key=CITIES.index)

    table = Table(title=f"fixtures written under {dest}", show_header=True)
    table.add_column("what")
    table.add_column("where")
    table.add_column("count", justify="right")
    table.add_row(f"images ({height}x{width})", f"leftImg8bit/{split}/", str(len(source_ids)))
    table.add_row("labelIds, labelTrainIds, color, instanceIds", f"gtFine/{split}/", str(4 * len(source_ids)))
    table.add_row("cities", ", ".join(cities), str(len(cities)))
    for name, count in counts.items():
        table.add_row(f"masks + pixels: {name}", f"{MASKS_DIR}/{name}/, {OBJECT_IMAGES_DIR}/{name}/", str(count))
    table.add_row("object bank", BANK_FILE, str(sum(counts.values())))
    Console().print(table)
