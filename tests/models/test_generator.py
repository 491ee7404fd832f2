"""Loading the generator and generating: sizes, nearest resize, per-sample seeds, batching, missing models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: no 23 s retries

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from cgaug.config import CGAugConfig, GeneratorConfig  # noqa: E402
from cgaug.models import generator as gen  # noqa: E402
from cgaug.models.tiny import build_tiny_pipeline  # noqa: E402
from cgaug.storage.schema import SHARD_SCHEMA  # noqa: E402

PALETTE = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [220, 20, 60], [0, 0, 142], [255, 0, 255]],
                   np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _fresh_pipeline_cache():
    """Pipelines cached by this module's tests must not leak into other modules."""
    yield
    gen.clear_pipeline_cache()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-gen") / "pipe")


@pytest.fixture(scope="module")
def cfg(tiny_dir) -> GeneratorConfig:
    """The tiny model's settings (as `model: tiny` gets them) from a local directory, on the CPU, generating
    at 32x64 (a quarter of the tiny default's pixels) to keep each test well under a second per call."""
    return GeneratorConfig(model=str(tiny_dir), controlnet=None, local_files_only=True, steps=2,
                           short_side=32, batch_size=4, device="cpu")


@pytest.fixture(scope="module")
def pipe(cfg):
    return gen.load_pipeline(cfg)


