"""Pixel operations that turn an (original, augmented) pair into one training example. Numpy and PIL.

Order, as in the reference's dataset: mixup of the original into the augmented image at full
resolution (weight p = min(U(0, 1), mixup_max), labels untouched: the augmented label stays), then
the optional augmentations of the reference's Mask2Former recipe (`AUGMENTATIONS`, `augment`: the
same draw on both images, each step with its own probability), then the same random crop and
horizontal flip on both images (the reference's DeepLab recipe crops without flipping:
`flip_probability: 0`), then the anomaly mix: one OOD object with pixels pasted into the cropped
original at a random scale and position, its pixels labelled 254. The reference pastes objects
anywhere in the crop, not only on road (the generation stage's placement in
`cgaug.tasks.generation.compose` keeps objects on road because the generator must render them there
coherently; here an object is pixels already). Every random choice comes from the
`numpy.random.Generator` passed in, which the dataset derives from (run seed, source id, epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

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


# --- the reference's Mask2Former augmentations (train_m2f.py:48-61, lib/utils/img_utils.py) ----------------

RESIZE_SCALES = (0.7, 0.8, 0.9, 1.0)
ROTATION_DEGREES = 10.0
Photometric = Callable[[Image.Image], Image.Image]


def _hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue by `shift` of a full turn (torchvision's adjust_hue, through PIL's HSV)."""
    h, s, v = image.convert("HSV").split()
    rotated = ((np.asarray(h, dtype=np.int16) + round(shift * 255)) % 256).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(rotated), s, v)).convert("RGB")


def _color(rng: np.random.Generator) -> Photometric:
    """ColorJitter(0.8, 0.8, 0.8, 0.2): brightness, contrast, saturation factors in [0.2, 1.8], hue in
    [-0.2, 0.2] of a turn, applied in a random order."""
    factors = rng.uniform(0.2, 1.8, 3)
    hue = float(rng.uniform(-0.2, 0.2))
    steps: list[Photometric] = [
        lambda im: ImageEnhance.Brightness(im).enhance(float(factors[0])),
        lambda im: ImageEnhance.Contrast(im).enhance(float(factors[1])),
        lambda im: ImageEnhance.Color(im).enhance(float(factors[2])),
        lambda im: _hue(im, hue),
    ]
    order = rng.permutation(4)

    def apply(im: Image.Image) -> Image.Image:
        for i in order:
            im = steps[int(i)](im)
        return im
    return apply


def _photometric(name: str, rng: np.random.Generator) -> Photometric:
    if name == "color":
        return _color(rng)
    if name == "blur":  # GaussianBlur((9, 9), sigma in [0.1, 5]); PIL's kernel is not cut at 9 px
        sigma = float(rng.uniform(0.1, 5.0))
        return lambda im: im.filter(ImageFilter.GaussianBlur(sigma))
    if name == "sharpness":
        factor = float(rng.uniform(0.0, 2.0))
        return lambda im: ImageEnhance.Sharpness(im).enhance(factor)
    if name == "autocontrast":
        return ImageOps.autocontrast
    return ImageOps.equalize


def _spatial(arrays: list[np.ndarray], fills: list[int], name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """One geometric step on every array of a pair (images bilinear, labels and masks nearest)."""
    if name == "hflip":
        return [np.ascontiguousarray(a[:, ::-1]) for a in arrays]
    if name == "vflip":
        return [np.ascontiguousarray(a[::-1]) for a in arrays]
    out = []
    if name == "resize":
        scale = float(RESIZE_SCALES[int(rng.integers(len(RESIZE_SCALES)))])
        size = (int(arrays[0].shape[1] * scale), int(arrays[0].shape[0] * scale))
        for a in arrays:
            method = Image.Resampling.BILINEAR if a.ndim == 3 else Image.Resampling.NEAREST
            out.append(np.asarray(Image.fromarray(a).resize(size, method)))
        return out
    angle = float(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    for a, fill in zip(arrays, fills, strict=True):
        method = Image.Resampling.BILINEAR if a.ndim == 3 else Image.Resampling.NEAREST
        fillcolor = (fill,) * 3 if a.ndim == 3 else fill
        out.append(np.asarray(Image.fromarray(a).rotate(angle, resample=method, fillcolor=fillcolor)))
    return out


AUGMENTATIONS = ("color", "blur", "sharpness", "autocontrast", "equalize", "resize", "rotate", "hflip", "vflip")
"""The reference's Mask2Former training augmentations, in its order."""
_PHOTOMETRIC = AUGMENTATIONS[:5]


def augment(image: np.ndarray, label: np.ndarray, aug_image: np.ndarray, aug_label: np.ndarray,
            noise: np.ndarray, names: Sequence[str], probability: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The named augmentations in `AUGMENTATIONS` order, each with `probability`, the same draw on both images.

    As in the reference, photometric steps change the images only and geometric steps move images,
    labels and the noise mask together. Unlike the reference, which fills rotated-in corners of
    the label with 0 (road), cgaug fills them with void (and the images with black).
    """
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentations {unknown}; expected some of {', '.join(AUGMENTATIONS)}")
    for name in AUGMENTATIONS:
        if name not in names or not rng.random() < probability:
            continue
        if name in _PHOTOMETRIC:
            step = _photometric(name, rng)
            image, aug_image = (np.asarray(step(Image.fromarray(a))) for a in (image, aug_image))
        else:
            image, label, aug_image, aug_label, mask = _spatial(
                [image, label, aug_image, aug_label, noise.astype(np.uint8)], [0, VOID_TRAIN_ID, 0, VOID_TRAIN_ID, 0],
                name, rng)
            noise = mask.astype(bool)
    return image, label, aug_image, aug_label, noise


def make_pair(image: np.ndarray, label: np.ndarray, aug_image: np.ndarray, aug_label: np.ndarray,
              noise: np.ndarray | None, *, crop: tuple[int, int], flip_probability: float, mixup_max: float | None,
              obj: tuple[np.ndarray, np.ndarray] | None, scales: list[float], rng: np.random.Generator,
              void_noise: bool = False, augmentations: Sequence[str] = (),
              augment_probability: float = 0.5) -> PairArrays:
    """Mixup -> same crop and flip -> anomaly mix, in the reference's order (see the module docstring).

    Args:
        image, label: the original (H, W, 3) uint8 and its train ids.
        aug_image, aug_label: the accepted CG-Aug sample of the same source image (resized to H x W
            by the caller when generated at another size).
        noise: the shard's pixel noise mask, or None (no pixel flagged).
        mixup_max: None switches mixup off.
        obj: (pixels, mask) of the object to paste into the original, or None (no anomaly mix).
        void_noise: write void into the augmented label where the noise mask is set.
        augmentations, augment_probability: the reference's Mask2Former augmentations (`augment`)
            between mixup and the crop; none by default (the reference's DeepLab recipe).
    """
    if image.shape != aug_image.shape or label.shape != aug_label.shape or label.shape != image.shape[:2]:
        raise ValueError(f"pair sizes differ: original {image.shape}/{label.shape}, augmented "
                         f"{aug_image.shape}/{aug_label.shape}")
    noise = np.zeros(label.shape, dtype=bool) if noise is None else noise
    weight = 0.0
    if mixup_max is not None:
        weight = min(float(rng.random()), mixup_max)
        aug_image = mixup(image, aug_image, weight)
    if augmentations:
        image, label, aug_image, aug_label, noise = augment(image, label, aug_image, aug_label, noise,
                                                            augmentations, augment_probability, rng)
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
