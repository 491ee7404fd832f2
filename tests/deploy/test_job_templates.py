"""The gpu pool's base job templates in deploy/pools/, checked with Prefect's own machinery.

`cgaug stack bootstrap` uploads one of these as the gpu pool's base job
template. The server only checks that every placeholder is declared, and a
worker renders the template at run time, so a broken template would surface
as a crashed flow run on a GPU machine. Here each template goes through the
server's validation and the worker's rendering
(`BaseJobConfiguration.from_template_and_values`) instead. prefect-docker and
prefect-kubernetes are not installed, so their job configurations are stood
in for by subclasses with the fields the real classes have.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.schema_tools import is_valid_schema, validate
from prefect.utilities.templating import find_placeholders
from prefect.workers.base import BaseJobConfiguration
from prefect.workers.process import ProcessJobConfiguration
from pydantic import Field

POOLS = Path(__file__).resolve().parents[2] / "deploy" / "pools"
TYPES = ("process", "docker", "kubernetes")
DATA_ENV = {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": "/data/prefect-results", "HF_HOME": "/data/hf"}


def _template(kind: str) -> dict[str, Any]:
    return json.loads((POOLS / f"{kind}.json").read_text())


class DockerJob(BaseJobConfiguration):
    """Stand-in for prefect_docker.worker.DockerWorkerJobConfiguration (same field names)."""

    image: str = ""
    image_pull_policy: str | None = None
    networks: list[str] = Field(default_factory=list)
    network_mode: str | None = None
    auto_remove: bool = False
    volumes: list[str] = Field(default_factory=list)
    stream_output: bool = True
    mem_limit: str | None = None
    memswap_limit: str | None = None
    privileged: bool = False
    container_create_kwargs: dict[str, Any] | None = None


class KubernetesJob(BaseJobConfiguration):
    """Stand-in for prefect_kubernetes.worker.KubernetesWorkerJobConfiguration (same field names)."""

    namespace: str = "default"
    job_manifest: dict[str, Any] = Field(default_factory=dict)
    job_watch_timeout_seconds: int | None = None
    pod_watch_timeout_seconds: int = 60
    stream_output: bool = True


def _render(config_cls: type[BaseJobConfiguration], kind: str, values: dict[str, Any]) -> Any:
    """Render as a worker does. No block or variable placeholders, so the client is never used."""
    return asyncio.run(config_cls.from_template_and_values(_template(kind), values, client=object()))


@pytest.mark.parametrize("kind", TYPES)
def test_template_passes_server_validation(kind: str) -> None:
    template = _template(kind)
    assert validate_base_job_template(template) is template
    variables = template["variables"]
    is_valid_schema(variables, preprocess=False)
    defaults = {name: spec["default"] for name, spec in variables["properties"].items() if "default" in spec}
    # What the server runs on work-pool create: defaults must satisfy their own schema.
    validate(
        defaults, variables, raise_on_error=True, preprocess=True, ignore_required=True, allow_none_with_default=True
    )


@pytest.mark.parametrize("kind", TYPES)
def test_placeholders_and_variables_match_both_ways(kind: str) -> None:
    """An undeclared placeholder is a server error; an unreferenced variable is silently dropped."""
    template = _template(kind)
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    declared = set(template["variables"]["properties"])
    assert used == declared, f"undeclared: {used - declared}, unused: {declared - used}"


@pytest.mark.parametrize("kind", TYPES)
def test_template_never_pins_a_gpu_through_env(kind: str) -> None:
    """GPU selection belongs to the worker (process) or the runtime (docker, kubernetes), never the pool."""
    text = (POOLS / f"{kind}.json").read_text()
    assert '"CUDA_VISIBLE_DEVICES"' not in text and '"NVIDIA_VISIBLE_DEVICES"' not in text


def test_process_env_defaults_merge_with_deployment_env() -> None:
    config = _render(ProcessJobConfiguration, "process", {"env": {"CGAUG_RUN__SEED": "3"}})
    assert config.env["CGAUG_RUN__SEED"] == "3"
    for key, value in {**DATA_ENV, "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true"}.items():
        assert config.env[key] == value
    assert config.stream_output is True


def test_process_keeps_worker_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process worker starts runs with its own environment: the per-worker GPU pin reaches the run."""
    from prefect.client.schemas.objects import FlowRun

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    config = _render(ProcessJobConfiguration, "process", {})
    config.prepare_for_flow_run(FlowRun(flow_id="00000000-0000-0000-0000-000000000000", name="shard-00007"))
    assert config.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert config.env["HF_HOME"] == "/data/hf"


