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


def test_the_deeplab_preset_is_the_reference_recipe():
    cfg = load_train_config(preset="deeplab", environ={})
    assert cfg.data.crop_size == (700, 700) and cfg.data.flip_probability == 0.0 and cfg.data.augmentations == []
    assert not cfg.run.amp and cfg.run.grad_clip is None
    assert (cfg.stage1.epochs, cfg.stage1.lr, cfg.stage2.epochs, cfg.stage2.lr) == (9, 1e-4, 40, 1e-6)
    assert cfg.stage2.trainable == ["aspp", "bottleneck", "uncertainty"] and cfg.stage2.frozen_mode == "train"
    loss = cfg.loss
    assert (loss.sample_ratio, loss.sample_base, loss.pairing, loss.shared_ood, loss.pair_term) == (
        1.0, "batch", "sampled", True, "all")
    assert loss.select_rounding == "floor" and loss.betas == (50.0, 10.0) and loss.margins == (10.0, 5.0, 5.0)
    assert TrainConfig().model_dump() == cfg.model_dump()  # the field defaults are the deeplab preset's


def test_new_options_change_the_fingerprint():
    base = TrainConfig()
    for section, key, value in (("loss", "shared_ood", False), ("stage2", "frozen_mode", "eval"),
                                ("loss", "select_rounding", "ceil"), ("data", "augmentations", ["rotate"])):
        data = base.model_dump(mode="json")
        data[section][key] = value
        assert TrainConfig.model_validate(data).fingerprint() != base.fingerprint(), key
