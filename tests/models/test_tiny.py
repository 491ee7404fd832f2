"""The tiny offline pipeline: deterministic build, atomic publish, real save/load, real CLIP tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: no 23 s retries

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from cgaug.models import tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny.build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(pipe, seed: int = 7) -> np.ndarray:
    """Two steps at 32x64, batch 2, guidance on: every component (text, UNet, ControlNet, VAE) runs."""
    palette = np.array([[128, 64, 128], [70, 70, 70], [220, 20, 60]], np.float32) / 255.0
    labels = np.random.default_rng(0).integers(0, 3, (2, 32, 64))
    control = torch.from_numpy(palette[labels]).permute(0, 3, 1, 2)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=["a dash cam photo of a road", "a dog on the road"], negative_prompt=["blurry", ""],
               image=control, height=32, width=64, num_inference_steps=2, guidance_scale=7.5,
               generator=[torch.Generator().manual_seed(seed + i) for i in range(2)], output_type="np")
    return out.images


def test_saved_pipeline_reloads_bit_identical_to_in_memory(tiny_dir):
    from diffusers import StableDiffusionControlNetPipeline

    reloaded = StableDiffusionControlNetPipeline.from_pretrained(tiny_dir, local_files_only=True)
    fresh = tiny.tiny_pipeline(seed=0)

    expected, got = _run(fresh), _run(reloaded)
    assert got.shape == (2, 32, 64, 3)
    assert np.array_equal(expected, got)
    assert not any(m.training for m in (fresh.unet, fresh.controlnet, fresh.vae, fresh.text_encoder))


def test_building_twice_gives_identical_files(tiny_dir, tmp_path):
    again = tiny.build_tiny_pipeline(tmp_path / "again")

    first, second = _files(tiny_dir), _files(again)
    assert any(name.endswith(".safetensors") for name in first)
    assert first == second


def test_seed_changes_weights_but_not_architecture(tmp_path):
    other = tiny.tiny_pipeline(seed=1).unet.state_dict()
    base = tiny.tiny_pipeline(seed=0).unet.state_dict()

    assert other.keys() == base.keys()
    assert not torch.equal(other["conv_in.weight"], base["conv_in.weight"])


def test_controlnet_output_convolutions_are_not_zero():
    """A zero-initialised ControlNet would make the conditioning map irrelevant to the output."""
    controlnet = tiny.tiny_pipeline().controlnet

    assert controlnet.controlnet_mid_block.weight.abs().sum() > 0
    assert all(block.weight.abs().sum() > 0 for block in controlnet.controlnet_down_blocks)


@pytest.mark.parametrize("text", [
    "An image sampled from various stereo video sequences taken by dash cam in Zürich in a snowy night.",
    "There is a dog and a box accidentally staying on the road., best quality, extremely detailed",
    "don't  STOP!!  café—naïve ☃ 東京 1234567",
    "",
])
def test_tokenizer_ids_match_open_clip(text):
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()
    expected = [reference.sot_token_id, *reference.encode(text), reference.eot_token_id]

    assert tiny.clip_tokenizer()(text)["input_ids"] == expected


def test_tokenizer_has_clip_vocabulary_and_length():
    tok = tiny.clip_tokenizer()

    assert len(tok) == tiny.CLIP_VOCAB_SIZE
    assert tok.model_max_length == 77
    assert tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]


def test_tiny_model_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tiny.tiny_model_dir() == tmp_path / "xdg" / "cgaug" / "models" / "tiny"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tiny.tiny_model_dir() == tmp_path / "home" / ".cache" / "cgaug" / "models" / "tiny"


def test_ensure_tiny_model_builds_once(monkeypatch, tmp_path, tiny_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    path = tiny.ensure_tiny_model()
    assert path == tmp_path / "cgaug" / "models" / "tiny"
    assert _files(path) == _files(tiny_dir)

    def no_rebuild(seed: int = 0):
        raise AssertionError("an existing pipeline must not be rebuilt")

    monkeypatch.setattr(tiny, "tiny_pipeline", no_rebuild)
    assert tiny.ensure_tiny_model() == path


def test_losing_a_build_race_keeps_the_winner_and_leaves_no_temp(monkeypatch, tmp_path, tiny_dir):
    """Another process publishes `dest` while we build: our rename fails, theirs stays, our temp goes."""
    import shutil

    dest = tmp_path / "models" / "tiny"
    build = tiny.tiny_pipeline

    def build_while_another_process_publishes(seed: int = 0):
        shutil.copytree(tiny_dir, dest)
        (dest / "winner").write_text("the other process")
        return build(seed)

    monkeypatch.setattr(tiny, "tiny_pipeline", build_while_another_process_publishes)

    assert tiny.build_tiny_pipeline(dest) == dest
    assert (dest / "winner").read_text() == "the other process"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny"]


def test_publishing_into_an_empty_directory_works(tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()

    assert tiny.is_pipeline_dir(tiny.build_tiny_pipeline(dest))


def test_destination_with_other_content_is_refused(tmp_path):
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")

    with pytest.raises(FileExistsError, match="occupied"):
        tiny.build_tiny_pipeline(dest)
    assert (dest / "notes.txt").read_text() == "mine"


def test_count_parameters_matches_the_modules(tiny_dir):
    pipe = tiny.tiny_pipeline()
    modules = (pipe.unet, pipe.controlnet, pipe.vae, pipe.text_encoder)
    expected = sum(p.numel() for m in modules for p in m.parameters())

    assert tiny.count_parameters(tiny_dir) == expected
    assert 3_000_000 < expected < 5_000_000  # the "about 3.7 M parameters" recipe, not a full-size model


def test_cli_tiny_writes_the_pipeline(tmp_path):
    from typer.testing import CliRunner

    from cgaug.cli.models import app

    dest = tmp_path / "cli-tiny"
    result = CliRunner().invoke(app, ["tiny", str(dest)])

    assert result.exit_code == 0, result.output
    assert tiny.is_pipeline_dir(dest)
    assert str(dest.resolve()) in result.output
    assert f"{tiny.count_parameters(dest):,} parameters" in result.output


# ---------------------------------------------------------------- the tiny photo ControlNet


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    return tiny.build_tiny_photo_controlnet(tmp_path_factory.mktemp("tiny-photo") / "controlnet")


def test_photo_controlnet_is_deterministic_loadable_and_differs_from_the_seg_one(photo_dir, tmp_path):
    from diffusers import ControlNetModel

    again = tiny.build_tiny_photo_controlnet(tmp_path / "again")
    assert tiny.is_model_dir(photo_dir) and _files(photo_dir) == _files(again)

    loaded = ControlNetModel.from_pretrained(photo_dir, local_files_only=True)
    fresh = tiny.tiny_photo_controlnet(seed=0)
    seg = tiny.tiny_pipeline(seed=0).controlnet
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), fresh.state_dict().values(),
                                                 strict=True))
    assert loaded.state_dict().keys() == seg.state_dict().keys()
    assert not torch.equal(fresh.controlnet_mid_block.weight, seg.controlnet_mid_block.weight)
    assert fresh.controlnet_mid_block.weight.abs().sum() > 0 and not fresh.training


def test_ensure_photo_controlnet_lives_next_to_the_tiny_pipeline(monkeypatch, tmp_path, photo_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    path = tiny.ensure_tiny_photo_controlnet()

    assert path == tmp_path / "cgaug" / "models" / "tiny-photo-controlnet"
    assert _files(path) == _files(photo_dir)


def test_photo_controlnet_destination_with_other_content_is_refused(tmp_path):
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")

    with pytest.raises(FileExistsError, match=r"config\.json"):
        tiny.build_tiny_photo_controlnet(dest)


# ---------------------------------------------------------------- full-size SD1.5 configs


def test_full_size_configs_build_the_published_architectures():
    """The published parameter counts: SD1.5 UNet 859.52 M, CLIP ViT-L/14 text 123.06 M, VAE 83.65 M."""
    from cgaug.models.configs import component_config, count_module_parameters, random_components

    parts = random_components("meta")
    counts = {name: count_module_parameters(parts[name])
              for name in ("unet", "controlnet", "vae", "text_encoder")}

    assert counts == {"unet": 859_520_964, "controlnet": 361_279_120, "vae": 83_653_863,
                      "text_encoder": 123_060_480}
    unet = component_config("unet")
    assert (unet["cross_attention_dim"], unet["attention_head_dim"], unet["layers_per_block"]) == (768, 8, 2)
    scheduler = parts["scheduler"].config
    assert (scheduler.beta_schedule, scheduler.steps_offset) == ("scaled_linear", 1)
    assert scheduler.clip_sample is False  # DDIM's default is True: the SD1.5 config must switch it off


def test_seg_controlnet_config_is_the_controlnet_derived_from_the_unet():
    """The JSON must describe what `ControlNetModel.from_unet` makes of the SD1.5 UNet (same tensors)."""
    import torch as th
    from diffusers import ControlNetModel

    from cgaug.models.configs import random_components

    parts = random_components("meta")
    with th.device("meta"):
        derived = ControlNetModel.from_unet(parts["unet"], load_weights_from_unet=False,
                                            conditioning_embedding_out_channels=(16, 32, 96, 256))

    expected = {k: tuple(v.shape) for k, v in derived.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in parts["controlnet"].state_dict().items()} == expected


def test_unknown_config_component_is_refused():
    from cgaug.models.configs import component_config

    with pytest.raises(ValueError, match="'refiner'"):
        component_config("refiner")
