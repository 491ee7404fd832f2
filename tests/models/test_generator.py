"""Loading the generator and generating: sizes, nearest resize, per-sample seeds, batching, missing models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: no 23 s retries

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from cgaug.config import CGAugConfig, GeneratorConfig  # noqa: E402
from cgaug.models import generator as gen  # noqa: E402
from cgaug.models.hub import ModelNotFound, clear_cache  # noqa: E402
from cgaug.models.tiny import build_tiny_pipeline  # noqa: E402
from cgaug.storage.schema import SHARD_SCHEMA  # noqa: E402

PALETTE = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [220, 20, 60], [0, 0, 142], [255, 0, 255]],
                   np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _fresh_pipeline_cache():
    """Pipelines cached by this module's tests must not leak into other modules."""
    yield
    clear_cache()


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
    assert gen.generator_device(GeneratorConfig(device="cpu")) == "cpu"
    assert gen.resolve_dtype_name(GeneratorConfig(device="cpu")) == "fp32"
    assert gen.resolve_dtype_name(GeneratorConfig(device="cpu", dtype="bf16")) == "bf16"
    if not torch.cuda.is_available():
        assert gen.generator_device(GeneratorConfig()) == "cpu"
        assert gen.resolve_dtype_name(GeneratorConfig()) == "fp32"


def test_invalid_device_names_the_field():
    with pytest.raises(ValueError, match=r"generator\.device"):
        gen.generator_device(GeneratorConfig(device="warp-drive"))


