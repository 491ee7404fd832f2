"""The one segmenter loader: the tiny model, every checkpoint format, and their errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
smp = pytest.importorskip("segmentation_models_pytorch")

from cgaug.models.hub import ModelNotFound  # noqa: E402
from cgaug.models.segmenters import (  # noqa: E402
    TINY_CONFIG,
    CheckpointError,
    CheckpointNotFound,
    Segmenter,
    build_tiny_segmenter,
    checkpoint_kind,
    load_segmenter,
)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_segmenter()


@pytest.fixture(scope="module")
def batch():
    return torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(0))


def test_tiny_predicts_logits_and_energy_at_any_size(tiny, batch):
    assert isinstance(tiny, Segmenter)
    logits, energy = tiny.predict(batch)
    assert logits.shape == (2, 19, 45, 70) and energy.shape == (2, 45, 70)  # padded to 64x96 inside, cropped back
    expected = -torch.log(torch.exp(logits.double()).sum(dim=1))
    torch.testing.assert_close(energy.double(), expected, rtol=0, atol=1e-5)


def test_tiny_is_reproducible_and_leaves_the_global_rng_alone(tiny, batch):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    other = build_tiny_segmenter()
    assert torch.equal(torch.rand(1), before)
    weights = zip(other.model.state_dict().values(), tiny.model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)  # the same seed builds the same weights
    torch.testing.assert_close(other.predict(batch)[0], tiny.predict(batch)[0], rtol=0, atol=1e-5)
    assert not torch.allclose(build_tiny_segmenter(seed=1).predict(batch)[0], tiny.predict(batch)[0], atol=1e-3)


def test_save_pretrained_directory_and_state_dict_files_round_trip(tmp_path, tiny, batch):
    reference = tiny.predict(batch)[0]
    tiny.model.save_pretrained(tmp_path / "pretrained")
    torch.save(tiny.model.state_dict(), tmp_path / "bare.pt")
    for checkpoint in (tmp_path / "pretrained", tmp_path / "bare.pt", "tiny"):
        loaded = load_segmenter(checkpoint).predict(batch)[0]
        torch.testing.assert_close(loaded, reference, rtol=0, atol=1e-5, msg=str(checkpoint))


def test_pt_with_config_builds_the_named_architecture(tmp_path, batch):
    config = {"arch": "FPN", "encoder_name": "tu-mobilenetv3_small_050", "classes": 19,
              "decoder_segmentation_channels": 32, "decoder_pyramid_channels": 32}
    model = smp.create_model(encoder_weights=None, **config).eval()
    torch.save({"config": config, "state_dict": model.state_dict()}, tmp_path / "fpn.pth")
    loaded = load_segmenter(tmp_path / "fpn.pth")
    assert type(loaded.model).__name__ == "FPN"
    with torch.inference_mode():
        assert loaded.predict(batch)[0].shape == (2, 19, 45, 70)


def test_checkpoint_errors_say_what_is_wrong(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_segmenter(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_segmenter(tmp_path / "empty")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_segmenter(tmp_path / "garbage.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        load_segmenter(tmp_path / "tensor.pt")
    other = smp.create_model("Unet", encoder_name="tu-mobilenetv3_small_050", encoder_weights=None, classes=19,
                             decoder_channels=(32, 16, 8, 8, 8))
    torch.save(other.state_dict(), tmp_path / "unet.pt")
    with pytest.raises(CheckpointError, match=r"do not fit the architecture .*DeepLabV3Plus.*missing key.*unexpected"):
        load_segmenter(tmp_path / "unet.pt")
    state = tiny.model.state_dict()
    head = next(k for k in state if k.startswith("segmentation_head") and k.endswith("weight"))
    state[head] = state[head][:5]
    torch.save(state, tmp_path / "five_classes.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*segmentation_head"):
        load_segmenter(tmp_path / "five_classes.pt")
    torch.save({"config": {"encoder_name": "resnet18"}, "state_dict": {}}, tmp_path / "no_arch.pt")
    with pytest.raises(CheckpointError, match="names no architecture"):
        load_segmenter(tmp_path / "no_arch.pt")
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "config.json").write_text(json.dumps(TINY_CONFIG))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: no such file"):
        load_segmenter(tmp_path / "pretrained")


def test_missing_references_are_not_found_for_every_caller(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFound, match=r"^checkpoint: model\.pt: no such file or directory"):
        load_segmenter("model.pt")  # a relative .pt is a path, never a hub id
    with pytest.raises(CheckpointNotFound, match=r"filters\.segmenter_model 'cgaug-tests/no-such-segmenter'"):
        load_segmenter("cgaug-tests/no-such-segmenter", field="filters.segmenter_model", local_files_only=True)
    assert issubclass(CheckpointNotFound, CheckpointError) and issubclass(CheckpointNotFound, ModelNotFound)


def test_the_kind_comes_from_the_config():
    assert checkpoint_kind(dict(TINY_CONFIG)) == "smp"
    assert checkpoint_kind({"_model_class": "Unet"}) == "smp"
    assert checkpoint_kind({"model_type": "segformer"}) == "transformers"
    assert checkpoint_kind({"model_type": "mask2former"}) == "mask2former"
    assert checkpoint_kind({"kind": "deeplab", "smp": {}}) == "deeplab"


def test_unknown_export_kinds_are_named(tmp_path):
    torch.save({"config": {"kind": "unet3000"}, "state_dict": {}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="'unet3000' is unknown"):
        load_segmenter(tmp_path / "odd.pt")


def test_transformers_directories_load_for_evaluation(tmp_path, batch):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[16, 32], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=5))
    model.save_pretrained(tmp_path / "segformer")
    SegformerImageProcessor(size={"height": 64, "width": 96}, do_reduce_labels=False).save_pretrained(
        tmp_path / "segformer")
    segmenter = load_segmenter(tmp_path / "segformer")
    assert isinstance(segmenter, Segmenter) and segmenter.num_classes == 5
    logits, energy = segmenter.predict(batch)
    assert logits.shape == (2, 5, 16, 24)  # SegFormer predicts at 1/4 of its 64x96 input
    torch.testing.assert_close(energy, -torch.logsumexp(logits, dim=1), rtol=0, atol=1e-5)
    logits, energy = segmenter.predict(batch, size=(45, 70), short_side=32)
    assert logits.shape == (2, 5, 45, 70) and energy.shape == (2, 45, 70)
