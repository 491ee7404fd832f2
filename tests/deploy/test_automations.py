"""deploy/automations.yaml, parsed as `prefect automation create --from-file` parses it (Prefect 3.8.8).

The CLI reads the YAML, takes the `automations:` list (or a list, or one
mapping), validates each entry with the client `AutomationCore` model and posts
it; the server validates the body again with its `AutomationCreate` model.
Both models ignore unknown keys on triggers and actions, so a misspelt key
(`match_releated:`) would silently vanish: the strict key check below catches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.server.events.schemas.automations import AutomationCreate
from pydantic import BaseModel

FILE = Path(__file__).resolve().parents[2] / "deploy" / "automations.yaml"
SHARD_RESOURCE = {"prefect.resource.id": "cgaug.shard.ds-3f2a.00007", "prefect.resource.name": "shard-00007"}


def _entries() -> list[dict[str, Any]]:
    """The same unpacking as prefect/cli/automation.py::create."""
    data = yaml.safe_load(FILE.read_text())
    if isinstance(data, dict) and "automations" in data:
        return data["automations"]
    return data if isinstance(data, list) else [data]


def _by_name() -> dict[str, AutomationCore]:
    return {entry["name"]: AutomationCore.model_validate(entry) for entry in _entries()}


def _assert_known_keys(raw: dict[str, Any], model: BaseModel, where: str) -> None:
    fields = set(type(model).model_fields)
    unknown = set(raw) - fields
    assert not unknown, f"{where}: keys {unknown} are ignored by {type(model).__name__}"


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: e.get("name", "?"))
def test_entry_validates_like_the_cli_and_the_server(entry: dict[str, Any]) -> None:
    automation = AutomationCore.model_validate(entry)
    _assert_known_keys(entry, automation, automation.name)
    _assert_known_keys(entry["trigger"], automation.trigger, f"{automation.name}.trigger")
    for raw, action in zip(entry["actions"], automation.actions, strict=True):
        _assert_known_keys(raw, action, f"{automation.name}.actions")
    # The client posts model_dump(mode="json"); the server forbids extra top-level keys.
    AutomationCreate.model_validate(automation.model_dump(mode="json"))


def test_names_are_unique() -> None:
    names = [entry["name"] for entry in _entries()]
    assert len(names) == len(set(names))


def test_low_quality_pauses_the_emitting_deployment() -> None:
    automation = _by_name()["cgaug-low-quality-pause"]
    assert automation.enabled
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.expect == {"cgaug.shard.low-quality"}
    assert trigger.posture == Posture.Reactive and trigger.threshold == 1
    (action,) = automation.actions
    assert action.type == "pause-deployment"
    # inferred: no hard-coded deployment id, taken from the event's related deployment.
    assert action.source == "inferred" and action.deployment_id is None


def _matches(trigger: EventTrigger, event: str, resource: dict[str, str], related: list[dict[str, str]]) -> bool:
    """Prefect's own matching: the event name, the resource labels and the related resources."""
    from prefect.events.schemas.events import RelatedResource, Resource

    return (
        event in trigger.expect
        and trigger.match.matches(Resource(resource))
        and (
            not trigger.match_related
            or any(
                spec.matches(RelatedResource(r))
                for r in related
                for spec in (
                    trigger.match_related if isinstance(trigger.match_related, list) else [trigger.match_related]
                )
            )
        )
    )


def test_trigger_fires_on_the_flows_event_from_a_deployment_run() -> None:
    trigger = _by_name()["cgaug-low-quality-pause"].trigger
    deployment = {
        "prefect.resource.id": "prefect.deployment.4b3c7a0e-8d36-4c5c-9e59-5bd2a3c4f1a2",
        "prefect.resource.role": "deployment",
    }
    flow_run = {
        "prefect.resource.id": "prefect.flow-run.1d1f3c2e-0000-4000-8000-000000000001",
        "prefect.resource.role": "flow-run",
    }
    assert _matches(trigger, "cgaug.shard.low-quality", SHARD_RESOURCE, [flow_run, deployment])
    # Not on completed shards, not on other resources, not from runs without a deployment.
    assert not _matches(trigger, "cgaug.shard.completed", SHARD_RESOURCE, [flow_run, deployment])
    assert not _matches(trigger, "cgaug.shard.low-quality", {"prefect.resource.id": "other.thing"}, [deployment])
    assert not _matches(trigger, "cgaug.shard.low-quality", SHARD_RESOURCE, [flow_run])


def test_event_names_are_the_flows_contract() -> None:
    """Every cgaug event an automation expects is one the parent flow emits; the rest are Prefect's own."""
    from cgaug.flows.monitor import EVENT_COMPLETED, EVENT_LOW_QUALITY

    emitted = {EVENT_COMPLETED, EVENT_LOW_QUALITY}
    for automation in _by_name().values():
        trigger = automation.trigger
        assert isinstance(trigger, EventTrigger)
        ours = {name for name in trigger.expect if name.startswith("cgaug.")}
        assert ours <= emitted, automation.name
        assert all(name.startswith("prefect.flow-run.") for name in trigger.expect - ours), automation.name


def test_runs_without_heartbeats_of_cgaug_flows_are_crashed() -> None:
    automation = _by_name()["cgaug-crash-zombie-runs"]
    trigger = automation.trigger
    assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"} and trigger.for_each == {"prefect.resource.id"}
    # Proactive: fires when none of `expect` follows a heartbeat within the window (3 default heartbeats+).
    assert trigger.within.total_seconds() >= 3 * 180
    run = {"prefect.resource.id": "prefect.flow-run.5b0e3c1a", "prefect.resource.name": "shards-00003-00004"}
    tag = {"prefect.resource.id": "prefect.tag.cgaug", "prefect.resource.role": "tag"}
    other_tag = {"prefect.resource.id": "prefect.tag.etl", "prefect.resource.role": "tag"}
    assert _matches(trigger, "prefect.flow-run.heartbeat", run, [tag])
    assert _matches(trigger, "prefect.flow-run.Completed", run, [tag])  # an ending keeps it from firing
    assert not _matches(trigger, "prefect.flow-run.heartbeat", run, [other_tag])  # other teams' flows: not ours
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"
