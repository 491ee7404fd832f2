"""Weather and time of day over the painted surfaces: the covariate shift the prompt asks for.

Order of the steps, each a few vectorised passes over the image:
1. surfaces change: snow settles on upward faces (ground, tops of facades,
   foliage, roofs), rain darkens the ground; objects cast contact shadows;
2. light: per weather an exposure, tint, saturation and contrast (flat grey
   light when cloudy, dark and desaturated when raining); at night a dark blue
   ambient plus what the lights give: street lamps on top of poles with pools
   of light under them, lit windows, car lights, all blurred into glow;
3. wet reflections: the image mirrored about the horizon, blurred, on puddles;
4. haze that thickens with depth (fog: to white at the horizon). Depth is the
   ground row under a pixel: its own row for ground classes, the bottom of its
   column run (where it stands) for everything else;
5. falling rain streaks or snowflakes, then sensor grain.
The sky is painted with its final colour by its material and is not relit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from cgaug.models.painter.classes import NUM_SLOTS, class_index, is_thing_lut
from cgaug.models.painter.frame import Frame, hash01
from cgaug.models.painter.geometry import upsample


@dataclass(frozen=True, slots=True)
class Light:
    exposure: float
    saturation: float
    contrast: float
    tint: tuple[float, float, float]
    haze: float  # haze per unit of ground distance (1 at the bottom row, ~50 at the horizon)
    haze_color: tuple[float, float, float]


LIGHTS: dict[str, Light] = {
    "clear": Light(1.0, 1.08, 1.08, (1.03, 1.0, 0.96), 0.006, (0.75, 0.83, 0.92)),
    "cloudy": Light(0.85, 0.72, 0.8, (0.97, 0.99, 1.03), 0.015, (0.76, 0.78, 0.8)),
    "rainy": Light(0.6, 0.6, 0.85, (0.95, 0.98, 1.05), 0.03, (0.52, 0.54, 0.57)),
    "foggy": Light(0.95, 0.8, 0.95, (1.0, 1.0, 1.0), 0.22, (0.8, 0.81, 0.82)),
    "snowy": Light(1.0, 0.8, 0.95, (0.96, 0.99, 1.05), 0.035, (0.86, 0.87, 0.9)),
}
NIGHT_EXPOSURE = 0.13
NIGHT_TINT = (0.7, 0.85, 1.35)
NIGHT_HAZE = (0.07, 0.075, 0.09)
SNOW = np.float32([0.92, 0.94, 0.97])


def _lut(names: tuple[str, ...], value: float = 1.0) -> np.ndarray:
    lut = np.zeros(NUM_SLOTS, np.float32)
    for name in names:
        lut[class_index(name)] = value
    return lut


@cache
def ground_lut() -> np.ndarray:
    """Classes lying on the ground plane: their depth is their own row, snow covers them whole."""
    return _lut(("road", "sidewalk", "grass"))


@cache
def snow_cover_lut() -> np.ndarray:
    """How much of a ground class snow covers (road least: traffic clears it)."""
    lut = _lut(("sidewalk", "grass"), 0.9)
    lut[class_index("road")] = 0.55
    return lut


@cache
def snow_top_lut() -> np.ndarray:
    """Classes with upward faces where snow settles on top."""
    lut = _lut(("building", "wall", "fence", "railing", "tree", "car", "truck", "bus", "signboard", "bridge"))
    return np.maximum(lut, is_thing_lut().astype(np.float32) * (1 - _lut(("person", "bicycle"))))


def render(f: Frame) -> np.ndarray:
    """The final image in [0, 1], (H, W, 3) float32, from the painted albedo and emissive maps."""
    light = LIGHTS.get(f.weather, LIGHTS["clear"])
    flat_cls = f.cls.reshape(-1)
    sky = (f.cls == class_index("sky"))
    if f.weather == "snowy":
        _snow_cover(f, flat_cls)
    if f.weather == "rainy":
        wet = ground_lut()[flat_cls] > 0
        f.flat_albedo[wet] *= np.float32(0.7)
    _contact_shadows(f)
    image = _light(f, light, sky)
    if f.weather == "rainy":
        image = _reflections(f, image, flat_cls)
    image = _haze(f, image, light, sky)
    if f.weather == "rainy":
        _rain(f, image)
    elif f.weather == "snowy":
        _snowfall(f, image)
    grain = f.grain[::-1].reshape(f.height, f.width, 1) - np.float32(0.5)
    image += grain * np.float32(0.05 if f.night else 0.02)
    return image


def _snow_cover(f: Frame, flat_cls: np.ndarray) -> None:
    amount = snow_cover_lut()[flat_cls] * np.clip(0.55 + 0.8 * (f.coarse - 0.5) + 0.5 * (f.mid - 0.5), 0, 1)
    amount = np.maximum(amount, snow_cover_lut()[flat_cls] * (flat_cls != class_index("road")))
    thickness = max(1.0, 0.012 * f.height) * (0.4 + 1.2 * f.mid)
    top = snow_top_lut()[flat_cls] * (f.runs.up.reshape(-1) < thickness)
    clumps = (flat_cls == class_index("tree")) & (f.mid > 0.5) & (f.grain > 0.35)
    amount = np.maximum(np.maximum(amount, top * 0.95), clumps * np.float32(0.75))
    snow = SNOW * (0.9 + 0.1 * f.grain)[:, None]
    f.flat_albedo[:] += (snow - f.flat_albedo) * amount[:, None]


def _contact_shadows(f: Frame) -> None:
    """Darken the ground just under every object, so it stands on the road instead of floating."""
    ground = ground_lut()[f.cls] > 0
    for y0, x0, y1, x1 in f.instances.boxes:
        if y1 <= y0:
            continue
        depth = max(1, round(0.08 * (y1 - y0)))
        rows = slice(y1 - max(1, depth // 3), min(y1 + depth, f.height))
        band = f.albedo[rows, x0:x1]
        fade = np.linspace(0.55, 0.9, band.shape[0], dtype=np.float32)[:, None, None]
        band *= np.where(ground[rows, x0:x1, None], fade, np.float32(1.0))


def _light(f: Frame, light: Light, sky: np.ndarray) -> np.ndarray:
    """Exposure, tint, saturation s and contrast c around a pivot p, folded into one scale and one offset:
    c * (lum + s * (x - lum) - p) + p  =  (c s) x + c (1 - s) lum + (1 - c) p."""
    exposure = light.exposure * (NIGHT_EXPOSURE if f.night else 1.0)
    tint = np.float32(light.tint) * (np.float32(NIGHT_TINT) if f.night else 1) * np.float32(exposure)
    c, s, p = light.contrast, light.saturation, 0.45 * exposure
    offset = _luminance(f.albedo, tint * np.float32(c * (1 - s)))
    offset += np.float32((1 - c) * p)
    image = f.albedo * (tint * np.float32(c * s))
    image += offset[..., None]
    if f.night:
        lamps = _lamps(f)
        spill = _blur(f.emissive, max(2, f.height // 10))
        lamps += spill * np.float32(2.5)
        lamps *= f.albedo
        image += lamps
        image += f.emissive
        image += _blur(f.emissive, max(2, f.height // 48)) * np.float32(0.9)
        f.scatter = spill
    else:
        image += f.emissive * np.float32(0.5)
    image[sky] = f.albedo[sky]
    return image


def _luminance(image: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Rec. 601 luma of (..., 3) colours, optionally of the colours scaled per channel first."""
    w = np.float32([0.299, 0.587, 0.114]) * (np.float32(1) if scale is None else scale)
    out = image[..., 0] * w[0]
    out += image[..., 1] * w[1]
    out += image[..., 2] * w[2]
    return out


