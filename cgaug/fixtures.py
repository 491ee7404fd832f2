"""Synthetic Cityscapes-format data for tests, demos and smoke runs.

Cityscapes itself cannot be downloaded without an account, so the pipeline is
exercised on generated street scenes written with exactly the official layout
and file naming, so that the same reader and export code serve both. The
scenes are crude but structured like the real thing (sky above, facades
converging to a vanishing point, a perspective road with sidewalks, cars on
the road and people on the sidewalks), because composition relies on that
structure: objects are pasted on road pixels, scaled with depth.

The photographs are painted from the label maps by the same procedural painter
that stands in for the diffusion generator (`cgaug.models.painter`, a clear day
in the default "Cityscapes-like" style, `SOURCE_PROMPT`), so an original and its
painted CG-Aug variants come from one world and differ only by domain (weather,
time, place) and pasted objects, as real photos and their diffusion variants do
in the paper. A segmenter trained on them learns something that transfers.

Everything is drawn from a numpy Generator seeded by (seed, image index): the
same arguments give byte-identical files, and image i does not depend on how
many images are written.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cgaug.config import PromptConfig
from cgaug.labels import CITYSCAPES_LABELS, LABEL_ID_RANGE, label_id_to_ade_color_lut, label_id_to_train_id_lut
from cgaug.models.painter import paint
from cgaug.storage.fs import Root, open_root

CITIES = ("aachen", "bochum", "bremen", "cologne", "darmstadt")
ANNOTATED_FRAME = 19  # the official gtFine annotations are all of frame 000019 of each sequence
MIN_SIZE = 64
MASK_CLASSES = ("animal", "box", "barrel", "ashcan", "bag")
"""ADE20K-150 classes that Cityscapes lacks; the mask folder's sub-folders are named by them."""
MASKS_DIR = "bank_masks"  # object silhouettes, {class}/{class}_{i:03d}.png (the folder bank layout)
OBJECT_IMAGES_DIR = "bank_images"  # the same paths with the objects' pixels, for the anomaly mix
BANK_FILE = "bank.parquet"  # the bank built from MASKS_DIR: where `generate` and `train` look by default

_ID = {label.name: label.id for label in CITYSCAPES_LABELS}
# Cityscapes' classes with hasInstances=True: their objects get id*1000+k in *_instanceIds.png
INSTANCE_CLASSES = frozenset(
    _ID[name] for name in ("person", "rider", "car", "truck", "bus", "caravan", "trailer", "train",
                           "motorcycle", "bicycle")
)
INSTANCE_FACTOR = 1000


