"""The reference's WideResNet38 DeepLabV3+: the published key list, strict loading, u at step 0, stage groups."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cgaug.config import TrainModelConfig, load_train_config  # noqa: E402
from cgaug.models.segmenters import CheckpointError, energy_score, load_segmenter  # noqa: E402
from cgaug.models.segmenters.training import build_train_model  # noqa: E402
from cgaug.models.segmenters.uncertainty import WRN38Uncertainty, set_trainable, trainable_names  # noqa: E402
from cgaug.models.segmenters.wrn38 import TINY_WRN38, DeepWV3Plus, is_wrn38_state, upsample  # noqa: E402

X = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def published_keys(classes: int = 19) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of NVIDIA's DeepWV3Plus(19), written out from its description:
    WideResNet38-A2 modules mod2-mod7 with [3, 3, 6, 3, 1, 1] pre-activation blocks of channels (128, 128),
    (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096); ASPP 4096 -> 5 x 256;
    bot_fine 128 -> 48; bot_aspp 1280 -> 256; final 304 -> 256 -> 256 -> classes."""
    keys: dict[str, tuple[int, ...]] = {"mod1.conv1.weight": (64, 3, 3, 3)}

    def bn(prefix: str, channels: int) -> None:
        for name in BN:
            keys[f"{prefix}.{name}"] = () if name == "num_batches_tracked" else (channels,)

    blocks = [3, 3, 6, 3, 1, 1]
    widths = [(128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096)]
    cin = 64
    for mod, (count, width) in enumerate(zip(blocks, widths, strict=True), start=2):
        for b in range(1, count + 1):
            p = f"mod{mod}.block{b}"
            bn(f"{p}.bn1.0", cin)
            if len(width) == 2:
                keys[f"{p}.convs.conv1.weight"] = (width[0], cin, 3, 3)
                bn(f"{p}.convs.bn2.0", width[0])
                keys[f"{p}.convs.conv2.weight"] = (width[1], width[0], 3, 3)
            else:
                keys[f"{p}.convs.conv1.weight"] = (width[0], cin, 1, 1)
                bn(f"{p}.convs.bn2.0", width[0])
                keys[f"{p}.convs.conv2.weight"] = (width[1], width[0], 3, 3)
                bn(f"{p}.convs.bn3.0", width[1])
                keys[f"{p}.convs.conv3.weight"] = (width[2], width[1], 1, 1)
            if b == 1:  # the channels change at every module's first block
                keys[f"{p}.proj_conv.weight"] = (width[-1], cin, 1, 1)
            cin = width[-1]
    for i in range(4):
        keys[f"aspp.features.{i}.0.weight"] = (256, 4096, 1, 1) if i == 0 else (256, 4096, 3, 3)
        bn(f"aspp.features.{i}.1", 256)
    keys["aspp.img_conv.0.weight"] = (256, 4096, 1, 1)
    bn("aspp.img_conv.1", 256)
    keys["bot_fine.weight"] = (48, 128, 1, 1)
    keys["bot_aspp.weight"] = (256, 1280, 1, 1)
    keys["final.0.weight"] = (256, 304, 3, 3)
    bn("final.1", 256)
    keys["final.3.weight"] = (256, 256, 3, 3)
    bn("final.4", 256)
    keys["final.6.weight"] = (classes, 256, 1, 1)
    return keys


