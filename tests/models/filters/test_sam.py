"""SAM: the tiny model's weights, and the masker against the processor's own path."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cgaug.models.filters.sam import SamMasker, load_sam, scale_boxes, tiny_sam_config  # noqa: E402


def _image(seed: int, h: int = 96, w: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_tiny_sam_loads_the_seeded_weights(tiny):
    from transformers import SamModel

    sam, _ = load_sam("tiny")
    torch.manual_seed(0)
    reference = SamModel(tiny_sam_config()).state_dict()
    assert sam.state_dict().keys() == reference.keys()
    assert all(torch.equal(value, reference[key]) for key, value in sam.state_dict().items())


def test_sam_masker_matches_the_processor_path_and_returns_one_mask_per_box(tiny):
    model, processor = load_sam("tiny")
    image, boxes = _image(1), [(10, 20, 60, 70), (80, 5, 150, 90)]
    masks = SamMasker(model, processor).masks([image, _image(2)], [boxes, []])
    assert len(masks) == 2 and masks[1] == []
    assert [m.shape for m in masks[0]] == [(96, 160), (96, 160)] and masks[0][0].dtype == bool
    inputs = processor(images=image, input_boxes=[[list(b) for b in boxes]], return_tensors="pt")
    np.testing.assert_allclose(scale_boxes(boxes, (96, 160), tuple(inputs["reshaped_input_sizes"][0].tolist())),
                               inputs["input_boxes"][0].numpy())
    with torch.inference_mode():
        pred = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(),
                     multimask_output=False).pred_masks
    reference = processor.image_processor.post_process_masks(
        pred, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    for ours, ref in zip(masks[0], reference, strict=True):
        np.testing.assert_array_equal(ours, ref[0].numpy())
