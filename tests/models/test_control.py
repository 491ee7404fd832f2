"""The photo condition: exact-size Canny / line-art maps, thresholds, resizing, masks, lazy import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("controlnet_aux")

from cgaug.models.control import photo_condition  # noqa: E402


def _blocky(height: int, width: int, cell: int = 4, seed: int = 0) -> np.ndarray:
    """A photo of flat colour cells: strong, unambiguous edges at the cell borders."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (-(-height // cell), -(-width // cell), 3)).astype(np.uint8)
    return np.ascontiguousarray(np.kron(cells, np.ones((cell, cell, 1), np.uint8))[:height, :width])


@pytest.mark.parametrize(("height", "width"), [(64, 128), (48, 96), (40, 72), (100, 30)])
def test_canny_equals_opencv_at_the_exact_size(height, width):
    """Sizes that are not multiples of 64 (which controlnet_aux would round to) come back exact."""
    photo = _blocky(height, width)

    condition = photo_condition(photo, "canny", height, width)

    expected = cv2.Canny(photo, 100, 200)
    assert condition.shape == (height, width, 3) and condition.dtype == np.uint8
    assert np.array_equal(condition, np.repeat(expected[..., None], 3, axis=2))
    assert 0 < (expected > 0).mean() < 0.9


def test_canny_thresholds_are_used():
    photo = _blocky(64, 128, seed=1)

    low = photo_condition(photo, "canny", 64, 128, canny_thresholds=(10, 20))
    high = photo_condition(photo, "canny", 64, 128, canny_thresholds=(250, 400))

    assert np.array_equal(low[..., 0], cv2.Canny(photo, 10, 20))
    assert np.array_equal(high[..., 0], cv2.Canny(photo, 250, 400))
    assert (low > 0).sum() > (high > 0).sum()


def test_photo_is_resized_to_the_generation_size_before_detection():
    """A 2x larger photo of 8-px cells box-downscales exactly to the 4-px-cell photo."""
    small = _blocky(48, 96, cell=4, seed=2)
    large = np.kron(small, np.ones((2, 2, 1), np.uint8))

    condition = photo_condition(large, "canny", 48, 96)

    assert np.array_equal(condition[..., 0], cv2.Canny(small, 100, 200))


def test_mask_blanks_the_condition_only_inside():
    photo = _blocky(64, 128, seed=3)
    mask = np.zeros((128, 256), np.uint8)  # at twice the size, like a label-resolution OOD mask
    mask[40:100, 60:180] = 1

    plain = photo_condition(photo, "canny", 64, 128)
    masked = photo_condition(photo, "canny", 64, 128, mask=mask)

    inside = np.zeros((64, 128), bool)
    inside[20:50, 30:90] = True
    assert plain[inside].any() and not masked[inside].any()
    assert np.array_equal(masked[~inside], plain[~inside])


def test_lineart_marks_dark_lines_and_nothing_on_flat_photos():
    photo = np.full((48, 96, 3), 230, np.uint8)
    photo[20:23, 10:80] = 20  # a dark horizontal line on a light background

    condition = photo_condition(photo, "lineart", 48, 96)
    flat = photo_condition(np.full((48, 96, 3), 128, np.uint8), "lineart", 48, 96)

    assert condition.shape == (48, 96, 3) and condition.dtype == np.uint8
    assert condition[20:23, 15:75].min() > 100  # on the line
    assert condition[:10].max() == 0 and condition[35:].max() == 0  # far from it
    assert not flat.any()


def test_bad_kind_and_bad_photos_are_refused():
    with pytest.raises(ValueError, match=r"photo_control.*'depth'"):
        photo_condition(_blocky(8, 8), "depth", 8, 8)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        photo_condition(np.zeros((8, 8), np.uint8), "canny", 8, 8)
    with pytest.raises(ValueError, match=r"photo mask"):
        photo_condition(_blocky(8, 8), "canny", 8, 8, mask=np.zeros((8, 8, 3)))


def test_controlnet_aux_is_imported_only_when_a_condition_is_computed():
    """Importing it prints warnings and re-registers timm models: never a side effect of importing ours."""
    code = ("import sys, cgaug.models.control, cgaug.models.generator; "
            "print('controlnet_aux' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"
