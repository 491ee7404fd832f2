"""The local production stack: a Prefect server, the pools, the deployments and process workers.

`cgaug stack up` starts on one machine exactly what docker-compose.yml runs
in production: `prefect server start` (SQLite under the state directory, or
any database URL), the pools `cpu` (the parent `cgaug`) and `gpu` (one
worker per GPU, `--limit 1`, pinned with CUDA_VISIBLE_DEVICES; on a machine
without a GPU, one worker that runs on the CPU), the automations of
deploy/automations.yaml and every deployment of deploy/prefect.yaml.
`cgaug stack down` stops it: workers with SIGINT (they ignore SIGTERM), then
the server. The end-to-end tests drive the same functions.

The server listens on 127.0.0.1 only. With an auth string (`cgaug stack up
--auth-string`, $CGAUG_STACK_AUTH or $PREFECT_SERVER_API_AUTH_STRING) it also
requires HTTP basic auth (PREFECT_SERVER_API_AUTH_STRING), and every process
the stack starts as a client (bootstrap, deploy, workers and so every flow run
they start) gets PREFECT_API_AUTH_STRING: other local users then cannot start
runs either.

Everything the stack starts is a process group of its own, recorded in
``STATE/stack.json``, with its log in ``STATE/logs/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CPU_POOL = "cpu"
GPU_POOL = "gpu"
POOL_TYPES = ("process", "docker", "kubernetes")
PREFECT_FILE = "deploy/prefect.yaml"
AUTOMATIONS_FILE = "deploy/automations.yaml"
POOLS_DIR = "deploy/pools"
STATE_FILE = "stack.json"
DEFAULT_DATA_ROOT = "/data"  # the shared volume of docker-compose.yml
SERVER_START_TIMEOUT_S = 120.0
AUTH_ENV = ("CGAUG_STACK_AUTH", "PREFECT_SERVER_API_AUTH_STRING")  # where `cgaug stack up` looks (resolve_auth)
WORKER_STOP_TIMEOUT_S = 20.0


class StackError(RuntimeError):
    """The stack could not be started, configured or reached; the message says which part and why."""


@dataclass
class StackState:
    """What `up` started, so that `down` (from another process) can stop it."""

    api_url: str
    ui_url: str
    state_dir: str
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid (each leads its process group)
    auth: bool = False  # the server requires basic auth (the string itself is never written here)

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: str | Path) -> StackState | None:
        path = Path(state_dir) / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def project_dir(start: str | Path | None = None) -> Path:
    """The repository root: the nearest directory at or above `start` (cwd) that holds deploy/prefect.yaml."""
    here = Path(start or os.getcwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / PREFECT_FILE).is_file():
            return candidate
    package_root = Path(__file__).resolve().parents[1]  # an editable install's checkout
    if (package_root / PREFECT_FILE).is_file():
        return package_root
    raise StackError(f"no {PREFECT_FILE} at or above {here}; run from the cgaug repository root or pass "
                     "--project DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve_auth(auth_string: str | None = None) -> str | None:
    """The stack's basic-auth string: the one given, else $CGAUG_STACK_AUTH, else $PREFECT_SERVER_API_AUTH_STRING.

    What `cgaug stack up` uses. Both variables count so that a server variable exported for compose
    protects `cgaug stack up` too, instead of reaching the server alone and locking out its workers.
    """
    for candidate in (auth_string, *(os.environ.get(name) for name in AUTH_ENV)):
        if candidate:
            return candidate
    return None


def client_settings(api_url: str, auth_string: str | None = None) -> dict[Any, str]:
    """`temporary_settings` updates for a client of the stack: its API and, when it has one, the auth string."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    updates: dict[Any, str] = {PREFECT_API_URL: api_url}
    if auth_string:
        updates[PREFECT_API_AUTH_STRING] = auth_string
    return updates


def base_env(api_url: str | None = None, home: str | Path | None = None, auth_string: str | None = None
             ) -> dict[str, str]:
    """Environment of every stack process: quiet, offline-friendly, fast polling, one API (and its password)."""
    env = dict(os.environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "2")  # the 10 s default dominates short runs
    env["PREFECT_CLI_PROMPT"] = "false"
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    if auth_string:
        env["PREFECT_API_AUTH_STRING"] = auth_string  # a process worker hands it on to every flow run
    return env


def _spawn(name: str, args: list[str], env: dict[str, str], logs: Path, cwd: str | Path | None = None
           ) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)  # own process group: a stop reaches its flow runs too


def prefect_bin() -> str:
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else "prefect"


