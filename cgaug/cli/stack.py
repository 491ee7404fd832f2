"""`cgaug stack`: the local Prefect stack (server, pools, deployments, workers) and its demo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from cgaug.cli._util import self_command

app = typer.Typer(help="Start, stop and use the local Prefect stack (server, pools, deployments, workers).",
                  no_args_is_help=True)

StateOption = Annotated[Path, typer.Option("--state", help="Directory of the stack's state, logs and data.")]
DEFAULT_STATE = Path(".cgaug-stack")
DEFAULT_PORT = 4200  # the port the Prefect UI expects by default


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=1)


@app.command()
def up(
    state: StateOption = DEFAULT_STATE,
    port: Annotated[int, typer.Option(help="Port of the Prefect server (API and UI).")] = DEFAULT_PORT,
    database_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy async URL (postgresql+asyncpg://...) [default: SQLite under STATE].")] = None,
    gpus: Annotated[str | None, typer.Option(
        help="Comma-separated GPU ids, one GPU-pool worker each [default: every visible GPU; none: one "
             "worker on the CPU].")] = None,
    data_root: Annotated[str | None, typer.Option(
        help="Default data root of the deployments (source, out, bank) [default: STATE/data].")] = None,
    project: Annotated[Path | None, typer.Option(help="Repository root holding deploy/.")] = None,
    auth_string: Annotated[str | None, typer.Option(
        help="Require HTTP basic auth ('user:password') for the API and UI; the stack's workers get it as "
             "PREFECT_API_AUTH_STRING [default: $CGAUG_STACK_AUTH or $PREFECT_SERVER_API_AUTH_STRING; "
             "without one, any local user can use the API; the server listens on 127.0.0.1 only].")] = None,
) -> None:
    """Start a Prefect server, create the pools, deploy, and start a CPU worker and GPU-pool workers."""
    from cgaug import stack

    try:
        started = stack.up(state, port=port, database_url=database_url, project=project, data_root=data_root,
                           gpus=None if gpus is None else [g for g in gpus.split(",") if g],
                           auth_string=stack.resolve_auth(auth_string))
    except stack.StackError as error:
        raise _fail(error) from error
    data = Path(data_root or Path(started.state_dir) / "data")
    seeded = _seed_default_source(data / "cityscapes")
    login = "             export PREFECT_API_AUTH_STRING=<the auth string>  (the UI asks for it)\n"
    tiny = json.dumps({"config": {"generator": {"model": "tiny"}, "filters": {"mode": "tiny"}}})
    typer.echo(f"stack up: UI {started.ui_url}  API {started.api_url}\n"
               f"  processes: {', '.join(started.processes)} (logs in {Path(started.state_dir) / 'logs'})\n"
               f"  use it:    export PREFECT_API_URL={started.api_url}\n"
               f"{login if started.auth else ''}"
               f"             prefect deployment run cgaug/generate --watch --params '{tiny}'\n"
               f"             (the default source {data / 'cityscapes'} holds "
               f"{'synthetic fixtures, written now' if seeded else 'your data or earlier fixtures'}; "
               "tiny offline models)\n"
               f"  real data: prefect deployment run cgaug/generate --watch --param source=/data/cityscapes "
               "--param out=/data/out --param bank=/data/cityscapes/bank.parquet\n"
               f"  stop it:   {self_command()} stack down --state {state}")


def _seed_default_source(source: Path) -> bool:
    """Synthetic fixtures in the deployments' default source when it holds no dataset yet, so that
    the first `prefect deployment run cgaug/generate` works as printed; True when written now."""
    from cgaug.fixtures import BANK_FILE, write_fixture_dataset

    if (source / BANK_FILE).exists() or (source / "leftImg8bit").exists():
        return False
    write_fixture_dataset(source, images=6)
    return True


@app.command()
def down(state: StateOption = DEFAULT_STATE) -> None:
    """Stop the stack's workers (SIGINT) and its server."""
    from cgaug import stack

    stopped = stack.down(state)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else f"nothing running from {state}")


