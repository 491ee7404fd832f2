"""The experiment's protocol: the recipes differ where the method says, and only there."""

from __future__ import annotations

import pytest

from cgaug.config import TrainConfig
from cgaug.labels import default_ood_classes
from cgaug.tasks.experiment.protocol import MiniProtocol, generation_config, method_config, protocol_for
from cgaug.tasks.experiment.world import unseen_ood_classes


def _flat(cfg: TrainConfig) -> dict:
    out = {}
    for section, values in cfg.model_dump(mode="json").items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            out[section] = values
    return out


def test_b_and_c_differ_only_in_the_augmented_images():
    protocol = MiniProtocol()
    b, c = (_flat(method_config(protocol, m, 1, "closed.pt")) for m in "BC")
    assert {k for k in b if b[k] != c[k]} == {"data.augmented"}
    assert (b["data.augmented"], c["data.augmented"]) == ("originals", "shards")
    assert b["data.anomaly_mix"] and b["model.checkpoint"] == "closed.pt"
    assert b["stage1.trainable"] == ["uncertainty"] and "uncertainty" in b["stage2.trainable"]


def test_a_is_cross_entropy_on_originals_without_objects_or_uncertainty():
    a = method_config(MiniProtocol(), "A", 0)
    assert a.data.augmented == "originals" and not a.data.anomaly_mix
    assert a.loss.betas == (1.0, 0.0)
    assert a.stage1.epochs == 0 and "uncertainty" not in a.stage2.trainable
    assert a.model.checkpoint is None and a.model.tiny


def test_the_seed_reaches_training_and_fine_tuning_needs_the_closed_model():
    assert method_config(MiniProtocol(), "A", 7).run.seed == 7
    with pytest.raises(ValueError, match="closed-world"):
        method_config(MiniProtocol(), "C", 0)


def test_the_two_test_sets_differ_by_prompt_domain_only():
    shifted = generation_config("shifted", 5).model_dump(mode="json")
    clear = generation_config("clear", 5).model_dump(mode="json")
    assert shifted["prompts"].pop("domain_probability") == 1.0
    assert clear["prompts"].pop("domain_probability") == 0.0
    assert shifted == clear
    assert generation_config("train", variants=2).run.variants == 2
    assert generation_config("train").compose.ood_classes == "train"
    assert {generation_config(k).generator.model for k in ("train", "shifted", "clear")} == {"painter"}


def test_unseen_classes_are_never_training_classes():
    classes = unseen_ood_classes(8)
    assert len(set(classes)) == 8
    assert not set(classes) & set(default_ood_classes())


def test_steps_presets_with_explicit_options_on_top():
    small = protocol_for("small", seeds=[3, 4], train_scenes=None)
    assert small.seeds == [3, 4] and small.train_scenes == 40
    assert protocol_for("full").seeds == [0, 1, 2]


def test_cli_seeds_count_or_list_and_the_command_is_registered():
    from typer.testing import CliRunner

    from cgaug.cli import app
    from cgaug.cli.experiment import _seeds

    assert _seeds("3") == [0, 1, 2] and _seeds("0,5,7") == [0, 5, 7] and _seeds(None) is None
    result = CliRunner().invoke(app, ["experiment", "mini", "--help"])
    assert result.exit_code == 0 and "--seeds" in result.output and "--steps" in result.output
    refused = CliRunner().invoke(app, ["experiment", "mini", "--steps", "huge"])
    assert refused.exit_code != 0 and "huge" in refused.output