def wait_healthy(api_url: str, timeout_s: float = SERVER_START_TIMEOUT_S, process: subprocess.Popen | None = None
                 ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"the Prefect server exited with code {process.returncode} before answering "
                             f"{api_url}/health; see its log")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError), \
                urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise StackError(f"the Prefect server at {api_url} did not become healthy within {timeout_s:.0f} s")


def start_server(state_dir: Path, port: int, database_url: str | None = None, host: str = "127.0.0.1",
                 auth_string: str | None = None) -> tuple[subprocess.Popen, str]:
    """`prefect server start` with its state under `state_dir` (SQLite unless `database_url`).

    With `auth_string` every API request but the health probe needs it as HTTP basic auth, and the UI
    asks for it on a login page.
    """
    api_url = f"http://{host}:{port}/api"
    env = base_env(home=state_dir / "prefect")
    env.pop("PREFECT_API_URL", None)
    # Set or removed, never inherited: an empty inherited value would switch auth on with "" as password.
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    env["PREFECT_SERVER_UI_API_URL"] = api_url  # the UI calls the API at this address (default port 4200)
    env["PREFECT_UI_API_URL"] = api_url
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    process = _spawn("server", [prefect_bin(), "server", "start", "--host", host, "--port", str(port)], env,
                     state_dir / "logs")
    wait_healthy(api_url, process=process)
    return process, api_url


def pool_template(pool_type: str, project: Path) -> dict[str, Any]:
    """The GPU pool's base job template: deploy/pools/<type>.json, or Prefect's default for a process pool."""
    if pool_type not in POOL_TYPES:
        raise StackError(f"pool type must be one of {POOL_TYPES}, found {pool_type!r}")
    path = project / POOLS_DIR / f"{pool_type}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if pool_type != "process":
        raise StackError(f"{path}: missing; a {pool_type} pool needs its base job template")
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def ensure_pools(api_url: str, project: Path, pool_type: str = "process", auth_string: str | None = None
                 ) -> list[str]:
    """Create the pools `cpu` and `gpu`, or bring the gpu pool's job template up to date with deploy/pools.

    Returns what changed, e.g. ["created cpu", "updated gpu"]. A pool of another type than asked is
    an error: its runs would go to workers of the wrong kind.
    """
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    wanted = {CPU_POOL: ("process", ProcessWorker.get_default_base_job_template()),
              GPU_POOL: (pool_type, pool_template(pool_type, project))}
    changes = []
    with _client(api_url, auth_string) as client:
        for name, (kind, template) in wanted.items():
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))
                changes.append(f"created {name}")
                continue
            if pool.type != kind:
                raise StackError(f"work pool {name!r} exists with type {pool.type!r}, expected {kind!r}; delete "
                                 f"it (prefect work-pool delete {name}) or bootstrap with --pool-type {pool.type}")
            if name == GPU_POOL and pool.base_job_template != template:
                client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
                changes.append(f"updated {name}")
    return changes


@contextlib.contextmanager
def _client(api_url: str, auth_string: str | None = None):
    """A sync client of the server; without `auth_string`, PREFECT_API_AUTH_STRING from the environment counts."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    with temporary_settings(client_settings(api_url, auth_string)), get_client(sync_client=True) as client:
        yield client


def load_automations(path: Path) -> list[Any]:
    """Every automation in the file, validated with Prefect's own model (as `prefect automation create` does)."""
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    data = yaml.safe_load(path.read_text())
    items = data["automations"] if isinstance(data, dict) and "automations" in data else (
        data if isinstance(data, list) else [data])
    try:
        return [AutomationCore.model_validate(item) for item in items]
    except ValueError as exc:
        raise StackError(f"{path}: invalid automation: {exc}") from exc


def ensure_automations(api_url: str, project: Path, auth_string: str | None = None) -> list[str]:
    """Create the automations of deploy/automations.yaml that the server does not have yet (by name)."""
    path = project / AUTOMATIONS_FILE
    if not path.is_file():
        return []
    created = []
    with _client(api_url, auth_string) as client:
        for automation in load_automations(path):
            if not client.read_automations_by_name(automation.name):
                client.create_automation(automation)
                created.append(automation.name)
    return created