@app.command()
def status(state: StateOption = DEFAULT_STATE) -> None:
    """Print the stack's addresses and which of its processes are alive (JSON)."""
    from cgaug import stack

    loaded = stack.StackState.load(state)
    if loaded is None:
        raise _fail(FileNotFoundError(f"no stack state in {state}; start one with `cgaug stack up`"))
    alive = {name: stack.is_alive(pid) for name, pid in loaded.processes.items()}
    typer.echo(json.dumps({"ui": loaded.ui_url, "api": loaded.api_url, "processes": alive}, indent=2))


@app.command()
def bootstrap(
    pool_type: Annotated[str, typer.Option(help="Type of the gpu pool: process, docker or kubernetes.")] = "process",
    data_root: Annotated[str | None, typer.Option(
        help="Default data root of the deployments [default: $CGAUG_DATA or /data].")] = None,
    project: Annotated[Path | None, typer.Option(help="Repository root holding deploy/.")] = None,
) -> None:
    """Create the pools and automations and deploy deploy/prefect.yaml on the server at $PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL

    from cgaug import stack

    api_url = PREFECT_API_URL.value()
    if not api_url:
        raise _fail(stack.StackError("PREFECT_API_URL is not set; point it at the server to bootstrap"))
    try:
        stack.wait_healthy(api_url)
        changes = stack.bootstrap(api_url, stack.project_dir(project), pool_type, data_root)
    except stack.StackError as error:
        raise _fail(error) from error
    typer.echo("\n".join(changes))


@app.command()
def demo(
    dest: Annotated[Path, typer.Argument(help="Folder for the stack's state, the demo data and output.")] = Path(
        "demo"),
    images: Annotated[int, typer.Option(help="Synthetic source images.")] = 6,
    variants: Annotated[int, typer.Option(help="Generated samples per image.")] = 2,
    port: Annotated[int, typer.Option(help="Port of the Prefect server.")] = DEFAULT_PORT,
) -> None:
    """Stack up, fixtures, `cgaug/generate` on the GPU pool with the painter and the tiny filter, wait, summarise.

    The painter stands in for the diffusion model (recognisable scenes in the UI previews); the tiny
    filter's random-weight models exercise the gates only.
    """
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cgaug import stack
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank_sources import build_from_folder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    state_dir, data = (dest / "stack").resolve(), (dest / "data").resolve()
    running = stack.StackState.load(state_dir)
    if running is None or not all(stack.is_alive(pid) for pid in running.processes.values()):
        stack.down(state_dir)
        try:
            running = stack.up(state_dir, port=port, data_root=str(data))
        except stack.StackError as error:
            raise _fail(error) from error
    source = data / "cityscapes"
    if not (source / "bank.parquet").exists():
        write_fixtures(source, images=images)
        write_fixture_masks(source / "bank_masks")
        build_from_folder(str(source / "bank_masks"), str(source / "bank.parquet"))
    config = {"run": {"variants": variants, "shard_size": 4}, "generator": {"model": "painter"},
              "filters": {"mode": "tiny"}}
    typer.echo(f"running cgaug/generate on the stack at {running.ui_url} ...", err=True)
    with temporary_settings({PREFECT_API_URL: running.api_url}):
        run = run_deployment("cgaug/generate", parameters={"config": config}, timeout=1800, poll_interval=2,
                             as_subflow=False)
        summary = latest_artifact(run.id, "cgaug-run-summary")
    typer.echo(summary or "(no run summary artifact)")
    typer.echo(f"\nflow run {run.name}: {run.state.name if run.state else 'unknown'}\n"
               f"  UI:        {running.ui_url}/runs/flow-run/{run.id}\n"
               f"  dataset:   {data / 'out'}  ({self_command()} shards stats {data / 'out'})\n"
               f"  stop with: {self_command()} stack down --state {state_dir}")
    if run.state is None or not run.state.is_completed():
        raise typer.Exit(code=1)


def latest_artifact(flow_run_id, key: str) -> str | None:
    """The data of the newest artifact with `key` created by the flow run (the parent's summary)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                                           flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0].data if found else None