def _blur(image: np.ndarray, block: int) -> np.ndarray:
    """A soft blur: block means on a coarse grid (sums with reduceat), enlarged smoothly."""
    h, w = image.shape[:2]
    rows = np.add.reduceat(image, np.arange(0, h, block), axis=0)
    small = np.add.reduceat(rows, np.arange(0, w, block), axis=1) / np.float32(block * block)
    return upsample(small, h, w, cubic=False)


def _lamps(f: Frame) -> np.ndarray:
    """Street lamps on top of tall poles: a bright head (into `f.emissive`) and the light they cast."""
    h, w = f.height, f.width
    light = np.zeros((h, w, 3), np.float32)
    pole = f.cls == class_index("pole")
    tall = pole & (f.runs.up == 0) & (f.runs.down > 0.1 * h)
    ys, xs = np.nonzero(tall)
    if xs.size == 0:
        return light
    order = np.argsort(xs, kind="stable")
    ys, xs = ys[order], xs[order]
    groups = np.split(np.arange(xs.size), np.flatnonzero(np.diff(xs) > 2) + 1)
    warm = np.float32([1.0, 0.82, 0.55])
    for group in groups[:24]:
        # measure the pole down from its topmost pixel: that pixel is itself `tall`, so reach > 0.1 h
        head_px = group[np.argmin(ys[group])]
        top, x = int(ys[head_px]), float(xs[group].mean())
        bottom = top + int(f.runs.down[top, int(xs[head_px])])
        reach = bottom - top
        size = max(1.5, 0.03 * reach)
        # everything a lamp lights lies in a window around the pole: compute there only
        y0, y1 = max(0, int(top - size - 1)), min(h, int(bottom + 0.5 * reach) + 1)
        x0, x1 = max(0, int(x - 1.6 * reach)), min(w, int(x + 1.6 * reach) + 1)
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        head = (yy - top) ** 2 + (xx - x) ** 2 <= size**2
        f.emissive[y0:y1, x0:x1][head] = warm * 3.0
        pool = np.exp(-(((xx - x) / (0.6 * reach)) ** 2) - ((yy - bottom) / (0.18 * reach)) ** 2)
        cone = np.exp(-(((xx - x) / (0.25 * reach + np.maximum(yy - top, 0) * 0.35)) ** 2))
        cone = cone * ((yy > top) & (yy < bottom + 0.15 * reach))
        light[y0:y1, x0:x1] += (warm * 1.4) * (pool + 0.25 * cone)[..., None].astype(np.float32)
    return light


