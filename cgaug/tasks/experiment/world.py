"""The miniature worlds: which classes the test world pastes, and where each world lives on disk.

Layout under the experiment's output folder::

    world/train/          Cityscapes-format originals (split train), bank_masks/, bank_images/, bank.parquet
    world/test/           Cityscapes-format test scenes (split test, other layouts: seed world_seed + 1000)
    world/test_bank/      masks of the unseen test classes, masks/{class}/*.png, and test_bank.parquet

The scenes and masks are written by `cgaug.fixtures` (the flow calls it; tasks sit below fixtures).
The test classes are ADE20K classes outside the reference's training list (`unseen_ood_classes`): the
validation list minus the training list when that is non-empty (it is a subset of it, so today it
is empty), else classes of `unmapped_ood_classes()` that the training list lacks. The painter gives
each class its own look, so the test objects look like nothing pasted in training. Their silhouettes
reuse the fixture shapes; what is unseen is the object class, hence its texture and colour.
"""

from __future__ import annotations

import numpy as np

from cgaug.labels import default_ood_classes, unmapped_ood_classes, validation_ood_classes

TEST_WORLD_OFFSET = 1000  # test scenes' seed = world seed + this: layouts never seen in training
TEST_SPLIT = "test"


def unseen_ood_classes(count: int) -> tuple[str, ...]:
    """`count` ADE20K classes never pasted in training (see the module docstring), spread over the candidates."""
    training = set(default_ood_classes())
    candidates = [c for c in validation_ood_classes() if c not in training]
    if not candidates:
        candidates = [c for c in unmapped_ood_classes() if c not in training]
    if len(candidates) < count:
        raise ValueError(f"only {len(candidates)} ADE20K classes lie outside the training list; asked for {count}")
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return tuple(candidates[i] for i in picks)
