"""Loading the ControlNet pipeline and turning conditioning maps, prompts and seeds into images.

Every sample gets its own seeded generator, so a sample's pixels depend on its own seed
and settings only, not on which other samples share its batch (up to float rounding).
The generators live on the CPU: diffusers then draws the initial noise on the CPU and
moves it to the device, so a stored seed regenerates the same starting noise on any
machine, GPU or not.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cgaug.config import GeneratorConfig

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionControlNetPipeline

TINY_MODEL = "tiny"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"; anything else is a path

_lock = threading.Lock()
_loaded: dict[tuple, Any] = {}  # (model, controlnet, revision, dtype, device) -> base pipeline
_scheduled: dict[tuple, Any] = {}  # the same key + scheduler name -> pipeline sharing the base's modules


class ModelNotFound(LookupError):
    """A generator model (pipeline or ControlNet) that is neither a local directory nor in the HF cache."""


# ---------------------------------------------------------------- device and dtype


def resolve_device(cfg: GeneratorConfig) -> str:
    """`auto` picks CUDA when present; anything else must be a torch device string."""
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(cfg.device)
    except RuntimeError as exc:
        raise ValueError(f"generator.device: expected 'auto' or a torch device such as 'cuda:0', "
                         f"found {cfg.device!r}") from exc
    return cfg.device


def resolve_dtype_name(cfg: GeneratorConfig) -> str:
    """`auto` is bf16 on CUDA (same speed as fp16 there, without fp16's VAE overflow), fp32 elsewhere."""
    if cfg.dtype != "auto":
        return cfg.dtype
    import torch

    on_cuda = resolve_device(cfg).startswith("cuda")
    return "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"


def resolve_dtype(cfg: GeneratorConfig) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[resolve_dtype_name(cfg)]


# ---------------------------------------------------------------- loading


def load_pipeline(cfg: GeneratorConfig) -> StableDiffusionControlNetPipeline:
    """The pipeline for `cfg`, loaded once per process and reused.

    Weights are cached per (model, controlnet, revision, dtype, device); each scheduler gets
    its own pipeline object sharing those weights, so switching schedulers never reloads and
    never changes the scheduler under another caller's feet.

    Raises:
        ModelNotFound: the model or ControlNet is neither a local directory nor available
            from the Hugging Face cache (or hub, when online).
    """
    model = _model_ref(cfg)
    key = (model, cfg.controlnet, cfg.revision, resolve_dtype_name(cfg), resolve_device(cfg))
    with _lock:
        if key not in _loaded:
            from cgaug.models.tiny import quiet_progress_bars

            with quiet_progress_bars():
                _loaded[key] = _load_base(cfg, model)
        if (*key, cfg.scheduler) not in _scheduled:
            _scheduled[(*key, cfg.scheduler)] = _with_scheduler(_loaded[key], cfg.scheduler)
        return _scheduled[(*key, cfg.scheduler)]


def clear_pipeline_cache() -> None:
    """Forget every loaded pipeline (tests; freeing GPU memory between runs)."""
    with _lock:
        _loaded.clear()
        _scheduled.clear()


def _model_ref(cfg: GeneratorConfig) -> str:
    if cfg.model == TINY_MODEL:
        from cgaug.models.tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    return cfg.model


def _load_base(cfg: GeneratorConfig, model: str) -> StableDiffusionControlNetPipeline:
    from diffusers import StableDiffusionControlNetPipeline

    common = {"local_files_only": cfg.local_files_only, "low_cpu_mem_usage": _has_accelerate(),
              _dtype_keyword(): resolve_dtype(cfg)}
    is_local = _locate(model, "generator.model", "model_index.json", "pipeline")
    extra: dict[str, Any] = {}
    if cfg.controlnet is not None:
        extra["controlnet"] = _load_controlnet(cfg.controlnet, common)
    pipe = _from_pretrained(
        StableDiffusionControlNetPipeline, model, "generator.model", is_local,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        revision=None if is_local else cfg.revision, **extra, **common,
    )
    pipe = pipe.to(resolve_device(cfg))
    pipe.vae.enable_slicing()  # decode one image at a time: nearly free, bounds peak memory at big batches
    return pipe


def _load_controlnet(name: str, common: dict[str, Any]) -> Any:
    from diffusers import ControlNetModel

    is_local = _locate(name, "generator.controlnet", "config.json", "ControlNet")
    return _from_pretrained(ControlNetModel, name, "generator.controlnet", is_local, **common)


def _locate(name: str, field: str, marker: str, what: str) -> bool:
    """True for a local directory, False for a hub id; ModelNotFound for a path that does not exist."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / marker).is_file():
            raise ModelNotFound(_not_found_message(
                name, field, f"{path} exists but holds no {marker}, so it is not a saved diffusers {what}"))
        return True
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise ModelNotFound(_not_found_message(name, field, f"no such directory: {path}"))
    return False


def _from_pretrained(cls: Any, name: str, field: str, is_local: bool, **kwargs: Any) -> Any:
    path = str(Path(name).expanduser()) if is_local else name
    if is_local:
        return cls.from_pretrained(path, **kwargs)
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as exc:  # hub misses: LocalEntryNotFoundError, "does not appear to have a file named ..."
        reason = f"not in the Hugging Face cache and not downloadable ({' '.join(str(exc).split())})"
        raise ModelNotFound(_not_found_message(name, field, reason)) from exc


def _not_found_message(name: str, field: str, reason: str) -> str:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    offline = " HF_HUB_OFFLINE is set, so nothing is downloaded." if os.environ.get("HF_HUB_OFFLINE") else ""
    return (
        f"{field} {name!r} was not found: {reason}.{offline} To provide it, either download "
        f"{name!r} into the Hugging Face cache (HF_HOME, here {hf_home}) on a machine with network access "
        f"(e.g. `hf download {name}`) and copy the cache over, or set the config key `{field}` "
        f"to a local directory saved with diffusers' save_pretrained. (`generator.model: tiny` needs "
        f"no download.)"
    )


def _dtype_keyword() -> str:
    """`dtype` where diffusers has it (torch_dtype is deprecated there), `torch_dtype` before."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401 - presence test only
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _has_accelerate() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def _with_scheduler(base: StableDiffusionControlNetPipeline, name: str) -> StableDiffusionControlNetPipeline:
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
) -> list[np.ndarray]:
    """Images (uint8, H x W x 3, the conditioning maps' size), one per conditioning map.

    Runs in chunks of `cfg.batch_size`; each sample has its own generator seeded with its seed.
    All conditioning maps of one call must have the same size.
    """
    height, width = _check_inputs(cond_maps, prompts, negatives, seeds)
    raw = generate_float(pipe, cfg, cond_maps, prompts, negatives, seeds)
    return [resize_photo(to_uint8(image), height, width) for image in raw]


