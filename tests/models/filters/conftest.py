"""The tiny filter models, built once per session into the private cache home."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny(tiny_home):
    from cgaug.models.filters import ensure_tiny_filter

    return {kind: ensure_tiny_filter(kind) for kind in ("sam", "segmenter", "clip")}
