"""Loading the ControlNet pipeline and turning conditioning maps, prompts and seeds into images.

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
it moves weights every step and makes batches crawl. On CUDA out-of-memory the batch is
halved and generation goes on; the halving is logged, counted in a `GenerationReport` and
remembered for the pipeline, so later calls start at the size that fitted.

Reproducibility. A sample is determined by its seed, prompt, negative prompt,
conditioning map (and photo, with the second condition) and the settings stored in its
shard row (`generator_settings`). What that buys:
- CPU (fp32): two runs are bit-identical at the same torch thread count; a sample
  generated in a batch equals the sample generated alone to ~1e-6 (float summation
  order), which flips an occasional uint8 level and nothing more.
- GPU: the starting noise is identical everywhere (CPU generators). The denoising is
  not bit-stable across batch shapes: cuBLAS/cuDNN choose kernels per shape (diffusers
  issue #2659), so a sample generated in a batch of 8 and alone differ slightly (bf16
  rounding, not visible). To keep shapes fixed, on CUDA (and whenever compiled) the last
  partial batch is padded with copies of its last sample, whose outputs are dropped:
  every sample is computed at the configured batch size. Regenerating a sample on the same
  GPU model with the same software, settings and batch size is expected to repeat it
  bit for bit; across GPU models, library versions, compile or channels-last on/off, or
  after an out-of-memory halving, results agree statistically, not bitwise.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cgaug.config import GeneratorConfig
from cgaug.models.device import dtype_name, resolve_device, torch_dtype
from cgaug.models.hub import TINY, cached, from_pretrained

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionControlNetPipeline

log = logging.getLogger(__name__)

TINY_MODEL = TINY

DEFAULT_PHOTO_CONTROLNETS = {"canny": "lllyasviel/sd-controlnet-canny",
                             "lineart": "lllyasviel/control_v11p_sd15_lineart"}

_batch_limits: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], int]] = weakref.WeakKeyDictionary()
"""Per pipeline and generation size: the batch size that fitted after an out-of-memory halving."""


@dataclass
class GenerationReport:
    """What a generate call did, for logs and benchmarks; pass one in to have it filled."""

    samples: int = 0  # real samples generated
    batches: int = 0  # pipeline calls that succeeded
    padded: int = 0  # dummy samples run to keep the batch shape fixed (outputs dropped)
    oom_halvings: int = 0  # times the batch was halved after CUDA out-of-memory
    batch_size: int = 0  # the batch size in use at the end
    seconds: float = 0.0  # wall time of the pipeline calls

    @property
    def images_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


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


# ---------------------------------------------------------------- sizes and resizing


def generation_size(height: int, width: int, cfg: GeneratorConfig) -> tuple[int, int]:
    """(height, width) to generate at: short side `cfg.short_side`, aspect kept, both multiples of
    `cfg.size_multiple` (rounded to the nearest, at least one multiple)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"expected a positive label size, found {height}x{width}")
    scale = cfg.short_side / min(height, width)
    return _round_to(height * scale, cfg.size_multiple), _round_to(width * scale, cfg.size_multiple)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(np.floor(value / multiple + 0.5)) * multiple)


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize: a conditioning map must keep exact class colours, never blends."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST))


