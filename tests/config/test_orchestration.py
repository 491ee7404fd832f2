"""Orchestration settings: strict, and outside the generation tree and its fingerprint."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cgaug.config import CGAugConfig, ConfigError, Orchestration, load_config


def test_orchestration_is_not_part_of_the_generation_tree():
    """How shards are scheduled never changes a sample, so it cannot reach the fingerprint."""
    assert "orchestration" not in CGAugConfig.model_fields
    with pytest.raises(ConfigError, match="orchestration"):
        load_config(overrides={"orchestration": {"in_process": False}}, environ={})


def test_defaults_and_strictness():
    orch = Orchestration()
    assert orch.in_process and orch.shard_deployment == "cgaug-shard/gpu" and orch.quality_floor == 0.3
    with pytest.raises(ValidationError, match="shards_per_chld"):
        Orchestration.model_validate({"shards_per_chld": 2})
