"""The generation tree: layers, unknown keys, tiny defaults and the output fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cgaug.config import CGAugConfig, ConfigError, load_config

PREVIOUS_OUT = Path(__file__).resolve().parents[1] / "data" / "previous_main" / "OUT"


def test_layers_file_env_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"run": {"seed": 1, "variants": 3}, "generator": {"steps": 30}}))
    env = {"CGAUG_RUN__SEED": "2", "CGAUG_COMPOSE__OBJECTS_PER_IMAGE": '{"1": 0.5, "2": 0.5}', "HOME": "/x"}
    cfg = load_config(path, overrides={"run": {"variants": None, "shard_size": 8}}, environ=env)
    assert cfg.run.seed == 2  # env beats file
    assert cfg.run.variants == 3  # a None override does not clobber the file
    assert cfg.run.shard_size == 8
    assert cfg.generator.steps == 30
    assert cfg.compose.objects_per_image == {1: 0.5, 2: 0.5}


def test_unknown_keys_are_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"run": {"sede": 1}}))
    with pytest.raises(ConfigError, match="sede"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="bogus"):
        load_config(environ={"CGAUG_BOGUS": "1"})
    with pytest.raises(ConfigError, match="object_size_px"):
        load_config(overrides={"compose": {"object_size_px": [500, 200]}}, environ={})


def test_tiny_defaults_only_fill_unset_fields():
    cfg = CGAugConfig.model_validate({"generator": {"model": "tiny", "steps": 5}})
    assert cfg.generator.steps == 5 and cfg.generator.short_side == 64 and cfg.generator.controlnet is None
    assert CGAugConfig().generator.steps == 20


def test_fingerprint_ignores_batch_and_sharding():
    base = CGAugConfig()
    same = CGAugConfig.model_validate({"generator": {"batch_size": 1}, "run": {"shard_size": 3}})
    other = CGAugConfig.model_validate({"run": {"seed": 5}})
    assert base.output_fingerprint() == same.output_fingerprint() != other.output_fingerprint()


def test_fingerprint_of_an_existing_output_is_unchanged():
    """The fingerprint recorded by the previous main must come out of its recorded settings again."""
    record = json.loads((PREVIOUS_OUT / "config.json").read_text())
    assert record["config_fingerprint"] == "80503f127d676db7"
    assert CGAugConfig.model_validate(record["config"]).output_fingerprint() == record["config_fingerprint"]
    manifest = json.loads((PREVIOUS_OUT / "manifest.json").read_text())
    assert CGAugConfig.model_validate(manifest["config"]).output_fingerprint() == manifest["config_fingerprint"]


def test_training_environment_is_left_to_the_training_tree():
    cfg = load_config(environ={"CGAUG_TRAIN__RUN__SEED": "7", "CGAUG_RUN__SEED": "3"})
    assert cfg.run.seed == 3