def test_generator_settings_fill_the_shard_columns():
    cfg = CGAugConfig.model_validate({"generator": {"model": "tiny", "device": "cpu", "eta": 0.5}}).generator

    settings = gen.generator_settings(cfg, (64, 128))

    assert set(settings) <= set(SHARD_SCHEMA.names)
    assert settings == {
        "generator_model": "tiny", "generator_controlnet": None, "generator_revision": None,
        "scheduler": "unipc", "steps": 2, "guidance_scale": 9.0, "control_scale": 1.0, "eta": 0.5,
        "dtype": "fp32", "gen_height": 64, "gen_width": 128, "generator_variant": None,
        "generator_controlnet_revision": None, "photo_control": "none", "photo_controlnet": None,
        "photo_controlnet_revision": None, "photo_control_scale": None, "photo_control_params": None,
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

    with pytest.raises(ModelNotFound) as info:
        gen.load_pipeline(GeneratorConfig(model=str(missing), controlnet=None, device="cpu"))

    message = str(info.value)
    assert str(missing) in message and "generator.model" in message and "\n" not in message


def test_directory_without_a_pipeline_raises_model_not_found(tmp_path):
    with pytest.raises(ModelNotFound, match=r"model_index\.json"):
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

    with pytest.raises(ModelNotFound) as info:
        gen.load_pipeline(cfg)

    message = str(info.value)
    assert "'cgaug-tests/no-such-pipeline'" in message
    assert "HF_HOME" in message and str(tmp_path / "hf") in message and "\n" not in message


def test_hub_controlnet_missing_offline_names_the_controlnet(empty_offline_hub, tiny_dir):
    cfg = GeneratorConfig(model=str(tiny_dir), controlnet="cgaug-tests/no-such-controlnet", device="cpu")

    with pytest.raises(ModelNotFound, match=r"generator\.controlnet 'cgaug-tests/no-such-controlnet'"):
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


# ---------------------------------------------------------------- settings for regeneration


def test_all_settings_include_variant_revisions_and_photo_condition():
    cfg = GeneratorConfig(model="m", controlnet="c", revision="r1", controlnet_revision="r2", variant="fp16",
                          photo_control="canny", photo_controlnet="p", photo_controlnet_revision="r3",
                          photo_control_scale=0.3, canny_thresholds=(50, 120), device="cpu")

    settings = gen.generator_settings(cfg, (512, 1024))

    assert settings["generator_variant"] == "fp16"
    assert (settings["generator_revision"], settings["generator_controlnet_revision"]) == ("r1", "r2")
    assert (settings["photo_control"], settings["photo_controlnet"], settings["photo_controlnet_revision"]) \
        == ("canny", "p", "r3")
    assert settings["photo_control_scale"] == 0.3
    assert json.loads(settings["photo_control_params"]) == {"canny_low": 50, "canny_high": 120}
    assert (settings["gen_height"], settings["gen_width"]) == (512, 1024)


def test_photo_settings_are_empty_without_a_photo_condition_and_default_by_model():
    plain = gen.generator_settings(GeneratorConfig(device="cpu", photo_controlnet="ignored"), (8, 8))
    assert plain["photo_control"] == "none"
    assert plain["photo_controlnet"] is plain["photo_control_scale"] is plain["photo_control_params"] is None

    lineart = GeneratorConfig(device="cpu", photo_control="lineart")
    settings = gen.generator_settings(lineart, (8, 8))
    assert settings["photo_controlnet"] == "lllyasviel/control_v11p_sd15_lineart"
    assert settings["photo_control_params"] == "{}"
    tiny = CGAugConfig.model_validate({"generator": {"model": "tiny", "photo_control": "canny"}}).generator
    assert gen.photo_controlnet_name(tiny) == "tiny"


def test_shard_settings_are_schema_columns():
    """Every stored setting has its own shard column, with a value the column's type takes."""
    import pyarrow as pa

    settings = gen.generator_settings(GeneratorConfig(variant="fp16", photo_control="canny", device="cpu"), (8, 8))
    assert set(settings) <= set(SHARD_SCHEMA.names)
    for name, value in settings.items():
        pa.array([value], type=SHARD_SCHEMA.field(name).type)


def test_canny_thresholds_must_be_ordered():
    with pytest.raises(ValueError, match="low <= high"):
        GeneratorConfig(canny_thresholds=(200, 100))


# ---------------------------------------------------------------- loading: variant and speed settings


def test_missing_weight_variant_names_the_variant(tiny_dir):
    cfg = GeneratorConfig(model=str(tiny_dir), controlnet=None, variant="fp16", device="cpu",
                          local_files_only=True)

    with pytest.raises(ModelNotFound) as info:
        gen.load_pipeline(cfg)

    message = str(info.value)
    assert "generator.model" in message and "'fp16'" in message and "generator.variant" in message
    assert "\n" not in message


def test_loaded_pipeline_uses_sdpa_vae_slicing_and_channels_last(pipe, cfg):
    from diffusers.models.attention_processor import AttnProcessor2_0

    for module in (pipe.unet, pipe.controlnet):
        assert module.attn_processors and all(isinstance(p, AttnProcessor2_0)
                                              for p in module.attn_processors.values())
        assert module.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert not module.conv_in.weight.is_contiguous()
    assert pipe.vae.use_slicing

    plain = gen.load_pipeline(cfg.model_copy(update={"channels_last": False}))
    assert plain.unet is not pipe.unet and plain.unet.conv_in.weight.is_contiguous()


def test_channels_last_does_not_change_images_beyond_rounding(pipe, cfg):
    plain_cfg = cfg.model_copy(update={"channels_last": False})
    maps, (prompts, negatives) = _labels(2), _texts(2)

    fast = gen.generate_float(pipe, cfg, maps, prompts, negatives, [5, 6])
    plain = gen.generate_float(gen.load_pipeline(plain_cfg), plain_cfg, maps, prompts, negatives, [5, 6])

    np.testing.assert_allclose(fast * 255, plain * 255, rtol=0, atol=1e-3)


def test_compile_flag_compiles_unet_and_controlnet_with_static_shapes(monkeypatch, cfg):
    calls = []

    def fake_compile(module, **kwargs):
        calls.append((type(module).__name__, kwargs))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    compiled = cfg.model_copy(update={"compile": True, "compile_mode": "max-autotune-no-cudagraphs"})
    gen.load_pipeline(compiled)

    expected = {"backend": "inductor", "fullgraph": True, "dynamic": False,
                "mode": "max-autotune-no-cudagraphs"}
    assert calls == [("UNet2DConditionModel", expected), ("ControlNetModel", expected)]


def test_compiled_pipeline_traces_whole_graphs_and_matches_eager(tiny_dir):
    """Dynamo with the eager backend: the fullgraph capture (no graph breaks) without inductor's codegen."""
    from diffusers.utils.torch_utils import is_compiled_module

    base = GeneratorConfig(model=str(tiny_dir), controlnet=None, local_files_only=True, steps=2,
                           short_side=32, batch_size=2, device="cpu")
    compiled_cfg = base.model_copy(update={"compile": True})
    pipe = gen.optimize_pipeline(gen.with_scheduler(gen.load_pipeline(base), "unipc"), compiled_cfg,
                                 compile_backend="eager")
    assert is_compiled_module(pipe.unet) and is_compiled_module(pipe.controlnet)
    maps, (prompts, negatives) = _labels(3), _texts(3)
    report = gen.GenerationReport()

    got = gen.generate_float(pipe, compiled_cfg, maps, prompts, negatives, [1, 2, 3], report=report)
    expected = gen.generate_float(gen.load_pipeline(base), base, maps, prompts, negatives, [1, 2, 3])

    np.testing.assert_allclose(got * 255, expected * 255, rtol=0, atol=1e-3)
    assert report.padded == 1  # compiled: the last batch is padded to the compiled shape


@pytest.mark.slow
def test_inductor_compiled_pipeline_matches_eager_on_cpu(tiny_dir):
    """The real inductor path (about 90 s of code generation on 2 cores)."""
    base = GeneratorConfig(model=str(tiny_dir), controlnet=None, local_files_only=True, steps=2,
                           short_side=32, batch_size=2, device="cpu")
    compiled_cfg = base.model_copy(update={"compile": True})
    maps, (prompts, negatives) = _labels(2), _texts(2)

    got = gen.generate_float(gen.load_pipeline(compiled_cfg), compiled_cfg, maps, prompts, negatives, [1, 2])
    expected = gen.generate_float(gen.load_pipeline(base), base, maps, prompts, negatives, [1, 2])

    np.testing.assert_allclose(got * 255, expected * 255, rtol=0, atol=1e-2)


# ---------------------------------------------------------------- batching: padding, partial batches, OOM


def _recording_run(calls: list[list[int]], fail_above: int | None = None):
    def run(index: list[int]) -> np.ndarray:
        calls.append(list(index))
        if fail_above is not None and len(index) > fail_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return np.array(index, dtype=np.float32)

    return run


@pytest.mark.parametrize(("pad", "expected_calls", "padded"), [
    (False, [[0, 1, 2, 3], [4, 5, 6]], 0),
    (True, [[0, 1, 2, 3], [4, 5, 6, 6]], 1),
])
def test_run_batches_chunks_and_pads_by_hand(pad, expected_calls, padded):
    calls: list[list[int]] = []
    report = gen.GenerationReport()

    chunks = gen.run_batches(_recording_run(calls), 7, 4, pad=pad, report=report)

    assert calls == expected_calls
    assert np.concatenate(chunks).tolist() == list(range(7))  # padding outputs dropped, order kept
    assert (report.samples, report.batches, report.padded, report.batch_size) == (7, 2, padded, 4)


def test_run_batches_halves_on_out_of_memory_and_remembers_the_size():
    calls: list[list[int]] = []
    report, limits = gen.GenerationReport(), {}

    chunks = gen.run_batches(_recording_run(calls, fail_above=2), 7, 8, pad=True, report=report,
                             limits=limits, size_key=(64, 128))

    # 8 fails (padded: 7 + one copy), 4 fails, then batches of 2, the last one padded
    assert calls == [[0, 1, 2, 3, 4, 5, 6, 6], [0, 1, 2, 3], [0, 1], [2, 3], [4, 5], [6, 6]]
    assert np.concatenate(chunks).tolist() == list(range(7))
    assert (report.oom_halvings, report.batch_size, report.batches, report.padded) == (2, 2, 4, 1)
    assert limits == {(64, 128): 2}

    again, calls2 = gen.GenerationReport(), []
    gen.run_batches(_recording_run(calls2, fail_above=2), 3, 8, pad=False, report=again, limits=limits,
                    size_key=(64, 128))
    assert calls2 == [[0, 1], [2]] and again.oom_halvings == 0


def test_run_batches_gives_up_when_one_sample_does_not_fit():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        gen.run_batches(_recording_run([], fail_above=0), 3, 4, pad=False, report=gen.GenerationReport())


def test_other_errors_are_not_mistaken_for_out_of_memory():
    def run(index):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        gen.run_batches(run, 3, 4, pad=False, report=gen.GenerationReport())


class _OutOfMemoryAbove:
    """The real pipeline, except that batches above `limit` raise CUDA's out-of-memory error."""

    def __init__(self, pipe, limit: int):
        self._pipe, self.limit, self.sizes = pipe, limit, []

    def __call__(self, **kwargs):
        self.sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self._pipe(**kwargs)

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def test_out_of_memory_halves_the_batch_and_keeps_every_sample(pipe, cfg):
    maps, (prompts, negatives) = _labels(5), _texts(5)
    seeds = [7, 8, 9, 10, 11]
    flaky = _OutOfMemoryAbove(pipe, limit=2)
    report = gen.GenerationReport()

    got = gen.generate_float(flaky, cfg, maps, prompts, negatives, seeds, report=report)
    expected = gen.generate_float(pipe, cfg, maps, prompts, negatives, seeds)

    np.testing.assert_allclose(got * 255, expected * 255, rtol=0, atol=1e-3)
    assert flaky.sizes == [4, 2, 2, 1]
    assert (report.oom_halvings, report.batch_size, report.samples) == (1, 2, 5)

    # the next call on the same pipeline starts at the size that fitted
    gen.generate(flaky, cfg, maps[:3], prompts[:3], negatives[:3], seeds[:3])
    assert flaky.sizes[4:] == [2, 1]


def test_padding_the_last_batch_does_not_change_samples(pipe, cfg):
    maps, (prompts, negatives) = _labels(5), _texts(5)
    seeds = [1, 2, 3, 4, 5]
    padded_report = gen.GenerationReport()

    padded = gen.generate_float(pipe, cfg, maps, prompts, negatives, seeds, pad=True, report=padded_report)
    smaller = gen.generate_float(pipe, cfg, maps, prompts, negatives, seeds, pad=False)

    np.testing.assert_allclose(padded * 255, smaller * 255, rtol=0, atol=1e-3)
    assert (padded_report.batches, padded_report.padded, padded_report.samples) == (2, 3, 5)
    assert padded_report.seconds > 0 and padded_report.images_per_second > 0


def test_cpu_does_not_pad_by_default(pipe, cfg):
    report = gen.GenerationReport()
    gen.generate(pipe, cfg, _labels(5), *_texts(5), [1, 2, 3, 4, 5], report=report)

    assert (report.batches, report.padded) == (2, 0)


# ---------------------------------------------------------------- second condition from the photo


@pytest.fixture(scope="module")
def photo_cfg(tiny_dir, tmp_path_factory) -> GeneratorConfig:
    from cgaug.models.tiny import build_tiny_photo_controlnet

    photo_dir = build_tiny_photo_controlnet(tmp_path_factory.mktemp("photo-cn") / "controlnet")
    return GeneratorConfig(model=str(tiny_dir), controlnet=None, local_files_only=True, steps=2,
                           short_side=32, batch_size=4, device="cpu", photo_control="canny",
                           photo_controlnet=str(photo_dir))


def _photos(n: int, height: int = 48, width: int = 96, seed: int = 3) -> list[np.ndarray]:
    """Blocky grey photos with strong edges (Canny finds the 8x8 cell borders)."""
    cells = np.random.default_rng(seed).integers(0, 4, (n, height // 8, width // 8)) * 80
    return [np.repeat(np.kron(c, np.ones((8, 8), int))[..., None], 3, axis=2).astype(np.uint8) for c in cells]


def test_photo_condition_loads_a_multicontrolnet(photo_cfg):
    from diffusers.models import MultiControlNetModel

    pipe = gen.load_pipeline(photo_cfg)

    assert isinstance(pipe.controlnet, MultiControlNetModel) and gen.controlnet_count(pipe) == 2
    assert pipe.controlnet.nets[0].conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_changing_one_photo_changes_only_that_sample(photo_cfg):
    pipe = gen.load_pipeline(photo_cfg)
    maps, (prompts, negatives), photos = _labels(3), _texts(3), _photos(3)
    before = gen.generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2, 3], photos=photos)

    again = gen.generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2, 3], photos=photos)
    after = gen.generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2, 3],
                               photos=[photos[0], _photos(1, seed=9)[0], photos[2]])

    assert np.array_equal(before, again)
    for i in (0, 2):
        np.testing.assert_allclose(after[i] * 255, before[i] * 255, rtol=0, atol=1e-3)
    assert np.abs(after[1] - before[1]).mean() * 255 > 0.1