def _reflections(f: Frame, image: np.ndarray, flat_cls: np.ndarray) -> np.ndarray:
    """Wet ground mirrors what stands above it (lamps included), blurred and only on puddles."""
    h = f.height
    rows = np.arange(h)
    mirrored = np.zeros_like(image)
    for offset in (-2, 0, 2):
        source = np.clip(2 * f.horizon - rows + offset, 0, h - 1)
        mirrored += image[source] / np.float32(3)
    below = (rows > f.horizon)[:, None]
    wet = (ground_lut()[f.cls] > 0) & below
    puddle = np.clip((f.mid.reshape(h, f.width) - 0.35) * 2.5, 0, 1) * np.float32(0.55)
    amount = (wet * puddle)[..., None]
    return image + (mirrored - image) * amount


def _haze(f: Frame, image: np.ndarray, light: Light, sky: np.ndarray) -> np.ndarray:
    h, w = f.height, f.width
    rows = np.arange(h, dtype=np.int32)[:, None]
    ground = ground_lut()[f.cls] > 0
    standing = np.minimum(rows + f.runs.down, h - 1)
    ground_row = np.where(ground, rows, standing)
    nearness = f.depth(ground_row.astype(np.float32))
    # what stands at the image's sides is near the camera, whatever row it stands on (facades, trees)
    side = np.abs(np.arange(w, dtype=np.float32) - np.float32(w / 2)) / np.float32(w / 2)
    nearness = np.where(ground, nearness, np.maximum(nearness, np.float32(0.9) * side * side))
    distance = 1.0 / nearness
    amount = 1.0 - np.exp(-np.float32(light.haze) * distance)
    if f.weather == "foggy":
        amount = np.where(sky, np.float32(1.0), amount)
    else:
        amount = np.where(sky, np.float32(0.0), amount)
    color = np.float32(NIGHT_HAZE if f.night else light.haze_color)
    if f.night:
        # fog and mist scatter the lights: the glow reaches further the thicker the air
        color = color + f.scatter * np.float32(1.5 if f.weather == "foggy" else 0.5)
    amount = amount.astype(np.float32)[..., None]
    image *= 1 - amount
    image += color * amount
    return image


def _rain(f: Frame, image: np.ndarray) -> None:
    h, w = f.height, f.width
    rng = f.rng(90)
    n = int(0.0015 * h * w)
    length = max(3, int(0.05 * h))
    y0 = rng.integers(-length, h, n)
    x0 = rng.integers(0, w, n)
    steps = np.arange(length)
    ys = y0[:, None] + steps
    xs = x0[:, None] + np.round(steps * 0.18).astype(np.int64)
    ok = (ys >= 0) & (ys < h) & (xs < w)
    streaks = np.zeros((h, w), np.float32)
    streaks[ys[ok], xs[ok]] = rng.uniform(0.3, 1.0, n).astype(np.float32)[np.nonzero(ok)[0]]
    color = np.float32(0.3 if f.night else 0.8)
    image += (color - image) * (0.35 * streaks)[..., None]


def _snowfall(f: Frame, image: np.ndarray) -> None:
    h, w = f.height, f.width
    rng = f.rng(91)
    n = int(0.004 * h * w)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    big = hash01(ys, xs, f.seed) < 0.3
    alpha = np.zeros((h, w), np.float32)
    alpha[ys, xs] = 0.85
    by, bx = ys[big], xs[big]
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        alpha[np.minimum(by + dy, h - 1), np.minimum(bx + dx, w - 1)] = 0.7
    color = np.float32(0.55 if f.night else 0.97)
    image += (color - image) * alpha[..., None]
