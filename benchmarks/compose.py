"""Compositing throughput at 1024x2048 against the reference's per-class colour loop.

Both sides run in this process on the same labels and object masks:
- reference: a straightforward re-implementation of the reference pipeline's
  compositing (per-class `np.all(colour == rgb)` loop over the Cityscapes
  colour label, road found by colour, margin relaxation over full coordinate
  lists, paste, OOD mask recovered by colour comparison);
- ours: `cgaug.tasks.generation.compose.compose` (lookup tables, road coordinates once).

Run: `python benchmarks/compose.py [--images N] [--repeats R] [--height H --width W]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cgaug.config import ComposeConfig
from cgaug.labels import CITYSCAPES_LABELS, CITYSCAPES_TO_ADE, ade_color
from cgaug.seeds import stage_rng
from cgaug.tasks.generation.compose import compose, usable_classes


def reference_compose(color_label: np.ndarray, mask: np.ndarray, ood_rgb: tuple[int, int, int],
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The reference's compositing, re-implemented plainly (colour loop, coordinate lists)."""
    ade = color_label.copy()
    for label in CITYSCAPES_LABELS:  # one full-image comparison per Cityscapes class
        target = CITYSCAPES_TO_ADE.get(label.name)
        rgb = ade_color(target) if target else (0, 0, 0)
        hit = np.all(color_label == label.color, axis=-1)
        ade[hit] = rgb
    road = np.all(ade == ade_color("road"), axis=-1)
    margin = 150
    keep = np.zeros_like(road)
    keep[margin:-margin, margin:-margin] = True
    coords = np.column_stack(np.where(road & keep))
    while len(coords) == 0 and margin > 10:
        margin -= 10
        keep = np.zeros_like(road)
        keep[margin:-margin, margin:-margin] = True
        coords = np.column_stack(np.where(road & keep))
    if len(coords) == 0:
        return ade, np.zeros(road.shape, dtype=np.uint8)
    cy, cx = coords[rng.integers(len(coords))]
    ys, xs = np.where(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    target = max(min(500, max(crop.shape)), 200)
    factor = target / max(crop.shape)
    size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
    resized = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)) == 1
    y0, x0 = max(cy - resized.shape[0] // 2, 0), max(cx - resized.shape[1] // 2, 0)
    y1, x1 = min(y0 + resized.shape[0], ade.shape[0]), min(x0 + resized.shape[1], ade.shape[1])
    ade[y0:y1, x0:x1][resized[: y1 - y0, : x1 - x0]] = ood_rgb
    ood = np.all(ade == ood_rgb, axis=-1).astype(np.uint8)
    return ade, ood


def _inputs(images: int, height: int, width: int, workdir: Path):
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank import ObjectBank
    from cgaug.storage.bank_sources import build_from_folder
    from cgaug.storage.cityscapes import list_sources, read_label_ids

    write_fixtures(workdir / "cs", images=images, height=height, width=width)
    write_fixture_masks(workdir / "masks")
    build_from_folder(str(workdir / "masks"), str(workdir / "bank.parquet"))
    bank = ObjectBank.open(str(workdir / "bank.parquet"))
    records = list_sources(str(workdir / "cs"), "train")
    label_ids = [read_label_ids(r) for r in records]
    colors = [np.asarray(Image.open(r.label_path.replace("_labelIds.png", "_color.png")).convert("RGB"))
              for r in records]
    return bank, label_ids, colors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bank, label_ids, colors = _inputs(args.images, args.height, args.width, Path(tmp))
    cfg = ComposeConfig()
    classes = usable_classes(bank, cfg)
    masks = [(bank.mask(i), ade_color(bank.entry(i).ade_class)) for i in range(len(bank))]

    def run_ours() -> None:
        for i, ids in enumerate(label_ids):
            compose(ids, bank, cfg, stage_rng(i, "compose"), classes)

    def run_reference() -> None:
        rng = np.random.default_rng(0)
        for i, color in enumerate(colors):
            mask, rgb = masks[i % len(masks)]
            reference_compose(color, mask, rgb, rng)

    results = {}
    for name, fn in (("reference", run_reference), ("cgaug", run_ours)):
        fn()  # warm-up: caches, lookup tables, allocator
        best = min(_timed(fn) for _ in range(args.repeats))
        results[name] = len(label_ids) / best
    print(f"compositing at {args.height}x{args.width}, {len(label_ids)} images, best of {args.repeats}")
    for name, rate in results.items():
        print(f"  {name:10s} {rate:8.2f} images/s  ({1000 / rate:7.1f} ms/image)")
    print(f"  ratio cgaug/reference: {results['cgaug'] / results['reference']:.1f}x")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