def _docker_host_config(config: DockerJob) -> dict[str, Any]:
    """What docker-py would send to the engine for these settings (no engine needed)."""
    containers = pytest.importorskip("docker.models.containers")
    kwargs = dict(
        image=config.image,
        command=config.command,
        environment=config.env,
        volumes=config.volumes,
        version="1.44",
        **(config.container_create_kwargs or {}),
    )
    return containers._create_container_args(kwargs)["host_config"]


@pytest.mark.parametrize("count", [1, 2, -1])
def test_docker_device_request_count(count: int) -> None:
    config = _render(DockerJob, "docker", {"gpu_count": count})
    (request,) = config.container_create_kwargs["device_requests"]
    assert request["count"] == count and request["driver"] == "nvidia" and ["gpu"] in request["capabilities"]
    (sent,) = _docker_host_config(config)["DeviceRequests"]
    assert (sent["Driver"], sent["Count"], sent["DeviceIDs"], sent["Capabilities"]) == ("nvidia", count, [], [["gpu"]])


def test_docker_defaults_one_gpu_and_shared_volumes() -> None:
    config = _render(DockerJob, "docker", {})
    host = _docker_host_config(config)
    assert host["DeviceRequests"][0]["Count"] == 1
    assert {bind.split(":")[1] for bind in host["Binds"]} == {"/data", "/data/hf"}
    assert host["ShmSize"] >= 1 << 30
    assert config.image.startswith("cgaug-worker:")
    assert all(config.env[k] == v for k, v in DATA_ENV.items())


def test_docker_device_ids_pin_specific_gpus() -> None:
    config = _render(DockerJob, "docker", {"gpu_count": 0, "gpu_device_ids": ["1"]})
    (sent,) = _docker_host_config(config)["DeviceRequests"]
    assert (sent["Count"], sent["DeviceIDs"]) == (0, ["1"])


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("gpus", [1, 4])
def test_kubernetes_gpu_limit(gpus: int) -> None:
    manifest = _render(KubernetesJob, "kubernetes", {"gpu_limit": gpus}).job_manifest
    resources = _container(manifest)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == gpus
    # Extended resources may not be overcommitted: requests must equal limits.
    assert resources["requests"]["nvidia.com/gpu"] == gpus


def test_kubernetes_defaults_schedule_on_gpu_nodes_with_shared_data() -> None:
    job = _render(KubernetesJob, "kubernetes", {"namespace": "cgaug", "node_selector": {"gpu": "h100"}})
    manifest = job.job_manifest
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    assert job.namespace == manifest["metadata"]["namespace"] == "cgaug"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["nodeSelector"] == {"gpu": "h100"}
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    container = _container(manifest)
    assert container["name"] == "prefect-job"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "cgaug-data"
    assert not find_placeholders(manifest), "placeholders left in the rendered manifest"
    assert all(job.env[k] == v for k, v in DATA_ENV.items())


@pytest.mark.parametrize("kind, config_cls", [("process", ProcessJobConfiguration), ("docker", DockerJob),
                                              ("kubernetes", KubernetesJob)])
def test_worker_hands_its_api_auth_string_to_every_job(kind: str, config_cls: type[BaseJobConfiguration]) -> None:
    """The workers of docker-compose.yml carry PREFECT_API_AUTH_STRING; each job's env gets it from them.

    A flow run without it could not report to a server that requires basic auth. The templates must
    not hold the secret themselves: a base job template is readable through the API.
    """
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    assert "AUTH_STRING" not in (POOLS / f"{kind}.json").read_text()
    config = _render(config_cls, kind, {"env": {"CGAUG_RUN__SEED": "3"}})
    with temporary_settings({PREFECT_API_URL: "http://prefect-server:4200/api",
                             PREFECT_API_AUTH_STRING: "admin:s3cret"}):
        config.prepare_for_flow_run(FlowRun(flow_id="00000000-0000-0000-0000-000000000000", name="shard-00007"))
    assert config.env["PREFECT_API_AUTH_STRING"] == "admin:s3cret"
    assert config.env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert config.env["CGAUG_RUN__SEED"] == "3" and config.env["HF_HOME"] == "/data/hf"
    if kind == "kubernetes":  # prefect-kubernetes writes the job's env into this container
        assert _template(kind)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
            "containers"][0]["env"] == "{{ env }}"
