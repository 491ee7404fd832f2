"""SAM for the object gate: transformers `SamModel` + `SamProcessor`, prompted with each object's box.

Default `facebook/sam-vit-huge` (the reference's). The image encoder runs batched; the prompt
encoder and mask decoder, which are cheap, run per image with all of that image's boxes.
Pre- and post-processing run on the model's device (the processor accepts device tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.models.filters.base import to_chw
from cgaug.models.filters.tiny import build_tiny
from cgaug.models.hub import TINY, from_pretrained
from cgaug.models.tiny import seeded
from cgaug.records import Box

if TYPE_CHECKING:
    import torch


def scale_boxes(boxes: Sequence[Box], original: tuple[int, int], resized: tuple[int, int]) -> list[list[float]]:
    """Boxes in original pixels -> the resized image SAM sees (what SamProcessor does to `input_boxes`)."""
    sy, sx = resized[0] / original[0], resized[1] / original[1]
    return [[x0 * sx, y0 * sy, x1 * sx, y1 * sy] for x0, y0, x1, y1 in boxes]


class SamMasker:
    """`ObjectMasker` over a transformers SAM: one mask per box, at the image's size."""

    def __init__(self, model: Any, processor: Any, device: str = "cpu", dtype: torch.dtype | None = None,
                 batch_size: int = 8) -> None:
        self.model, self.processor, self.device, self.batch_size = model, processor, device, batch_size
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype

    def masks(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]) -> list[list[np.ndarray]]:
        import torch

        found: list[list[np.ndarray]] = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                stop = start + self.batch_size
                found += self._chunk(images[start:stop], boxes[start:stop])
        return found

    def _chunk(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]) -> list[list[np.ndarray]]:
        import torch

        processor = self.processor.image_processor
        inputs = processor(images=[to_chw(image, self.device) for image in images], return_tensors="pt",
                           device=self.device)
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device, self.dtype))
        found = []
        for i, image_boxes in enumerate(boxes):
            if not image_boxes:
                found.append([])
                continue
            original, resized = inputs["original_sizes"][i:i + 1], inputs["reshaped_input_sizes"][i:i + 1]
            scaled = scale_boxes(image_boxes, tuple(original[0].tolist()), tuple(resized[0].tolist()))
            prompt = torch.tensor([scaled], device=self.device, dtype=self.dtype)
            pred = self.model(image_embeddings=embeddings[i:i + 1], input_boxes=prompt,
                              multimask_output=False).pred_masks
            masks = processor.post_process_masks(pred.float(), original, resized)[0]  # (boxes, 1, H, W) bool
            found.append([mask[0].cpu().numpy() for mask in masks])
        return found


def load_sam(name: str, local_files_only: bool = False) -> tuple[Any, Any]:
    """(SamModel, SamProcessor) by hub id, local directory or ``tiny``.

    Raises:
        ModelNotFound: neither a local directory nor in the Hugging Face cache (naming filters.sam_model).
    """
    from transformers import SamModel, SamProcessor

    def load(ref: str, is_local: bool) -> tuple[Any, Any]:
        local = local_files_only or is_local
        return (SamModel.from_pretrained(ref, local_files_only=local).eval(),
                SamProcessor.from_pretrained(ref, local_files_only=local))

    ref = str(ensure_tiny_sam()) if name == TINY else name
    return from_pretrained(load, ref, "filters.sam_model")


def tiny_sam_config() -> Any:
    """SAM at ~0.1 M parameters. `initializer_range=0.02`: the default 1e-10 makes denormals (slow on CPUs)."""
    from transformers import SamConfig

    return SamConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 128,
                       "window_size": 4, "global_attn_indexes": [1], "output_channels": 32, "mlp_dim": 64,
                       "num_pos_feats": 16, "initializer_range": 0.02},
        prompt_encoder_config={"hidden_size": 32, "image_size": 128, "patch_size": 16},
        mask_decoder_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64,
                             "iou_head_hidden_dim": 32},
    )


def save_tiny_sam(dest: Path, seed: int) -> None:
    from transformers import SamImageProcessor, SamModel, SamProcessor

    model = seeded(seed, lambda: SamModel(tiny_sam_config()).eval())
    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": 128}, pad_size={"height": 128, "width": 128}, mask_size={"longest_edge": 32},
        mask_pad_size={"height": 32, "width": 32}))
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


def ensure_tiny_sam() -> Path:
    """The tiny SAM in the user cache, built on first use."""
    return build_tiny("sam", save_tiny_sam)
