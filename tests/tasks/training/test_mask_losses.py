"""Mask2Former stage 2: its own class / mask / dice losses, clean points on augmented images, the optimizer."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

from cgaug.config import TrainLossConfig, TrainModelConfig, load_train_config  # noqa: E402
from cgaug.models.segmenters.training import build_train_model  # noqa: E402
from cgaug.models.segmenters.uncertainty import set_trainable  # noqa: E402
from cgaug.tasks.training.loop import StepRunner, param_groups  # noqa: E402
from cgaug.tasks.training.losses import (  # noqa: E402
    _clean_points,
    mask2former_losses,
    mask_targets,
    uncertainty_loss,
)

X = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _labels() -> torch.Tensor:
    y = torch.zeros(4, 64, 64, dtype=torch.long)
    y[:, :, 32:] = 13  # road left, car right
    y[:, 40:, :8] = 255  # void
    y[:, 10:20, 10:20] = 254  # OOD
    y[1, :, :] = 255  # an image without any class
    return y


@pytest.fixture(scope="module")
def m2f():
    return build_train_model(TrainModelConfig(kind="mask2former", tiny=True))


def test_targets_are_one_mask_per_present_class_without_void_and_ood():
    y = torch.tensor([[[0, 0, 254], [13, 255, 13]]])
    classes, masks = mask_targets(y, 19)
    assert classes[0].tolist() == [0, 13]
    assert masks[0].tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [1, 0, 1]]]  # 254 and 255 in no mask
    classes, masks = mask_targets(torch.full((1, 2, 2), 255), 19)
    assert classes[0].numel() == 0 and masks[0].shape == (0, 2, 2)


def _grads(model, loss) -> set[str]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)], ids=["class", "mask", "dice"])
def test_each_mask2former_loss_and_l_unc_give_gradients_in_a_stage_2_step(m2f, weights):
    set_trainable(m2f, list(m2f.groups()), "train", ["backbone"])
    y = _labels()
    _, _, queries = m2f.forward_with_queries(X)
    cfg = TrainLossConfig(mask_weights=weights, margins=(0.7, 0.5, 0.2), betas=(0.0, 0.0))
    loss, parts = mask2former_losses(queries, y[:2], y[2:], cfg, 19, 64, torch.Generator().manual_seed(0))
    name = {0: "m2f_class", 1: "m2f_mask", 2: "m2f_dice"}[weights.index(1.0)]
    assert parts[name] > 0 and float(loss.detach()) == pytest.approx(parts[name], rel=1e-5)
    grads = _grads(m2f, loss)
    assert any(n.startswith("hf.model.transformer_module") for n in grads)
    if name == "m2f_class":
        assert any(n.startswith("hf.class_predictor") for n in grads)
    else:  # masks come from the pixel decoder's mask features and the queries
        assert any(n.startswith("hf.model.pixel_level_module.decoder") for n in grads)
    assert not any(n.startswith("class_embed2") for n in grads)  # the anomaly head is L_unc's alone


def test_l_unc_alone_reaches_the_anomaly_head_in_stage_2(m2f):
    set_trainable(m2f, list(m2f.groups()), "train", ["backbone"])
    y = _labels()
    _, u, _ = m2f.forward_with_queries(X)
    loss, _ = uncertainty_loss(u[:2], u[2:], y[:2], y[2:], TrainLossConfig(margins=(0.7, 0.5, 0.2)), 19,
                                   torch.Generator().manual_seed(0))
    assert float(loss.detach()) > 0
    assert any(n.startswith("class_embed2") for n in _grads(m2f, loss))


def test_clean_points_leave_out_the_pixels_that_contradict_their_mask():
    # The model says "inside" everywhere; the label agrees on the left 80 % only (x < 0.8), the rest is noise.
    pred = torch.full((1, 1, 32, 32), 6.0)
    target = torch.zeros(1, 1, 32, 32)
    target[..., :26] = 1.0
    coords = _clean_points(pred, target, 2000, 0.8, torch.Generator().manual_seed(0))
    assert coords.shape == (1, 2000, 2)
    noisy = float((coords[0, :, 0] > 27 / 32).float().mean())
    assert noisy < 0.03  # uniform points would put about 16 % there; only the 5 % random share may land there


def test_mask_selection_none_samples_augmented_masks_uniformly(m2f):
    y = _labels()
    with torch.no_grad():
        _, _, queries = m2f.forward_with_queries(X)
    cfg = TrainLossConfig(mask_selection="none")
    loss, parts = mask2former_losses(queries, y[:2], y[2:], cfg, 19, 64, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and parts["m2f_mask"] > 0


def test_the_mask2former_preset_carries_the_reference_numbers():
    cfg = load_train_config(preset="mask2former", environ={})
    assert (cfg.stage1.epochs, cfg.stage1.lr, cfg.stage1.weight_decay, cfg.stage1.optimizer) == (4, 1e-4, 1e-4, "adam")
    assert cfg.stage1.trainable == ["uncertainty"] and cfg.stage1.eval_groups == ["backbone"]
    s2 = cfg.stage2
    assert (s2.epochs, s2.lr, s2.weight_decay, s2.optimizer, s2.grad_clip) == (45, 1e-5, 0.05, "adamw", 0.01)
    assert s2.lr_multipliers == {"backbone": 0.1} and s2.norm_weight_decay == 0.0 and s2.mask_losses
    assert set(s2.trainable) == {"backbone", "pixel_decoder", "transformer_decoder", "classifier", "uncertainty"}
    assert cfg.loss.mask_weights == (5.0, 10.0, 10.0) and cfg.loss.no_object_weight == 0.1
    assert cfg.loss.betas == (0.0, 0.0) and cfg.loss.margins == (0.7, 0.5, 0.2)
    assert cfg.data.crop_size == (700, 700) and cfg.run.grad_clip is None and not cfg.run.amp
    assert cfg.data.augmentations == ["color", "blur", "sharpness", "autocontrast", "equalize", "resize", "rotate",
                                      "hflip", "vflip"] and cfg.data.augment_probability == 0.5


def test_stage_2_optimizer_groups_lr_multipliers_weight_decay_and_clipping(m2f):
    cfg = load_train_config(preset="mask2former", overrides={"model": {"tiny": True}}, environ={})
    set_trainable(m2f, cfg.stage2.trainable, "train", cfg.stage2.eval_groups)
    groups = param_groups(m2f, cfg.stage2)
    backbone = {id(p) for p in m2f.groups()["backbone"]}
    for group in groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1
        assert group["lr"] == pytest.approx(1e-6 if in_backbone.pop() else 1e-5)
    kinds = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d, torch.nn.Embedding)
    norm_ids = {id(p) for m in m2f.modules() if isinstance(m, kinds) for p in m.parameters(recurse=False)}
    norm_ids |= {id(p) for n, p in m2f.named_parameters() if "relative_position_bias_table" in n}
    assert norm_ids
    for group in groups:
        assert group["weight_decay"] == (0.0 if id(group["params"][0]) in norm_ids else 0.05)
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in m2f.parameters())  # every parameter, each once
    runner = StepRunner(m2f, cfg, 2, torch.device("cpu"), steps_per_epoch=1)
    assert isinstance(runner.optimizer, torch.optim.AdamW) and runner.grad_clip == 0.01
    assert not m2f.hf.model.pixel_level_module.encoder.training and m2f.hf.model.transformer_module.training
    assert StepRunner(m2f, cfg, 1, torch.device("cpu"), steps_per_epoch=1).grad_clip is None
    with pytest.raises(ValueError, match=r"lr_multipliers.*encoder"):
        param_groups(m2f, cfg.stage2.model_copy(update={"lr_multipliers": {"encoder": 0.1}}))


def test_a_stage_2_step_reports_the_mask2former_losses(m2f):
    cfg = load_train_config(preset="mask2former", overrides={"model": {"tiny": True}, "loss": {"mask_points": 64}},
                            environ={})
    y = _labels()
    batch = {"image": X[:2], "aug_image": X[2:], "label": y[:2], "aug_label": y[2:]}
    runner = StepRunner(m2f, cfg, 2, torch.device("cpu"), steps_per_epoch=1)
    before = m2f.hf.class_predictor.weight.detach().clone()
    parts = runner.step(batch, torch.Generator().manual_seed(0))
    assert all(parts[k] > 0 for k in ("m2f_class", "m2f_mask", "m2f_dice", "unc"))
    assert not torch.equal(before, m2f.hf.class_predictor.weight)
    deeplab = build_train_model(TrainModelConfig(tiny=True))
    with pytest.raises(ValueError, match=r"mask_losses.*mask2former"):
        StepRunner(deeplab, cfg.model_copy(update={"stage2": cfg.stage2.model_copy(
            update={"trainable": ["uncertainty"], "lr_multipliers": {}, "eval_groups": []})}), 2,
            torch.device("cpu"), steps_per_epoch=1)
