"""`cgaug shards` (inspect and verify a generated dataset) and `cgaug export` (other layouts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Inspect and verify a generated dataset (shards, index, manifest).",
                  no_args_is_help=True)
export_app = typer.Typer(help="Export a generated dataset to layouts other tools read.",
                         no_args_is_help=True)


@export_app.callback()
def _export_group() -> None:
    """Export a generated dataset to layouts other tools read."""
    # A callback keeps `cityscapes` a named sub-command even while it is the only one.


OutArgument = Annotated[str, typer.Argument(
    help="Output root of a generation run (local path or fsspec URI).")]


def _fail(error: Exception) -> typer.Exit:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@app.command()
def stats(out: OutArgument) -> None:
    """Print dataset statistics as JSON: rows, bytes, verdicts, reasons, prompt attributes, OOD classes."""
    from cgaug.storage.fs import open_root
    from cgaug.storage.shards import stats as dataset_stats

    try:
        result = dataset_stats(open_root(out, create=False))
    except (FileNotFoundError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(json.dumps(result, indent=2))


@app.command()
def verify(
    out: OutArgument,
    decode: Annotated[bool, typer.Option(
        help="Decode every PNG blob and check its size (slow on large datasets; --no-decode checks "
             "files, hashes, schemas and ids only).")] = True,
) -> None:
    """Check the output root against its manifest; prints each problem and exits 1 if there is any."""
    from cgaug.storage.fs import open_root
    from cgaug.storage.shards import read_manifest
    from cgaug.storage.shards import verify as verify_root

    root = open_root(out, create=False)
    problems = verify_root(root, decode_blobs=decode)
    if problems:
        for problem in problems:
            typer.echo(problem)
        typer.echo(f"{len(problems)} problem(s) in {root.uri()}", err=True)
        raise typer.Exit(code=1)
    manifest = read_manifest(root)
    typer.echo(f"ok: {manifest.total_rows} rows in {len(manifest.shards)} shards")


@app.command()
def show(
    out: OutArgument,
    sample: Annotated[str, typer.Option("--sample", help="Sample id to show (the sample_id column).")],
    dest: Annotated[Path, typer.Option("--out", help="PNG file to write the preview to.")],
    panel_width: Annotated[int | None, typer.Option(
        min=16, help="Downscale each of the three panels to this width (default: full size).")] = None,
) -> None:
    """Render one sample (image, conditioning map, labels with the OOD outline, captions) to a PNG."""
    from cgaug.storage.fs import open_root
    from cgaug.storage.shards import read_sample
    from cgaug.tasks.reporting.previews import render_sample

    try:
        picture = render_sample(read_sample(open_root(out, create=False), sample), panel_width=panel_width)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise _fail(error) from error
    dest.parent.mkdir(parents=True, exist_ok=True)
    picture.save(dest, format="PNG")
    typer.echo(f"wrote {dest} ({picture.width}x{picture.height})")


@app.command()
def regenerate(
    out: OutArgument,
    sample: Annotated[str, typer.Option("--sample", help="Sample id to regenerate (the sample_id column).")],
    dest: Annotated[Path | None, typer.Option(
        "--out", help="Write the regenerated image to this PNG file too.")] = None,
    source: Annotated[str | None, typer.Option(
        help="Source root [default: the one recorded in the manifest].")] = None,
    bank: Annotated[str | None, typer.Option(help="Object bank [default: the one recorded in the manifest].")] = None,
) -> None:
    """Rebuild one sample from its row (composition, prompt, seeds, generator settings) and compare pixels.

    Prints JSON (bit_identical, max_pixel_difference, ...); exits 0 when bit-identical, 1 otherwise.
    """
    from PIL import Image

    from cgaug.tasks.generation.regenerate import RegenerateError, regenerate_sample

    try:
        result = regenerate_sample(out, sample, source=source, bank=bank)
    except (FileNotFoundError, KeyError, RegenerateError) as error:
        raise _fail(error) from error
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(result.image).save(dest, format="PNG")
    typer.echo(json.dumps(result.summary(), indent=2))
    if not result.identical:
        raise typer.Exit(code=1)


@export_app.command()
def cityscapes(
    out: OutArgument,
    dest: Annotated[str, typer.Argument(
        help="Directory to write leftImg8bit/ and gtFine/ into (path or URI).")],
    verdicts: Annotated[str, typer.Option(
        help="Comma-separated verdicts to export (skipped rows have no images).")] = "unfiltered,accepted",
) -> None:
    """Write the samples in the Cityscapes layout: {stem}_leftImg8bit.png, _gtFine_labelTrainIds.png
    (254 = OOD) and _gtFine_color.png, with stem {source_id}_{variant:03d}."""
    from cgaug.storage.export import export_cityscapes

    wanted = [v.strip() for v in verdicts.split(",") if v.strip()]
    if not wanted:
        raise typer.BadParameter("expected comma-separated verdicts, found none", param_hint="--verdicts")
    try:
        count = export_cityscapes(out, dest, wanted)
    except (FileNotFoundError, ValueError) as error:
        raise _fail(error) from error
    typer.echo(f"exported {count} samples to {dest}")