@dataclass(frozen=True, slots=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label_ids: np.ndarray  # (H, W) uint8 Cityscapes label ids
    instance_ids: np.ndarray  # (H, W) uint16, id*1000+k on instance-class objects, else the label id


# ----------------------------------------------------------------------------------------------- drawing


class _Canvas:
    """Label, instance and colour planes painted together, later objects over earlier ones.

    The colour plane is no longer the photograph (the painter paints that from the labels); its
    colour draws stay because they are part of the seeded stream that places every object, so
    removing them would move the layouts of every seed.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.label = np.zeros((height, width), np.uint8)
        self.instance = np.zeros((height, width), np.uint16)
        self.color = np.zeros((height, width, 3), np.float32)
        self._next_instance: dict[int, int] = {}

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[tuple[slice, slice], np.ndarray,
                                                                          np.ndarray] | None:
        """Slices of the box clipped to the canvas, with absolute pixel-centre coordinates (ogrid)."""
        ix0, iy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        ix1, iy1 = min(self.width, math.ceil(x1)), min(self.height, math.ceil(y1))
        if ix0 >= ix1 or iy0 >= iy1:
            return None
        yy = np.arange(iy0, iy1, dtype=np.float32)[:, None] + 0.5
        xx = np.arange(ix0, ix1, dtype=np.float32)[None, :] + 0.5
        return (slice(iy0, iy1), slice(ix0, ix1)), yy, xx

    def new_instance(self, label_id: int) -> int:
        k = self._next_instance.get(label_id, 0)
        self._next_instance[label_id] = k + 1
        return label_id * INSTANCE_FACTOR + k

    def paint(self, where: tuple[slice, slice], mask: np.ndarray, label_id: int, color: np.ndarray,
              instance: int | None = None) -> None:
        mask = np.broadcast_to(mask, (where[0].stop - where[0].start, where[1].stop - where[1].start))
        self.label[where][mask] = label_id
        self.instance[where][mask] = label_id if instance is None else instance
        self.tint(where, mask, color)

    def tint(self, where: tuple[slice, slice], mask: np.ndarray, color: np.ndarray) -> None:
        """Colour only: details (windows, wheels, lights) that keep the label of what they sit on."""
        mask = np.broadcast_to(mask, (where[0].stop - where[0].start, where[1].stop - where[1].start))
        color = np.broadcast_to(np.asarray(color, np.float32), (*mask.shape, 3))
        self.color[where][mask] = color[mask]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 18.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) low-frequency noise: a coarse random grid, bilinearly interpolated (separably)."""
    gh, gw = cells
    grid = rng.standard_normal((gh + 1, gw + 1, 3)).astype(np.float32)
    fy = (np.arange(height, dtype=np.float32) + 0.5) * gh / height
    fx = (np.arange(width, dtype=np.float32) + 0.5) * gw / width
    iy, ix = np.minimum(fy.astype(int), gh - 1), np.minimum(fx.astype(int), gw - 1)
    wy, wx = (fy - iy)[:, None, None], (fx - ix)[:, None]
    rows = grid[iy] * (1 - wy) + grid[iy + 1] * wy  # (H, gw+1, 3)
    return rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx


@dataclass(frozen=True, slots=True)
class _Street:
    """The perspective frame every object is placed in: horizon, vanishing point and road edges."""

    height: int
    width: int
    vy: float  # horizon row (vanishing point)
    vx: float
    tip: float  # half width of the road at the horizon
    left_bottom: float  # road edges at the bottom row
    right_bottom: float
    walk_bottom: float  # sidewalk width at the bottom row

    def depth(self, y: np.ndarray | float) -> np.ndarray | float:
        """0 at the horizon, 1 at the bottom row: also the pixels-per-metre scale relative to the bottom."""
        return np.clip((np.asarray(y, np.float32) - self.vy) / (self.height - self.vy), 0.0, 1.0)

    def row(self, t: float) -> float:
        return self.vy + t * (self.height - self.vy)

    def road_left(self, t: np.ndarray | float) -> np.ndarray | float:
        return (self.vx - self.tip) + (self.left_bottom - (self.vx - self.tip)) * t

    def road_right(self, t: np.ndarray | float) -> np.ndarray | float:
        return (self.vx + self.tip) + (self.right_bottom - (self.vx + self.tip)) * t

    def walk(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.walk_bottom * t


def _draw_sky(canvas: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    where, yy, _ = canvas.window(0, 0, canvas.width, canvas.height)
    top, low = _jitter(rng, (70, 120, 190), 20), _jitter(rng, (205, 218, 232), 12)
    f = np.clip(yy / max(street.vy, 1.0), 0, 1)[..., None]
    canvas.paint(where, np.ones((1, 1), bool), _ID["sky"], top * (1 - f) + low * f)


def _draw_buildings(canvas: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    """Facade segments whose roofs sink towards the vanishing point, with a grid of windows."""
    h, w = canvas.height, canvas.width
    edges = [0.0]
    while edges[-1] < w:
        edges.append(edges[-1] + w * rng.uniform(0.04, 0.12))
    segment = np.searchsorted(np.asarray(edges[1:]), np.arange(w) + 0.5, side="right")
    count = len(edges) - 1
    rise = rng.uniform(0.45, 1.0, count)
    facades = ((200, 190, 170), (150, 150, 150), (170, 110, 90), (225, 220, 210), (120, 115, 110))
    palette = np.stack([_jitter(rng, facades[i], 20) for i in rng.integers(0, len(facades), count)])
    xx = np.arange(w, dtype=np.float32) + 0.5
    near = np.clip(np.abs(xx - street.vx) / (w * 0.5), 0.12, 1.0) ** 0.8
    roof = street.vy - (street.vy - 0.02 * h) * rise[segment] * near  # (W,)
    where, yy, _ = canvas.window(0, 0, w, h)
    mask = yy >= roof[None, :]
    shade = (0.75 + 0.25 * np.clip((yy - roof[None, :]) / h * 3, 0, 1))[..., None]
    color = palette[segment][None, :, :] * shade
    period_x = np.maximum(w * 0.025 * near, 3.0)
    period_y = np.maximum(h * 0.06 * near, 3.0)
    local_x = (xx - np.asarray(edges)[segment]) % period_x / period_x
    local_y = ((yy - roof[None, :]) % period_y[None, :]) / period_y[None, :]
    windows = (local_x[None, :] > 0.3) & (local_x[None, :] < 0.75) & (local_y > 0.3) & (local_y < 0.75)
    windows &= (yy - roof[None, :] > period_y[None, :] * 0.5) & (yy < street.vy + 0.08 * h)
    color = np.where(windows[..., None], color * 0.45, color)
    canvas.paint(where, mask, _ID["building"], color)


def _draw_ground(canvas: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    """Terrain strips, sidewalks and the road trapezoid, each band bounded by the perspective edges."""
    h, w = canvas.height, canvas.width
    where, yy, xx = canvas.window(0, street.vy, w, h)
    t = street.depth(yy)
    left, right, walk = street.road_left(t), street.road_right(t), street.walk(t)
    for side, present in (("left", rng.random() < 0.7), ("right", rng.random() < 0.7)):
        if not present:
            continue
        strip = walk * rng.uniform(0.3, 0.9)
        band = (xx < left - walk) & (xx >= left - walk - strip) if side == "left" else \
            (xx > right + walk) & (xx <= right + walk + strip)
        canvas.paint(where, band & (t > 0), _ID["terrain"], _jitter(rng, (120, 160, 80), 15))
    pavement = _jitter(rng, (175, 165, 160), 15)
    walks = ((xx >= left - walk) & (xx < left)) | ((xx > right) & (xx <= right + walk))
    canvas.paint(where, walks & (t > 0), _ID["sidewalk"], pavement)
    asphalt = _jitter(rng, (95, 92, 98), 10)
    road = (xx >= left) & (xx <= right)
    canvas.paint(where, road, _ID["road"], asphalt * (0.9 + 0.15 * t[..., None]))
    # dashed centre line, dashes evenly spaced in depth (1/t) so they shrink towards the horizon
    centre = (street.road_left(t) + street.road_right(t)) / 2
    dash = (np.floor(2.0 / np.maximum(t, 1e-3)) % 2 == 0) & (np.abs(xx - centre) < 0.006 * w * t + 0.5)
    canvas.tint(where, road & dash & (t > 0.05), np.asarray((225, 225, 215), np.float32))


def _blob(yy: np.ndarray, xx: np.ndarray, cx: float, cy: float, rx: float, ry: float,
          rng: np.random.Generator, wobble: float = 0.18) -> np.ndarray:
    """An ellipse whose radius wobbles with the angle: a crude tree crown or bush."""
    theta = np.arctan2((yy - cy) / ry, (xx - cx) / rx)
    k = rng.integers(3, 8, 3)
    phase = rng.uniform(0, 2 * np.pi, 3)
    radius = 1 + wobble * sum(np.sin(k[i] * theta + phase[i]) for i in range(3)) / 3
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= radius**2


def _side_x(street: _Street, t: float, side: str, across: float) -> float:
    """An x on the sidewalk at depth t: across=0 at the road edge, 1 at the sidewalk's outer edge."""
    if side == "left":
        return float(street.road_left(t) - across * street.walk(t))
    return float(street.road_right(t) + across * street.walk(t))


def _draw_trees(canvas: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    h = canvas.height
    green = _jitter(rng, (70, 110, 45), 15)
    for _ in range(rng.integers(2, 6)):
        t = rng.uniform(0.08, 0.7)
        side = "left" if rng.random() < 0.5 else "right"
        base_x, base_y = _side_x(street, t, side, rng.uniform(0.9, 1.6)), street.row(t)
        crown_r = h * 0.3 * t * rng.uniform(0.7, 1.3) + 2
        trunk_h = h * 0.45 * t + 2
        cx, cy = base_x, base_y - trunk_h - crown_r * 0.6
        trunk_w = max(1.0, h * 0.015 * t)
        box = canvas.window(base_x - trunk_w, base_y - trunk_h - crown_r * 0.2, base_x + trunk_w, base_y)
        if box is not None:
            bark = np.asarray((85, 65, 45), np.float32)
            canvas.paint(box[0], np.ones((1, 1), bool), _ID["vegetation"], bark)  # trunks are vegetation
        box = canvas.window(cx - crown_r * 1.3, cy - crown_r * 1.3, cx + crown_r * 1.3, cy + crown_r * 1.3)
        if box is not None:
            where, yy, xx = box
            canvas.paint(where, _blob(yy, xx, cx, cy, crown_r * 1.1, crown_r, rng), _ID["vegetation"],
                         green * rng.uniform(0.85, 1.15))


def _draw_poles(canvas: _Canvas, rng: np.random.Generator, street: _Street) -> None:
    """Poles on the sidewalks; one carries a traffic sign and one a traffic light (at least one of each)."""
    h = canvas.height
    count = int(rng.integers(2, 6))
    order = rng.permutation(count)
    carries = {int(order[0]): "sign", int(order[1]): "light"}
    for i in range(count):
        t = rng.uniform(0.15, 0.85)
        side = "left" if rng.random() < 0.5 else "right"
        x, y = _side_x(street, t, side, rng.uniform(0.15, 0.35)), street.row(t)
        height, half = h * 0.75 * t + 4, max(0.6, h * 0.006 * t)
        box = canvas.window(x - half, y - height, x + half, y)
        if box is not None:
            canvas.paint(box[0], np.ones((1, 1), bool), _ID["pole"], np.asarray((110, 110, 115), np.float32))
        top = y - height
        if carries.get(i) == "sign":
            r = max(2.0, h * 0.05 * t)
            box = canvas.window(x - r, top - r, x + r, top + r)
            if box is not None:
                where, yy, xx = box
                disc = (xx - x) ** 2 + (yy - top) ** 2 <= r * r
                shape = disc if rng.random() < 0.5 else np.ones_like(disc)
                canvas.paint(where, shape, _ID["traffic sign"], _jitter(rng, (210, 40, 40), 30))
                canvas.tint(where, shape & ((xx - x) ** 2 + (yy - top) ** 2 <= (0.6 * r) ** 2),
                            np.asarray((240, 240, 240), np.float32))
        elif carries.get(i) == "light":
            bw, bh = max(2.0, h * 0.02 * t), max(4.0, h * 0.07 * t)
            box = canvas.window(x - bw, top, x + bw, top + bh * 2)
            if box is not None:
                where, yy, xx = box
                canvas.paint(where, np.ones((1, 1), bool), _ID["traffic light"],
                             np.asarray((40, 40, 35), np.float32))
                lit = rng.integers(0, 3)
                lamp_y = top + bh * (0.35 + 0.65 * lit)
                lamp = (xx - x) ** 2 + (yy - lamp_y) ** 2 <= (0.6 * bw) ** 2
                lamp_color = ((230, 40, 30), (240, 180, 20), (40, 220, 80))[lit]
                canvas.tint(where, lamp, np.asarray(lamp_color, np.float32))


def _draw_car(canvas: _Canvas, rng: np.random.Generator, street: _Street, t: float) -> None:
    """A car seen from behind: body, narrower cabin with a rear window, dark wheels, red lights."""
    y = street.row(t)
    u = rng.uniform(0.1, 0.9)
    x = float(street.road_left(t) + u * (street.road_right(t) - street.road_left(t)))
    width = canvas.width * 0.28 * t * rng.uniform(0.85, 1.15) + 3
    height = width * rng.uniform(0.7, 0.85)
    box = canvas.window(x - width / 2, y - height, x + width / 2, y)
    if box is None:
        return
    where, yy, xx = box
    dx, dy = (xx - x) / (width / 2), (y - yy) / height  # dx in -1..1, dy 0 at the ground, 1 at the roof
    body = (np.abs(dx) <= 1) & (dy >= 0.08) & (dy <= 0.55)
    cabin = (dy > 0.55) & (dy <= 1.0) & (np.abs(dx) <= 0.85 - 0.25 * (dy - 0.55) / 0.45)
    wheels = (dy < 0.14) & (np.abs(dx) >= 0.6) & (np.abs(dx) <= 0.92)
    shape = body | cabin | wheels
    paint = _jitter(rng, ((180, 30, 30), (230, 230, 230), (30, 30, 35), (160, 165, 170), (40, 60, 140))[
        rng.integers(0, 5)], 15)
    canvas.paint(where, shape, _ID["car"], paint, instance=canvas.new_instance(_ID["car"]))
    canvas.tint(where, (dy > 0.62) & (dy < 0.93) & (np.abs(dx) <= 0.72 - 0.25 * (dy - 0.55) / 0.45),
                np.asarray((45, 55, 70), np.float32))
    canvas.tint(where, wheels, np.asarray((20, 20, 20), np.float32))
    canvas.tint(where, body & (dy > 0.35) & (dy < 0.45) & (np.abs(dx) > 0.75),
                np.asarray((200, 20, 20), np.float32))


_CLOTHES = ((40, 40, 60), (150, 30, 40), (200, 190, 160), (60, 90, 60))


def _draw_person(canvas: _Canvas, rng: np.random.Generator, street: _Street, t: float) -> None:
    """A standing pedestrian on a sidewalk: head, torso, two legs."""
    y = street.row(t)
    side = "left" if rng.random() < 0.5 else "right"
    x = _side_x(street, t, side, rng.uniform(0.3, 0.8))
    height = canvas.height * 0.5 * t * rng.uniform(0.85, 1.1) + 6
    half = height * 0.16
    box = canvas.window(x - half, y - height, x + half, y)
    if box is None:
        return
    where, yy, xx = box
    dx, dy = (xx - x) / half, (y - yy) / height
    head = (dx / 0.42) ** 2 + ((dy - 0.93) / 0.07) ** 2 <= 1.0  # a 0.07-height radius, half = 0.16 height
    torso = (np.abs(dx) <= 0.75 - 0.2 * (0.86 - dy)) & (dy >= 0.45) & (dy < 0.86)
    legs = (dy < 0.45) & (np.abs(dx) >= 0.08) & (np.abs(dx) <= 0.5)
    clothes = _jitter(rng, _CLOTHES[rng.integers(0, len(_CLOTHES))], 20)
    person = _ID["person"]
    canvas.paint(where, head | torso | legs, person, clothes, instance=canvas.new_instance(person))
    canvas.tint(where, head, _jitter(rng, (210, 170, 140), 30))
    canvas.tint(where, legs, np.asarray((35, 35, 45), np.float32))


def _draw_ego_vehicle(canvas: _Canvas, rng: np.random.Generator) -> None:
    """The bonnet of the recording car, a curved strip along the bottom as in most Cityscapes frames."""
    h, w = canvas.height, canvas.width
    depth = h * rng.uniform(0.05, 0.12)
    box = canvas.window(0, h - depth, w, h)
    if box is None:
        return
    where, yy, xx = box
    top = h - depth * (1 - 0.6 * ((xx - w / 2) / (w * 0.6)) ** 2)
    shine = 1 + 0.6 * np.exp(-(((xx - w / 2) / (w * 0.25)) ** 2))  # a highlight in the middle of the bonnet
    canvas.paint(where, yy >= top, _ID["ego vehicle"], _jitter(rng, (50, 50, 58), 15) * shine[..., None])


_MOVERS = {"car": _draw_car, "person": _draw_person}


def render_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """One street scene: labels, instances and its photograph painted from the labels (`paint_source`)."""
    canvas = _Canvas(height, width)
    vy = height * rng.uniform(0.40, 0.50)
    vx = width * rng.uniform(0.42, 0.58)
    street = _Street(height, width, vy, vx, tip=width * rng.uniform(0.004, 0.012),
                     left_bottom=vx - width * rng.uniform(0.3, 0.55),
                     right_bottom=vx + width * rng.uniform(0.3, 0.55),
                     walk_bottom=width * rng.uniform(0.15, 0.3))
    _draw_sky(canvas, rng, street)
    _draw_buildings(canvas, rng, street)
    _draw_ground(canvas, rng, street)
    _draw_trees(canvas, rng, street)
    _draw_poles(canvas, rng, street)
    movers = [("car", t) for t in rng.uniform(0.2, 0.95, rng.integers(1, 5))]
    movers += [("person", t) for t in rng.uniform(0.2, 0.8, rng.integers(1, 5))]
    for kind, t in sorted(movers, key=lambda m: m[1]):  # far first, so nearer objects occlude them
        _MOVERS[kind](canvas, rng, street, float(t))
    for kind in ("car", "person"):  # nearer objects or the image border may hide them all: show both
        for _ in range(20):
            if (canvas.label == _ID[kind]).any():
                break
            _MOVERS[kind](canvas, rng, street, float(rng.uniform(0.3, 0.9)))
    if rng.random() < 0.5:
        _draw_ego_vehicle(canvas, rng)
    return Scene(paint_source(canvas.label, int(rng.integers(2**31))), canvas.label, canvas.instance)


SOURCE_PROMPT = PromptConfig().base_template
"""The source photographs' prompt: the plain template, which the painter paints as a clear day in its
default, Cityscapes-like style (no place, no weather)."""


def paint_source(label_ids: np.ndarray, seed: int) -> np.ndarray:
    """The photograph of a label map: the painter's clear day, deterministic per (labels, seed)."""
    return paint(label_id_to_ade_color_lut()[label_ids], SOURCE_PROMPT, seed)


# ----------------------------------------------------------------------------------------------- writing


def _png(array: np.ndarray, compress_level: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _color_lut() -> np.ndarray:
    lut = np.zeros((LABEL_ID_RANGE, 3), np.uint8)
    for label in CITYSCAPES_LABELS:
        lut[label.id] = label.color
    return lut


def _check_args(images: int, split: str, height: int, width: int) -> None:
    if images < 1:
        raise ValueError(f"images must be at least 1; found {images}")
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"split must be a plain folder name such as 'train'; found {split!r}")
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"height and width must be at least {MIN_SIZE} pixels; found {height}x{width} (HxW)")


def write_fixtures(dest: str | Path, images: int, split: str = "train", seed: int = 0, height: int = 256,
                   width: int = 512) -> list[str]:
    """Write `images` synthetic samples in the official Cityscapes layout; returns their source ids.

    `dest` is a local path or an fsspec URI. Each file is written atomically.
    """
    _check_args(images, split, height, width)
    root = open_root(os.fspath(dest))
    lut = label_id_to_train_id_lut().astype(np.uint8)  # every id drawn is in the table: no -1 to wrap
    colors = _color_lut()
    source_ids = []
    for index in range(images):
        city = CITIES[index % len(CITIES)]
        stem = f"{city}_{index // len(CITIES):06d}_{ANNOTATED_FRAME:06d}"
        scene = render_scene(np.random.default_rng([seed, index]), height, width)
        _write_sample(root, split, city, stem, scene, lut, colors)
        source_ids.append(stem)
    return sorted(source_ids)


def _write_sample(root: Root, split: str, city: str, stem: str, scene: Scene, lut: np.ndarray,
                  colors: np.ndarray) -> None:
    labels = f"gtFine/{split}/{city}/{stem}_gtFine_"
    root.write_bytes_atomic(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", _png(scene.image, 1))
    root.write_bytes_atomic(labels + "labelIds.png", _png(scene.label_ids))
    root.write_bytes_atomic(labels + "labelTrainIds.png", _png(lut[scene.label_ids]))
    root.write_bytes_atomic(labels + "color.png", _png(colors[scene.label_ids]))
    root.write_bytes_atomic(labels + "instanceIds.png", _png(scene.instance_ids))


# ----------------------------------------------------------------------------------------------- masks


def _mask_animal(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    body = (0.18 * w, 0.3 * h, 0.78 * w, 0.65 * h)
    draw.ellipse(body, fill=255)
    leg_w = max(2.0, 0.05 * w)
    for lx in (0.24, 0.34, 0.62, 0.7):
        x = lx * w + rng.uniform(-0.02, 0.02) * w
        draw.rectangle((x, 0.55 * h, x + leg_w, h - 1), fill=255)
    neck = [(0.68 * w, 0.4 * h), (0.8 * w, 0.15 * h), (0.88 * w, 0.2 * h), (0.78 * w, 0.5 * h)]
    draw.polygon(neck, fill=255)
    draw.ellipse((0.76 * w, 0.02 * h, 0.98 * w, 0.3 * h), fill=255)  # head
    draw.line([(0.2 * w, 0.4 * h), (0.02 * w, 0.2 * h + rng.uniform(0, 0.3) * h)], fill=255,
              width=max(2, int(0.03 * w)))  # tail


def _mask_box(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    skew = rng.uniform(0.08, 0.2)
    draw.rectangle((0, skew * h, (1 - skew) * w, h - 1), fill=255)  # front face
    draw.polygon([(0, skew * h), (skew * w, 0), (w - 1, 0), ((1 - skew) * w, skew * h)], fill=255)  # top
    draw.polygon([((1 - skew) * w, skew * h), (w - 1, 0), (w - 1, (1 - skew) * h), ((1 - skew) * w, h - 1)],
                 fill=255)  # side


def _mask_barrel(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=int(min(w, h) * rng.uniform(0.15, 0.3)), fill=255)


def _mask_ashcan(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    taper = rng.uniform(0.08, 0.18) * w
    lid = 0.1 * h
    draw.polygon([(0.04 * w, lid), (0.96 * w, lid), (0.96 * w - taper, h - 1), (0.04 * w + taper, h - 1)],
                 fill=255)  # wider at the top, as bins are
    draw.rectangle((0, 0.02 * h, w - 1, lid), fill=255)


def _mask_bag(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = 1 + 0.08 * np.sin(3 * angles + rng.uniform(0, 2 * np.pi))
    cx, cy, rx, ry = 0.5 * w, 0.62 * h, 0.48 * w, 0.37 * h
    xs, ys = cx + rx * wobble * np.cos(angles), cy + ry * wobble * np.sin(angles)
    outline = list(zip(xs.tolist(), ys.tolist(), strict=True))
    draw.polygon(outline, fill=255)
    draw.arc((0.25 * w, 0.02 * h, 0.75 * w, 0.55 * h), 180, 360, fill=255, width=max(2, int(0.06 * w)))


_SILHOUETTES = {
    # class: (draw, aspect range as height / width)
    "animal": (_mask_animal, (0.55, 0.85)),
    "box": (_mask_box, (0.6, 1.2)),
    "barrel": (_mask_barrel, (1.2, 1.6)),
    "ashcan": (_mask_ashcan, (1.1, 1.6)),
    "bag": (_mask_bag, (0.8, 1.2)),
}


def render_mask(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A (h, w) uint8 0/255 silhouette of class `name` whose longer side is `size` pixels."""
    draw_fn, (lo, hi) = _SILHOUETTES[name]
    aspect = rng.uniform(lo, hi)
    w, h = (size, max(8, round(size * aspect))) if aspect <= 1 else (max(8, round(size / aspect)), size)
    image = Image.new("L", (w, h), 0)
    draw_fn(ImageDraw.Draw(image), w, h, rng)
    return np.asarray(image)


# Base colours of the fixture objects' pixels: distinct from the street's palette, so a pasted object is
# visible, but textured (low-frequency shading + grain), so it is not trivially one flat colour.
_OBJECT_COLORS = {"animal": (150, 105, 60), "box": (190, 150, 90), "barrel": (40, 90, 160),
                  "ashcan": (70, 110, 70), "bag": (170, 60, 90)}


def render_object_pixels(mask: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 RGB pixels for a silhouette: the object textured, a neutral grey around it."""
    h, w = mask.shape
    base = _jitter(rng, _OBJECT_COLORS[name], 25.0)
    shade = 1.0 + 0.25 * _smooth_noise(rng, h, w, (3, 3))
    light = np.linspace(1.15, 0.8, h, dtype=np.float32)[:, None, None]  # lit from above
    grain = rng.normal(0.0, 6.0, (h, w, 3)).astype(np.float32)
    pixels = np.clip(base * shade * light + grain, 0, 255)
    pixels[mask == 0] = 128.0
    return pixels.astype(np.uint8)


def write_fixture_masks(dest: str | Path, seed: int = 0, per_class: int = 3,
                        images: str | Path | None = None) -> dict[str, int]:
    """Write binary object silhouettes as ``{dest}/{class}/{class}_{i:03d}.png``; returns {class: count}.

    The layout is the one the folder bank builder reads (class = sub-folder). With `images`, each
    mask's object pixels go to the same relative path under it: the layout the training anomaly mix
    reads (`data.bank_images`), since masks alone have no pixels to paste.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1; found {per_class}")
    root = open_root(os.fspath(dest))
    pixels_root = None if images is None else open_root(os.fspath(images))
    counts = {}
    for class_index, name in enumerate(MASK_CLASSES):
        rng = np.random.default_rng([seed, class_index])
        for i in range(per_class):
            mask = render_mask(name, rng, int(rng.integers(60, 301)))
            root.write_bytes_atomic(f"{name}/{name}_{i:03d}.png", _png(mask))
            if pixels_root is not None:
                # Its own stream, so the masks stay byte-identical with and without pixels.
                pixel_rng = np.random.default_rng([seed, class_index, i, 1])
                pixels_root.write_bytes_atomic(f"{name}/{name}_{i:03d}.png",
                                               _png(render_object_pixels(mask, name, pixel_rng)))
        counts[name] = per_class
    return counts


def write_class_masks(dest: str | Path, classes: tuple[str, ...] | list[str], seed: int = 0,
                      per_class: int = 3) -> dict[str, int]:
    """Masks for any ADE20K class names, as ``{dest}/{class}/{class}_{i:03d}.png``, drawn with the fixture
    silhouettes (class k, mask i: shape k + i of `MASK_CLASSES`); returns {class: count}.

    For banks of classes the fixtures lack, such as the unseen classes of `cgaug experiment`'s test world:
    the painter paints a class by its name, so the class, not the silhouette, decides what it looks like.
    """
    root = open_root(os.fspath(dest))
    for index, name in enumerate(classes):
        rng = np.random.default_rng([seed, index])
        for i in range(per_class):
            mask = render_mask(MASK_CLASSES[(index + i) % len(MASK_CLASSES)], rng, int(rng.integers(60, 301)))
            root.write_bytes_atomic(f"{name}/{name}_{i:03d}.png", _png(mask))
    return dict.fromkeys(classes, per_class)


def write_fixture_dataset(dest: str | Path, images: int, split: str = "train", seed: int = 0, height: int = 256,
                          width: int = 512) -> tuple[list[str], dict[str, int]]:
    """Everything `generate` and `train` need with their defaults: scenes, object masks, their pixels, bank.

    Returns (source ids, {mask class: count}). The bank is built by the same folder builder as
    `cgaug bank build --from folder`, so the fixture path and the user's path cannot drift apart.
    """
    from cgaug.storage.bank_sources import build_from_folder

    dest = Path(dest)
    source_ids = write_fixtures(dest, images=images, split=split, seed=seed, height=height, width=width)
    counts = write_fixture_masks(dest / MASKS_DIR, seed=seed, images=dest / OBJECT_IMAGES_DIR)
    build_from_folder(str(dest / MASKS_DIR), str(dest / BANK_FILE))
    return source_ids, counts
