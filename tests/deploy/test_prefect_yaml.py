"""deploy/prefect.yaml: every entrypoint loads the flow its deployment is named after."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import Flow, load_flow_from_entrypoint

PREFECT_YAML = Path(__file__).resolve().parents[2] / "deploy" / "prefect.yaml"
FLOWS = {"cgaug", "cgaug-shard", "cgaug-eval", "cgaug-train"}  # `prefect deployment run FLOW/DEPLOYMENT`


def test_entrypoints_are_module_paths_of_the_four_flows():
    deployments = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    found = {}
    for deployment in deployments:
        entrypoint = deployment["entrypoint"]
        # a colon makes Prefect treat the entrypoint as a script and fetch code from storage first
        assert ":" not in entrypoint and entrypoint.startswith("cgaug.flows."), entrypoint
        flow = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
        assert isinstance(flow, Flow)
        found[f"{flow.name}/{deployment['name']}"] = entrypoint
    assert {name.split("/")[0] for name in found} == FLOWS and len(found) == len(deployments)
    assert found["cgaug/generate"] == "cgaug.flows.generate.generate_dataset_flow"
