"""Per-class procedural materials: each paints the albedo (and night lights) of its class's pixels.

A material gets the pixels of one class as flat indices and computes their
colour from the pixel position, the region geometry (`Frame.runs`, instance
boxes) and the frame's noise fields: work is proportional to the class's
pixels, so a whole image costs a few passes over its pixels in total.
Colours are in [0, 1] under neutral daylight; `atmosphere` applies weather and
time afterwards. Per-sample variation comes from `Frame.rng(salt)` (palette
jitter) and from hashing positions and instance ids with the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from cgaug.labels import ade_classes
from cgaug.models.painter.classes import MATERIALS, UNKNOWN, class_index, ood_look, ood_lut
from cgaug.models.painter.frame import Frame, hash01
from cgaug.models.painter.geometry import upsample

Material = Callable[[Frame, np.ndarray, int], None]

BUS_PAINTS = np.asarray([(0.85, 0.75, 0.1), (0.75, 0.12, 0.1), (0.9, 0.9, 0.88), (0.1, 0.35, 0.6)], np.float32)
CLOTHES = np.asarray([(0.15, 0.15, 0.22), (0.55, 0.1, 0.15), (0.75, 0.72, 0.6), (0.22, 0.35, 0.22),
                      (0.85, 0.85, 0.85), (0.2, 0.3, 0.55), (0.6, 0.4, 0.2)], np.float32)
SKIN = np.asarray([(0.85, 0.67, 0.55), (0.62, 0.44, 0.32), (0.4, 0.27, 0.2), (0.92, 0.78, 0.68)], np.float32)
SIGN_COLORS = np.asarray([(0.1, 0.3, 0.7), (0.75, 0.1, 0.1), (0.9, 0.72, 0.1), (0.1, 0.5, 0.25)], np.float32)


def _coords(f: Frame, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of flat pixel indices, as float32 (all texture math is float32)."""
    y = idx // f.width
    return y.astype(np.float32), (idx - y * f.width).astype(np.float32)


def _frac(x: np.ndarray) -> np.ndarray:
    """x - floor(x): numpy's float `%` is several times slower."""
    return x - np.floor(x)


def _jitter(f: Frame, salt: int, rgb: tuple[float, float, float] | np.ndarray, amount: float = 0.06
            ) -> np.ndarray:
    """A per-sample variant of a colour: overall brightness and a little per-channel shift."""
    rng = f.rng(salt)
    color = np.asarray(rgb, np.float32) * np.float32(rng.uniform(1 - amount, 1 + amount))
    return np.clip(color + rng.uniform(-amount / 2, amount / 2, 3).astype(np.float32), 0, 1)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[:, None] if t.ndim == 1 else t
    return a + (b - a) * t


