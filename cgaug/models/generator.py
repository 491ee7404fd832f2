"""Loading the ControlNet pipeline, and its single call on one batch of samples.

Turning a list of conditioning maps, prompts and seeds into images (batching, padding,
out-of-memory halving, input checks, the settings stored per sample) is the generate
step, `cgaug.tasks.generation.generate`; its docstring says what is reproducible.

Every sample gets its own seeded generator, so a sample's pixels depend on its own seed
and settings only, not on which other samples share its batch (up to float rounding).
The generators live on the CPU: diffusers then draws the initial noise on the CPU and
moves it to the device, so a stored seed regenerates the same starting noise on any
machine, GPU or not.

Speed (GPU): bf16 weights (`dtype: auto`), PyTorch's fused scaled-dot-product attention
(diffusers' default processor; nothing here replaces it), channels-last UNet and
ControlNet weights, VAE slicing (one image decoded at a time, which bounds the memory
peak of big batches), optionally `torch.compile` of both UNet and ControlNet (diffusers
marks CUDA-graph steps only when both are compiled) with static shapes. No CPU offload:
it moves weights every step and makes batches crawl.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.config import GeneratorConfig
from cgaug.models.device import dtype_name, resolve_device, torch_dtype
from cgaug.models.hub import TINY, cached, from_pretrained

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionControlNetPipeline

TINY_MODEL = TINY

DEFAULT_PHOTO_CONTROLNETS = {"canny": "lllyasviel/sd-controlnet-canny",
                             "lineart": "lllyasviel/control_v11p_sd15_lineart"}


# ---------------------------------------------------------------- device and dtype


def generator_device(cfg: GeneratorConfig) -> str:
    """`generator.device` resolved by the one device policy (`cgaug.models.device`)."""
    return resolve_device(cfg.device, "generator.device")


def resolve_dtype_name(cfg: GeneratorConfig) -> str:
    """`generator.dtype` resolved by the one dtype policy: `auto` is bf16 on CUDA, fp32 elsewhere."""
    return dtype_name(cfg.dtype, generator_device(cfg))


# ---------------------------------------------------------------- loading


def load_pipeline(cfg: GeneratorConfig) -> StableDiffusionControlNetPipeline:
    """The pipeline for `cfg`, loaded once per process and reused.

    Weights are cached per (models, revisions, variant, dtype, device, speed settings); each
    scheduler gets its own pipeline object sharing those weights, so switching schedulers
    never reloads and never changes the scheduler under another caller's feet. With
    `photo_control` set, the pipeline holds a MultiControlNet: the seg ControlNet first,
    the photo ControlNet second.

    Raises:
        ModelNotFound: a model or ControlNet is neither a local directory nor available from
            the Hugging Face cache (or hub, when online), or lacks the requested weight variant.
    """
    model = _model_ref(cfg)
    key = _cache_key(cfg, model)
    base = cached(key, lambda: _load_base(cfg, model))
    return cached((*key, cfg.scheduler), lambda: with_scheduler(base, cfg.scheduler))


def _cache_key(cfg: GeneratorConfig, model: str) -> tuple:
    """`cgaug.models.hub.cached` key of the base pipeline: everything that changes its weights or speed."""
    return ("pipeline", model, cfg.controlnet, cfg.revision, cfg.controlnet_revision, cfg.variant, _photo_ref(cfg),
            cfg.photo_controlnet_revision, resolve_dtype_name(cfg), generator_device(cfg), cfg.channels_last,
            cfg.compile, cfg.compile_mode)


def _model_ref(cfg: GeneratorConfig) -> str:
    if cfg.model == TINY_MODEL:
        from cgaug.models.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    return cfg.model


def photo_controlnet_name(cfg: GeneratorConfig) -> str | None:
    """The photo ControlNet as configured (None without a photo condition); "tiny" with the tiny model."""
    if cfg.photo_control == "none":
        return None
    if cfg.photo_controlnet is not None:
        return cfg.photo_controlnet
    return TINY_MODEL if cfg.model == TINY_MODEL else DEFAULT_PHOTO_CONTROLNETS[cfg.photo_control]


def _photo_ref(cfg: GeneratorConfig) -> str | None:
    name = photo_controlnet_name(cfg)
    if name == TINY_MODEL:
        from cgaug.models.tiny import ensure_tiny_photo_controlnet

        return str(ensure_tiny_photo_controlnet())
    return name


def _load_base(cfg: GeneratorConfig, model: str) -> StableDiffusionControlNetPipeline:
    from diffusers import StableDiffusionControlNetPipeline

    common = {"local_files_only": cfg.local_files_only, "low_cpu_mem_usage": _has_accelerate(),
              _dtype_keyword(): torch_dtype(resolve_dtype_name(cfg))}
    extra: dict[str, Any] = {}
    if cfg.controlnet is not None:
        extra["controlnet"] = _load_controlnet(cfg.controlnet, "generator.controlnet",
                                               cfg.controlnet_revision, common)
    pipe = from_pretrained(
        lambda ref, is_local: StableDiffusionControlNetPipeline.from_pretrained(
            ref, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            variant=cfg.variant, revision=None if is_local else cfg.revision, **extra, **common),
        model, "generator.model", marker="model_index.json", what="diffusers pipeline",
        variant=cfg.variant,
    )
    photo = _photo_ref(cfg)
    if photo is not None:
        pipe = with_controlnets(pipe, [pipe.controlnet, _load_controlnet(
            photo, "generator.photo_controlnet", cfg.photo_controlnet_revision, common)])
    return optimize_pipeline(pipe.to(generator_device(cfg)), cfg)


def with_controlnets(pipe: StableDiffusionControlNetPipeline, controlnets: list[Any]
                     ) -> StableDiffusionControlNetPipeline:
    """The same pipeline with a MultiControlNet of `controlnets` (conditions in that order)."""
    from diffusers import StableDiffusionControlNetPipeline

    components = {**pipe.components, "controlnet": controlnets}
    return StableDiffusionControlNetPipeline(**components, requires_safety_checker=False)


def optimize_pipeline(pipe: StableDiffusionControlNetPipeline, cfg: GeneratorConfig, *,
                      compile_backend: str = "inductor") -> StableDiffusionControlNetPipeline:
    """Apply the speed settings of `cfg` to a pipeline already on its device (in place; returned).

    `compile_backend` exists for tests and the CPU smoke benchmark: "eager" traces the
    UNet and ControlNet with dynamo (so graph breaks under fullgraph=True still fail)
    without inductor's minutes of code generation.
    """
    import torch
    from diffusers.utils.torch_utils import is_compiled_module

    pipe.vae.enable_slicing()  # decode one image at a time: nearly free, bounds peak memory at big batches
    pipe.set_progress_bar_config(disable=True)
    if cfg.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.controlnet.to(memory_format=torch.channels_last)
    if cfg.compile:
        options: dict[str, Any] = {"mode": cfg.compile_mode} if compile_backend == "inductor" else {}
        for name in ("unet", "controlnet"):  # both: diffusers marks CUDA-graph steps only then
            module = getattr(pipe, name)
            if not is_compiled_module(module):
                setattr(pipe, name, torch.compile(module, backend=compile_backend, fullgraph=True,
                                                  dynamic=False, **options))
    return pipe


def _load_controlnet(name: str, field: str, revision: str | None, common: dict[str, Any]) -> Any:
    from diffusers import ControlNetModel

    return from_pretrained(
        lambda ref, is_local: ControlNetModel.from_pretrained(ref, revision=None if is_local else revision,
                                                              **common),
        name, field, what="diffusers ControlNet")


def _dtype_keyword() -> str:
    """`dtype` where diffusers has it (torch_dtype is deprecated there), `torch_dtype` before."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401 - presence test only
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _has_accelerate() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def with_scheduler(base: StableDiffusionControlNetPipeline, name: str) -> StableDiffusionControlNetPipeline:
    """A pipeline sharing `base`'s modules, with the scheduler `name` (see `make_scheduler`)."""
    from diffusers import StableDiffusionControlNetPipeline

    components = {**base.components, "scheduler": make_scheduler(name, base.scheduler.config)}
    pipe = StableDiffusionControlNetPipeline(**components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_scheduler(name: str, config: Any) -> Any:
    """A scheduler by config name, sharing the model's beta schedule (`config` is the loaded one's)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    if name == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    raise ValueError(f"generator.scheduler: expected one of unipc, dpmpp, ddim, found {name!r}")


# ---------------------------------------------------------------- one batch


def batch_runner(pipe: StableDiffusionControlNetPipeline, cfg: GeneratorConfig, conditions: list[list[np.ndarray]],
                 prompts: list[str], negatives: list[str], seeds: list[int]) -> Callable[[list[int]], np.ndarray]:
    """The pipeline's call on one batch, by sample index: `run(index)` -> (len(index), H, W, 3) floats in [0, 1].

    `conditions` holds one list per ControlNet (the seg map first, then the photo condition), each
    with one (H, W, 3) uint8 image per sample at the generation size. They become tensors once, here,
    and each batch takes its rows; every sample gets a CPU generator seeded with its own seed.
    Batching, padding and out-of-memory handling belong to the caller
    (`cgaug.tasks.generation.generate`).
    """
    import torch

    images = [_to_tensor(maps) for maps in conditions]
    height, width = conditions[0][0].shape[:2]
    scale: float | list[float] = cfg.control_scale if len(images) == 1 else [cfg.control_scale,
                                                                              cfg.photo_control_scale]
    extra = {"eta": cfg.eta} if cfg.scheduler == "ddim" else {}

    def run(index: list[int]) -> np.ndarray:
        with torch.inference_mode():
            result = pipe(
                prompt=[prompts[i] for i in index], negative_prompt=[negatives[i] for i in index],
                image=images[0][index] if len(images) == 1 else [image[index] for image in images],
                height=height, width=width, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                controlnet_conditioning_scale=scale, output_type="np",
                generator=[torch.Generator("cpu").manual_seed(int(seeds[i])) for i in index], **extra,
            )
        return np.asarray(result.images, dtype=np.float32)

    return run


def _to_tensor(maps: list[np.ndarray]) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1]: tensors skip diffusers' Lanczos resize of PIL control images."""
    import torch

    return torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).float().div_(255.0)


def controlnet_count(pipe: Any) -> int:
    """How many conditions the pipeline takes (a MultiControlNet has one per ControlNet)."""
    controlnet = getattr(pipe.controlnet, "_orig_mod", pipe.controlnet)  # torch.compile wrapper
    nets = getattr(controlnet, "nets", None)
    return len(nets) if nets is not None else 1
