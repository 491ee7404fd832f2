"""The optional second condition: structure taken from the source photo (Canny edges or line art).

The seg ControlNet only sees class regions, so inside a large coarse region (a building
facade, vegetation) it invents any structure. A second ControlNet fed with the real
photo's edges keeps the scene's geometry where the label is coarse. Inside the pasted
objects the photo shows what was there before (usually road), so those pixels are
blanked: there the label's object region alone decides.

Detectors come from `controlnet_aux` (the annotators the ControlNet authors trained
with); neither Canny nor the standard line-art detector needs weights. controlnet_aux
is imported only when a photo condition is actually computed: importing it prints
warnings and re-registers timm models.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
from PIL import Image

PHOTO_CONTROLS = ("canny", "lineart")
DETECT_MULTIPLE = 64  # controlnet_aux resizes to multiples of 64; padding to one keeps the size exact


def photo_condition(photo: np.ndarray, kind: str, height: int, width: int, *, mask: np.ndarray | None = None,
                    canny_thresholds: tuple[int, int] = (100, 200)) -> np.ndarray:
    """The (height, width, 3) uint8 control image of `kind` for one photo.

    The photo is resized to the generation size first, so edges are found at the scale the
    ControlNet sees them. `mask` (any size, nonzero = pasted object) blanks the condition there.
    """
    if kind not in PHOTO_CONTROLS:
        raise ValueError(f"generator.photo_control: expected one of {PHOTO_CONTROLS}, found {kind!r}")
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"photo: expected a (H, W, 3) uint8 array, found {photo.shape} {photo.dtype}")
    small = resize_photo_area(photo, height, width)
    padded = _pad_to_multiple(small, DETECT_MULTIPLE)
    side = min(padded.shape[:2])  # detect_resolution equal to the short side: the detector keeps the size
    detector = _detector(kind)
    if kind == "canny":
        low, high = canny_thresholds
        detected = detector(padded, low, high, detect_resolution=side, image_resolution=side,
                            output_type="np")
    else:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # median of no line pixels: a flat photo
            detected = detector(padded, detect_resolution=side, output_type="np")
    if detected.shape[:2] != padded.shape[:2]:  # not expected; never hand the ControlNet a wrong size
        raise RuntimeError(f"{kind} detector returned {detected.shape[:2]} for an input of "
                           f"{padded.shape[:2]}")
    condition = np.ascontiguousarray(detected[:height, :width])
    if mask is not None:
        condition[_mask_at(mask, height, width)] = 0
    return condition


def resize_photo_area(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """A photo resized with an antialiasing filter (box when shrinking), unlike label maps."""
    if photo.shape[:2] == (height, width):
        return photo
    shrink = height <= photo.shape[0]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(photo).resize((width, height), resample))


def _pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Edge-replicate to multiples of `multiple`: no new edges appear, and the crop removes the pad."""
    pad_h, pad_w = -image.shape[0] % multiple, -image.shape[1] % multiple
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _mask_at(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.ndim != 2:
        raise ValueError(f"photo mask: expected a (H, W) array, found shape {mask.shape}")
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    if binary.shape != (height, width):
        binary = np.asarray(Image.fromarray(binary).resize((width, height), Image.Resampling.NEAREST))
    return binary.astype(bool)


@functools.cache
def _detector(kind: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "canny":
            from controlnet_aux import CannyDetector

            return CannyDetector()
        from controlnet_aux import LineartStandardDetector

        return LineartStandardDetector()


__all__ = ["PHOTO_CONTROLS", "photo_condition", "resize_photo_area"]
