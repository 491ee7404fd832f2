"""The evaluation segmenter: the tiny model, checkpoint formats and their errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
smp = pytest.importorskip("segmentation_models_pytorch")

from cgaug.models.segmenter import (  # noqa: E402
    TINY_CONFIG,
    CheckpointError,
    Segmenter,
    build_tiny_segmenter,
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
