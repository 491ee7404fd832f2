"""The stored plan (plan.parquet) and the recorded settings (config.json) of an output root."""

from __future__ import annotations

import json

import pytest

from cgaug.config import CGAugConfig, RunConfig
from cgaug.records import SourceRecord
from cgaug.storage.fs import Root
from cgaug.storage.plan import (
    CONFIG_FILE,
    PLAN_FILE,
    PlanMismatch,
    check_config,
    load_plan,
    plan_from_table,
    plan_to_table,
    write_plan,
)
from cgaug.tasks.generation.plan import extend_plan


def _plan(n: int = 3, variants: int = 2):
    sources = [SourceRecord(f"aachen_{i:06d}_000019", "aachen", "train", f"a/{i}.png", f"b/{i}.png")
               for i in range(n)]
    return extend_plan([], sources, RunConfig(variants=variants, shard_size=4))


def test_table_round_trip():
    plan = _plan()
    assert plan_from_table(plan_to_table(plan)) == plan


def test_a_table_without_plan_columns_is_refused_by_name():
    with pytest.raises(ValueError, match=r"lacks columns \['seed'\]"):
        plan_from_table(plan_to_table(_plan()).drop_columns(["seed"]))


def test_written_plan_loads_back_and_nothing_planned_is_empty(root: Root):
    assert load_plan(root.uri()) == []

    write_plan(root.uri(), _plan())

    assert root.exists(PLAN_FILE) and load_plan(root.uri()) == _plan()
    write_plan(root.uri(), _plan(n=4))  # replaced whole
    assert load_plan(root.uri()) == _plan(n=4)


def _record(root: Root, config: CGAugConfig) -> None:
    record = {"config_fingerprint": config.output_fingerprint(), "config": config.model_dump(mode="json")}
    root.write_bytes_atomic(CONFIG_FILE, json.dumps(record).encode())


def test_check_config_accepts_a_new_output_and_the_same_settings(root: Root):
    config = CGAugConfig.model_validate({"run": {"seed": 3}})
    check_config(root.uri(), config)  # nothing recorded yet

    _record(root, config)
    check_config(root.uri(), CGAugConfig.model_validate({"run": {"seed": 3}, "filters": {"sam_iou_threshold": 0.1}}))


def test_check_config_names_the_settings_that_change_content(root: Root):
    _record(root, CGAugConfig.model_validate({"run": {"seed": 3}}))

    with pytest.raises(PlanMismatch, match=r"differing: run\.seed\)") as info:
        check_config(root.uri(), CGAugConfig.model_validate({"run": {"seed": 4}}))

    assert root.uri() in str(info.value) and "config.json" in str(info.value)
