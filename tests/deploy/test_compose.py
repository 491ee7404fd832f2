"""docker-compose.yml validated without a Docker engine (none runs on CI machines).

The file is parsed the way Compose reads it (YAML anchors and `<<` merge keys
resolved, `${VAR:-default}` interpolated, `${VAR:?message}` refusing an unset
or empty VAR), with an environment that holds only the two secrets compose
requires, then checked against the contracts the stack relies on: start order,
healthchecks, one GPU per GPU worker, the shared /data volume, SIGINT for
workers, a build that points at the worker Dockerfile, and a stack closed to
strangers (required secrets, basic auth on every client, loopback-only ports).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
WORKERS = ("worker-cpu", "worker-gpu0", "worker-gpu1")
GPU_WORKERS = ("worker-gpu0", "worker-gpu1")
# What a user must put in .env (deploy/env.example): compose refuses to start without either.
STACK_ENV = {"POSTGRES_PASSWORD": "pg-s3cret", "CGAUG_STACK_AUTH": "admin:auth-s3cret"}

_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style interpolation: `$$` is a literal `$`, `${X:-d}` / `${X-d}` fall back to d."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if (op in (":-", ":?") and not current) or (op in ("-", "?") and current is None):
            if op.endswith("?"):
                raise AssertionError(f"${{{name}}} is required: {arg}")
            return arg or ""
        if current is None:
            raise AssertionError(f"${{{name}}} has no default: the stack would start with an empty value")
        return current

    return _VAR.sub(replace, value)


def _load(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as compose sees it, given the variables in `env` (default: just the required secrets)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    return _interpolate(raw, STACK_ENV if env is None else env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def test_interpolation_helper_matches_compose_rules() -> None:
    """The helper itself, so that the other tests do not pass on a broken interpolation."""
    assert _interpolate("a${X:-1}b$$c", {}) == "a1b$c"
    assert _interpolate("${X:-1}", {"X": "2"}) == "2"
    assert _interpolate("${X-1}", {"X": ""}) == ""
    assert _interpolate("${X:?need X}", {"X": "v"}) == "v"
    with pytest.raises(AssertionError):
        _interpolate("${X}", {})
    for env in ({}, {"X": ""}):
        with pytest.raises(AssertionError, match="need X"):
            _interpolate("a${X:?need X}", env)


def test_expected_services(services: dict[str, Any]) -> None:
    assert {"postgres", "prefect-server", "bootstrap", *WORKERS} <= set(services)


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: unpinned image {image}"
    assert re.fullmatch(r"postgres:1[56](\.\d+)?(-\w+)?", services["postgres"]["image"])


def test_healthchecks(services: dict[str, Any]) -> None:
    for name in ("postgres", "prefect-server", *WORKERS):
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    server_check = " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert "urllib" in server_check and ":4200/api/health" in server_check


def test_worker_healthcheck_matches_worker_webserver(services: dict[str, Any]) -> None:
    """The probe must hit the port the worker's health server binds (PREFECT_WORKER_WEBSERVER_PORT)."""
    from prefect.settings import Settings

    for name in WORKERS:
        service = services[name]
        argv = _argv(service["command"])
        assert argv[:3] == ["prefect", "worker", "start"] and "--with-healthcheck" in argv, name
        port = _env(service).get("PREFECT_WORKER_WEBSERVER_PORT", str(Settings().worker.webserver.port))
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/health" in probe, f"{name}: {probe}"


def test_start_order(services: dict[str, Any]) -> None:
    assert _depends(services["prefect-server"]) == {"postgres": "service_healthy"}
    assert _depends(services["bootstrap"]).get("prefect-server") == "service_healthy"
    for name in WORKERS:
        assert _depends(services[name]).get("bootstrap") == "service_completed_successfully", name
        assert _depends(services[name]).get("prefect-server") == "service_healthy", name


