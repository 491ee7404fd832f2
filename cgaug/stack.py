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
``STATE/stack.json`` (pid and command line, so that a pid reused by another
program is never taken for ours), with its log in ``STATE/logs/``.

Recovery: `cgaug stack up` on a stack that is partly dead keeps what still
runs and restarts the rest (the server on its old port and database, so live
workers and their flow runs find it again). Flow runs that the dead parts
left RUNNING or PENDING are marked CRASHED at once (`crash_stranded_runs`),
so a rerun does not wait behind `cgaug/generate`'s concurrency limit for the
zombie automation (600 s). Every client the stack starts retries the API for
about four minutes (`CLIENT_RETRY_ENV`), and the server keeps its concurrency
leases on disk, so flow runs ride out a server restart or a short outage.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
EXEC_SETTLE_S = 5.0  # longest wait for a just-started process's argv (`_proc_read`)
# Prefect's client waits 2**k s (+-20 % jitter) before retry k, for 429/502/503/408, timeouts and, once
# it has connected, refused connections. 7 retries wait 2+4+...+128 = 254 s (at least 203 s with
# jitter) where the default 5 give up after ~62 s: a flow run then outlives a server restart or an
# outage of three minutes instead of crashing unreported and leaving its run RUNNING.
CLIENT_RETRY_ENV = {"PREFECT_CLIENT_MAX_RETRIES": "7"}
# Deployment concurrency leases (cgaug/generate holds one while it runs) live in the server's memory by
# default: a restarted server forgets them, and the surviving run's next renewal (every 225 s) is
# refused and cancels it. On disk (under PREFECT_HOME) they outlive the server process.
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
LOG_MARKER = "--- cgaug stack: starting"  # heads each incarnation of a process in its log
SUBMITTED_RE = re.compile(rb"Worker '[^']*' submitting flow run '([0-9a-f-]{36})'")
LOG_SCAN_BYTES = 64 << 20  # how much of a worker's log (its end) `crash_stranded_runs` reads


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
    commands: dict[str, list[str]] = field(default_factory=dict)  # name -> argv it was started with
    database: str | None = None  # the server's database URL without its password; None: SQLite under STATE

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: str | Path) -> StackState | None:
        path = Path(state_dir) / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    def alive(self) -> dict[str, int]:
        """The recorded processes that still run what the stack started them with (name -> pid)."""
        return {name: pid for name, pid in self.processes.items() if is_ours(pid, self.commands.get(name))}

    def record(self, name: str, process: subprocess.Popen) -> None:
        self.processes[name] = process.pid
        self.commands[name] = [str(a) for a in process.args] if isinstance(process.args, list) else []


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
    for name, value in CLIENT_RETRY_ENV.items():
        env.setdefault(name, value)  # workers hand it on to every flow run they start
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
        log.write(f"{LOG_MARKER} {name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        log.flush()
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
    env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", LEASE_STORAGE)
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
    """The process exists and has not exited (a zombie that another parent has yet to reap is dead)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _proc_read(pid: int, name: str) -> bytes | None:
    """/proc/PID/NAME (cmdline, environ) once the process has finished exec; None when it cannot be read.

    Both read empty while a process is inside execve: the kernel installs the new program's memory
    before it copies argv and environment into it, and `subprocess.Popen` returns inside that window
    (the child's exec-error pipe closes first), for milliseconds or, on a loaded machine, as long as
    the child waits for a CPU. Taking that for "another program" would make `up` restart a worker it
    just started and `down` leave it running, so an empty read of a live process is read again.
    """
    path = Path(f"/proc/{pid}/{name}")
    deadline = time.monotonic() + EXEC_SETTLE_S
    while True:
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if raw or time.monotonic() >= deadline or not is_alive(pid):  # exiting and kernel threads stay empty
            return raw
        time.sleep(0.01)


def _cmdline(pid: int) -> list[str] | None:
    """The argv of a running process (None when it is gone or cannot be read)."""
    if Path("/proc/self").exists():
        raw = _proc_read(pid, "cmdline") or b""
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None
    result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return result.stdout.split() or None  # no /proc (macOS): good enough to compare with our own argv


def is_ours(pid: int, command: list[str] | None) -> bool:
    """Alive and running `command`, i.e. still the process the stack started, not a reuse of its pid.

    A script's argv starts with its interpreter, so `command` must end the command line, and the
    program it starts with must appear before. Without a recorded command (an older state file) a
    live pid counts.
    """
    if not is_alive(pid):
        return False
    if not command:
        return True
    cmdline = _cmdline(pid)
    if not cmdline:
        return False
    program, *arguments = command
    split = len(cmdline) - len(arguments)
    return split > 0 and cmdline[split:] == arguments and any(
        Path(part).name == Path(program).name for part in cmdline[:split])


def _environ(pid: int) -> dict[str, str] | None:
    """The environment a process started with; None where it cannot be read (no /proc, another user)."""
    raw = _proc_read(pid, "environ")
    if raw is None:
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def redact(url: str | None) -> str | None:
    """A database URL without its password: what the state file may say about the server's database."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def worker_slots(gpus: list[str] | None, cpu_workers: int, cpu_limit: int) -> dict[str, tuple[str, int, str | None]]:
    """name -> (pool, limit, GPU id) of every worker: the CPU worker, then one per GPU or `cpu_workers` on the CPU."""
    gpus = gpus if gpus is not None else gpu_ids()
    slots: dict[str, tuple[str, int, str | None]] = {"worker-cpu": (CPU_POOL, cpu_limit, None)}
    if gpus:
        slots.update({f"worker-gpu{g}": (GPU_POOL, 1, g) for g in gpus})
    else:
        slots.update({f"worker-cpu-as-gpu{i}": (GPU_POOL, 1, None) for i in range(cpu_workers)})
    return slots


def _check_compatible(state: StackState, live: dict[str, int], port: int | None, database_url: str | None,
                      auth_string: str | None) -> None:
    """Refuse a restart that would split the stack: what still runs keeps talking to the old address."""
    running = f"the stack from {state.state_dir} still runs {', '.join(sorted(live))}"
    recorded_port = urlsplit(state.api_url).port
    if port and port != recorded_port:
        raise StackError(f"{running} on port {recorded_port}: pass --port {recorded_port}, or stop it with "
                         "`cgaug stack down` to move it")
    if bool(auth_string) != state.auth:
        raise StackError(f"{running}, started {'with' if state.auth else 'without'} an auth string: "
                         f"{'pass the same one (--auth-string or $CGAUG_STACK_AUTH)' if state.auth else 'pass none'}"
                         ", or stop it with `cgaug stack down` to change it")
    if "server" not in live and redact(database_url) != state.database:
        raise StackError(f"{running}; its server used {state.database or 'SQLite under the state directory'}: "
                         "restart it with the same --database-url, or stop the stack with `cgaug stack down`")


def up(state_dir: str | Path, *, port: int | None = None, database_url: str | None = None,
       pool_type: str = "process", project: Path | None = None, gpus: list[str] | None = None,
       cpu_workers: int = 1, cpu_limit: int = 4, data_root: str | None = None,
       worker_env: dict[str, str] | None = None, auth_string: str | None = None,
       say: Callable[[str], None] = print) -> StackState:
    """Start what of the stack is not running: the server (then bootstrap it), the CPU worker and one
    GPU-pool worker per GPU.

    Parts of an earlier stack in `state_dir` that still run are kept (a crashed server is restarted on
    its old port and database, so that live workers and the flow runs they started find it again), and
    flow runs that the dead parts left behind are marked CRASHED (`crash_stranded_runs`); `say` gets a
    line for each such run and one saying what was kept and what was started.

    `gpus`: the GPU ids to start workers for (default: every visible GPU); without any, `cpu_workers`
    GPU-pool workers run on the CPU (the tiny generator's stand-in for a GPU pool). `auth_string`: the
    server requires it and the stack's clients send it; without one the server is open (to local users:
    it listens on 127.0.0.1). The environment is not consulted here (the CLI does, `resolve_auth`), so
    that callers which talk to the stack without credentials (tests, benchmarks, the demo) keep working
    in a shell that has CGAUG_STACK_AUTH set.
    """
    state_path = Path(state_dir).resolve()
    state_path.mkdir(parents=True, exist_ok=True)
    previous = StackState.load(state_path)
    live = previous.alive() if previous is not None else {}
    crashed = previous is not None and bool(previous.processes)  # not stopped by `down`: something died
    project = project or project_dir()
    slots = worker_slots(gpus, cpu_workers, cpu_limit)
    if previous is not None and live:
        _check_compatible(previous, live, port, database_url, auth_string)
        state = previous
    else:
        api_url = f"http://127.0.0.1:{port or free_port()}/api"
        state = StackState(api_url, api_url.removesuffix("/api"), str(state_path), auth=bool(auth_string),
                           database=redact(database_url))
    state.processes = {name: pid for name, pid in state.processes.items() if name in live}
    state.commands = {name: command for name, command in state.commands.items() if name in live}
    missing = [name for name in ("server", *slots) if name not in live]
    if not missing:
        say(f"stack up: everything runs already ({', '.join(live)}); kept it")
        return state
    started: list[str] = []
    try:
        if "server" in missing:
            server, _ = start_server(state_path, int(urlsplit(state.api_url).port or 0), database_url,
                                     auth_string=auth_string)
            state.record("server", server)
            started.append("server")
            state.save()
        if previous is not None:  # a stack ran here: what died may have left flow runs RUNNING
            try:
                notes = crash_stranded_runs(state.api_url, state_path, set(live), auth_string)
            except Exception as error:  # the stack matters more: such runs still end by the zombie automation
                notes = [f"could not look for stranded flow runs: {error!r}"]
            for note in notes:
                say(note)
        if "server" in started:
            bootstrap(state.api_url, project, pool_type, data_root or str(state_path / "data"), auth_string)
        for name, (pool, limit, gpu) in slots.items():
            if name in missing:
                state.record(name, start_worker(name, pool, state.api_url, state_path, limit, gpu, worker_env,
                                                auth_string))
                started.append(name)
        state.save()
    except BaseException:
        for name in reversed(started):  # only what this call started: kept workers go on with their runs
            stop_process(state.processes.pop(name), sig=signal.SIGTERM if name == "server" else signal.SIGINT)
            state.commands.pop(name, None)
        state.save()
        raise
    if previous is not None:
        say(f"stack up: kept {', '.join(sorted(live)) or 'nothing'}; "
            f"{'restarted' if crashed else 'started'} {', '.join(started)}")
    return state


def down(state_dir: str | Path) -> list[str]:
    """Stop every process of the stack, workers first; returns the names stopped.

    Only processes that still run what the stack started are signalled: a pid the system has since
    given to another program is left alone.
    """
    state = StackState.load(state_dir)
    if state is None:
        return []
    stopped = []
    for name, pid in sorted(state.alive().items(), key=lambda kv: kv[0] == "server"):
        stop_process(pid, sig=signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
        stopped.append(name)
    state.processes, state.commands = {}, {}
    state.save()
    return stopped


def worker_submissions(logs: Path, live: set[str]) -> dict[str, bool]:
    """Flow run id -> whether the worker process that took it still runs, from the workers' logs.

    A process worker logs "Worker 'NAME' submitting flow run 'ID'" before it proposes PENDING, and
    `_spawn` heads each start of a process with LOG_MARKER: a run found after the last marker of a
    worker in `live` belongs to that living worker; any other was taken by a worker that is gone.
    """
    taken: dict[str, bool] = {}
    for log in sorted(logs.glob("worker*.log")):
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - LOG_SCAN_BYTES))
            segments = handle.read().split(LOG_MARKER.encode())
        for index, segment in enumerate(segments):
            current = index == len(segments) - 1 and log.stem in live
            for match in SUBMITTED_RE.finditer(segment):
                taken[match.group(1).decode()] = current
    return taken


def run_process_alive(run_id: str, infrastructure_pid: str | None) -> bool | None:
    """Whether the flow run's process still runs here: None when no pid was recorded yet.

    True unless provably gone: the pid is dead, or now belongs to a process that is not this run (its
    environment has another PREFECT__FLOW_RUN_ID). A pid of another host or an environment that cannot
    be read counts as alive.
    """
    if not infrastructure_pid:
        return None
    host, _, pid_text = infrastructure_pid.rpartition(":")
    if host and host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    if not is_alive(pid):
        return False
    environ = _environ(pid)
    return environ is None or environ.get("PREFECT__FLOW_RUN_ID") == run_id


def stranded_reason(run_id: str, infrastructure_pid: str | None, worker_alive: bool) -> str | None:
    """Why a run taken by one of the stack's workers is provably dead, or None while it may live."""
    process = run_process_alive(run_id, infrastructure_pid)
    if process is False:
        return f"its process {infrastructure_pid} is gone"
    if process is None and not worker_alive:
        return "the worker that took it is gone and it never started a process"
    return None


def crash_stranded_runs(api_url: str, state_dir: str | Path, live: set[str], auth_string: str | None = None
                        ) -> list[str]:
    """Mark CRASHED the RUNNING/PENDING flow runs of this stack's workers whose process is provably gone.

    A run killed with its worker or while the server was down cannot report its end; it stays RUNNING,
    holds `cgaug/generate`'s concurrency slot (limit 1) and a rerun waits until the zombie automation
    gives up on it (600 s). Only runs the stack's own workers took (their logs name them, see
    `worker_submissions`) are looked at, and only those whose process is gone, or that never got one and
    whose worker is dead, are crashed; a CANCELLING one is marked CANCELLED. Returns a line per run.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Crashed

    taken = worker_submissions(Path(state_dir) / "logs", live)
    if not taken:
        return []
    open_states = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_states)))
    notes = []
    with _client(api_url, auth_string) as client:
        runs, page = [], 200
        while len(batch := client.read_flow_runs(flow_run_filter=flt, limit=page, offset=len(runs))) == page:
            runs += batch
        for run in [*runs, *batch]:
            run_id = str(run.id)
            if run_id not in taken or (why := stranded_reason(run_id, run.infrastructure_pid,
                                                              taken[run_id])) is None:
                continue
            now = client.read_flow_run(run.id)  # after the process check: a run that ended meanwhile stays
            if now.state is None or now.state.type not in open_states:
                continue
            message = f"cgaug stack up: {why}"
            state = Cancelled(message=message) if now.state.type == StateType.CANCELLING else Crashed(
                message=message)
            client.set_flow_run_state(run.id, state, force=True)
            notes.append(f"{state.name.lower()} flow run {run.name} ({run_id}): {why}")
    return notes
