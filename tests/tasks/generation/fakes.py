"""Stand-ins for the filter's models and shapes with known answers, shared by the filter and shard-loop tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cgaug.models.filters.base import PixelOutput


def square(h: int, w: int, y: int, x: int, side: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y:y + side, x:x + side] = True
    return mask


def shifted(mask: np.ndarray, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    if dx >= 0:
        out[:, dx:] = mask[:, : mask.shape[1] - dx]
    else:
        out[:, :dx] = mask[:, -dx:]
    return out


@dataclass
class ShiftMasker:
    """SAM stand-in: the pasted pixels inside each box, shifted right by `dx` pixels."""

    dx: int
    calls: list = field(default_factory=list)

    def masks(self, images, boxes):
        self.calls.append(len(images))
        out = []
        for image, image_boxes in zip(images, boxes, strict=True):
            masks = []
            for x0, y0, x1, y1 in image_boxes:
                mask = np.zeros(image.shape[:2], dtype=bool)
                mask[y0:y1, x0:x1] = image[y0:y1, x0:x1, 0] == 200  # the fake generator draws objects at 200
                masks.append(shifted(mask, self.dx))
            out.append(masks)
        return out


@dataclass
class FixedSegmenter:
    """Predicts the label's own class except where told; anomaly 5 on object pixels, 0 elsewhere."""

    wrong: np.ndarray | None = None  # pixels predicted as class 18

    def predict(self, images):
        out = []
        for image in images:
            ids = np.zeros(image.shape[:2], dtype=np.uint8)  # the fake labels are road (0) in-distribution
            if self.wrong is not None:
                ids[self.wrong] = 18
            out.append(PixelOutput(ids, np.where(image[..., 0] == 200, 5.0, 0.0).astype(np.float32)))
        return out


class FixedClip:
    def __init__(self, text: float = 0.3, margin: float = 0.1):
        self.text, self.margin = text, margin

    def image_text(self, images, texts):
        return [self.text] * len(images)

    def object_margins(self, images, boxes, names):
        return [[self.margin] * len(b) for b in boxes]
