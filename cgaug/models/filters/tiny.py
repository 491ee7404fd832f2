"""Small random-weight filter models (SAM, SegFormer, CLIP) built once into the user cache.

``tiny`` in a filter model field (`--filters tiny`) loads these through the same loading code as
real checkpoints, so tests exercise the production path without any download. Each model module
owns its architecture and saver; this module owns where they live and how they are written
(atomically, race-safe, with a recipe file recording how they were built).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cgaug.models.hub import quiet_progress_bars
from cgaug.models.tiny import RECIPE_FILE, build_atomically, tiny_model_dir

TINY_FILTERS_RECIPE = 1  # bump when a tiny architecture or its initialisation changes
TINY_KINDS = ("sam", "segmenter", "clip")


def tiny_filters_dir() -> Path:
    """The per-user cache folder of the tiny filter models, next to the tiny generator."""
    return tiny_model_dir().parent / "tiny-filters"


def build_tiny(kind: str, save: Callable[[Path, int], None], dest: str | Path | None = None, seed: int = 0) -> Path:
    """Write the tiny `kind` model with `save(directory, seed)` to `dest` (default: the user cache).

    Nothing is done when `dest` already holds it (its recipe file is written last).

    Raises:
        FileExistsError: `dest` holds something else.
    """
    def write(tmp: Path) -> None:
        with quiet_progress_bars():
            save(tmp, seed)
        (tmp / RECIPE_FILE).write_text(json.dumps({"recipe_version": TINY_FILTERS_RECIPE, "kind": kind,
                                                   "seed": seed}))

    return build_atomically(tiny_filters_dir() / kind if dest is None else dest, RECIPE_FILE, write)
