"""PNG blobs: lossless for labels (254 = OOD, 255 = void), images and masks; PIL reads them the same way."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from cgaug.storage.png import decode_png, encode_png


def label_map() -> np.ndarray:
    """Every uint8 value once (254 and 255 included), then random train ids, in a non-square map."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, (24, 40), dtype=np.uint8)
    label.flat[:256] = np.arange(256, dtype=np.uint8)
    label[10:14, 5:9] = 254
    return label


def pil_decode(blob: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(blob)) as image:
        assert image.format == "PNG"
        return image.mode, np.array(image)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_label_maps_round_trip_exactly_with_ood_and_void_ids(level):
    label = label_map()
    blob = encode_png(label, compress_level=level)
    back = decode_png(blob)
    assert back.dtype == np.uint8 and back.shape == label.shape
    np.testing.assert_array_equal(back, label)
    assert (back == 254).sum() == (label == 254).sum() and (back == 255).sum() == 1
    assert pil_decode(blob)[0] == "L"
    np.testing.assert_array_equal(pil_decode(blob)[1], label)


def test_rgb_images_round_trip_exactly_and_pil_reads_rgb():
    image = np.random.default_rng(1).integers(0, 256, (17, 33, 3), dtype=np.uint8)
    blob = encode_png(image)
    np.testing.assert_array_equal(decode_png(blob), image)
    mode, pixels = pil_decode(blob)
    assert mode == "RGB"
    np.testing.assert_array_equal(pixels, image)


def test_bool_masks_are_stored_as_0_and_255_and_decode_back_to_the_mask():
    mask = np.random.default_rng(2).random((9, 13)) < 0.3
    blob = encode_png(mask)
    back = decode_png(blob, mask=True)
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask)
    np.testing.assert_array_equal(decode_png(blob), np.where(mask, 255, 0).astype(np.uint8))
    np.testing.assert_array_equal(pil_decode(blob)[1], mask.astype(np.uint8) * 255)


def test_blobs_written_by_pil_decode_like_ours():
    label = label_map()
    buffer = io.BytesIO()
    Image.fromarray(label, mode="L").save(buffer, format="PNG", optimize=True)
    np.testing.assert_array_equal(decode_png(buffer.getvalue()), label)


@pytest.mark.parametrize("array", [
    np.zeros((4, 4), dtype=np.uint16), np.zeros((4, 4, 3), dtype=np.float32), np.zeros(4, dtype=np.uint8),
    np.zeros((2, 4, 4, 3), dtype=np.uint8),
], ids=["uint16", "float", "1d", "4d"])
def test_arrays_of_another_dtype_or_rank_are_refused_naming_what_was_found(array):
    with pytest.raises(ValueError, match=re.escape(f"found {array.dtype} with shape {array.shape}")):
        encode_png(array)


@pytest.mark.parametrize("channels", [2, 4])
def test_arrays_with_other_channel_counts_are_refused(channels):
    with pytest.raises(ValueError, match=r"\(H,W,3\)"):
        encode_png(np.zeros((4, 4, channels), dtype=np.uint8))


def corrupt_blobs() -> dict[str, bytes]:
    blob = encode_png(np.random.default_rng(3).integers(0, 256, (64, 48), dtype=np.uint8))
    flipped = bytearray(blob)
    flipped[60] ^= 0xFF  # inside the image data
    return {"empty": b"", "not_png": b"GIF89a....", "truncated": blob[: len(blob) // 2], "flipped": bytes(flipped)}


@pytest.mark.parametrize("name", sorted(corrupt_blobs()))
def test_a_corrupt_blob_is_a_value_error_saying_it_is_not_a_valid_png(name):
    with pytest.raises(ValueError, match="PNG"):
        decode_png(corrupt_blobs()[name])
