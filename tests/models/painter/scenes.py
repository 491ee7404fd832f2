"""Conditioning maps for the painter tests: fixture street scenes coloured as compose colours them."""

from __future__ import annotations

import numpy as np

from cgaug.fixtures import render_mask, render_scene
from cgaug.labels import ade_color
from cgaug.tasks.generation.compose import conditioning_map, road_mask


def street(seed: int, height: int = 128, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(ADE-coloured conditioning map, Cityscapes label ids) of one fixture scene."""
    scene = render_scene(np.random.default_rng(seed), height, width)
    return conditioning_map(scene.label_ids), scene.label_ids


def paste(cond: np.ndarray, label_ids: np.ndarray, ade_class: str, shape: str = "box", size: float = 0.22,
          across: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The map with a silhouette of `shape` painted as `ade_class`, standing on the road; and its mask.

    The object stands with its bottom centre on the road row at 80 % of the road's rows, at
    `across` of that row's road extent; `size` is its longer side as a fraction of the height.
    """
    road = road_mask(label_ids)
    rows = np.flatnonzero(road.any(axis=1))
    row = int(rows[int(0.8 * (rows.size - 1))])
    cols = np.flatnonzero(road[row])
    col = int(cols[0] + across * (cols[-1] - cols[0]))
    silhouette = render_mask(shape, np.random.default_rng(seed), max(8, int(size * cond.shape[0]))) > 0
    h, w = silhouette.shape
    top, left = max(0, row - h + 1), max(0, col - w // 2)
    silhouette = silhouette[h - (row + 1 - top):, : cond.shape[1] - left]
    mask = np.zeros(cond.shape[:2], bool)
    mask[top:top + silhouette.shape[0], left:left + silhouette.shape[1]] = silhouette
    out = cond.copy()
    out[mask] = ade_color(ade_class)
    return out, mask


def explained_by_labels(image: np.ndarray, cond: np.ndarray, step: int = 32) -> float:
    """R² of the image's brightness explained by the map's regions: how much a picture follows its label map.

    Regions are the conditioning map's colours rounded to `step` levels, so that a JPEG-compressed map
    (a preview) still groups by class. A painted scene scores high; the noise of a random-weight diffusion
    model, whose pixels ignore the map, scores near 0.
    """
    gray = image.astype(np.float64).mean(axis=2).reshape(-1)
    keys = np.round(cond.astype(np.int64) / step).reshape(-1, 3) @ np.array([10_000, 100, 1])
    _, region = np.unique(keys, return_inverse=True)
    counts = np.bincount(region)
    means = np.bincount(region, weights=gray) / counts
    total = ((gray - gray.mean()) ** 2).sum()
    return float(1 - ((gray - means[region]) ** 2).sum() / total) if total > 0 else 0.0