def deploy_all(api_url: str, project: Path, data_root: str, timeout_s: float = 300.0,
               auth_string: str | None = None) -> str:
    """`prefect --no-prompt deploy --all --prefect-file deploy/prefect.yaml` from the repository root."""
    env = base_env(api_url, auth_string=auth_string)
    env["CGAUG_DATA"] = data_root  # the deployments' default source/out/bank live under it
    result = subprocess.run([prefect_bin(), "--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE],
                            cwd=project, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise StackError(f"prefect deploy failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
    return result.stdout


def bootstrap(api_url: str, project: Path, pool_type: str = "process", data_root: str | None = None,
              auth_string: str | None = None) -> list[str]:
    """Pools, automations and deployments: everything a fresh server needs before workers start.

    Idempotent. Without `data_root`, `CGAUG_DATA` from the environment (or /data) is the deployments'
    default data root; without `auth_string`, PREFECT_API_AUTH_STRING from the environment (compose's
    bootstrap service) authenticates, if set.
    """
    changes = ensure_pools(api_url, project, pool_type, auth_string)
    changes += [f"created automation {name}" for name in ensure_automations(api_url, project, auth_string)]
    deploy_all(api_url, project, data_root or os.environ.get("CGAUG_DATA", DEFAULT_DATA_ROOT),
               auth_string=auth_string)
    return [*changes, "deployed deploy/prefect.yaml"]


def gpu_ids() -> list[str]:
    """The visible GPUs (one worker each); empty on a machine without CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(result.stdout.splitlines()) if line.startswith("GPU ")]


def start_worker(name: str, pool: str, api_url: str, state_dir: Path, limit: int, gpu: str | None = None,
                 extra_env: dict[str, str] | None = None, auth_string: str | None = None) -> subprocess.Popen:
    """A process worker; a GPU worker sees only its GPU (the flow runs it starts inherit its environment)."""
    env = base_env(api_url, auth_string=auth_string) | (extra_env or {})
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    elif pool == GPU_POOL:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU stand-in never grabs a GPU that another worker owns
    args = [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit),
            "--name", name]
    return _spawn(name, args, env, state_dir / "logs", cwd=state_dir)


def stop_process(pid: int, timeout_s: float = WORKER_STOP_TIMEOUT_S, sig: int = signal.SIGINT) -> None:
    """Stop a process group: `sig` to the leader (workers need SIGINT), SIGKILL to the group if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def is_alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def up(state_dir: str | Path, *, port: int | None = None, database_url: str | None = None,
       pool_type: str = "process", project: Path | None = None, gpus: list[str] | None = None,
       cpu_workers: int = 1, cpu_limit: int = 4, data_root: str | None = None,
       worker_env: dict[str, str] | None = None, auth_string: str | None = None) -> StackState:
    """Start the server, bootstrap it and start the CPU worker and one GPU-pool worker per GPU.

    `gpus`: the GPU ids to start workers for (default: every visible GPU); without any, `cpu_workers`
    GPU-pool workers run on the CPU (the tiny generator's stand-in for a GPU pool). `auth_string`: the
    server requires it and the stack's clients send it; without one the server is open (to local users:
    it listens on 127.0.0.1). The environment is not consulted here (the CLI does, `resolve_auth`), so
    that callers which talk to the stack without credentials (tests, benchmarks, the demo) keep working
    in a shell that has CGAUG_STACK_AUTH set.
    """
    state_path = Path(state_dir).resolve()
    state_path.mkdir(parents=True, exist_ok=True)
    existing = StackState.load(state_path)
    if existing is not None and any(is_alive(pid) for pid in existing.processes.values()):
        raise StackError(f"a stack is already running from {state_path} ({existing.ui_url}); "
                         "stop it with `cgaug stack down` first")
    project = project or project_dir()
    port = port or free_port()
    server, api_url = start_server(state_path, port, database_url, auth_string=auth_string)
    state = StackState(api_url, api_url.removesuffix("/api"), str(state_path), {"server": server.pid},
                       auth=bool(auth_string))
    state.save()
    try:
        bootstrap(api_url, project, pool_type, data_root or str(state_path / "data"), auth_string)
        state.processes["worker-cpu"] = start_worker("worker-cpu", CPU_POOL, api_url, state_path, cpu_limit,
                                                     extra_env=worker_env, auth_string=auth_string).pid
        gpus = gpus if gpus is not None else gpu_ids()
        slots: list[tuple[str, str | None]] = [(f"worker-gpu{g}", g) for g in gpus] or [
            (f"worker-cpu-as-gpu{i}", None) for i in range(cpu_workers)]
        for name, gpu in slots:
            state.processes[name] = start_worker(name, GPU_POOL, api_url, state_path, 1, gpu, worker_env,
                                                 auth_string).pid
        state.save()
    except BaseException:
        down(state_path)
        raise
    return state


def down(state_dir: str | Path) -> list[str]:
    """Stop every process of the stack, workers first; returns the names stopped."""
    state = StackState.load(state_dir)
    if state is None:
        return []
    stopped = []
    for name, pid in sorted(state.processes.items(), key=lambda kv: kv[0] == "server"):
        if is_alive(pid):
            stop_process(pid, sig=signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
            stopped.append(name)
    state.processes = {}
    state.save()
    return stopped