def generate_float(
    pipe: StableDiffusionControlNetPipeline,
    cfg: GeneratorConfig,
    cond_maps: list[np.ndarray],
    prompts: list[str],
    negatives: list[str],
    seeds: list[int],
) -> np.ndarray:
    """The pipeline's own output, (N, gen_h, gen_w, 3) floats in [0, 1] at the generation size.

    Kept separate from `generate` so batch-independence can be checked before uint8 rounding,
    which turns a 1e-7 difference into a whole grey level now and then.
    """
    import torch

    height, width = _check_inputs(cond_maps, prompts, negatives, seeds)
    if not cond_maps:
        return np.zeros((0, 0, 0, 3), np.float32)
    gen_h, gen_w = generation_size(height, width, cfg)
    control = np.stack([resize_nearest(m, gen_h, gen_w) for m in cond_maps])
    control_t = torch.from_numpy(control).permute(0, 3, 1, 2).float().div_(255.0)  # NCHW in [0, 1]
    extra = {"eta": cfg.eta} if cfg.scheduler == "ddim" else {}
    chunks: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(cond_maps), cfg.batch_size):
            chunk = slice(start, start + cfg.batch_size)
            result = pipe(
                prompt=prompts[chunk], negative_prompt=negatives[chunk], image=control_t[chunk],
                height=gen_h, width=gen_w, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                controlnet_conditioning_scale=cfg.control_scale, output_type="np",
                generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds[chunk]], **extra,
            )
            chunks.append(np.asarray(result.images, dtype=np.float32))
    return np.concatenate(chunks)


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
    """The shard columns that, with the seed and prompts, regenerate a sample."""
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
    }