def test_the_full_network_has_exactly_the_published_names_and_shapes():
    with torch.device("meta"):
        model = DeepWV3Plus()
    found = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = published_keys()
    assert sorted(set(found) ^ set(expected)) == []
    assert {k: v for k, v in found.items() if expected[k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(137.1e6, rel=1e-3)
    assert is_wrn38_state({f"module.{k}": None for k in found})


@pytest.fixture(scope="module")
def tiny_net() -> DeepWV3Plus:
    torch.manual_seed(0)
    net = DeepWV3Plus(TINY_WRN38).eval()
    with torch.no_grad():  # non-trivial statistics, so a wrong BN mapping would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def _published(net: DeepWV3Plus, tmp_path, **extra) -> str:
    """Saved the way NVIDIA's trainer saves it: a DataParallel state dict inside {"state_dict": ...}."""
    path = tmp_path / "DeepLabV3+_WideResNet38_baseline.pth"
    state = {f"module.{k}": v for k, v in net.state_dict().items()} | extra
    torch.save({"state_dict": state, "epoch": 175, "mean_iu": 0.8}, path)
    return str(path)


def test_the_published_checkpoint_format_loads_strictly_for_evaluation(tiny_net, tmp_path):
    segmenter = load_segmenter(_published(tiny_net, tmp_path))
    assert segmenter.num_classes == 19 and segmenter.config["kind"] == "wrn38"
    images = torch.rand(1, 3, 40, 64, generator=torch.Generator().manual_seed(1))
    logits, score = segmenter.predict(images)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tiny_net((images - mean) / std)  # ImageNet normalisation, as the reference feeds it
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(score, energy_score(logits))
    assert segmenter.predict(images[..., :60])[1].shape == (1, 40, 60)  # other sizes are padded to a multiple of 8


def test_a_bare_state_dict_without_batch_counters_loads_too(tiny_net, tmp_path):
    state = {k: v for k, v in tiny_net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "bare.pth"
    torch.save(state, path)
    assert load_segmenter(path).config["kind"] == "wrn38"


def test_extra_or_missing_weights_are_errors(tiny_net, tmp_path):
    with pytest.raises(CheckpointError, match="unexpected key"):
        load_segmenter(_published(tiny_net, tmp_path, **{"module.extra.weight": torch.zeros(1)}))
    state = {k: v for k, v in tiny_net.state_dict().items() if not k.startswith("final.4")}
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="missing key"):
        load_segmenter(tmp_path / "broken.pth")


def test_the_deeplab_preset_detects_the_checkpoint_and_u_is_the_energy_at_step_0(tiny_net, tmp_path):
    path = _published(tiny_net, tmp_path)
    cfg = load_train_config(preset="deeplab", overrides={"model": {"checkpoint": path}}, environ={})
    model = build_train_model(cfg.model)
    assert isinstance(model, WRN38Uncertainty) and model.uncertainty.bias is None  # the classifier has none
    assert torch.equal(model.uncertainty.weight, model.model.final[6].weight)
    model.eval()
    with torch.no_grad():
        logits, u = model(X)
        low = model.model.final[6](model.model.features(X))
    torch.testing.assert_close(logits, tiny_net(X))  # the closed-world logits are untouched
    # the reference's order: energy at feature resolution, then upsampled
    torch.testing.assert_close(u, upsample(energy_score(low)[:, None], X.shape[2:])[:, 0])
    assert build_train_model(TrainModelConfig(kind="deeplab_wrn38", checkpoint=path)).kind == "deeplab_wrn38"
    with pytest.raises(CheckpointError, match=r"deeplab_wrn38.*WideResNet38"):
        build_train_model(TrainModelConfig(kind="deeplab_wrn38", checkpoint="tiny"))


def test_a_training_export_loads_for_evaluation_with_u_as_the_score(tmp_path):
    model = build_train_model(TrainModelConfig(kind="deeplab_wrn38", tiny=True))
    with torch.no_grad():
        model.uncertainty.weight.mul_(1.5)
    torch.save({"config": model.export_config(), "state_dict": model.state_dict()}, tmp_path / "model.pt")
    segmenter = load_segmenter(tmp_path / "model.pt")
    images = torch.rand(1, 3, 32, 48)
    _, score = segmenter.predict(images)
    model.eval()
    with torch.no_grad():
        mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        _, expected = model((images - mean) / std)
    torch.testing.assert_close(score, expected, atol=1e-5, rtol=0)
    resumed = build_train_model(TrainModelConfig(checkpoint=str(tmp_path / "model.pt")))
    assert torch.equal(resumed.uncertainty.weight, model.uncertainty.weight)


REFERENCE_STAGE_2 = ("aspp", "bot_fine", "bot_aspp", "ood_head")  # exps/DeepLab.yaml trainable_params_name_update


def test_stage_2_trains_exactly_the_reference_parameters():
    model = build_train_model(TrainModelConfig(kind="deeplab_wrn38", tiny=True))
    cfg = load_train_config(preset="deeplab", environ={})
    set_trainable(model, cfg.stage2.trainable, cfg.stage2.frozen_mode)
    # the reference's rule on its own names: a parameter trains when its name contains one of the strings
    reference_names = {n: n.removeprefix("model.").replace("uncertainty.", "ood_head.")
                       for n, _ in model.named_parameters()}
    expected = {n for n, ref in reference_names.items() if any(s in ref for s in REFERENCE_STAGE_2)}
    assert set(trainable_names(model)) == expected
    assert {"model.bot_fine.weight", "model.bot_aspp.weight", "uncertainty.weight"} <= expected
    assert not any(n.startswith(("model.final", "model.mod")) for n in expected)
    assert model.training and model.model.mod1.training  # the reference's model.train(): frozen parts too
    set_trainable(model, [*cfg.stage2.trainable, "final"])  # the option: also the 3x3 block before the classifier
    assert any(n.startswith("model.final.0") for n in trainable_names(model))
    assert not any(n.startswith("model.final.6") for n in trainable_names(model))