def _labels(n: int, height: int = 48, width: int = 96, seed: int = 0) -> list[np.ndarray]:
    """Blocky colour maps (8x8 cells) like label maps: regions of one palette colour each.

    48x96 is generated at 32x64 and resized back, so both resizes run in every test."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, len(PALETTE), (n, height // 8, width // 8))
    return [PALETTE[np.kron(c, np.ones((8, 8), int))] for c in cells]


def _texts(n: int) -> tuple[list[str], list[str]]:
    return [f"a dash cam photo of a road, object {i}" for i in range(n)], ["blurry"] * n


# ---------------------------------------------------------------- sizes and resizing


@pytest.mark.parametrize(("size", "short_side", "multiple", "expected"), [
    ((1024, 2048), 512, 8, (512, 1024)),
    ((256, 512), 64, 8, (64, 128)),
    ((2048, 1024), 512, 8, (1024, 512)),  # portrait: the width is the short side
    ((1000, 1500), 512, 8, (512, 768)),
    ((1024, 2020), 512, 8, (512, 1008)),  # 1010 -> nearest multiple of 8
    ((37, 100), 20, 8, (24, 56)),  # 20 -> 24 (2.5 rounds up), 54.05 -> 56
    ((512, 512), 8, 64, (64, 64)),  # never below one multiple
])
def test_generation_size_by_hand(size, short_side, multiple, expected):
    cfg = GeneratorConfig(short_side=short_side, size_multiple=multiple)

    assert gen.generation_size(*size, cfg) == expected


def test_generation_size_rejects_empty_labels():
    with pytest.raises(ValueError, match="0x64"):
        gen.generation_size(0, 64, GeneratorConfig())


def test_nearest_resize_keeps_only_palette_colours():
    rng = np.random.default_rng(1)
    label = PALETTE[rng.integers(0, len(PALETTE), (37, 53))]
    palette = {tuple(c) for c in PALETTE}

    for height, width in [(64, 128), (16, 24), (100, 30)]:
        resized = gen.resize_nearest(label, height, width)
        assert resized.shape == (height, width, 3)
        assert {tuple(c) for c in resized.reshape(-1, 3)} <= palette


def test_nearest_resize_doubling_repeats_pixels():
    label = PALETTE[np.random.default_rng(2).integers(0, len(PALETTE), (5, 7))]

    expected = np.repeat(np.repeat(label, 2, axis=0), 2, axis=1)
    assert np.array_equal(gen.resize_nearest(label, 10, 14), expected)


# ---------------------------------------------------------------- device, dtype, settings


def test_cpu_resolves_to_fp32_and_explicit_dtype_wins():
    assert gen.resolve_device(GeneratorConfig(device="cpu")) == "cpu"
    assert gen.resolve_dtype(GeneratorConfig(device="cpu")) == torch.float32
    assert gen.resolve_dtype(GeneratorConfig(device="cpu", dtype="bf16")) == torch.bfloat16
    if not torch.cuda.is_available():
        assert gen.resolve_device(GeneratorConfig()) == "cpu"
        assert gen.resolve_dtype_name(GeneratorConfig()) == "fp32"


def test_invalid_device_names_the_field():
    with pytest.raises(ValueError, match=r"generator\.device"):
        gen.resolve_device(GeneratorConfig(device="warp-drive"))


def test_generator_settings_fill_the_shard_columns():
    cfg = CGAugConfig.model_validate({"generator": {"model": "tiny", "device": "cpu", "eta": 0.5}}).generator

    settings = gen.generator_settings(cfg, (64, 128))

    assert set(settings) <= set(SHARD_SCHEMA.names)
    assert settings == {
        "generator_model": "tiny", "generator_controlnet": None, "generator_revision": None,
        "scheduler": "unipc", "steps": 2, "guidance_scale": 9.0, "control_scale": 1.0, "eta": 0.5,
        "dtype": "fp32", "gen_height": 64, "gen_width": 128,
    }


# ---------------------------------------------------------------- loading


def test_pipeline_is_loaded_once_and_schedulers_share_weights(cfg, pipe):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    assert gen.load_pipeline(cfg) is pipe
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert pipe._progress_bar_config == {"disable": True}

    ddim = gen.load_pipeline(cfg.model_copy(update={"scheduler": "ddim"}))
    dpmpp = gen.load_pipeline(cfg.model_copy(update={"scheduler": "dpmpp"}))
    assert isinstance(ddim.scheduler, DDIMScheduler)
    assert isinstance(dpmpp.scheduler, DPMSolverMultistepScheduler)
    assert dpmpp.scheduler.config.algorithm_type == "dpmsolver++"
    assert ddim.scheduler.config.beta_schedule == "scaled_linear"
    assert ddim.unet is pipe.unet and dpmpp.controlnet is pipe.controlnet
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)  # the first caller's scheduler is untouched


def test_tiny_model_name_loads_from_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = CGAugConfig.model_validate({"generator": {"model": "tiny", "device": "cpu"}}).generator

    pipe = gen.load_pipeline(cfg)

    assert (tmp_path / "cgaug" / "models" / "tiny" / "model_index.json").is_file()
    assert pipe.controlnet is not None and pipe.safety_checker is None


def test_separate_controlnet_directory_gives_the_same_images(cfg, pipe, tiny_dir):
    split = cfg.model_copy(update={"controlnet": str(tiny_dir / "controlnet")})
    maps, (prompts, negatives) = _labels(2), _texts(2)

    expected = gen.generate(pipe, cfg, maps, prompts, negatives, [3, 4])
    got = gen.generate(gen.load_pipeline(split), split, maps, prompts, negatives, [3, 4])

    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_missing_local_model_dir_raises_model_not_found(tmp_path):
    missing = tmp_path / "no" / "such-model"

    with pytest.raises(gen.ModelNotFound) as info:
        gen.load_pipeline(GeneratorConfig(model=str(missing), controlnet=None, device="cpu"))

    message = str(info.value)
    assert str(missing) in message and "generator.model" in message and "\n" not in message


def test_directory_without_a_pipeline_raises_model_not_found(tmp_path):
    with pytest.raises(gen.ModelNotFound, match=r"model_index\.json"):
        gen.load_pipeline(GeneratorConfig(model=str(tmp_path), controlnet=None, device="cpu"))


@pytest.fixture
def empty_offline_hub(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty HF_HOME; huggingface_hub read both at import, so patch its constants."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def test_hub_model_missing_offline_raises_model_not_found(empty_offline_hub, tmp_path):
    cfg = GeneratorConfig(model="cgaug-tests/no-such-pipeline", controlnet=None, device="cpu")

    with pytest.raises(gen.ModelNotFound) as info:
        gen.load_pipeline(cfg)

    message = str(info.value)
    assert "'cgaug-tests/no-such-pipeline'" in message
    assert "HF_HOME" in message and str(tmp_path / "hf") in message and "\n" not in message


def test_hub_controlnet_missing_offline_names_the_controlnet(empty_offline_hub, tiny_dir):
    cfg = GeneratorConfig(model=str(tiny_dir), controlnet="cgaug-tests/no-such-controlnet", device="cpu")

    with pytest.raises(gen.ModelNotFound, match=r"generator\.controlnet 'cgaug-tests/no-such-controlnet'"):
        gen.load_pipeline(cfg)


# ---------------------------------------------------------------- generation


def test_output_has_the_label_shape_and_is_uint8(pipe, cfg):
    maps, (prompts, negatives) = _labels(3, 40, 72), _texts(3)  # generated at 32x56 (57.6 -> 56)

    images = gen.generate(pipe, cfg, maps, prompts, negatives, [1, 2, 3])

    assert len(images) == 3
    assert all(img.shape == (40, 72, 3) and img.dtype == np.uint8 for img in images)
    assert gen.generate_float(pipe, cfg, maps, prompts, negatives, [1, 2, 3]).shape == (3, 32, 56, 3)


def test_same_seeds_are_bit_identical(pipe, cfg):
    maps, (prompts, negatives) = _labels(4), _texts(4)

    first = gen.generate(pipe, cfg, maps, prompts, negatives, [10, 11, 12, 13])
    second = gen.generate(pipe, cfg, maps, prompts, negatives, [10, 11, 12, 13])

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], first[1])


def test_a_sample_in_a_batch_equals_the_sample_alone(pipe, cfg):
    maps, (prompts, negatives) = _labels(4), _texts(4)
    seeds = [10, 11, 12, 13]

    batch = gen.generate_float(pipe, cfg, maps, prompts, negatives, seeds)
    alone = gen.generate_float(pipe, cfg, maps[2:3], prompts[2:3], negatives[2:3], seeds[2:3])
    np.testing.assert_allclose(batch[2] * 255, alone[0] * 255, rtol=0, atol=1e-3)

    # uint8 rounding can flip a value sitting on a .5 boundary, never by more than one level
    batch_u8 = gen.generate(pipe, cfg, maps, prompts, negatives, seeds)
    alone_u8 = gen.generate(pipe, cfg, maps[2:3], prompts[2:3], negatives[2:3], seeds[2:3])
    assert np.abs(batch_u8[2].astype(int) - alone_u8[0]).max() <= 1


def test_chunking_by_batch_size_does_not_change_samples(pipe, cfg):
    maps, (prompts, negatives) = _labels(5), _texts(5)
    seeds = [1, 2, 3, 4, 5]

    in_fours = gen.generate_float(pipe, cfg, maps, prompts, negatives, seeds)
    twos = cfg.model_copy(update={"batch_size": 2})
    in_twos = gen.generate_float(pipe, twos, maps, prompts, negatives, seeds)

    np.testing.assert_allclose(in_fours * 255, in_twos * 255, rtol=0, atol=1e-3)


@pytest.mark.parametrize("change", ["seed", "cond", "prompt"])
def test_changing_one_sample_changes_only_that_sample(pipe, cfg, change):
    maps, (prompts, negatives) = _labels(4), _texts(4)
    seeds = [20, 21, 22, 23]
    before = gen.generate_float(pipe, cfg, maps, prompts, negatives, seeds)

    if change == "seed":
        seeds = [20, 21, 99, 23]
    elif change == "cond":
        maps = [*maps[:2], _labels(1, seed=5)[0], maps[3]]
    else:
        prompts = [*prompts[:2], "a snowy night in Tokyo", prompts[3]]
    after = gen.generate_float(pipe, cfg, maps, prompts, negatives, seeds)

    for i in (0, 1, 3):
        np.testing.assert_allclose(after[i] * 255, before[i] * 255, rtol=0, atol=1e-3)
    assert np.abs(after[2] - before[2]).mean() * 255 > 0.1


def test_ddim_eta_is_passed_and_other_schedulers_ignore_it(cfg):
    maps, (prompts, negatives) = _labels(2), _texts(2)

    def run(scheduler: str, eta: float) -> np.ndarray:
        c = cfg.model_copy(update={"scheduler": scheduler, "eta": eta})
        return gen.generate_float(gen.load_pipeline(c), c, maps, prompts, negatives, [1, 2])

    assert not np.allclose(run("ddim", 0.0), run("ddim", 1.0), atol=1e-3)
    assert np.array_equal(run("unipc", 0.0), run("unipc", 1.0))


def test_empty_request_returns_nothing(pipe, cfg):
    assert gen.generate(pipe, cfg, [], [], [], []) == []


def test_mismatched_counts_are_refused(pipe, cfg):
    with pytest.raises(ValueError, match="'seeds': 1"):
        gen.generate(pipe, cfg, _labels(2), *_texts(2), [1])


def test_maps_of_different_sizes_are_refused(pipe, cfg):
    maps = [_labels(1, 48, 96)[0], _labels(1, 48, 104)[0]]

    with pytest.raises(ValueError, match="conditioning map 1"):
        gen.generate(pipe, cfg, maps, *_texts(2), [1, 2])


def test_non_uint8_rgb_maps_are_refused(pipe, cfg):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        gen.generate(pipe, cfg, [np.zeros((48, 96), np.uint8)], *_texts(1), [1])
    with pytest.raises(ValueError, match="float32"):
        gen.generate(pipe, cfg, [np.zeros((48, 96, 3), np.float32)], *_texts(1), [1])
