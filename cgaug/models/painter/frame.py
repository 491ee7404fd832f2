"""The per-sample state every painting step reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cgaug.models.painter.geometry import Instances, Runs
from cgaug.models.painter.prompt import PlaceStyle


@dataclass(slots=True)
class Frame:
    """One image being painted. Flat (H*W,) views index pixels as `y * width + x`.

    `albedo` is the surface colour under neutral daylight, `emissive` what shines by itself
    (lamps, lit windows, car lights); `atmosphere` lights, tints and hazes both into the image.
    """

    height: int
    width: int
    seed: int
    weather: str
    night: bool
    style: PlaceStyle
    cls: np.ndarray  # (H, W) int16 ADE class index (UNKNOWN off-palette)
    runs: Runs
    instances: Instances
    horizon: int
    coarse: np.ndarray  # (H*W,) smooth noise in [0, 1], a few cells across the image
    mid: np.ndarray  # (H*W,) smooth noise in [0, 1], finer
    grain: np.ndarray  # (H*W,) white noise in [0, 1]
    albedo: np.ndarray = field(init=False)  # (H, W, 3) float32 in [0, 1]
    emissive: np.ndarray = field(init=False)
    scatter: np.ndarray | None = None  # (H, W, 3) wide glow of the lights (night), set by `atmosphere`

    def __post_init__(self) -> None:
        self.albedo = np.zeros((self.height, self.width, 3), np.float32)
        self.emissive = np.zeros((self.height, self.width, 3), np.float32)

    def rng(self, *salt: int) -> np.random.Generator:
        """A stream of its own per purpose, so one class's draws never shift another's."""
        return np.random.default_rng([self.seed, *salt])

    @property
    def flat_albedo(self) -> np.ndarray:
        return self.albedo.reshape(-1, 3)

    @property
    def flat_emissive(self) -> np.ndarray:
        return self.emissive.reshape(-1, 3)

    def depth(self, y: np.ndarray) -> np.ndarray:
        """Ground depth of a row: 0 at the horizon, 1 at the bottom row (clipped to a small minimum)."""
        span = max(self.height - 1 - self.horizon, 1)
        return np.clip((y - self.horizon) / span, 0.02, 1.0).astype(np.float32)


def hash01(*values: np.ndarray | int) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per element of the integer inputs."""
    acc = np.full(np.broadcast(*values).shape, 0x9E3779B97F4A7C15, np.uint64)
    with np.errstate(over="ignore"):
        for i, value in enumerate(values):
            acc ^= np.asarray(value).astype(np.int64).astype(np.uint64) + np.uint64(0x632BE59BD9B4E019 + i)
            acc *= np.uint64(0xBF58476D1CE4E5B9)
            acc ^= acc >> np.uint64(29)
    return (acc >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
