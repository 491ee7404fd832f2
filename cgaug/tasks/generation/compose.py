"""Compose: Cityscapes label -> ADE20K conditioning map with novel objects pasted on the road.

Pure numpy, no Prefect. The conditioning map is a lookup table applied to the
label ids (one gather instead of the reference's per-class colour loop). Novel
objects are cut-and-pasted as masks (not pixels): each is scaled (the
reference's clamp of the longest side to 200-500 px at 1024 rows, optionally
growing with the object's row below the horizon), anchored with the middle
of its bottom edge on a road pixel at least `margin_px` from the border (the
margin relaxes step by step as in the reference), must stand on road along
its whole bottom edge, and must not overlap an object pasted before it.
Placement is a bounded loop; a sample that cannot hold any object is skipped
with a reason instead of being pasted off-road or crashing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from cgaug.config import ComposeConfig
from cgaug.labels import (
    CITYSCAPES_BY_NAME,
    CITYSCAPES_TO_ADE,
    ade_color,
    label_id_to_ade_color_lut,
    label_id_to_train_id_lut,
    ood_class_list,
)
from cgaug.records import OOD_TRAIN_ID, Composition, PastedObject, SampleSkipped


class MaskBank(Protocol):
    """What compose needs from an object bank (`cgaug.storage.bank.ObjectBank`)."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    def indices_of(self, class_name: str) -> np.ndarray: ...

    def entry(self, index: int): ...

    def mask(self, index: int) -> np.ndarray: ...

    def __len__(self) -> int: ...