def resize_photo(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------- generation


def generate(
    pipe: StableDiffusionControlNetPipeline,
    cfg: GeneratorConfig,
    cond_maps: list[np.ndarray],
    prompts: list[str],
    negatives: list[str],
    seeds: list[int],
    *,
    photos: list[np.ndarray] | None = None,
    photo_masks: list[np.ndarray | None] | None = None,
    report: GenerationReport | None = None,
    pad: bool | None = None,
) -> list[np.ndarray]:
    """Images (uint8, H x W x 3, the conditioning maps' size), one per conditioning map.

    Runs in chunks of `cfg.batch_size`; each sample has its own generator seeded with its seed.
    All conditioning maps of one call must have the same size. Keyword arguments: see
    `generate_float`.
    """
    height, width = _check_inputs(cond_maps, prompts, negatives, seeds)
    raw = generate_float(pipe, cfg, cond_maps, prompts, negatives, seeds, photos=photos,
                         photo_masks=photo_masks, report=report, pad=pad)
    return [resize_photo(to_uint8(image), height, width) for image in raw]


def generate_float(
    pipe: StableDiffusionControlNetPipeline,
    cfg: GeneratorConfig,
    cond_maps: list[np.ndarray],
    prompts: list[str],
    negatives: list[str],
    seeds: list[int],
    *,
    photos: list[np.ndarray] | None = None,
    photo_masks: list[np.ndarray | None] | None = None,
    report: GenerationReport | None = None,
    pad: bool | None = None,
) -> np.ndarray:
    """The pipeline's own output, (N, gen_h, gen_w, 3) floats in [0, 1] at the generation size.

    Kept separate from `generate` so batch-independence can be checked before uint8 rounding,
    which turns a 1e-7 difference into a whole grey level now and then.

    Args:
        photos: with `cfg.photo_control` set, the source photo of each sample ((H, W, 3) uint8,
            the conditioning maps' size), from which the second condition is computed.
        photo_masks: optional, per sample: nonzero where objects were pasted; the photo
            condition is blanked there (the photo shows what was there before the paste).
        report: filled with what the call did (batches, padding, out-of-memory halvings, time).
        pad: pad the last partial batch to the full batch size (outputs of the padding are
            dropped). Default: on CUDA and when compiled, so that shapes never change.

    Raises:
        ValueError: inconsistent inputs, or photos missing/unexpected for `cfg.photo_control`.
    """
    import torch

    height, width = _check_inputs(cond_maps, prompts, negatives, seeds)
    _check_photos(pipe, cfg, photos, photo_masks, len(cond_maps), (height, width))
    report = report if report is not None else GenerationReport()
    if not cond_maps:
        return np.zeros((0, 0, 0, 3), np.float32)
    gen_h, gen_w = generation_size(height, width, cfg)
    images = [_to_tensor([resize_nearest(m, gen_h, gen_w) for m in cond_maps])]
    if photos is not None:
        images.append(_to_tensor(_photo_conditions(cfg, photos, photo_masks, gen_h, gen_w)))
    scale: float | list[float] = cfg.control_scale if len(images) == 1 else [cfg.control_scale,
                                                                              cfg.photo_control_scale]
    extra = {"eta": cfg.eta} if cfg.scheduler == "ddim" else {}

    def run(index: list[int]) -> np.ndarray:
        result = pipe(
            prompt=[prompts[i] for i in index], negative_prompt=[negatives[i] for i in index],
            image=images[0][index] if len(images) == 1 else [image[index] for image in images],
            height=gen_h, width=gen_w, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
            controlnet_conditioning_scale=scale, output_type="np",
            generator=[torch.Generator("cpu").manual_seed(int(seeds[i])) for i in index], **extra,
        )
        return np.asarray(result.images, dtype=np.float32)

    pad = (cfg.compile or generator_device(cfg).startswith("cuda")) if pad is None else pad
    with torch.inference_mode():
        chunks = run_batches(run, len(cond_maps), cfg.batch_size, pad=pad, report=report,
                             limits=_limits_for(pipe), size_key=(gen_h, gen_w))
    return np.concatenate(chunks)


def run_batches(run: Callable[[list[int]], np.ndarray], count: int, batch_size: int, *, pad: bool,
                report: GenerationReport, limits: dict[tuple[int, int], int] | None = None,
                size_key: tuple[int, int] = (0, 0)) -> list[np.ndarray]:
    """Call `run` on consecutive index chunks of `range(count)`, halving the chunk on CUDA OOM.

    `run` gets sample indices (with `pad`, the last chunk repeats its last index up to the
    batch size) and returns one output per index; padding outputs are dropped. `limits`
    remembers the size that fitted per `size_key`, so the next call does not hit the same
    out-of-memory error first.

    Raises:
        torch.cuda.OutOfMemoryError: even a batch of one does not fit.
    """
    size = min(batch_size, (limits or {}).get(size_key, batch_size))
    start, chunks = 0, []
    started = time.perf_counter()
    while start < count:
        n = min(size, count - start)
        index = list(range(start, start + n))
        index += [index[-1]] * ((size - n) if pad else 0)
        try:
            out = run(index)
        except _oom_errors():
            if size == 1:
                raise
            out = None
        if out is None:  # outside the except block, so the failed batch's tensors can be freed
            size = max(1, size // 2)
            report.oom_halvings += 1
            if limits is not None:
                limits[size_key] = size
            log.warning("CUDA out of memory at batch size %d; continuing with batch size %d", size * 2, size)
            _free_cuda_cache()
            continue
        chunks.append(out[:n])
        report.batches += 1
        report.padded += len(index) - n
        report.samples += n
        start += n
    report.batch_size = size
    report.seconds += time.perf_counter() - started
    return chunks


def _oom_errors() -> tuple[type[BaseException], ...]:
    """The CUDA out-of-memory exception class, caught by class (empty tuple: torch has none)."""
    import torch

    error = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
    return (error,) if error is not None else ()


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _limits_for(pipe: Any) -> dict[tuple[int, int], int] | None:
    try:
        return _batch_limits.setdefault(pipe, {})
    except TypeError:  # an object that cannot be weakly referenced: do not remember
        return None


def _to_tensor(maps: list[np.ndarray]) -> torch.Tensor:
    """(N, 3, H, W) floats in [0, 1]: tensors skip diffusers' Lanczos resize of PIL control images."""
    import torch

    return torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).float().div_(255.0)


def _photo_conditions(cfg: GeneratorConfig, photos: list[np.ndarray], masks: list[np.ndarray | None] | None,
                      height: int, width: int) -> list[np.ndarray]:
    from cgaug.models.control import photo_condition

    masks = masks if masks is not None else [None] * len(photos)
    return [photo_condition(photo, cfg.photo_control, height, width, mask=mask,
                            canny_thresholds=cfg.canny_thresholds)
            for photo, mask in zip(photos, masks, strict=True)]


def controlnet_count(pipe: Any) -> int:
    """How many conditions the pipeline takes (a MultiControlNet has one per ControlNet)."""
    controlnet = getattr(pipe.controlnet, "_orig_mod", pipe.controlnet)  # torch.compile wrapper
    nets = getattr(controlnet, "nets", None)
    return len(nets) if nets is not None else 1


def _check_photos(pipe: Any, cfg: GeneratorConfig, photos: list[np.ndarray] | None,
                  masks: list[np.ndarray | None] | None, count: int, size: tuple[int, int]) -> None:
    wanted = cfg.photo_control != "none"
    if not wanted:
        if photos is not None or masks is not None:
            raise ValueError("generate: photos were given but generator.photo_control is 'none'; "
                             "set photo_control (canny, lineart) to use them")
        return
    if photos is None:
        raise ValueError(f"generate: generator.photo_control is {cfg.photo_control!r}, so each sample "
                         f"needs its source photo (photos=[...]), found none")
    if controlnet_count(pipe) != 2:
        raise ValueError(f"generate: generator.photo_control is {cfg.photo_control!r} but the pipeline "
                         f"has {controlnet_count(pipe)} ControlNet(s), expected 2; load it with "
                         f"load_pipeline(cfg)")
    for name, values in (("photos", photos), ("photo_masks", masks)):
        if values is not None and len(values) != count:
            raise ValueError(f"generate: expected one entry of {name} per conditioning map ({count}), "
                             f"found {len(values)}")
    for i, photo in enumerate(photos):
        if photo.dtype != np.uint8 or photo.shape != (*size, 3):
            raise ValueError(f"generate: photo {i}: expected a {(*size, 3)} uint8 array like the "
                             f"conditioning maps, found {photo.shape} {photo.dtype}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 the way diffusers' own PIL output does (round, then clip)."""
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _check_inputs(
    cond_maps: list[np.ndarray], prompts: list[str], negatives: list[str], seeds: list[int]
) -> tuple[int, int]:
    counts = {"cond_maps": len(cond_maps), "prompts": len(prompts), "negatives": len(negatives),
              "seeds": len(seeds)}
    if len(set(counts.values())) != 1:
        raise ValueError(f"generate: expected one prompt, negative prompt and seed per conditioning map, "
                         f"found {counts}")
    if not cond_maps:
        return 0, 0
    first = cond_maps[0].shape
    for i, cond in enumerate(cond_maps):
        if cond.dtype != np.uint8 or cond.ndim != 3 or cond.shape[2] != 3:
            raise ValueError(f"generate: conditioning map {i}: expected a (H, W, 3) uint8 array, "
                             f"found {cond.shape} {cond.dtype}")
        if cond.shape != first:
            raise ValueError(f"generate: conditioning map {i}: expected the same size as map 0 {first}, "
                             f"found {cond.shape}; generate different sizes in separate calls")
    return first[0], first[1]


def generator_settings(cfg: GeneratorConfig, gen_size: tuple[int, int]) -> dict[str, Any]:
    """Every setting that, with the seed and prompts, regenerates a sample, as shard column -> value.

    Speed-only settings (batch size, device, channels_last, compile) are left out: they
    change pixels at float-rounding level only (see the module docstring).
    """
    photo = cfg.photo_control != "none"
    params = {"canny_low": cfg.canny_thresholds[0], "canny_high": cfg.canny_thresholds[1]} \
        if cfg.photo_control == "canny" else {}
    return {
        "generator_model": cfg.model,
        "generator_controlnet": cfg.controlnet,
        "generator_revision": cfg.revision,
        "scheduler": cfg.scheduler,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
        "control_scale": cfg.control_scale,
        "eta": cfg.eta,
        "dtype": resolve_dtype_name(cfg),
        "gen_height": gen_size[0],
        "gen_width": gen_size[1],
        "generator_variant": cfg.variant,
        "generator_controlnet_revision": cfg.controlnet_revision,
        "photo_control": cfg.photo_control,
        "photo_controlnet": photo_controlnet_name(cfg),
        "photo_controlnet_revision": cfg.photo_controlnet_revision if photo else None,
        "photo_control_scale": cfg.photo_control_scale if photo else None,
        "photo_control_params": json.dumps(params, sort_keys=True) if photo else None,
    }
