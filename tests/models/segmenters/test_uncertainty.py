"""The learnable uncertainty function: u == energy at step 0, stage freezing, checkpoints, exports."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cgaug.config import TrainLossConfig, TrainModelConfig  # noqa: E402
from cgaug.models.segmenters import (  # noqa: E402
    TINY_CONFIG,
    CheckpointError,
    build_tiny_segmenter,
    energy_score,
    load_segmenter,
)
from cgaug.models.segmenters.training import build_train_model  # noqa: E402
from cgaug.models.segmenters.uncertainty import TRAIN_GROUPS, set_trainable, trainable_names  # noqa: E402
from cgaug.tasks.training.losses import training_loss  # noqa: E402

X = torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))


def _labels(n: int = 2) -> torch.Tensor:
    y = torch.randint(0, 19, (n, 64, 128), generator=torch.Generator().manual_seed(1))
    y[:, 20:30, 40:60] = 254
    return y


@pytest.fixture(scope="module")
def deeplab():
    return build_train_model(TrainModelConfig(tiny=True))


@pytest.fixture(scope="module")
def m2f():
    return build_train_model(TrainModelConfig(kind="mask2former", tiny=True))


def test_deeplab_u_equals_the_energy_of_the_logits_before_any_update(deeplab):
    deeplab.eval()
    with torch.no_grad():
        logits, u = deeplab(X)
    assert logits.shape == (2, 19, 64, 128) and u.shape == (2, 64, 128)
    assert torch.allclose(u, energy_score(logits), rtol=0, atol=1e-6)


def test_without_bias_u_is_the_energy_of_the_logits_minus_the_bias():
    model = build_train_model(TrainModelConfig(tiny=True, uncertainty_bias=False)).eval()
    assert model.uncertainty.bias is None
    with torch.no_grad():
        logits, u = model(X)
    bias = model.model.segmentation_head[0].bias.view(1, -1, 1, 1)
    assert torch.allclose(u, energy_score(logits - bias), atol=1e-5)


def test_mask2former_u_is_the_mask2anomaly_score_of_its_own_classifier_at_step_0(m2f):
    m2f.eval()
    with torch.no_grad():
        semantic, u = m2f(X)
    assert semantic.shape == (2, 19, 64, 128)
    assert torch.allclose(u, 1.0 - semantic.max(dim=1).values, rtol=0, atol=1e-6)
    assert torch.equal(m2f.class_embed2.weight, m2f.hf.class_predictor.weight)


@pytest.mark.parametrize("kind", ["deeplab", "mask2former"])
def test_stage_1_only_w_receives_gradients_and_frozen_statistics_stay(kind, deeplab, m2f):
    model = deeplab if kind == "deeplab" else m2f
    params = set_trainable(model, ["uncertainty"])
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad(set_to_none=True)
    logits, u = model(torch.cat([X, X.flip(-1)]))
    y = _labels()
    terms = training_loss(logits[:2], u[:2], y, logits[2:], u[2:], y.flip(-1), TrainLossConfig(betas=(1.0, 1.0)), 19)
    terms.total.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    w_name = "uncertainty" if kind == "deeplab" else "class_embed2"
    assert with_grad and all(name.startswith(w_name) for name in with_grad)
    assert set(trainable_names(model)) == {n for n, _ in model.named_parameters() if n.startswith(w_name)}
    assert len(params) == len(model.groups()["uncertainty"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())  # BN in eval mode
    torch.optim.Adam(params, lr=0.1).step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(w_name) for k in changed)


def test_stage_2_unfreezes_aspp_decoder_and_w_only(deeplab):
    set_trainable(deeplab, ["aspp", "decoder", "uncertainty"])
    names = set(trainable_names(deeplab))
    assert any(n.startswith("model.decoder.aspp") for n in names)
    assert any(n.startswith("model.decoder.block1") for n in names)
    assert not any(n.startswith(("model.encoder", "model.segmentation_head")) for n in names)
    decoder = deeplab.model.decoder
    assert decoder.aspp.training and decoder.block1.training and not deeplab.model.encoder.training


def test_unknown_group_names_the_valid_ones(deeplab):
    with pytest.raises(ValueError, match=r"backbone.*encoder"):
        set_trainable(deeplab, ["backbone"])
    assert TRAIN_GROUPS["deeplab"] == tuple(deeplab.groups())


def test_checkpoint_with_wrong_class_count_is_a_clear_error(tmp_path):
    path = tmp_path / "closed_world.pt"
    torch.save({"config": dict(TINY_CONFIG), "state_dict": build_tiny_segmenter().model.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"closed_world.pt.*19 classes.*num_classes is 21"):
        build_train_model(TrainModelConfig(tiny=True, checkpoint=str(path), num_classes=21))
    model = build_train_model(TrainModelConfig(tiny=True, checkpoint=str(path)))  # the right count loads
    assert torch.equal(model.uncertainty.weight, model.model.segmentation_head[0].weight)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt"):
        build_train_model(TrainModelConfig(checkpoint=str(tmp_path / "nope.pt")))
    with pytest.raises(CheckpointError, match="nope"):
        build_train_model(TrainModelConfig(kind="mask2former", checkpoint=str(tmp_path / "nope")))


def test_mask2former_loads_a_save_pretrained_directory(m2f, tmp_path):
    m2f.hf.save_pretrained(tmp_path / "m2f")
    model = build_train_model(TrainModelConfig(kind="mask2former", checkpoint=str(tmp_path / "m2f"))).eval()
    m2f.eval()
    with torch.no_grad():
        semantic, u = model(X)
        # Two model instances: the same weights, but float rounding may differ with memory layout.
        assert torch.allclose(semantic, m2f(X)[0], rtol=0, atol=1e-5)
        assert torch.allclose(u, 1.0 - semantic.max(dim=1).values, rtol=0, atol=1e-6)
    with pytest.raises(CheckpointError, match="19 classes"):
        build_train_model(TrainModelConfig(kind="mask2former", checkpoint=str(tmp_path / "m2f"), num_classes=7))


def test_a_training_export_loads_for_evaluation_with_u_as_the_score(deeplab, tmp_path):
    with torch.no_grad():
        deeplab.uncertainty.weight.mul_(1.5)  # u no longer equals the energy
    path = tmp_path / "model.pt"
    torch.save({"config": deeplab.export_config(), "state_dict": deeplab.state_dict()}, path)
    segmenter = load_segmenter(path)
    images = torch.rand(1, 3, 64, 128)
    logits, score = segmenter.predict(images)
    deeplab.eval()
    with torch.no_grad():
        mean = torch.tensor(TINY_CONFIG.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        expected_logits, expected_u = deeplab((images - mean) / std)
    assert torch.allclose(score, expected_u, atol=1e-5) and torch.allclose(logits, expected_logits, atol=1e-5)
    assert not torch.allclose(score, energy_score(logits))


def test_mask2former_checkpoints_load_for_evaluation_and_as_training_init(m2f, tmp_path):
    m2f.hf.save_pretrained(tmp_path / "m2f")
    torch.save({"config": m2f.hf.config.to_dict(), "state_dict": m2f.hf.state_dict()}, tmp_path / "m2f.pt")
    m2f.eval()
    images = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(2))
    reference = load_segmenter(tmp_path / "m2f").predict(images)
    semantic, u = load_segmenter(tmp_path / "m2f.pt").predict(images)
    torch.testing.assert_close(semantic, reference[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(u, 1.0 - semantic.max(dim=1).values, rtol=0, atol=1e-5)  # its own classifier's
    with torch.no_grad():
        m2f.class_embed2.weight.mul_(2.0)  # a trained head: the export keeps it as the training start
    export = tmp_path / "export.pt"
    torch.save({"config": m2f.export_config(), "state_dict": m2f.state_dict()}, export)
    resumed = build_train_model(TrainModelConfig(kind="mask2former", checkpoint=str(export)))
    assert torch.equal(resumed.class_embed2.weight, m2f.class_embed2.weight)
    with pytest.raises(CheckpointError, match="expects a Mask2Former checkpoint"):
        build_train_model(TrainModelConfig(kind="mask2former", checkpoint="tiny"))
