"""`cgaug stack up` with an auth string: which process gets which secret, without starting Prefect.

The processes `up` would start are replaced by `sleep` (so `down` has real
process groups to stop) and the spawned command lines and environments are
recorded. tests/e2e/test_auth.py runs the same path against a real server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cgaug import stack
from cgaug.cli.stack import app

AUTH = "admin:s3cret"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*stack.AUTH_ENV, "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("given", "env", "expected"),
    [
        (None, {}, None),
        (AUTH, {"CGAUG_STACK_AUTH": "other:1"}, AUTH),
        (None, {"CGAUG_STACK_AUTH": "a:1", "PREFECT_SERVER_API_AUTH_STRING": "b:2"}, "a:1"),
        (None, {"PREFECT_SERVER_API_AUTH_STRING": "b:2"}, "b:2"),
        (None, {"CGAUG_STACK_AUTH": "", "PREFECT_SERVER_API_AUTH_STRING": "b:2"}, "b:2"),
        # A client's own string does not switch the local server's auth on.
        (None, {"PREFECT_API_AUTH_STRING": "c:3"}, None),
    ],
)
def test_resolve_auth(clean_env: pytest.MonkeyPatch, given: str | None, env: dict[str, str],
                      expected: str | None) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert stack.resolve_auth(given) == expected


def test_client_settings_add_the_auth_string_only_when_there_is_one() -> None:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    assert stack.client_settings("http://h/api") == {PREFECT_API_URL: "http://h/api"}
    assert stack.client_settings("http://h/api", AUTH) == {PREFECT_API_URL: "http://h/api",
                                                           PREFECT_API_AUTH_STRING: AUTH}


class Spawned:
    """Stands in for `stack._spawn`: records each process and starts a harmless one in its place."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[list[str], dict[str, str]]] = {}

    def __call__(self, name: str, args: list[str], env: dict[str, str], logs: Path, cwd: Any = None
                 ) -> subprocess.Popen:
        self.calls[name] = (args, env)
        return subprocess.Popen(["sleep", "60"], start_new_session=True)


@pytest.fixture
def spawned(clean_env: pytest.MonkeyPatch) -> Spawned:
    fake = Spawned()
    clean_env.setattr(stack, "_spawn", fake)
    clean_env.setattr(stack, "wait_healthy", lambda *args, **kwargs: None)
    return fake


def _up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> tuple[stack.StackState, list]:
    bootstrapped: list = []
    monkeypatch.setattr(stack, "bootstrap", lambda *args: bootstrapped.append(args) or [])
    state = tmp_path / "state"
    try:
        started = stack.up(state, port=4999, project=tmp_path, gpus=[], cpu_workers=2, **options)
    finally:
        stack.down(state)
    return started, bootstrapped


def test_up_gives_the_server_its_auth_string_and_every_client_the_same(
        spawned: Spawned, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started, [bootstrap_args] = _up(tmp_path, clean_env, auth_string=AUTH)

    server_args, server_env = spawned.calls["server"]
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"] == AUTH
    assert server_args[server_args.index("--host") + 1] == "127.0.0.1"  # loopback only
    assert started.api_url == "http://127.0.0.1:4999/api" and started.auth
    assert bootstrap_args[-1] == AUTH  # pools, automations and `prefect deploy` authenticate
    workers = {name: env for name, (_, env) in spawned.calls.items() if name != "server"}
    assert set(workers) == {"worker-cpu", "worker-cpu-as-gpu0", "worker-cpu-as-gpu1"}
    for name, env in workers.items():  # a process worker passes its environment to every flow run
        assert env["PREFECT_API_AUTH_STRING"] == AUTH, name
        assert env["PREFECT_API_URL"] == started.api_url, name
    assert AUTH not in (Path(started.state_dir) / stack.STATE_FILE).read_text()


@pytest.mark.parametrize("inherited", ["", "b:2"])
def test_up_without_auth_string_leaves_the_server_open_whatever_it_inherits(
        spawned: Spawned, clean_env: pytest.MonkeyPatch, tmp_path: Path, inherited: str) -> None:
    """The server and its workers agree: an inherited server string alone would lock the workers out
    (and an empty one would turn auth on with "" as the password). Only the CLI reads the environment.
    """
    clean_env.setenv("PREFECT_SERVER_API_AUTH_STRING", inherited)
    clean_env.setenv("CGAUG_STACK_AUTH", inherited)
    started, [bootstrap_args] = _up(tmp_path, clean_env)
    _, server_env = spawned.calls["server"]
    assert "PREFECT_SERVER_API_AUTH_STRING" not in server_env
    assert not started.auth and bootstrap_args[-1] is None
    assert all("PREFECT_API_AUTH_STRING" not in env for _, env in spawned.calls.values())


@pytest.mark.parametrize("source", ["--auth-string", "CGAUG_STACK_AUTH", "PREFECT_SERVER_API_AUTH_STRING"])
def test_cli_up_passes_the_auth_string_and_says_how_to_log_in(clean_env: pytest.MonkeyPatch, tmp_path: Path,
                                                              source: str) -> None:
    seen: dict[str, Any] = {}

    def fake_up(state: Path, **options: Any) -> stack.StackState:
        seen.update(options)
        return stack.StackState("http://127.0.0.1:4200/api", "http://127.0.0.1:4200", str(state), {},
                                auth=bool(options["auth_string"]))

    clean_env.setattr(stack, "up", fake_up)
    option = [source, AUTH] if source.startswith("--") else []
    result = CliRunner().invoke(app, ["up", "--state", str(tmp_path), *option],
                                env={} if option else {source: AUTH})
    assert result.exit_code == 0, result.output
    assert seen["auth_string"] == AUTH
    assert "PREFECT_API_AUTH_STRING" in result.output and AUTH not in result.output

    result = CliRunner().invoke(app, ["up", "--state", str(tmp_path)])
    assert result.exit_code == 0 and seen["auth_string"] is None
    assert "PREFECT_API_AUTH_STRING" not in result.output


def test_cli_up_seeds_the_default_source_and_prints_a_command_that_runs_as_printed(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`prefect deployment run cgaug/generate` as printed: the default source holds a dataset and the
    printed parameters choose the offline tiny models (the default generator needs downloaded weights)."""
    import json
    import shlex

    from cgaug.config import CGAugConfig

    def fake_up(state: Path, **options: Any) -> stack.StackState:
        return stack.StackState("http://127.0.0.1:4200/api", "http://127.0.0.1:4200", str(state), {})

    clean_env.setattr(stack, "up", fake_up)
    result = CliRunner().invoke(app, ["up", "--state", str(tmp_path)])
    assert result.exit_code == 0, result.output
    source = tmp_path / "data" / "cityscapes"
    assert (source / "bank.parquet").is_file() and any((source / "leftImg8bit").rglob("*.png"))
    assert "written now" in result.output
    line = next(x for x in result.output.splitlines() if "deployment run cgaug/generate --watch --params" in x)
    words = shlex.split(line.strip())
    params = json.loads(words[words.index("--params") + 1])
    assert CGAugConfig.model_validate(params["config"]).generator.model == "tiny"
    before = sorted(p.stat().st_mtime_ns for p in source.rglob("*") if p.is_file())
    again = CliRunner().invoke(app, ["up", "--state", str(tmp_path)])
    assert again.exit_code == 0 and "written now" not in again.output
    assert sorted(p.stat().st_mtime_ns for p in source.rglob("*") if p.is_file()) == before  # never overwritten
