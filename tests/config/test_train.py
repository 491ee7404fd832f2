"""The training tree: presets, layers and the weights fingerprint."""

from __future__ import annotations

import pytest
import yaml

from cgaug.config import TRAIN_PRESETS, ConfigError, TrainConfig, load_train_config


def test_preset_file_environment_and_flags_are_layered(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"preset": "tiny", "loss": {"select_ratio": 0.5}, "run": {"seed": 1}}))
    env = {"CGAUG_TRAIN__RUN__SEED": "2", "CGAUG_RUN__SEED": "9"}  # the second is the generation tree's
    cfg = load_train_config(path, overrides={"stage1": {"epochs": 3}, "run": {"device": None}}, environ=env)
    assert cfg.preset == "tiny" and cfg.model.tiny  # the file chose the preset
    assert cfg.loss.select_ratio == 0.5 and cfg.run.seed == 2 and cfg.stage1.epochs == 3
    assert cfg.run.device == "auto"  # a None flag does not override
    assert cfg.data.crop_size == tuple(TRAIN_PRESETS["tiny"]["data"]["crop_size"])


def test_unknown_preset_and_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown training preset 'huge'"):
        load_train_config(preset="huge", environ={})
    with pytest.raises(ConfigError, match="select_ration"):
        load_train_config(overrides={"loss": {"select_ration": 0.5}}, environ={})


def test_fingerprint_ignores_device_progress_and_loader_workers():
    base = TrainConfig()
    assert base.fingerprint() == TrainConfig.model_validate(
        {"run": {"device": "cpu", "progress": False}, "data": {"num_workers": 0}}).fingerprint()
    assert base.fingerprint() != TrainConfig.model_validate({"run": {"seed": 1}}).fingerprint()