def test_photo_mask_blanks_the_photo_condition(photo_cfg):
    pipe = gen.load_pipeline(photo_cfg)
    maps, (prompts, negatives), photos = _labels(2), _texts(2), _photos(2)
    blank = gen.generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2],
                               photos=[np.zeros_like(p) for p in photos])

    masked = gen.generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2], photos=photos,
                                photo_masks=[np.ones(p.shape[:2], np.uint8) for p in photos])

    np.testing.assert_allclose(masked * 255, blank * 255, rtol=0, atol=1e-3)  # edges all masked = no edges


def test_photos_are_required_with_and_refused_without_a_photo_condition(photo_cfg, pipe, cfg):
    maps, (prompts, negatives) = _labels(2), _texts(2)

    with pytest.raises(ValueError, match=r"photo_control is 'canny'.*source photo"):
        gen.generate(gen.load_pipeline(photo_cfg), photo_cfg, maps, prompts, negatives, [1, 2])
    with pytest.raises(ValueError, match="photo_control is 'none'"):
        gen.generate(pipe, cfg, maps, prompts, negatives, [1, 2], photos=_photos(2))
    with pytest.raises(ValueError, match="1 ControlNet"):
        gen.generate(pipe, photo_cfg, maps, prompts, negatives, [1, 2], photos=_photos(2))
    with pytest.raises(ValueError, match="photo 1"):
        gen.generate(gen.load_pipeline(photo_cfg), photo_cfg, maps, prompts, negatives, [1, 2],
                     photos=[_photos(1)[0], _photos(1, 40, 96)[0]])
