"""transformers semantic segmentation models (e.g. SegFormer) with their image processor and class names.

Any `AutoModelForSemanticSegmentation` checkpoint with per-pixel logits loads here, by hub id or
local directory (default filter segmenter: `nvidia/segformer-b5-finetuned-cityscapes-1024-1024`).
The checkpoint's own processor does resizing and normalisation on the model's device; its label
names (`id2label`) map classes to Cityscapes train ids (`cityscapes_class_map`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cgaug.models.hub import from_pretrained
from cgaug.models.segmenters.base import BaseSegmenter, energy_score, input_size

if TYPE_CHECKING:
    import torch

class HfSegmenter(BaseSegmenter):
    """A transformers semantic segmentation model behind the segmenter interface; score = energy."""

    def __init__(self, model: Any, processor: Any, name: str = "model") -> None:
        super().__init__()
        self.model, self.processor, self.name = model.eval(), processor, name
        self.num_classes = int(model.config.num_labels)
        self.config = model.config.to_dict()

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.model.config.id2label.items()}

    def _forward(self, images: torch.Tensor, short_side: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        # Back to the uint8 images they came from (exact): the processor resizes uint8 images, as it
        # does for decoded files, so predictions match the checkpoint's own preprocessing.
        pixels = (images.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        size = {} if short_side is None else {"size": dict(zip(
            ("height", "width"), input_size(*images.shape[-2:], short_side), strict=True))}
        inputs = self.processor(images=list(pixels), return_tensors="pt", device=images.device, **size)
        logits = self.model(pixel_values=inputs["pixel_values"].to(images.device, self.dtype)).logits
        return logits, energy_score(logits)


def load_transformers(name: str, field: str, local_files_only: bool = False) -> HfSegmenter:
    """The semantic segmentation model and processor of a hub id or save_pretrained directory.

    Raises:
        ModelNotFound: neither a local directory nor in the Hugging Face cache (naming `field`).
    """
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    def load(ref: str, is_local: bool) -> HfSegmenter:
        local = local_files_only or is_local
        return HfSegmenter(AutoModelForSemanticSegmentation.from_pretrained(ref, local_files_only=local),
                           AutoImageProcessor.from_pretrained(ref, local_files_only=local), name=name)

    return from_pretrained(load, name, field)
