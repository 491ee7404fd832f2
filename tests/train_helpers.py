"""Fast CG-Aug-like shards for training tests: real compositions, a colour shift instead of a generator.

Writing them takes well under a second for the 6-image fixture dataset, so tests of the training
data path do not need the tiny diffusion pipeline; the end-to-end CLI test uses real tiny-generated
shards instead. `fake_shards` caches one root per (dataset, variants, verdict, split) for the session.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from cgaug.config import ComposeConfig
from cgaug.records import OOD_TRAIN_ID
from cgaug.seeds import sample_id_for
from cgaug.storage.bank import ObjectBank
from cgaug.storage.cityscapes import list_sources, read_pair
from cgaug.storage.fs import open_root
from cgaug.storage.png import encode_png
from cgaug.storage.schema import empty_row
from cgaug.storage.shards import write_index, write_shard
from cgaug.tasks.generation.compose import compose

_CACHE: dict[tuple, Path] = {}


def write_fake_shards(dataset: Path, out: Path, *, variants: int = 2, verdict: str = "accepted",
                      split: str = "train", shard_size: int = 4) -> Path:
    bank = ObjectBank.open(str(dataset / "bank.parquet"))
    root = open_root(str(out))
    rows = []
    for n, rec in enumerate(list_sources(str(dataset), "train")):
        image, label_ids = read_pair(rec)
        for variant in range(variants):
            rng = np.random.default_rng([n, variant])
            comp, _ = compose(label_ids, bank, ComposeConfig(), rng)
            shifted = np.clip(image.astype(np.float32) * (0.5 + 0.2 * variant) + 30 * variant, 0, 255)
            shifted[comp.ood_mask] = rng.integers(0, 255, (int(comp.ood_mask.sum()), 3))
            noise = np.zeros(comp.label.shape, dtype=bool)
            noise[:8] = True
            row = empty_row()
            row.update(sample_id=sample_id_for(rec.source_id, variant), source_id=rec.source_id, city=rec.city,
                       split=split, variant=variant, attempt=0, attempts=1, seed=n, shard=0, verdict=verdict,
                       reasons=[], scores={"sam_iou": 0.5 + 0.1 * variant}, gates=[],
                       created_at=dt.datetime.now(dt.UTC),
                       objects=[{"class_name": o.class_name, "ade_class": o.ade_class, "object_id": o.object_id,
                                 "bank_source_id": o.bank_source_id, "x0": o.box[0], "y0": o.box[1],
                                 "x1": o.box[2], "y1": o.box[3], "scale": o.scale, "area": o.area}
                                for o in comp.objects],
                       num_objects=len(comp.objects), ood_area=int(comp.ood_mask.sum()),
                       height=comp.label.shape[0], width=comp.label.shape[1],
                       image_png=encode_png(shifted.astype(np.uint8)), label_png=encode_png(comp.label),
                       cond_png=encode_png(comp.cond_map), ood_mask_png=encode_png(comp.ood_mask),
                       noise_mask_png=encode_png(noise))
            assert (comp.label == OOD_TRAIN_ID).any()
            rows.append(row)
    for shard, start in enumerate(range(0, len(rows), shard_size)):
        chunk = [dict(r, shard=shard) for r in rows[start:start + shard_size]]
        write_shard(root, shard, chunk)
    write_index(root)
    return out


def fake_shards(dataset: Path, tmp_factory, **options) -> Path:
    key = (str(dataset), tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = write_fake_shards(dataset, tmp_factory.mktemp("shards"), **options)
    return _CACHE[key]
