"""Region geometry from the class map, so that textures follow the labels: runs, horizon, instances.

All of it is vectorised numpy over the class map:
- runs: for every pixel, how far the region it belongs to extends above, below,
  left and right of it in its own column and row (a cheap stand-in for a
  distance transform: "top of its column run" is where snow settles, the run's
  bottom is where an object meets the ground, which gives its depth);
- the horizon: the top of the road, as compose estimates it;
- instances: connected regions of countable classes, found on a coarse grid
  by label propagation with pointer jumping (no scipy), with each region's
  bounding box, so a car gets one body colour and windows at its top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _distance_from_start(new_run: np.ndarray, axis: int) -> np.ndarray:
    """Per pixel: steps since the last run start along `axis` (new_run marks run starts)."""
    n = new_run.shape[axis]
    shape = [1, 1]
    shape[axis] = n
    pos = np.arange(n, dtype=np.int32).reshape(shape)
    starts = np.where(new_run, pos, np.int32(0))
    return pos - np.maximum.accumulate(starts, axis=axis)


@dataclass(frozen=True, slots=True)
class Runs:
    """(H, W) int32 distances to the ends of each pixel's vertical and horizontal same-class run."""

    up: np.ndarray
    down: np.ndarray
    left: np.ndarray
    right: np.ndarray


def runs(cls: np.ndarray) -> Runs:
    change_v = np.ones(cls.shape, bool)
    change_v[1:] = cls[1:] != cls[:-1]
    change_h = np.ones(cls.shape, bool)
    change_h[:, 1:] = cls[:, 1:] != cls[:, :-1]
    up = _distance_from_start(change_v, 0)
    left = _distance_from_start(change_h, 1)
    end_v = np.ones(cls.shape, bool)
    end_v[:-1] = change_v[1:]
    end_h = np.ones(cls.shape, bool)
    end_h[:, :-1] = change_h[:, 1:]
    down = np.ascontiguousarray(_distance_from_start(end_v[::-1], 0)[::-1])
    right = np.ascontiguousarray(_distance_from_start(end_h[:, ::-1], 1)[:, ::-1])
    return Runs(up, down, left, right)


def horizon_row(cls: np.ndarray, road: int, fallback: float = 0.45) -> int:
    """The top of the road (1st percentile of its rows, as compose estimates it); a default without road."""
    rows = np.flatnonzero((cls == road).any(axis=1))
    if rows.size == 0:
        return int(cls.shape[0] * fallback)
    counts = (cls[rows] == road).sum(axis=1)
    cumulative = np.cumsum(counts)
    return int(rows[np.searchsorted(cumulative, 0.01 * cumulative[-1])])


@dataclass(frozen=True, slots=True)
class Instances:
    """Instance id per pixel of countable classes (-1 elsewhere) and each instance's box (y0, x0, y1, x1)."""

    ids: np.ndarray  # (H*W,) int32, flat
    boxes: np.ndarray  # (N, 4) int32, inclusive-exclusive pixel bounds


