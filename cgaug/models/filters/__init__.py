"""The quality filter's models: SAM (`sam`), a segmenter with an anomaly score (`pixel`), CLIP (`clip`).

`load_filter_models(cfg)` loads the models of the enabled gates, each by hub id or local path
through the libraries' own `from_pretrained` / `create_model` code (`cgaug.models.hub`); a hub id
missing offline is a `ModelNotFound` naming the config key. ``tiny`` builds small random-weight
models once into the user cache and loads them through the same code, so tests exercise the
production path. Weights load once per process; models run in bf16 on CUDA by default
(`cgaug.models.device`). The protocols the filter stage sees are in `base`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaug.config import FilterConfig
from cgaug.models.device import dtype_name, resolve_device, torch_dtype
from cgaug.models.filters.base import FilterModels
from cgaug.models.filters.clip import ClipScorer, load_clip, save_tiny_clip
from cgaug.models.filters.pixel import load_pixel_model, save_tiny_segmenter
from cgaug.models.filters.sam import SamMasker, load_sam, save_tiny_sam
from cgaug.models.filters.tiny import TINY_KINDS, build_tiny
from cgaug.models.hub import cached

if TYPE_CHECKING:
    import torch

_TINY_SAVERS = {"sam": save_tiny_sam, "segmenter": save_tiny_segmenter, "clip": save_tiny_clip}


def build_tiny_filter(kind: str, dest: str | Path | None = None, seed: int = 0) -> Path:
    """Write the tiny `kind` model (sam, segmenter, clip) to `dest` (default: the user cache) atomically.

    Raises:
        ValueError: unknown kind.
        FileExistsError: `dest` holds something else.
    """
    if kind not in _TINY_SAVERS:
        raise ValueError(f"tiny filter model kind: expected one of {TINY_KINDS}, found {kind!r}")
    return build_tiny(kind, _TINY_SAVERS[kind], dest, seed)


def ensure_tiny_filter(kind: str) -> Path:
    """The tiny `kind` model in the user cache, built on first use (race-safe)."""
    return build_tiny_filter(kind)


def load_filter_models(cfg: FilterConfig) -> FilterModels:
    """The models of the enabled gates, their weights loaded once per process.

    Raises:
        ModelNotFound: a model is neither a local directory nor in the Hugging Face cache.
    """
    if cfg.mode == "none":
        return FilterModels()
    device = resolve_device(cfg.device, "filters.device")
    dtype = torch_dtype(dtype_name(cfg.dtype, device))
    common = {"device": device, "dtype": dtype, "batch_size": cfg.batch_size}
    pixel = {"local_files_only": cfg.local_files_only, "batch_size": cfg.batch_size,
             "short_side": cfg.segmenter_short_side, "device": device, "dtype": dtype}
    masker = segmenter = anomaly = clip = None
    if cfg.uses_sam:
        model, processor = cached(("sam", cfg.sam_model, cfg.local_files_only, device, dtype),
                                  lambda: _placed(load_sam(cfg.sam_model, cfg.local_files_only), device, dtype))
        masker = SamMasker(model, processor, **common)
    if cfg.uses_segmenter:
        segmenter = load_pixel_model(cfg.segmenter_model, "filters.segmenter_model", cityscapes=True, **pixel)
    if cfg.uses_anomaly_model:
        anomaly = load_pixel_model(cfg.anomaly_model, "filters.anomaly_model", cityscapes=False, **pixel)
    if cfg.uses_clip:
        model, tokenizer = cached(("clip", cfg.clip_model, cfg.clip_pretrained, device, dtype),
                                  lambda: _placed(load_clip(cfg.clip_model, cfg.clip_pretrained), device, dtype))
        clip = ClipScorer(model, tokenizer, template=cfg.clip_class_template, context=cfg.clip_crop_context,
                          **common)
    return FilterModels(masker=masker, segmenter=segmenter, anomaly=anomaly, clip=clip)


def _placed(pair: tuple[Any, Any], device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    model, other = pair
    return model.to(device=device, dtype=dtype), other


__all__ = ["ClipScorer", "FilterModels", "SamMasker", "build_tiny_filter", "ensure_tiny_filter", "load_clip",
           "load_filter_models", "load_sam"]
