"""What the quality filter stage (`cgaug.tasks.generation.filter`) needs from models: three protocols.

The gates are decided in pure numpy code that sees models only through these small interfaces,
so every decision can be tested with constructed models whose right answer is known; the
implementations over real networks are `sam.SamMasker`, `pixel.PixelSegmenter` and `clip.ClipScorer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cgaug.records import Box

if TYPE_CHECKING:
    import torch


class ObjectMasker(Protocol):
    """Box-prompted object masks (SAM)."""

    def masks(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]) -> list[list[np.ndarray]]:
        """For each image, one (H, W) bool mask per box, at the image's size."""
        ...


@dataclass(frozen=True, slots=True)
class PixelOutput:
    train_ids: np.ndarray | None  # (H, W) uint8 predicted Cityscapes train ids (None: not a Cityscapes model)
    anomaly: np.ndarray  # (H, W) float32, higher = more anomalous


class PixelModel(Protocol):
    """A segmenter: per-pixel class prediction and anomaly score."""

    def predict(self, images: Sequence[np.ndarray]) -> list[PixelOutput]: ...


class ClipModel(Protocol):
    """Image-text similarities (open_clip)."""

    def image_text(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> list[float]:
        """Cosine similarity of each whole image with its text."""
        ...

    def object_margins(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]],
                       names: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per object: cos(crop, its class prompt) - max cos(crop, a Cityscapes class prompt)."""
        ...


@dataclass(frozen=True, slots=True)
class FilterModels:
    masker: ObjectMasker | None = None
    segmenter: PixelModel | None = None  # Cityscapes classes: consistency, and anomaly unless `anomaly` is set
    anomaly: PixelModel | None = None
    clip: ClipModel | None = None


def to_chw(image: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """A (H, W, 3) uint8 image as a (3, H, W) uint8 tensor on `device` (the filter models' input)."""
    import torch

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"filter models: expected (H, W, 3) uint8 images, found {image.shape} {image.dtype}")
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).to(device).permute(2, 0, 1)
