"""A stack started with an auth string is closed to strangers and still runs deployments.

`cgaug stack up --auth-string` (here `stack.up(auth_string=...)`) starts a real
`prefect server start` with PREFECT_SERVER_API_AUTH_STRING, bootstraps it and
starts process workers that send PREFECT_API_AUTH_STRING. A request without
the string (or with a wrong one) is refused with 401; the authenticated
`cgaug/generate` run fans out to the gpu pool and completes, which needs the
string in the bootstrap (pools, deployments), the workers, the parent's flow
run (it starts the children) and the children's flow runs.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest

from tests.e2e.conftest import child_runs, parameters, run_generate, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

AUTH = "cgaug:e2e-s3cret"
# The smallest real run: 2 samples in one shard, tiny generator, no filter models to build.
SMALL = {"run": {"variants": 1, "shard_size": 2}, "generator": {"model": "tiny"}, "filters": {"mode": "none"}}


@pytest.fixture(scope="module")
def secured(tmp_path_factory, tiny_home):
    with running_stack(tmp_path_factory.mktemp("auth-stack"), auth_string=AUTH) as started:
        yield started


def _request(url: str, auth: str | None = None, body: dict | None = None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def test_api_refuses_requests_without_the_auth_string(secured):
    deployments = f"{secured.api_url}/deployments/filter"
    assert _request(deployments, body={})[0] == 401
    assert _request(deployments, "cgaug:wrong", body={})[0] == 401
    assert _request(f"{secured.api_url}/flows/filter", body={})[0] == 401
    status, found = _request(deployments, AUTH, body={})
    assert status == 200 and "generate" in {d["name"] for d in found}  # the bootstrap got in
    # Health stays open: compose's healthcheck and `cgaug stack up` probe it without credentials.
    assert _request(f"{secured.api_url}/health")[0] == 200
    # The UI reads this before anything else and shows its login page when auth is BASIC.
    status, ui_settings = _request(f"{secured.ui_url}/ui-settings")
    assert status == 200 and ui_settings["auth"] == "BASIC"


def test_authenticated_deployment_run_completes(secured, e2e_source, tmp_path):
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    out = tmp_path / "out"
    with temporary_settings({PREFECT_API_AUTH_STRING: AUTH}):
        run = run_generate(secured.api_url, parameters(e2e_source, out, SMALL, quality_floor=None),
                           timeout_s=300)
        assert run.state.is_completed(), run.state
        [child] = child_runs(secured.api_url, run.id)
    assert child.state.is_completed() and child.work_pool_name == "gpu"
    assert pq.read_table(out / "index.parquet").num_rows == 2
