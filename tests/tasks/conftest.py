"""Small in-memory inputs for the pure stage tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cgaug.labels import CITYSCAPES_BY_NAME


@dataclass(frozen=True)
class Entry:
    object_id: str
    class_name: str
    ade_class: str
    source: str
    source_id: str


class ListBank:
    """An object bank held in lists, with the same read API as `ObjectBank`."""

    def __init__(self, items: list[tuple[str, str, np.ndarray]]):
        self._entries = [Entry(f"obj{i}", name, ade, "test", f"src{i}") for i, (name, ade, _) in enumerate(items)]
        self._masks = [mask for _, _, mask in items]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(sorted({e.class_name for e in self._entries}))

    def indices_of(self, class_name: str) -> np.ndarray:
        return np.asarray([i for i, e in enumerate(self._entries) if e.class_name == class_name])

    def entry(self, index: int) -> Entry:
        return self._entries[index]

    def mask(self, index: int) -> np.ndarray:
        return self._masks[index]

    def __len__(self) -> int:
        return len(self._entries)


def ellipse(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return ((yy - (height - 1) / 2) / (height / 2)) ** 2 + ((xx - (width - 1) / 2) / (width / 2)) ** 2 <= 1


def street(height: int = 256, width: int = 512) -> np.ndarray:
    """labelIds: sky on top, buildings, road on the lower half, a car on the road."""
    ids = CITYSCAPES_BY_NAME
    label = np.full((height, width), ids["building"].id, dtype=np.uint8)
    label[: height // 4] = ids["sky"].id
    label[height // 2:] = ids["road"].id
    label[height // 2:, : width // 8] = ids["sidewalk"].id
    label[int(height * 0.6): int(height * 0.7), width // 2: width // 2 + width // 10] = ids["car"].id
    return label


@pytest.fixture
def bank() -> ListBank:
    return ListBank([
        ("dog", "animal", ellipse(60, 90)),
        ("dog", "animal", ellipse(120, 80)),
        ("box", "box", np.ones((50, 50), dtype=bool)),
        ("barrel", "barrel", ellipse(300, 200)),
    ])
