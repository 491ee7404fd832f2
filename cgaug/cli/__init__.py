"""The `cgaug` command: one entry point for local runs, inspection and export.

Sub-commands live in their own modules next to this one; this module only
wires them together and holds the run commands (`generate`, `demo`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cgaug.cli._util import self_command
from cgaug.cli.bank import app as bank_app
from cgaug.cli.eval import eval_command
from cgaug.cli.experiment import app as experiment_app
from cgaug.cli.filter import app as filter_app
from cgaug.cli.fixtures import fixtures_command
from cgaug.cli.models import app as models_app
from cgaug.cli.shards import app as shards_app
from cgaug.cli.shards import export_app
from cgaug.cli.stack import app as stack_app
from cgaug.cli.train import train_command
from cgaug.config import ConfigError, FilterMode, load_config
from cgaug.storage.layout import INDEX_NAME

app = typer.Typer(help="CG-Aug: coherent generative augmentation of Cityscapes-format datasets.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command("fixtures", help="Write a small synthetic dataset in the exact Cityscapes layout, "
                             "plus object masks for a bank.")(fixtures_command)
app.add_typer(bank_app, name="bank", help="Build and inspect object banks (OOD masks).")
app.add_typer(shards_app, name="shards", help="Inspect and verify a generated dataset.")
app.add_typer(export_app, name="export", help="Export a generated dataset to other layouts.")
app.add_typer(models_app, name="models", help="Create and inspect generator models.")
app.add_typer(filter_app, name="filter", help="Tune and inspect the automatic quality filter.")
app.add_typer(stack_app, name="stack", help="The local Prefect stack: server, pools, deployments, workers.")
app.command("eval", help="Evaluate a segmenter on the anomaly and domain-shift benchmarks.")(eval_command)
app.command("train", help="Two-stage noise-aware training on originals + CG-Aug shards.")(train_command)
app.add_typer(experiment_app, name="experiment", help="Measure the method in a painted miniature world (CPU).")

console = Console(stderr=True)


def _generator_overrides(generator: str | None) -> dict:
    """`--generator tiny|PATH|HUB_ID`: a directory holding a full ControlNet pipeline needs no extra ControlNet."""
    if generator is None:
        return {}
    overrides: dict = {"model": generator}
    index = Path(generator) / "model_index.json"
    if index.is_file() and "controlnet" in json.loads(index.read_text()):
        overrides.update(controlnet=None, local_files_only=True)
    return overrides


_FIXES = {  # errno of a failed write -> what the person can do about it
    errno.ENOSPC: ("no space left on the device", "Free space there (or choose another --out) and run the same "
                   "command again: finished shards are kept and the run resumes where it stopped."),
    errno.EDQUOT: ("the disk quota is exhausted", "Free space or raise the quota, then run the same command "
                   "again: finished shards are kept."),
    errno.EACCES: ("permission denied", "Make the output folder writable for this user, or choose another --out."),
    errno.EPERM: ("operation not permitted", "Make the output folder writable for this user, or choose another "
                  "--out."),
    errno.EROFS: ("the file system is read-only", "Choose an --out on a writable file system."),
}


class _NoTraceback(logging.Filter):
    """Keeps a log line's message and drops its traceback (Prefect logs one per failed task and flow)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def _quiet_tracebacks(quiet: bool) -> Iterator[None]:
    """Without --debug, a failed run's log keeps one line per failure and ends with one paragraph."""
    handlers, quieter = list(logging.getLogger().handlers) if quiet else [], _NoTraceback()
    for handler in handlers:
        handler.addFilter(quieter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quieter)


def _run_error(error: BaseException) -> tuple[str, int] | None:
    """The paragraph and exit code for a run-level failure, or None for an error that is a bug."""
    from cgaug.flows.fanout import ChildFailed
    from cgaug.models.hub import ModelNotFound
    from cgaug.storage.bank import EmptyBankError
    from cgaug.tasks.generation.run import InputError, PlanMismatch, RunIncomplete

    if isinstance(error, InputError | PlanMismatch | ModelNotFound | EmptyBankError):
        return str(error), 2
    if isinstance(error, RunIncomplete | ChildFailed):
        return str(error), 1
    if isinstance(error, OSError) and error.errno is not None:
        cause, fix = _FIXES.get(error.errno, (error.strerror or str(error), "Check the path and run the same "
                                              "command again: finished shards are kept."))
        where = error.filename or "a file of the run"
        return f"could not write {where}: {cause}. {fix}", 1
    return None