def _run(f: Frame, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r = f.runs
    return (r.up.reshape(-1)[idx], r.down.reshape(-1)[idx], r.left.reshape(-1)[idx], r.right.reshape(-1)[idx])


def _local(f: Frame, idx: np.ndarray, y: np.ndarray, x: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(u, v) in [0, 1] across/down the pixel's instance box, its instance id (-1: none) and box height.

    Pixels without an instance (too thin for the instance grid) use their own row and column run.
    """
    inst = f.instances.ids[idx]
    box = f.instances.boxes[np.maximum(inst, 0)] if f.instances.boxes.size else np.zeros((idx.size, 4), np.int32)
    bh = np.maximum(box[:, 2] - box[:, 0], 1).astype(np.float32)
    bw = np.maximum(box[:, 3] - box[:, 1], 1).astype(np.float32)
    up, down, left, right = _run(f, idx)
    has = inst >= 0
    v = np.where(has, (y - box[:, 0] + 0.5) / bh, (up + 0.5) / (up + down + 1))
    u = np.where(has, (x - box[:, 1] + 0.5) / bw, (left + 0.5) / (left + right + 1))
    return u.astype(np.float32), v.astype(np.float32), inst, np.where(has, bh, up + down + 1).astype(np.float32)


def _pick(palette: np.ndarray, key: np.ndarray) -> np.ndarray:
    return palette[np.minimum((key * len(palette)).astype(np.int32), len(palette) - 1)]


# ------------------------------------------------------------------------------------------------ ground


def _road(f: Frame, idx: np.ndarray, ci: int) -> None:
    y, x = _coords(f, idx)
    base = _jitter(f, 1, f.style.road, 0.08)
    shade = (0.88 + 0.2 * f.coarse[idx]) * (0.9 + 0.2 * f.grain[idx])
    patch = 1 - 0.1 * np.clip((f.mid[idx] - 0.7) * 8, 0, 1)  # repaired asphalt
    color = base * (shade * patch)[:, None]
    # lane marks from the road's extent in each row: idx is sorted, so each row's pixels are contiguous
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    ends = np.r_[starts[1:], y.size] - 1
    lengths = ends - starts + 1
    left = np.repeat(x[starts], lengths)
    right = np.repeat(x[ends], lengths)
    span = (right - left + 1).astype(np.float32)
    t = f.depth(y)
    half = np.maximum(0.45, span * 0.007)
    centre = (left + right) / 2
    dashed = (_frac(0.8 / t + f.rng(2).random()) < 0.5) & (np.abs(x - centre) < half)
    edge = np.minimum(np.abs(x - (left + 0.04 * span)), np.abs(x - (right - 0.04 * span))) < half
    marks = (dashed | edge) & (y > f.horizon + 2) & (span > 0.15 * f.width)
    worn = 0.75 + 0.25 * f.grain[idx]
    color[marks] = (np.float32([0.86, 0.86, 0.82]) * worn[marks, None])
    f.flat_albedo[idx] = color


def _sidewalk(f: Frame, idx: np.ndarray, ci: int) -> None:
    y, x = _coords(f, idx)
    base = _jitter(f, 3, f.style.sidewalk, 0.06)
    t = f.depth(y)
    # slabs on the ground plane: depth ~ 1/t, lateral ~ (x - centre) / t
    gz = 1.2 / t
    gx = (x - f.width / 2) / (t * f.height) * 6.0
    seam = (_frac(gz) < 0.05 + 0.01 / t) | (_frac(gx) < 0.05)
    slab = hash01(np.floor(gz), np.floor(gx), f.seed)
    shade = (0.9 + 0.12 * slab) * (0.92 + 0.12 * f.coarse[idx]) * (0.94 + 0.1 * f.grain[idx])
    shade = np.where(seam & (y > f.horizon + 2), shade * 0.8, shade)
    f.flat_albedo[idx] = base * shade[:, None]


def _terrain(f: Frame, idx: np.ndarray, ci: int) -> None:
    base = _jitter(f, 4, f.style.grass, 0.08)
    dry = np.float32([0.55, 0.5, 0.3])
    color = _mix(np.broadcast_to(base, (idx.size, 3)), dry, 0.45 * f.coarse[idx] ** 2)
    f.flat_albedo[idx] = color * (0.7 + 0.45 * f.grain[idx] * f.mid[idx] + 0.15 * f.mid[idx])[:, None]


def _vegetation(f: Frame, idx: np.ndarray, ci: int) -> None:
    up, down, left, right = _run(f, idx)
    base = _jitter(f, 5, f.style.foliage, 0.08)
    yellow = np.float32([0.45, 0.5, 0.15])
    color = _mix(np.broadcast_to(base, (idx.size, 3)), yellow, 0.5 * f.coarse[idx] ** 2)
    # clumps of leaves: mid noise in clusters, fine grain for single leaves, light from above
    top_light = 1.12 - 0.3 * np.clip(up / (up + down + 1), 0, 1)
    leaves = (0.72 + 0.45 * f.mid[idx] ** 1.5) * (0.78 + 0.4 * f.grain[idx]) * top_light
    color = color * leaves[:, None]
    width = left + right + 1
    trunk = (width < max(3, 0.02 * f.width)) & (up + down + 1 > 3 * width)
    bark = np.float32([0.33, 0.25, 0.18]) * (0.8 + 0.3 * f.grain[idx[trunk]])[:, None]
    color[trunk] = bark
    f.flat_albedo[idx] = color


# ------------------------------------------------------------------------------------------------ built


def _building(f: Frame, idx: np.ndarray, ci: int) -> None:
    _, x = _coords(f, idx)
    up, down, _, _ = _run(f, idx)
    rng = f.rng(6)
    edges = np.cumsum(rng.uniform(0.04, 0.14, 64) * f.width)
    facade = np.searchsorted(edges, x, side="right")
    n = len(edges) + 1
    palette = np.asarray(f.style.facades, np.float32)
    colors = palette[rng.integers(0, len(palette), n)] * rng.uniform(0.88, 1.1, (n, 1)).astype(np.float32)
    colors = np.clip(colors, 0, 1)
    left_edge = np.r_[0.0, edges][facade]
    road_x = f.width / 2
    near = np.clip(np.abs(x - road_x) / (0.5 * f.width), 0.15, 1.0)
    period_y = np.maximum(f.style.window_period * f.height * near, 3.0)
    period_x = period_y * rng.uniform(0.7, 1.1, n).astype(np.float32)[facade]
    lx = _frac((x - left_edge) / period_x)
    ly = _frac(up / period_y)
    window = (lx > 0.3) & (lx < 0.7) & (ly > 0.32) & (ly < 0.74) & (up > 0.6 * period_y)
    shop = down < 1.1 * period_y
    window &= ~shop
    side = np.where(x < road_x, np.float32(1.0), np.float32(0.86))  # one side in the sun
    shade = side * (0.9 + 0.1 * f.coarse[idx]) * (0.95 + 0.08 * f.grain[idx])
    shade = np.where(up < max(1.0, 0.012 * f.height), shade * 0.7, shade)  # cornice
    color = colors[facade] * shade[:, None]
    cell = hash01(facade, np.floor((x - left_edge) / period_x), np.floor(up / period_y), f.seed)
    # glass mirrors the facade opposite and the sky: darker than the wall, but of the wall's family
    glass = (color * 0.62 + np.float32(f.style.window) * 0.3) * ((0.85 + 0.4 * cell) * (1.1 - 0.3 * ly))[:, None]
    color[window] = glass[window]
    color[shop] = np.where((lx[shop] > 0.15)[:, None], color[shop] * 0.7, color[shop])
    f.flat_albedo[idx] = color
    if f.night:
        lit = window & (cell > 0.6)
        warm = np.float32([1.0, 0.78, 0.45]) * (0.35 + 0.4 * cell[lit])[:, None]
        f.flat_emissive[idx[lit]] = warm
        shop_lit = shop & (lx > 0.1) & (hash01(facade, f.seed) > 0.4)
        f.flat_emissive[idx[shop_lit]] = np.float32([0.9, 0.8, 0.6]) * 0.4


def _wall(f: Frame, idx: np.ndarray, ci: int) -> None:
    y, x = _coords(f, idx)
    base = _jitter(f, 7, (0.6, 0.57, 0.52), 0.08)
    brick_h = max(2.0, 0.012 * f.height)
    row = np.floor(y / brick_h)
    odd = 0.5 * (_frac(row / 2) > 0.25)
    bx = x / (2.2 * brick_h) + odd
    mortar = (_frac(y / brick_h) < 0.8 / brick_h) | (_frac(bx) < 0.08)
    shade = (0.85 + 0.25 * hash01(row, np.floor(bx), f.seed))
    shade = np.where(mortar, 0.7, shade) * (0.92 + 0.12 * f.grain[idx])
    f.flat_albedo[idx] = base * shade[:, None]


def _fence(f: Frame, idx: np.ndarray, ci: int) -> None:
    _, x = _coords(f, idx)
    up, down, _, _ = _run(f, idx)
    rng = f.rng(8)
    metal = rng.random() < 0.5
    base = _jitter(f, 9, (0.35, 0.4, 0.36) if metal else (0.5, 0.36, 0.22), 0.08)
    period = max(3.0, 0.012 * f.width)
    bar = _frac(x / period) < (0.35 if metal else 0.8)
    v = up / (up + down + 1)
    rail = (np.abs(v - 0.12) < 0.06) | (np.abs(v - 0.6) < 0.05)
    shade = np.where(bar | rail, 1.0, 0.45) * (0.9 + 0.15 * f.grain[idx])
    f.flat_albedo[idx] = base * shade[:, None]


def _concrete(f: Frame, idx: np.ndarray, ci: int) -> None:
    base = _jitter(f, 10, (0.55, 0.54, 0.52), 0.06)
    stain = 0.8 + 0.25 * f.mid[idx] + 0.1 * f.grain[idx]
    f.flat_albedo[idx] = base * stain[:, None]


def _pole(f: Frame, idx: np.ndarray, ci: int) -> None:
    _, _, left, right = _run(f, idx)
    base = _jitter(f, 11, (0.42, 0.43, 0.45), 0.06)
    u = (left + 0.5) / (left + right + 1)
    shade = 0.55 + 0.6 * np.sin(np.pi * u) * (0.95 + 0.1 * f.grain[idx])
    f.flat_albedo[idx] = base * shade[:, None]


def _traffic_light(f: Frame, idx: np.ndarray, ci: int) -> None:
    y, x = _coords(f, idx)
    u, v, inst, _ = _local(f, idx, y, x)
    color = np.broadcast_to(np.float32([0.1, 0.1, 0.09]), (idx.size, 3)).copy()
    lit = np.floor(hash01(inst, f.seed, 12) * 3)
    lamps = np.float32([[0.95, 0.15, 0.1], [1.0, 0.7, 0.1], [0.2, 0.95, 0.4]])
    for k in range(3):
        centre = 0.2 + 0.3 * k
        disc = ((u - 0.5) / 0.35) ** 2 + ((v - centre) / 0.12) ** 2 < 1
        on = disc & (lit == k)
        color[disc] = lamps[k] * 0.25
        color[on] = lamps[k]
        f.flat_emissive[idx[on]] = lamps[k] * (1.2 if f.night else 0.3)
    f.flat_albedo[idx] = color


def _sign(f: Frame, idx: np.ndarray, ci: int) -> None:
    y, x = _coords(f, idx)
    u, v, inst, _ = _local(f, idx, y, x)
    key = hash01(np.where(inst >= 0, inst, x // max(1, f.width // 8)), f.seed, 13)
    color = _pick(SIGN_COLORS, key)
    rim = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v)) < 0.13
    symbol = (np.abs(u - 0.5) < 0.22) & (np.abs(v - 0.5) < 0.08)
    color = np.where(rim[:, None], np.float32(0.92), color)
    color = np.where(symbol[:, None], np.float32(0.1), color)
    f.flat_albedo[idx] = color * (0.92 + 0.1 * f.grain[idx])[:, None]


# ------------------------------------------------------------------------------------------------ things


def _car(f: Frame, idx: np.ndarray, ci: int) -> None:
    y, x = _coords(f, idx)
    u, v, inst, _ = _local(f, idx, y, x)
    bus = ci == class_index("bus")
    key = hash01(inst, f.seed, 14)
    body = _pick(BUS_PAINTS if bus else np.asarray(f.style.cars, np.float32), key)
    body = body * (0.95 + 0.1 * hash01(inst, f.seed, 15))[:, None]
    highlight = 1.0 + 0.25 * np.exp(-(((v - 0.55) / 0.08) ** 2)) - 0.25 * v
    color = body * highlight[:, None]
    side = np.abs(u - 0.5)
    if bus:
        window = (v > 0.12) & (v < 0.5) & (side < 0.46)
    else:
        window = (v > 0.08) & (v < 0.42) & (side < 0.36 - 0.1 * (0.42 - v))
    glass = np.float32([0.12, 0.15, 0.2]) * (1.5 - v / 0.5)[:, None]
    color[window] = glass[window]
    bumper = (v > 0.78) & (v < 0.86)
    color[bumper] = color[bumper] * 0.45
    wheel = (v > 0.86) & (side > 0.18) & (side < 0.45)
    color[wheel] = np.float32([0.05, 0.05, 0.06])
    lights = (v > 0.52) & (v < 0.64) & (side > 0.36) & (side < 0.49)
    facing = hash01(inst, f.seed, 16) < 0.3  # seen from the front: headlights, else taillights
    lamp = np.where(facing[:, None], np.float32([0.95, 0.93, 0.8]), np.float32([0.75, 0.05, 0.04]))
    color[lights] = lamp[lights]
    f.flat_albedo[idx] = color * (0.96 + 0.06 * f.grain[idx])[:, None]
    if f.night:
        f.flat_emissive[idx[lights]] = lamp[lights] * 1.6


def _person(f: Frame, idx: np.ndarray, ci: int) -> None:
    y, x = _coords(f, idx)
    u, v, inst, _ = _local(f, idx, y, x)
    shirt = _pick(CLOTHES, hash01(inst, f.seed, 17))
    trousers = _pick(CLOTHES[[0, 3, 5, 6]], hash01(inst, f.seed, 18)) * 0.7
    skin = _pick(SKIN, hash01(inst, f.seed, 19))
    color = np.where((v < 0.14)[:, None], skin, np.where((v < 0.55)[:, None], shirt, trousers))
    color = np.where((v > 0.95)[:, None], np.float32(0.06), color)
    shade = 0.7 + 0.4 * np.sin(np.pi * np.clip(u, 0, 1))
    f.flat_albedo[idx] = color * (shade * (0.94 + 0.1 * f.grain[idx]))[:, None]


def _bicycle(f: Frame, idx: np.ndarray, ci: int) -> None:
    base = _jitter(f, 20, (0.16, 0.16, 0.18), 0.1)
    f.flat_albedo[idx] = base * (0.7 + 0.7 * f.grain[idx])[:, None]


def _sky(f: Frame, idx: np.ndarray, ci: int) -> None:
    """The sky's final colour (weather and time included): `atmosphere` does not relight it."""
    y, _ = _coords(f, idx)
    t = np.clip(y / max(f.horizon, 1), 0, 1)[:, None]
    top, low, cloud, cover = _SKIES[f.weather]
    if f.night:
        top, low, cloud = (0.01, 0.015, 0.04), (0.08, 0.07, 0.09), (0.06, 0.06, 0.08)
    sky = _mix(np.broadcast_to(np.float32(top), (idx.size, 3)), np.float32(low), t ** 1.5)
    z = _clouds(f, int(y.max()) + 1)[idx]
    q = NormalDist().inv_cdf(1 - cover)  # cover is the fraction of the sky above the threshold
    amount = np.clip((z - q) / 0.9, 0, 1)
    amount = amount * amount * (3 - 2 * amount)
    shaded = np.float32(cloud) * (1.04 - 0.1 * np.clip(z - q, 0, 2.5))[:, None]
    f.flat_albedo[idx] = _mix(sky, shaded, amount)


def _clouds(f: Frame, rows: int) -> np.ndarray:
    """Fractal noise (4 octaves) over the top `rows` rows, standardised, flat (rows * width,).

    Computed at quarter resolution and enlarged: clouds have no detail finer than that.
    """
    rng = f.rng(30)
    hs, ws = max(2, rows // 4), max(2, f.width // 4)
    fbm = np.zeros((hs, ws), np.float32)
    for octave in range(4):
        cells = (2 << octave, 5 << octave)
        fbm += upsample(rng.random((cells[0] + 3, cells[1] + 3), dtype=np.float32), hs, ws) * np.float32(
            0.55**octave)
    fbm -= fbm.mean()
    fbm /= fbm.std() + np.float32(1e-6)
    return upsample(fbm, rows, f.width, cubic=False).reshape(-1)


_SKIES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float], float]] = {
    # top, horizon, cloud colour, cloud cover
    "clear": ((0.22, 0.45, 0.8), (0.72, 0.82, 0.92), (0.93, 0.95, 0.98), 0.12),
    "cloudy": ((0.55, 0.58, 0.63), (0.75, 0.77, 0.8), (0.82, 0.83, 0.85), 0.85),
    "rainy": ((0.32, 0.34, 0.38), (0.5, 0.52, 0.55), (0.42, 0.43, 0.46), 0.95),
    "snowy": ((0.7, 0.72, 0.76), (0.86, 0.87, 0.9), (0.9, 0.9, 0.92), 0.9),
    "foggy": ((0.75, 0.77, 0.8), (0.8, 0.81, 0.83), (0.83, 0.84, 0.85), 0.5),
}


