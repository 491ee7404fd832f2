"""Loading the generator: caching, schedulers, missing models, weight variants, speed settings, device and dtype."""

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
from cgaug.models.hub import ModelNotFound, clear_cache  # noqa: E402
from cgaug.models.tiny import build_tiny_pipeline  # noqa: E402
from cgaug.tasks.generation.generate import GenerationReport, generate, generate_float  # noqa: E402
from tests.generator_helpers import make_maps, make_texts, tiny_config  # noqa: E402


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
    return tiny_config(tiny_dir)


@pytest.fixture(scope="module")
def pipe(cfg):
    return gen.load_pipeline(cfg)


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
    maps, (prompts, negatives) = make_maps(2), make_texts(2)

    expected = generate(pipe, cfg, maps, prompts, negatives, [3, 4])
    got = generate(gen.load_pipeline(split), split, maps, prompts, negatives, [3, 4])

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
    maps, (prompts, negatives) = make_maps(2), make_texts(2)

    fast = generate_float(pipe, cfg, maps, prompts, negatives, [5, 6])
    plain = generate_float(gen.load_pipeline(plain_cfg), plain_cfg, maps, prompts, negatives, [5, 6])

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
    maps, (prompts, negatives) = make_maps(3), make_texts(3)
    report = GenerationReport()

    got = generate_float(pipe, compiled_cfg, maps, prompts, negatives, [1, 2, 3], report=report)
    expected = generate_float(gen.load_pipeline(base), base, maps, prompts, negatives, [1, 2, 3])

    np.testing.assert_allclose(got * 255, expected * 255, rtol=0, atol=1e-3)
    assert report.padded == 1  # compiled: the last batch is padded to the compiled shape


@pytest.mark.slow
def test_inductor_compiled_pipeline_matches_eager_on_cpu(tiny_dir):
    """The real inductor path (about 90 s of code generation on 2 cores)."""
    base = GeneratorConfig(model=str(tiny_dir), controlnet=None, local_files_only=True, steps=2,
                           short_side=32, batch_size=2, device="cpu")
    compiled_cfg = base.model_copy(update={"compile": True})
    maps, (prompts, negatives) = make_maps(2), make_texts(2)

    got = generate_float(gen.load_pipeline(compiled_cfg), compiled_cfg, maps, prompts, negatives, [1, 2])
    expected = generate_float(gen.load_pipeline(base), base, maps, prompts, negatives, [1, 2])

    np.testing.assert_allclose(got * 255, expected * 255, rtol=0, atol=1e-2)


# ---------------------------------------------------------------- second condition from the photo


@pytest.fixture(scope="module")
def photo_cfg(tiny_dir, tmp_path_factory) -> GeneratorConfig:
    from cgaug.models.tiny import build_tiny_photo_controlnet

    photo_dir = build_tiny_photo_controlnet(tmp_path_factory.mktemp("photo-cn") / "controlnet")
    return GeneratorConfig(model=str(tiny_dir), controlnet=None, local_files_only=True, steps=2,
                           short_side=32, batch_size=4, device="cpu", photo_control="canny",
                           photo_controlnet=str(photo_dir))


def test_photo_condition_loads_a_multicontrolnet(photo_cfg):
    from diffusers.models import MultiControlNetModel

    pipe = gen.load_pipeline(photo_cfg)

    assert isinstance(pipe.controlnet, MultiControlNetModel) and gen.controlnet_count(pipe) == 2
    assert pipe.controlnet.nets[0].conv_in.weight.is_contiguous(memory_format=torch.channels_last)