@app.command()
def generate(
    source: Annotated[str, typer.Option("--source", help="Cityscapes-format root (path or fsspec URI).")],
    out: Annotated[str, typer.Option("--out", help="Output root (path or fsspec URI); re-running resumes it.")],
    bank: Annotated[str | None, typer.Option(
        "--bank", help="Object bank Parquet file [default: SOURCE/bank.parquet].")] = None,
    generator: Annotated[str | None, typer.Option(
        "--generator", help="'tiny' (offline test model), a local pipeline directory or a hub id.")] = None,
    variants: Annotated[int | None, typer.Option(help="Generated samples per source image.")] = None,
    shard_size: Annotated[int | None, typer.Option(help="Samples per shard.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N source images (by id).")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed; every sample's seed derives from it.")] = None,
    split: Annotated[str | None, typer.Option(help="Source split to read [default: train].")] = None,
    filters: Annotated[FilterMode | None, typer.Option(
        "--filters", help="Quality filter: none, tiny (offline random-weight test models) or default "
                          "(SAM, segmenter and CLIP checkpoints) [default: none].")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", exists=True, dir_okay=False, help="YAML configuration file.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    in_process: Annotated[bool, typer.Option(
        "--in-process/--fan-out", help="Produce shards in this process, or as cgaug-shard child runs on the "
                                       "GPU pool of the Prefect server at PREFECT_API_URL (workers needed; "
                                       "`cgaug stack up` starts them).")] = True,
    claim_ttl: Annotated[float | None, typer.Option(
        "--claim-ttl", min=0.001, help="Seconds without a heartbeat after which another host's claim on a shard "
                                       "counts as abandoned [default: 300]; claims of dead processes on this "
                                       "host are broken at once.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a non-empty --out folder that is not a cgaug output.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks of failures (default: one paragraph with the cause and the fix).")] = False,
) -> None:
    """Run the `cgaug` flow: plan, compose, prompt, generate, [filter,] write shards, index.

    Exit codes: 0 done and complete, 1 the run failed or ended incomplete (a rerun resumes it),
    2 an input is unusable (nothing was created).
    """
    from cgaug.config import Orchestration
    from cgaug.flows.generate import generate_dataset_flow
    from cgaug.tasks.generation.run import check_inputs

    try:
        cfg = load_config(config, overrides={
            "run": {"variants": variants, "shard_size": shard_size, "limit": limit, "seed": seed, "split": split},
            "generator": _generator_overrides(generator),
            "filters": {"mode": filters},
        })
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    bank_path = bank or f"{source.rstrip('/')}/bank.parquet"
    orchestration = Orchestration(in_process=in_process, **({} if claim_ttl is None else {"claim_ttl_s": claim_ttl}))
    try:
        check_inputs(source, out, bank_path, cfg, force=force)  # before Prefect starts: nothing is created
        with _quiet_tracebacks(not debug):
            summary = generate_dataset_flow(source=source, out=out, bank=bank_path, config=cfg,
                                            progress=progress, orchestration=orchestration, force=force)
    except Exception as error:
        failure = None if debug else _run_error(error)
        if failure is None:
            raise
        console.print(f"[red]error:[/red] {escape(failure[0])}", soft_wrap=True, highlight=False)
        raise typer.Exit(failure[1]) from None
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def demo(
    dest: Annotated[Path, typer.Argument(help="Folder for the demo's source data and output.")] = Path("demo"),
    images: Annotated[int, typer.Option(help="Synthetic source images.")] = 6,
    variants: Annotated[int, typer.Option(help="Generated samples per image.")] = 2,
    filters: Annotated[FilterMode, typer.Option(
        "--filters", help="Quality filter; tiny runs every gate with offline random-weight models.")] = "tiny",
) -> None:
    """Fixtures -> object bank -> painter run -> verification, end to end on this machine.

    The painter (`generator.model: painter`) stands in for the diffusion model, so the samples show
    street scenes under other weathers with pasted objects; the filter's random-weight test models
    (`--filters tiny`) exercise the gates only, their verdicts say nothing about image quality.
    """
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.flows.generate import generate_dataset_flow
    from cgaug.storage.bank_sources import build_from_folder
    from cgaug.storage.fs import open_root
    from cgaug.storage.shards import verify

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source, out = dest / "cityscapes", dest / "out"
    if not (source / "bank.parquet").exists():
        write_fixtures(source, images=images)
        write_fixture_masks(source / "bank_masks")
        build_from_folder(str(source / "bank_masks"), str(source / "bank.parquet"))
    cfg = load_config(overrides={"run": {"variants": variants, "shard_size": 4},
                                 "generator": {"model": "painter"}, "filters": {"mode": filters}})
    summary = generate_dataset_flow(source=str(source), out=str(out), bank=str(source / "bank.parquet"),
                                    config=cfg, progress=True)
    problems = verify(open_root(str(out)))
    if problems:
        console.print("[red]verification failed:[/red]\n" + "\n".join(problems))
        raise typer.Exit(1)
    typer.echo(json.dumps(summary, indent=2))
    sample = open_root(str(out)).read_parquet(INDEX_NAME, columns=["sample_id"])["sample_id"][0]
    command = self_command()
    typer.echo(f"demo dataset ready and verified: {out.resolve()}\n"
               f"  look at a sample: {command} shards show {out} --sample {sample} --out sample.png\n"
               f"  summary:          {command} shards stats {out}\n"
               f"  classic layout:   {command} export cityscapes {out} {dest / 'export'}")


def main() -> None:
    # A local run's ephemeral Prefect server otherwise records telemetry in its SQLite database,
    # which races with the run itself ("database is locked" tracebacks in the log).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app()