def conditioning_map(label_ids: np.ndarray) -> np.ndarray:
    """The ADE20K-coloured conditioning map of a Cityscapes labelIds array."""
    return label_id_to_ade_color_lut()[label_ids]


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes labelIds -> trainIds (uint8, 255 void); ids must be known (the reader checks)."""
    return label_id_to_train_id_lut()[label_ids].astype(np.uint8)


def road_mask(label_ids: np.ndarray, road_classes: tuple[str, ...] = ("road",)) -> np.ndarray:
    ids = [CITYSCAPES_BY_NAME[name].id for name in road_classes]
    return np.isin(label_ids, ids)


@dataclass(frozen=True, slots=True)
class _Scene:
    """Per-image facts that every placement attempt reuses."""

    road: np.ndarray  # (H, W) bool
    road_rows: np.ndarray  # coordinates of road pixels, computed once
    road_cols: np.ndarray
    horizon: int  # estimated top row of the road
    scale: float  # label height / reference height


def _scene(label_ids: np.ndarray, cfg: ComposeConfig) -> _Scene:
    road = road_mask(label_ids, tuple(cfg.road_classes))
    rows, cols = np.nonzero(road)
    if rows.size < cfg.min_road_pixels:
        raise SampleSkipped("no_road", f"{rows.size} road pixels, at least {cfg.min_road_pixels} needed "
                                       f"(road classes {cfg.road_classes})")
    horizon = int(np.percentile(rows, cfg.horizon_percentile))
    return _Scene(road, rows, cols, horizon, label_ids.shape[0] / cfg.reference_height)


def _anchor_levels(scene: _Scene, cfg: ComposeConfig) -> Iterator[np.ndarray]:
    """Road pixels far enough from the border, one array per margin from `margin_px` down to the floor.

    The reference relaxes its margin only when no road pixel is left; here a
    margin is also relaxed when no object fits at it, so that a narrow strip of
    free road near the border is still used before the sample is given up.
    """
    height, width = scene.road.shape
    rows, cols = scene.road_rows, scene.road_cols
    margin = cfg.margin_px * scene.scale
    floor = cfg.margin_min_px * scene.scale
    step = cfg.margin_step_px * scene.scale
    previous = -1
    while True:
        inside = (rows >= margin) & (rows < height - margin) & (cols >= margin) & (cols < width - margin)
        candidates = np.flatnonzero(inside)
        if candidates.size > previous:  # a level that adds no pixel adds no chance
            previous = candidates.size
            if candidates.size:
                yield candidates
        if margin <= floor:
            return
        margin = max(margin - step, floor)


def _perspective_factor(row: int, scene: _Scene, cfg: ComposeConfig) -> float:
    if not cfg.perspective:
        return 1.0
    height = scene.road.shape[0]
    depth = (row - scene.horizon) / max(height - 1 - scene.horizon, 1)
    return cfg.perspective_min_factor + (1.0 - cfg.perspective_min_factor) * float(np.clip(depth, 0.0, 1.0))


def _target_longest_side(longest: int, row: int, scene: _Scene, cfg: ComposeConfig,
                         rng: np.random.Generator) -> float:
    low, high = cfg.object_size_px
    if cfg.object_size_mode == "uniform":
        target = rng.uniform(low, high)
    else:  # the reference keeps the mask's size when it is already within the range
        target = float(np.clip(longest, low, high))
    # Sizes are defined at the reference label height, so an object covers the same
    # fraction of the scene whatever resolution the labels have.
    return target * scene.scale * _perspective_factor(row, scene, cfg)


def _resize_mask(mask: np.ndarray, factor: float) -> np.ndarray:
    height = max(1, round(mask.shape[0] * factor))
    width = max(1, round(mask.shape[1] * factor))
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 0


@dataclass(frozen=True, slots=True)
class _Placement:
    y0: int
    x0: int
    mask: np.ndarray  # clipped to the image, placed at (y0, x0)
    scale: float


def _place(mask: np.ndarray, anchor_row: int, anchor_col: int, factor: float, scene: _Scene,
           occupied: np.ndarray, cfg: ComposeConfig) -> _Placement | None:
    """The object with its bottom-centre at the anchor, or None when it breaks a placement rule."""
    scaled = _resize_mask(mask, factor)
    height, width = scene.road.shape
    top = anchor_row - scaled.shape[0] + 1
    left = anchor_col - scaled.shape[1] // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + scaled.shape[0], height), min(left + scaled.shape[1], width)
    if y1 <= y0 or x1 <= x0:
        return None
    clipped = scaled[y0 - top:y1 - top, x0 - left:x1 - left]
    if int(clipped.sum()) < cfg.min_object_area_px * scene.scale**2:
        return None
    if (occupied[y0:y1, x0:x1] & clipped).any():
        return None
    # Contact with the ground: the object's pixels in its bottom band (feet, wheels, base) must be road;
    # higher pixels (a belly between legs) may cover anything, as a real object in front of it would.
    band = max(1, round(cfg.contact_band * clipped.shape[0]))
    feet = clipped[-band:]
    if not scene.road[y1 - band:y1, x0:x1][feet].all():
        return None
    region = scene.road[y0:y1, x0:x1]
    if (region & clipped).sum() < cfg.min_road_fraction * clipped.sum():
        return None
    return _Placement(y0, x0, clipped, factor)


def _choose_object(bank: MaskBank, classes: tuple[str, ...], cfg: ComposeConfig,
                   rng: np.random.Generator) -> int:
    if cfg.class_balanced:
        class_name = classes[rng.integers(len(classes))]
        indices = bank.indices_of(class_name)
        return int(indices[rng.integers(len(indices))])
    pool = np.concatenate([bank.indices_of(name) for name in classes])
    return int(pool[rng.integers(len(pool))])


def bank_class_filter(cfg: ComposeConfig) -> tuple[str, ...] | None:
    """The classes to open the object bank with: an explicit `compose.ood_classes` list, else all (None).

    A named list ('train', 'validation', 'unmapped') is applied by `usable_classes` instead, as the bank's
    classes on that list, since a bank rarely holds every class of a list.
    """
    return tuple(cfg.ood_classes) if isinstance(cfg.ood_classes, list) and cfg.ood_classes else None


def usable_classes(bank: MaskBank, cfg: ComposeConfig) -> tuple[str, ...]:
    """The bank classes compose may paste; errors on classes painted like an in-distribution class.

    `compose.ood_classes`: None takes every class of the bank (which `cgaug bank build` restricts to the
    reference's training list by default); a list must name bank classes; a named list keeps the bank's
    classes on it, in the bank's order.
    """
    if isinstance(cfg.ood_classes, str):
        named = set(ood_class_list(cfg.ood_classes))
        classes = tuple(name for name in bank.classes if name in named)
        if not classes:
            raise ValueError(f"the object bank has no class of the {cfg.ood_classes!r} OOD class list "
                             f"(compose.ood_classes); the bank has {list(bank.classes)}")
    else:
        classes = tuple(cfg.ood_classes) if cfg.ood_classes is not None else tuple(bank.classes)
    missing = sorted(set(classes) - set(bank.classes))
    if missing:
        raise ValueError(f"compose.ood_classes names {missing}, which the object bank lacks; "
                         f"the bank has {list(bank.classes)}")
    in_dist = {ade_color(name) for name in CITYSCAPES_TO_ADE.values()}
    painted = {bank.entry(int(bank.indices_of(c)[0])).ade_class for c in classes}
    clashing = sorted(ade for ade in painted if ade_color(ade) in in_dist)
    if clashing:
        raise ValueError(f"object bank classes painted as {clashing} share a colour with a Cityscapes class "
                         "in the conditioning map; remove them (compose.ood_classes) or remap their ADE class")
    if not classes:
        raise ValueError("no object classes to paste: the object bank is empty")
    return classes


def _object_count(cfg: ComposeConfig, rng: np.random.Generator) -> int:
    counts = sorted(cfg.objects_per_image)
    weights = np.asarray([cfg.objects_per_image[c] for c in counts], dtype=float)
    return int(counts[rng.choice(len(counts), p=weights / weights.sum())])


def compose(label_ids: np.ndarray, bank: MaskBank, cfg: ComposeConfig, rng: np.random.Generator,
            classes: tuple[str, ...] | None = None) -> tuple[Composition, dict[str, int]]:
    """Paste novel objects into one label map.

    Args:
        label_ids: (H, W) uint8 Cityscapes labelIds.
        bank: the object bank to draw masks from.
        cfg: placement settings.
        rng: this sample's compose stream (`cgaug.seeds.stage_rng(seed, "compose")`).
        classes: pre-validated `usable_classes(bank, cfg)`, to avoid re-validating per sample.

    Returns:
        The composition and counters of failed placements (``placement_failed``).

    Raises:
        SampleSkipped: ``no_road`` (no road pixel) or ``no_placement`` (no object could be placed).
    """
    classes = usable_classes(bank, cfg) if classes is None else classes
    cond = conditioning_map(label_ids)
    label = train_ids(label_ids)
    ood = np.zeros(label.shape, dtype=bool)
    wanted = _object_count(cfg, rng)
    if wanted == 0:
        return Composition(cond, label, ood, ()), {}
    scene = _scene(label_ids, cfg)
    objects: list[PastedObject] = []
    failures: dict[str, int] = {}
    for _ in range(wanted):
        index = _choose_object(bank, classes, cfg, rng)
        placement = _find_placement(bank.mask(index), scene, ood, cfg, rng)
        if placement is None:
            failures["placement_failed"] = failures.get("placement_failed", 0) + 1
            continue
        objects.append(_paint(placement, bank.entry(index), cond, label, ood))
    if not objects:
        raise SampleSkipped("no_placement", f"none of {wanted} object(s) fitted on free road in "
                                            f"{cfg.max_placement_tries} tries per margin level")
    return Composition(cond, label, ood, tuple(objects)), failures


def _find_placement(mask: np.ndarray, scene: _Scene, occupied: np.ndarray, cfg: ComposeConfig,
                    rng: np.random.Generator) -> _Placement | None:
    """Up to `max_placement_tries` random anchors per margin level; None when nothing fits."""
    longest = max(mask.shape)
    for candidates in _anchor_levels(scene, cfg):
        for _attempt in range(cfg.max_placement_tries):
            pick = candidates[rng.integers(candidates.size)]
            row, col = int(scene.road_rows[pick]), int(scene.road_cols[pick])
            factor = _target_longest_side(longest, row, scene, cfg, rng) / longest
            placement = _place(mask, row, col, factor, scene, occupied, cfg)
            if placement is not None:
                return placement
    return None


def _paint(placement: _Placement, entry, cond: np.ndarray, label: np.ndarray, ood: np.ndarray) -> PastedObject:
    y0, x0 = placement.y0, placement.x0
    y1, x1 = y0 + placement.mask.shape[0], x0 + placement.mask.shape[1]
    cond[y0:y1, x0:x1][placement.mask] = ade_color(entry.ade_class)
    label[y0:y1, x0:x1][placement.mask] = OOD_TRAIN_ID
    ood[y0:y1, x0:x1] |= placement.mask
    rows = np.flatnonzero(placement.mask.any(axis=1))
    cols = np.flatnonzero(placement.mask.any(axis=0))
    box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
    return PastedObject(
        class_name=entry.class_name,
        ade_class=entry.ade_class,
        object_id=entry.object_id,
        bank_source_id=entry.source_id,
        box=box,
        scale=float(placement.scale),
        area=int(placement.mask.sum()),
    )
