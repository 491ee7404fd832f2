"""Pixel operations that turn an (original, augmented) pair into one training example. Pure numpy.

Order, as in the reference's dataset: mixup of the original into the augmented image at full
resolution (weight p = min(U(0, 1), mixup_max), labels untouched: the augmented label stays), then
the same random crop and horizontal flip on both images (the reference's DeepLab recipe crops
without flipping: `flip_probability: 0`), then the anomaly mix: one OOD object
with pixels pasted into the cropped original at a random scale and position, its pixels labelled
254. The reference pastes objects anywhere in the crop, not only on road (the generation stage's
placement in `cgaug.tasks.generation.compose` keeps objects on road because the generator must render them
there coherently; here an object is pixels already). Every random choice comes from the
`numpy.random.Generator` passed in, which the dataset derives from (run seed, source id, epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID


@dataclass(frozen=True, slots=True)
class PairArrays:
    """One example before normalisation: uint8 images (H, W, 3), uint8 train-id labels, bool noise mask."""

    image: np.ndarray
    label: np.ndarray
    aug_image: np.ndarray
    aug_label: np.ndarray
    noise: np.ndarray
    mixup_weight: float
    pasted_pixels: int


def mixup(original: np.ndarray, augmented: np.ndarray, weight: float) -> np.ndarray:
    """weight * original + (1 - weight) * augmented, truncated to uint8 as the reference does."""
    if original.shape != augmented.shape:
        raise ValueError(f"mixup needs images of one size; found original {original.shape} and augmented "
                         f"{augmented.shape}")
    mixed = weight * original.astype(np.float32) + (1.0 - weight) * augmented.astype(np.float32)
    return mixed.astype(np.uint8)


def crop_window(shape: tuple[int, int], crop: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """The top-left (y, x) of a random crop; 0 along a side shorter than the crop (it is padded instead)."""
    (height, width), (ch, cw) = shape, crop
    y = int(rng.integers(0, height - ch + 1)) if height > ch else 0
    x = int(rng.integers(0, width - cw + 1)) if width > cw else 0
    return y, x


def crop_pad(array: np.ndarray, y: int, x: int, crop: tuple[int, int], fill: int) -> np.ndarray:
    """`array[y:y+ch, x:x+cw]`, padded with `fill` at the bottom/right where the array is smaller."""
    ch, cw = crop
    window = array[y:y + ch, x:x + cw]
    if window.shape[:2] == (ch, cw):
        return np.ascontiguousarray(window)
    out = np.full((ch, cw, *array.shape[2:]), fill, dtype=array.dtype)
    out[:window.shape[0], :window.shape[1]] = window
    return out


def resize_pair(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """An object's pixels (bilinear) and mask (nearest) scaled by `factor`, at least 1x1."""
    height = max(1, round(image.shape[0] * factor))
    width = max(1, round(image.shape[1] * factor))
    if (height, width) == image.shape[:2]:
        return image, mask
    rgb = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    binary = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height),
                                                                             Image.Resampling.NEAREST)) > 0
    return rgb, binary


def paste_object(image: np.ndarray, label: np.ndarray, obj_rgb: np.ndarray, obj_mask: np.ndarray, scale: float,
                 rng: np.random.Generator, ood_id: int = OOD_TRAIN_ID) -> int:
    """Paste an object (pixels + mask) into `image` in place, writing `ood_id` into `label`; returns its pixels.

    The object is scaled by `scale` (and shrunk further to fit inside the image) and placed at a
    uniformly random position where it fits whole.
    """
    if obj_rgb.shape[:2] != obj_mask.shape:
        raise ValueError(f"object pixels {obj_rgb.shape[:2]} and mask {obj_mask.shape} differ in size")
    height, width = label.shape
    fit = min(1.0, height / obj_mask.shape[0], width / obj_mask.shape[1])
    rgb, mask = resize_pair(obj_rgb, obj_mask, scale * fit)
    oh, ow = mask.shape
    oh, ow = min(oh, height), min(ow, width)
    rgb, mask = rgb[:oh, :ow], mask[:oh, :ow]
    y = int(rng.integers(0, height - oh + 1))
    x = int(rng.integers(0, width - ow + 1))
    image[y:y + oh, x:x + ow][mask] = rgb[mask]
    label[y:y + oh, x:x + ow][mask] = ood_id
    return int(mask.sum())


def make_pair(image: np.ndarray, label: np.ndarray, aug_image: np.ndarray, aug_label: np.ndarray,
              noise: np.ndarray | None, *, crop: tuple[int, int], flip_probability: float, mixup_max: float | None,
              obj: tuple[np.ndarray, np.ndarray] | None, scales: list[float], rng: np.random.Generator,
              void_noise: bool = False) -> PairArrays:
    """Mixup -> same crop and flip -> anomaly mix, in the reference's order (see the module docstring).

    Args:
        image, label: the original (H, W, 3) uint8 and its train ids.
        aug_image, aug_label: the accepted CG-Aug sample of the same source image (resized to H x W
            by the caller when generated at another size).
        noise: the shard's pixel noise mask, or None (no pixel flagged).
        mixup_max: None switches mixup off.
        obj: (pixels, mask) of the object to paste into the original, or None (no anomaly mix).
        void_noise: write void into the augmented label where the noise mask is set.
    """
    if image.shape != aug_image.shape or label.shape != aug_label.shape or label.shape != image.shape[:2]:
        raise ValueError(f"pair sizes differ: original {image.shape}/{label.shape}, augmented "
                         f"{aug_image.shape}/{aug_label.shape}")
    noise = np.zeros(label.shape, dtype=bool) if noise is None else noise
    weight = 0.0
    if mixup_max is not None:
        weight = min(float(rng.random()), mixup_max)
        aug_image = mixup(image, aug_image, weight)
    y, x = crop_window(label.shape, crop, rng)
    out = [crop_pad(a, y, x, crop, fill) for a, fill in ((image, 0), (label, VOID_TRAIN_ID), (aug_image, 0),
                                                         (aug_label, VOID_TRAIN_ID), (noise, 0))]
    if rng.random() < flip_probability:
        out = [np.ascontiguousarray(a[:, ::-1]) for a in out]
    image, label, aug_image, aug_label, noise = out
    if void_noise:
        aug_label = np.where(noise, np.uint8(VOID_TRAIN_ID), aug_label)
    pasted = 0
    if obj is not None:
        # Copies: the crop can be a view of a decoded (read-only) or caller-owned array.
        image, label = image.copy(), label.copy()
        pasted = paste_object(image, label, obj[0], obj[1], float(scales[int(rng.integers(len(scales)))]), rng)
    return PairArrays(image, label, aug_image, aug_label, noise, weight, pasted)