def instances(cls: np.ndarray, thing_lut: np.ndarray, cells: int = 96) -> Instances:
    """Connected regions of thing classes, grouped on a grid of about `cells` rows.

    A pixel belongs to the component of its grid cell, or of a 4-neighbour cell of its class
    when its own cell was sampled on another class (object edges, thin parts); pixels with no
    such cell nearby get no instance.
    """
    h, w = cls.shape
    step = max(1, h // cells)
    grid = cls[step // 2::step, step // 2::step]
    gh, gw = grid.shape
    thing = thing_lut[grid]
    labels = np.where(thing, np.arange(gh * gw, dtype=np.int32).reshape(gh, gw), np.int32(gh * gw))
    flat_ids = np.full(h * w, -1, np.int32)
    if not thing.any():
        return Instances(flat_ids, np.zeros((0, 4), np.int32))
    same_v = thing[1:] & thing[:-1] & (grid[1:] == grid[:-1])
    same_h = thing[:, 1:] & thing[:, :-1] & (grid[:, 1:] == grid[:, :-1])
    for _ in range(gh + gw):
        before = labels
        labels = labels.copy()
        np.minimum(labels[1:], np.where(same_v, before[:-1], labels[1:]), out=labels[1:])
        np.minimum(labels[:-1], np.where(same_v, before[1:], labels[:-1]), out=labels[:-1])
        np.minimum(labels[:, 1:], np.where(same_h, before[:, :-1], labels[:, 1:]), out=labels[:, 1:])
        np.minimum(labels[:, :-1], np.where(same_h, before[:, 1:], labels[:, :-1]), out=labels[:, :-1])
        flat = labels.ravel()
        inside = flat < gh * gw
        flat[inside] = flat[flat[inside]]  # pointer jumping: a label is a cell of the same component
        if np.array_equal(labels, before):
            break
    _, compact = np.unique(labels[thing], return_inverse=True)
    cell_ids = np.full((gh, gw), -1, np.int32)
    cell_ids[thing] = compact.astype(np.int32)

    pixels = np.flatnonzero(thing_lut[cls].ravel())
    py, px = pixels // w, pixels % w
    cy, cx = np.minimum(py // step, gh - 1), np.minimum(px // step, gw - 1)
    pixel_cls = cls.ravel()[pixels]
    found = np.full(pixels.size, -1, np.int32)
    for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)):
        ny, nx = np.clip(cy + dy, 0, gh - 1), np.clip(cx + dx, 0, gw - 1)
        match = (found < 0) & (grid[ny, nx] == pixel_cls) & (cell_ids[ny, nx] >= 0)
        found[match] = cell_ids[ny, nx][match]
    flat_ids[pixels] = found
    count = int(compact.max()) + 1
    boxes = np.zeros((count, 4), np.int32)
    boxes[:, :2] = np.iinfo(np.int32).max
    ok = found >= 0
    np.minimum.at(boxes[:, 0], found[ok], py[ok])
    np.minimum.at(boxes[:, 1], found[ok], px[ok])
    np.maximum.at(boxes[:, 2], found[ok], py[ok] + 1)
    np.maximum.at(boxes[:, 3], found[ok], px[ok] + 1)
    empty = boxes[:, 2] == 0
    boxes[empty] = 0
    return Instances(flat_ids, boxes)


def _weights(n_out: int, n_in: int, cubic: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Source indices and weights along one axis: Catmull-Rom (4 taps) or linear (2 taps)."""
    pos = (np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - np.float32(0.5)
    base = np.floor(pos)
    t = pos - base
    base = base.astype(np.int32)
    if not cubic:
        return [np.clip(base, 0, n_in - 1), np.clip(base + 1, 0, n_in - 1)], [1 - t, t]
    t2, t3 = t * t, t * t * t
    weights = [(-t3 + 2 * t2 - t) / 2, (3 * t3 - 5 * t2 + 2) / 2, (-3 * t3 + 4 * t2 + t) / 2, (t3 - t2) / 2]
    return [np.clip(base + k, 0, n_in - 1) for k in (-1, 0, 1, 2)], weights


def upsample(small: np.ndarray, height: int, width: int, cubic: bool = True) -> np.ndarray:
    """Smooth enlargement of a (gh, gw[, c]) grid to (height, width[, c]), float32.

    Separable: along x on the small grid (cheap), then along y by gathering whole rows.
    """
    small = small.astype(np.float32, copy=False)
    extra = (1,) * (small.ndim - 2)
    cols, wx = _weights(width, small.shape[1], cubic)
    wide = sum(small[:, c] * w.reshape(1, -1, *extra) for c, w in zip(cols, wx, strict=True))
    rows, wy = _weights(height, small.shape[0], cubic)
    out = wide[rows[0]] * wy[0].reshape(-1, 1, *extra)
    for r, w in zip(rows[1:], wy[1:], strict=True):
        part = wide[r]
        part *= w.reshape(-1, 1, *extra)
        out += part
    return out


def noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int], channels: int = 0
          ) -> np.ndarray:
    """Value noise in [0, 1]: a random (cells) grid enlarged smoothly to (height, width[, channels])."""
    shape = (cells[0] + 1, cells[1] + 1) + ((channels,) if channels else ())
    return np.clip(upsample(rng.random(shape, dtype=np.float32), height, width), 0, 1)
