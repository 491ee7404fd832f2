"""The miniature worlds on disk: training originals with their object bank, and the test world's inputs.

Layout under the experiment's output folder::

    world/train/          Cityscapes-format originals (split train), bank_masks/, bank_images/, bank.parquet
    world/test/           Cityscapes-format test scenes (split test, other layouts: seed world_seed + 1000)
    world/test_bank/      masks of the unseen test classes, {class}/{class}_{i}.png, and test_bank.parquet

The test classes are ADE20K classes outside the reference's training list (`test_ood_classes`): the
validation list minus the training list when that is non-empty (it is a subset of it, so today it
is empty), else classes of `unmapped_ood_classes()` that the training list lacks. The painter gives
each class its own look, so the test objects look like nothing pasted in training. Their silhouettes
reuse the fixture shapes; what is unseen is the object class, hence its texture and colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgaug.fixtures import MASK_CLASSES, render_mask, write_fixture_dataset, write_fixtures
from cgaug.labels import default_ood_classes, unmapped_ood_classes, validation_ood_classes
from cgaug.storage.fs import open_root

TEST_WORLD_OFFSET = 1000  # test scenes' seed = world seed + this: layouts never seen in training
TEST_SPLIT = "test"


def test_ood_classes(count: int) -> tuple[str, ...]:
    """`count` ADE20K classes never pasted in training (see the module docstring), in a fixed order."""
    training = set(default_ood_classes())
    candidates = [c for c in validation_ood_classes() if c not in training]
    if not candidates:
        candidates = [c for c in unmapped_ood_classes() if c not in training]
    if len(candidates) < count:
        raise ValueError(f"only {len(candidates)} ADE20K classes lie outside the training list; asked for {count}")
    # spread over the list rather than its first entries, which cluster in one part of the palette
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return tuple(candidates[i] for i in picks)


def write_train_world(dest: Path, scenes: int, height: int, width: int, seed: int) -> list[str]:
    """Originals, object masks with pixels and the bank (the fixture dataset); returns the source ids."""
    ids, _ = write_fixture_dataset(dest, images=scenes, split="train", seed=seed, height=height, width=width)
    return ids


def write_test_world(dest: Path, bank_dir: Path, scenes: int, height: int, width: int, seed: int,
                     classes: tuple[str, ...], per_class: int) -> str:
    """Test scenes (split test) and the bank of unseen classes; returns the bank's Parquet path."""
    from cgaug.storage.bank_sources import build_from_folder

    write_fixtures(dest, images=scenes, split=TEST_SPLIT, seed=seed + TEST_WORLD_OFFSET, height=height,
                   width=width)
    root = open_root(str(bank_dir / "masks"))
    for index, name in enumerate(classes):
        rng = np.random.default_rng([seed + TEST_WORLD_OFFSET, index])
        for i in range(per_class):
            shape = MASK_CLASSES[(index + i) % len(MASK_CLASSES)]
            mask = render_mask(shape, rng, int(rng.integers(60, 301)))
            root.write_bytes_atomic(f"{name}/{name}_{i:03d}.png", _png(mask))
    bank = str(bank_dir / "test_bank.parquet")
    build_from_folder(str(bank_dir / "masks"), bank)
    return bank


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