def _unknown(f: Frame, idx: np.ndarray, ci: int) -> None:
    f.flat_albedo[idx] = np.float32([0.35, 0.35, 0.36]) * (0.85 + 0.3 * f.mid[idx])[:, None]


def _ood(f: Frame, idx: np.ndarray, ci: int) -> None:
    """A pasted unknown object: its class's own two colours and pattern, shaded as a lit solid."""
    look = ood_look(ci)
    y, x = _coords(f, idx)
    inst = f.instances.ids[idx]
    box = f.instances.boxes[np.maximum(inst, 0)] if f.instances.boxes.size else np.zeros((idx.size, 4), np.int32)
    size = np.maximum(np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]), 1).astype(np.float32)
    has = inst >= 0
    cu = np.where(has, (x - box[:, 1]) / size, x / f.height) * look.cells
    cv = np.where(has, (y - box[:, 0]) / size, y / f.height) * look.cells
    if look.pattern == "stripes":
        accent = _frac(cu * np.cos(look.angle) + cv * np.sin(look.angle)) < 0.45
    elif look.pattern == "checker":
        accent = _frac((np.floor(cu) + np.floor(cv)) / 2) < 0.25
    elif look.pattern == "spots":
        accent = (_frac(cu) - 0.5) ** 2 + (_frac(cv) - 0.5) ** 2 < 0.09
    else:
        accent = hash01(np.floor(cu * 1.5), np.floor(cv * 1.5), ci) < 0.45
    color = np.where(accent[:, None], np.float32(look.accent), np.float32(look.base))
    _, v, _, _ = _local(f, idx, y, x)
    up, down, left, right = _run(f, idx)
    rim = np.minimum(np.minimum(up, down), np.minimum(left, right)) < max(1.0, 0.004 * f.height)
    shade = (1.1 - 0.35 * v) * np.where(rim, 0.7, 1.0) * (0.9 + 0.15 * f.grain[idx])
    f.flat_albedo[idx] = color * shade[:, None]


_BY_MATERIAL: dict[str, Material] = {
    "road": _road, "sidewalk": _sidewalk, "terrain": _terrain, "vegetation": _vegetation, "building": _building,
    "wall": _wall, "fence": _fence, "concrete": _concrete, "pole": _pole, "traffic_light": _traffic_light,
    "sign": _sign, "car": _car, "person": _person, "bicycle": _bicycle, "sky": _sky,
}


def material(class_idx: int) -> Material:
    """The material that paints ADE class `class_idx` (UNKNOWN: neutral; OOD classes: their own look)."""
    if class_idx == UNKNOWN:
        return _unknown
    if ood_lut()[class_idx]:
        return _ood
    return _BY_MATERIAL[MATERIALS[ade_classes()[class_idx]]]


def paint_materials(f: Frame) -> None:
    """Fill `f.albedo` (and `f.emissive`) class by class; each class's pixels are visited once."""
    flat = f.cls.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=UNKNOWN + 1)
    stops = np.cumsum(counts)
    for ci in np.flatnonzero(counts):
        idx = order[stops[ci] - counts[ci]:stops[ci]]
        material(int(ci))(f, idx, int(ci))
