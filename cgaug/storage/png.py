"""Lossless PNG encoding of images, labels and masks for Parquet blob columns."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array, or a bool mask (stored 0/255).

    Level 1 keeps encoding cheap; PNG is lossless at any level.
    """
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"expected a uint8 (H,W) or (H,W,3) array or a bool mask, found {array.dtype} "
                         f"with shape {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def decode_png(data: bytes, *, mask: bool = False) -> np.ndarray:
    """The array behind `encode_png`; `mask=True` returns a bool mask.

    PIL's own errors ("cannot identify image file <_io.BytesIO ...>") do not say that a stored blob
    is damaged; a ValueError that does lets callers skip and record the sample.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"corrupt PNG blob ({len(data)} bytes): {error}") from error
    return array > 0 if mask else array