def test_bootstrap_is_one_shot_and_runs_the_bootstrap_command(services: dict[str, Any]) -> None:
    bootstrap = services["bootstrap"]
    assert bootstrap.get("restart") == "no"
    argv = _argv(bootstrap["command"])
    assert argv[:3] == ["cgaug", "stack", "bootstrap"]
    # The workers below are process workers: the gpu pool must be a process pool.
    assert _option(argv, "--pool-type") == "process"
    assert _env(bootstrap)["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_worker_commands(services: dict[str, Any]) -> None:
    cpu = _argv(services["worker-cpu"]["command"])
    assert (_option(cpu, "--pool"), _option(cpu, "--type")) == ("cpu", "process")
    names = set()
    for name in GPU_WORKERS:
        argv = _argv(services[name]["command"])
        assert (_option(argv, "--pool"), _option(argv, "--type"), _option(argv, "--limit")) == ("gpu", "process", "1")
        names.add(_option(argv, "--name"))
    assert len(names) == len(GPU_WORKERS), "GPU workers need distinct names"


def test_gpu_reservations(services: dict[str, Any]) -> None:
    seen: list[str] = []
    for name in GPU_WORKERS:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        device = devices[0]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        assert "count" not in device, f"{name}: count and device_ids are exclusive"
        assert len(device["device_ids"]) == 1, f"{name}: one GPU per worker"
        seen += [str(d) for d in device["device_ids"]]
        # The reservation already pins the GPU; a host index here would hide it.
        assert "CUDA_VISIBLE_DEVICES" not in _env(services[name]), name
    assert len(seen) == len(set(seen)), f"GPU workers share a device: {seen}"
    for name in ("postgres", "prefect-server", "bootstrap", "worker-cpu"):
        assert "deploy" not in services[name], f"{name} should not reserve GPUs"


def test_workers_share_data_volume_and_settings(compose: dict[str, Any], services: dict[str, Any]) -> None:
    sources = set()
    for name in WORKERS:
        mounts = {}
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2] if isinstance(volume, str) else (volume["source"], volume["target"])
            mounts[target] = source
        assert "/data" in mounts and "/data/hf" in mounts, name
        sources.add(mounts["/data"])
        env = _env(services[name])
        assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].startswith("/data/"), name
        assert env["HF_HOME"] == "/data/hf", name
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
    assert len(sources) == 1, f"workers mount different data volumes: {sources}"
    assert sources <= set(compose["volumes"])


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_prefect_settings_names_exist(services: dict[str, Any]) -> None:
    """A misspelt PREFECT_* variable is silently ignored by Prefect; catch it here."""
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    valid = _get_valid_setting_names(Settings)
    for name, service in services.items():
        unknown = {key for key in _env(service) if key.startswith("PREFECT_") and key not in valid}
        assert not unknown, f"{name}: unknown Prefect settings {unknown}"


def test_server(services: dict[str, Any]) -> None:
    server = services["prefect-server"]
    argv = _argv(server["command"])
    assert argv[:3] == ["prefect", "server", "start"] and _option(argv, "--host") == "0.0.0.0"
    env = _env(server)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_SERVER_UI_API_URL"].endswith("/api")
    assert any(str(port).endswith(":4200") for port in server["ports"])


