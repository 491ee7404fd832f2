"""What all segmenters share: class maps, input sizes, and outputs at a requested size."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cgaug.models.segmenters import CITYSCAPES_TRAIN_NAMES, build_tiny_segmenter, cityscapes_class_map  # noqa: E402
from cgaug.models.segmenters.base import input_size  # noqa: E402


def test_class_map_accepts_cityscapes_names_or_anonymous_19_classes_only():
    underscored = {i: n.replace(" ", "_") for i, n in enumerate(CITYSCAPES_TRAIN_NAMES)}
    np.testing.assert_array_equal(cityscapes_class_map(underscored, "f"), np.arange(19))
    np.testing.assert_array_equal(cityscapes_class_map({i: f"LABEL_{i}" for i in range(19)}, "f"), np.arange(19))
    with pytest.raises(ValueError, match=r"filters\.segmenter_model: expected a segmenter of the 19 Cityscapes"):
        cityscapes_class_map({i: f"c{i}" for i in range(150)}, "filters.segmenter_model")


def test_input_size_keeps_aspect_in_multiples_of_32():
    assert input_size(1024, 2048, 1024) == (1024, 2048)
    assert input_size(256, 512, None) == (256, 512)
    assert input_size(250, 500, 100) == (96, 192)


def test_outputs_at_a_size_take_the_energy_of_the_upsampled_logits():
    segmenter = build_tiny_segmenter()
    images = torch.rand(2, 3, 40, 72, generator=torch.Generator().manual_seed(1))
    logits, energy = segmenter.predict(images, size=(80, 144))
    native, _ = segmenter.predict(images)
    upsampled = torch.nn.functional.interpolate(native, size=(80, 144), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, upsampled, rtol=0, atol=1e-5)
    torch.testing.assert_close(energy, -torch.logsumexp(upsampled.double(), dim=1).float(), rtol=0, atol=1e-4)
    resized, _ = segmenter.predict(images, short_side=64)
    assert resized.shape == (2, 19, 64, 128)  # the input went in at short side 64, multiples of 32


def test_to_moves_and_casts_the_weights():
    segmenter = build_tiny_segmenter().to("cpu", torch.bfloat16)
    assert segmenter.dtype == torch.bfloat16 and segmenter.device == torch.device("cpu")
    logits, energy = segmenter.predict(torch.rand(1, 3, 32, 32))
    assert logits.dtype == torch.bfloat16 and energy.dtype == torch.float32
