"""The generate step: conditioning maps, prompts and seeds in, one image per sample out. No Prefect here.

The pipeline itself (loading, schedulers, speed settings, its call on one batch) is
`cgaug.models.generator`; this module decides how a list of samples goes through it:
inputs checked up front, everything generated at one size per call (`generation_size`,
conditioning maps resized nearest-neighbour so class colours stay exact), chunks of
`generator.batch_size`, the last chunk padded where shapes must stay fixed, and on CUDA
out-of-memory the chunk halved and generation continued. The halving is logged, counted
in a `GenerationReport` and remembered for the pipeline, so later calls start at the
size that fitted. `load_generator` binds all of it to the per-process pipeline of a
config: the `Generate` and `Settings` callables the shard loop takes.

Backends. `generator.model` picks one: a diffusers pipeline (a hub id, a local directory,
or "tiny", the random-weight test model), or "painter" (`PAINTER_MODEL`), the procedural
street-scene painter of `cgaug.models.painter`, which stands in for the diffusion model
where the method's effect must be measured without weights (tests, demo, `cgaug experiment`).
The painter loads nothing (no torch, no diffusers), paints at the label's size, and its
rows say it is a stand-in (`generator_model` "painter-v1").

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

import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cgaug.config import GeneratorConfig, PromptConfig
from cgaug.models.control import photo_condition
from cgaug.models.generator import (
    batch_runner,
    controlnet_count,
    generator_device,
    load_pipeline,
    photo_controlnet_name,
    resolve_dtype_name,
)
from cgaug.models.painter import PainterBackend

if TYPE_CHECKING:
    from diffusers import StableDiffusionControlNetPipeline

log = logging.getLogger(__name__)

Generate = Callable[..., list[np.ndarray]]
"""Images for (conditioning maps, prompts, negative prompts, seeds), at the maps' resolution; with a photo
condition (`generator.photo_control`) also the keywords `photos` and `photo_masks` (the pasted objects)."""

Settings = Callable[[int, int], dict[str, Any]]
"""The generator settings stored in a sample's row, given the label's (height, width)."""

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


PAINTER_MODEL = "painter"
"""`generator.model` value of the procedural painter (`cgaug.models.painter`), a stand-in for diffusion."""


def load_generator(cfg: GeneratorConfig, prompts: PromptConfig | None = None) -> tuple[Generate, Settings]:
    """The (generate, settings) pair the shard loop takes, over the per-process cached pipeline of `cfg`.

    With `cfg.model == "painter"` the pair is the painter's, which reads weather, time of day and
    place back from each prompt with `prompts` (the run's prompt templates); nothing is loaded.
    """
    if cfg.model == PAINTER_MODEL:
        if cfg.photo_control != "none":
            raise ValueError(f"generator.photo_control {cfg.photo_control!r}: the painter has no photo condition; "
                             "set it to 'none' with generator.model 'painter'")
        backend = PainterBackend(prompts)
        return backend, backend.settings
    pipe = load_pipeline(cfg)

    def run(cond_maps: list[np.ndarray], prompts: list[str], negatives: list[str], seeds: list[int],
            **photo_inputs: Any) -> list[np.ndarray]:
        return generate(pipe, cfg, cond_maps, prompts, negatives, seeds, **photo_inputs)

    def settings(height: int, width: int) -> dict[str, Any]:
        return generator_settings(cfg, generation_size(height, width, cfg))

    return run, settings


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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 the way diffusers' own PIL output does (round, then clip)."""
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- generation


def generate(pipe: StableDiffusionControlNetPipeline, cfg: GeneratorConfig, cond_maps: list[np.ndarray],
             prompts: list[str], negatives: list[str], seeds: list[int], **options: Any) -> list[np.ndarray]:
    """Images (uint8, H x W x 3, the conditioning maps' size), one per conditioning map.

    Runs in chunks of `cfg.batch_size`; each sample has its own generator seeded with its seed.
    All conditioning maps of one call must have the same size. Keyword options (photos,
    photo_masks, report, pad): see `generate_float`.
    """
    raw = generate_float(pipe, cfg, cond_maps, prompts, negatives, seeds, **options)  # validates the inputs
    return [resize_photo(to_uint8(image), *cond.shape[:2]) for image, cond in zip(raw, cond_maps, strict=True)]


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
    height, width = _check_inputs(cond_maps, prompts, negatives, seeds)
    _check_photos(pipe, cfg, photos, photo_masks, len(cond_maps), (height, width))
    report = report if report is not None else GenerationReport()
    if not cond_maps:
        return np.zeros((0, 0, 0, 3), np.float32)
    gen_h, gen_w = generation_size(height, width, cfg)
    conditions = [[resize_nearest(m, gen_h, gen_w) for m in cond_maps]]
    if photos is not None:
        conditions.append(_photo_conditions(cfg, photos, photo_masks, gen_h, gen_w))
    run = batch_runner(pipe, cfg, conditions, prompts, negatives, seeds)
    pad = (cfg.compile or generator_device(cfg).startswith("cuda")) if pad is None else pad
    chunks = run_batches(run, len(cond_maps), cfg.batch_size, pad=pad, report=report, limits=_limits_for(pipe),
                         size_key=(gen_h, gen_w))
    return np.concatenate(chunks)


def _photo_conditions(cfg: GeneratorConfig, photos: list[np.ndarray], masks: list[np.ndarray | None] | None,
                      height: int, width: int) -> list[np.ndarray]:
    masks = masks if masks is not None else [None] * len(photos)
    return [photo_condition(photo, cfg.photo_control, height, width, mask=mask,
                            canny_thresholds=cfg.canny_thresholds)
            for photo, mask in zip(photos, masks, strict=True)]


# ---------------------------------------------------------------- batching


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


# ---------------------------------------------------------------- input checks


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


# ---------------------------------------------------------------- settings for regeneration


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
