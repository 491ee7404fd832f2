"""Inputs for the generator tests (`tests/models/test_generator.py`, `tests/tasks/generation/test_generate.py`).

Blocky colour maps like label maps, prompts, blocky photos with strong edges, and the tiny
model's settings on the CPU at a small generation size, so each pipeline call stays well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cgaug.config import GeneratorConfig

PALETTE = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [220, 20, 60], [0, 0, 142], [255, 0, 255]],
                   np.uint8)


def tiny_config(model_dir: Path, **changes: Any) -> GeneratorConfig:
    """The tiny model's settings (as `model: tiny` gets them) from a local directory, on the CPU, generating
    at 32x64 (a quarter of the tiny default's pixels) to keep each test well under a second per call."""
    settings = {"model": str(model_dir), "controlnet": None, "local_files_only": True, "steps": 2,
                "short_side": 32, "batch_size": 4, "device": "cpu", **changes}
    return GeneratorConfig(**settings)


def make_maps(n: int, height: int = 48, width: int = 96, seed: int = 0) -> list[np.ndarray]:
    """Blocky colour maps (8x8 cells) like label maps: regions of one palette colour each.

    48x96 is generated at 32x64 and resized back, so both resizes run in every test."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, len(PALETTE), (n, height // 8, width // 8))
    return [PALETTE[np.kron(c, np.ones((8, 8), int))] for c in cells]


def make_texts(n: int) -> tuple[list[str], list[str]]:
    return [f"a dash cam photo of a road, object {i}" for i in range(n)], ["blurry"] * n


def make_photos(n: int, height: int = 48, width: int = 96, seed: int = 3) -> list[np.ndarray]:
    """Blocky grey photos with strong edges (Canny finds the 8x8 cell borders)."""
    cells = np.random.default_rng(seed).integers(0, 4, (n, height // 8, width // 8)) * 80
    return [np.repeat(np.kron(c, np.ones((8, 8), int))[..., None], 3, axis=2).astype(np.uint8) for c in cells]