@pytest.mark.parametrize(
    "env",
    [STACK_ENV, {**STACK_ENV, "POSTGRES_USER": "cg", "POSTGRES_PASSWORD": "s3cret", "POSTGRES_DB": "orchestration"}],
)
def test_database_url_matches_postgres(env: dict[str, str]) -> None:
    services = _load(env)["services"]
    pg = _env(services["postgres"])
    url = urlsplit(_env(services["prefect-server"])["PREFECT_SERVER_DATABASE_CONNECTION_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert url.hostname == "postgres" and (url.port or 5432) == 5432
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    assert url.password == env["POSTGRES_PASSWORD"]


def test_workers_stop_with_sigint(services: dict[str, Any]) -> None:
    for name in WORKERS:
        assert services[name].get("stop_signal") == "SIGINT", name
        assert services[name].get("stop_grace_period"), name


def test_build_points_at_worker_dockerfile(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in ("prefect-server", "bootstrap", *WORKERS)}
    assert len(images) == 1, f"server, bootstrap and workers should share one image: {images}"
    for name in ("prefect-server", "bootstrap", *WORKERS):
        build = services[name]["build"]
        context = (ROOT / build["context"]).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile == ROOT / "deploy" / "Dockerfile" and dockerfile.is_file(), name
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert any(re.fullmatch(r"COPY \. \.?/?(opt/cgaug)?/?", line) for line in instructions), "repo is not copied"
    assert "WORKDIR /opt/cgaug" in instructions
    assert any(
        "pip install" in line and "-c requirements/constraints.txt" in line and '-e ".[all]"' in line
        for line in instructions
    ), "package is not installed with the constraints file"
    base = [line for line in instructions if line.startswith(("FROM ", "ARG PYTHON_IMAGE="))]
    assert any("python:3.11" in line for line in base), f"not a Python 3.11 image: {base}"


def test_dockerignore_keeps_context_small() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "demo"} <= ignored
    assert ".env" in ignored, "`COPY . .` would bake the stack's secrets into the image"
    # ... but never the files the image installs from.
    assert not ignored & {"requirements", "pyproject.toml", "cgaug", "deploy"}


def test_bootstrap_sets_what_prefect_yaml_reads_from_the_environment(services: dict[str, Any]) -> None:
    """`prefect deploy` fills `{{ $VAR }}` from its environment: in compose, the bootstrap's."""
    prefect_yaml = ROOT / "deploy" / "prefect.yaml"
    if not prefect_yaml.is_file():
        pytest.skip("deploy/prefect.yaml not present")
    wanted = set(re.findall(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", prefect_yaml.read_text()))
    env = _env(services["bootstrap"])
    assert wanted <= set(env), f"bootstrap lacks {wanted - set(env)}"
    if "CGAUG_DATA" in wanted:
        assert env["CGAUG_DATA"] == "/data"


# --- closed to strangers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
@pytest.mark.parametrize("missing", sorted(STACK_ENV))
def test_refuses_to_start_without_each_secret(missing: str, value: str | None) -> None:
    """No silent default password: without the variable (or with it empty) compose stops with a message."""
    env = {key: val for key, val in STACK_ENV.items() if key != missing}
    if value is not None:
        env[missing] = value
    with pytest.raises(AssertionError, match=rf"\${{{missing}}} is required: set {missing}"):
        _load(env)


def test_starts_with_the_secrets_and_uses_them() -> None:
    services = _load(STACK_ENV)["services"]
    assert _env(services["postgres"])["POSTGRES_PASSWORD"] == STACK_ENV["POSTGRES_PASSWORD"]
    assert _env(services["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"] == STACK_ENV["CGAUG_STACK_AUTH"]


def test_secrets_never_fall_back_to_a_default() -> None:
    """Every reference to a secret is `${VAR:?...}`: one `${VAR:-x}` would reintroduce a known password."""
    text = COMPOSE.read_text()
    for name in STACK_ENV:
        references = re.findall(rf"\$\{{{name}(?P<op>[^A-Za-z0-9_][^}}]*)?\}}", text)
        assert references, f"{name} is not used"
        assert all(op.startswith(":?") for op in references), f"{name}: {references}"


def test_every_prefect_client_sends_the_auth_string(services: dict[str, Any]) -> None:
    """Bootstrap and every worker (and so every flow run a process worker starts) authenticate."""
    auth = STACK_ENV["CGAUG_STACK_AUTH"]
    assert _env(services["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"] == auth
    clients = {name for name, service in services.items()
               if name != "prefect-server" and "command" in service
               and _argv(service["command"])[0] in ("prefect", "cgaug")}
    assert {"bootstrap", *WORKERS} <= clients
    for name in clients:
        env = _env(services[name])
        assert env.get("PREFECT_API_URL") == "http://prefect-server:4200/api", name
        assert env.get("PREFECT_API_AUTH_STRING") == auth, f"{name} does not authenticate"
        assert "PREFECT_SERVER_API_AUTH_STRING" not in env, f"{name} is a client, not a server"


def _published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, published port, container port) of each published port; short or long syntax."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split(":")
        assert len(parts) == 3, f"{port!r} publishes on every interface: give a host address"
        found.append((parts[0], parts[1], parts[2]))
    return found


def test_published_ports_bind_loopback_by_default(services: dict[str, Any]) -> None:
    published = {name: _published(service) for name, service in services.items() if service.get("ports")}
    assert published == {"prefect-server": [("127.0.0.1", "4200", "4200")]}


def test_bind_address_and_port_are_configurable() -> None:
    services = _load({**STACK_ENV, "PREFECT_BIND_ADDRESS": "0.0.0.0", "PREFECT_PORT": "8200"})["services"]
    assert _published(services["prefect-server"]) == [("0.0.0.0", "8200", "4200")]


def test_env_example_lists_every_required_variable() -> None:
    """deploy/env.example is what the README tells users to copy to .env; its secrets stay empty."""
    lines = (ROOT / "deploy" / "env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert values == dict.fromkeys(STACK_ENV, ""), values
    with pytest.raises(AssertionError, match="is required"):
        _load(values)  # copied as is, compose still refuses to start
