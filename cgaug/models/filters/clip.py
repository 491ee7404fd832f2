"""CLIP for the text and object gates: open_clip, by architecture name + pretrained tag or file, a local
directory in open_clip's hub layout (``open_clip_config.json`` + weights), or ``tiny``.

Preprocessing runs on the model's device and reproduces open_clip's own transform (shortest side to
the model size, centre crop) on tensors, so whole images and object crops need no PIL round trip.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.models.filters.base import to_chw
from cgaug.models.filters.tiny import build_tiny
from cgaug.models.hub import TINY, ModelNotFound, is_hub_id, not_found_message
from cgaug.models.segmenters.base import CITYSCAPES_TRAIN_NAMES
from cgaug.models.tiny import seeded
from cgaug.records import Box

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class ClipScorer:
    """`ClipModel` over open_clip: whole-image/prompt cosine and per-object zero-shot margins."""

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu", dtype: torch.dtype | None = None,
                 batch_size: int = 32, template: str = "a photo of a {}.", context: float = 1.25) -> None:
        self.model, self.tokenizer, self.device, self.batch_size = model, tokenizer, device, batch_size
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype
        self.template, self.context = template, context
        pre = model.visual.preprocess_cfg
        size = pre["size"]
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean, self.std = pre["mean"], pre["std"]
        self._texts: dict[str, Any] = {}

    def image_text(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> list[float]:
        import torch

        with torch.inference_mode():
            features = self._encode_images([self._whole(to_chw(image, self.device)) for image in images])
            return (features * self._encode_texts(texts)).sum(-1).float().cpu().tolist()

    def object_margins(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]],
                       names: Sequence[Sequence[str]]) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            crops = []
            for image, image_boxes in zip(images, boxes, strict=True):
                chw = to_chw(image, self.device)
                crops += [self._crop(chw, box) for box in image_boxes]
            if not crops:
                return [[] for _ in images]
            features = self._encode_images(crops)
            flat_names = [name for image_names in names for name in image_names]
            own = (features * self._encode_texts([self.template.format(n) for n in flat_names])).sum(-1)
            cityscapes = self._encode_texts([self.template.format(n) for n in CITYSCAPES_TRAIN_NAMES])
            margins = (own - (features @ cityscapes.T).max(dim=-1).values).float().cpu().tolist()
        out, start = [], 0
        for image_boxes in boxes:
            out.append(margins[start:start + len(image_boxes)])
            start += len(image_boxes)
        return out

    def crop_window(self, height: int, width: int, box: Box) -> tuple[int, int, int, int]:
        """A square around the box, `context` times its longest side, shifted inside the image."""
        x0, y0, x1, y1 = box
        side = min(max(x1 - x0, y1 - y0) * self.context, height, width)
        side = max(round(side), 1)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = int(np.clip(round(cx - side / 2), 0, width - side))
        top = int(np.clip(round(cy - side / 2), 0, height - side))
        return left, top, left + side, top + side

    def _crop(self, chw: torch.Tensor, box: Box) -> torch.Tensor:
        left, top, right, bottom = self.crop_window(chw.shape[1], chw.shape[2], box)
        return self._resize(chw[:, top:bottom, left:right], self.size)

    def _whole(self, chw: torch.Tensor) -> torch.Tensor:
        """open_clip's own transform: shortest side to the model size, then a centre crop."""
        height, width = chw.shape[1:]
        scale = max(self.size[0] / height, self.size[1] / width)
        resized = self._resize(chw, (max(self.size[0], round(height * scale)), max(self.size[1], round(width * scale))))
        top = (resized.shape[1] - self.size[0]) // 2
        left = (resized.shape[2] - self.size[1]) // 2
        return resized[:, top:top + self.size[0], left:left + self.size[1]]

    @staticmethod
    def _resize(chw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        import torch.nn.functional as F

        batch = chw[None].float().div(255.0)
        return F.interpolate(batch, size=size, mode="bicubic", align_corners=False, antialias=True)[0].clamp_(0, 1)

    def _encode_images(self, crops: list[torch.Tensor]) -> torch.Tensor:
        import torch

        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        features = []
        for start in range(0, len(crops), self.batch_size):
            batch = (torch.stack(crops[start:start + self.batch_size]) - mean) / std
            features.append(self.model.encode_image(batch.to(self.dtype), normalize=True).float())
        return torch.cat(features)

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features, cached per string (class prompts repeat in every batch)."""
        import torch

        missing = sorted(set(texts) - self._texts.keys())
        if missing:
            tokens = self.tokenizer(missing).to(self.device)
            encoded = self.model.encode_text(tokens, normalize=True).float()
            self._texts.update(zip(missing, encoded, strict=True))
        return torch.stack([self._texts[text] for text in texts])


def load_clip(name: str, pretrained: str | None, device: str = "cpu") -> tuple[Any, Any]:
    """(open_clip model, tokenizer) by architecture name + pretrained tag/file, local directory, or ``tiny``."""
    import open_clip

    if name == TINY:
        model_name, pretrained = f"local-dir:{ensure_tiny_clip()}", None
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        if not (path / "open_clip_config.json").is_file():
            raise ModelNotFound(not_found_message(
                name, "filters.clip_model",
                f"{path} holds no open_clip_config.json, so it is not an open_clip model directory"))
        model_name = f"local-dir:{path}"
    elif name in open_clip.list_models():
        model_name = name
    else:
        raise ModelNotFound(not_found_message(
            name, "filters.clip_model", "neither an open_clip architecture (open_clip.list_models()) nor a local "
                                        "directory"))
    if pretrained is not None and not is_hub_id(pretrained) and not Path(pretrained).expanduser().is_file():
        raise ModelNotFound(not_found_message(pretrained, "filters.clip_pretrained", "no such file"))
    if pretrained is None and not model_name.startswith("local-dir:"):
        log.warning("filters.clip_pretrained is None: %s has random weights", name)
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelNotFound(not_found_message(f"{name} / {pretrained}", "filters.clip_pretrained",
                                              f"open_clip could not load it ({' '.join(str(exc).split())})")) from exc
    return model.eval(), open_clip.get_tokenizer(model_name)


TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def save_tiny_clip(dest: Path, seed: int) -> None:
    """open_clip's hub layout: `open_clip_config.json` + `open_clip_model.safetensors` (the real CLIP BPE)."""
    import open_clip
    from safetensors.torch import save_file

    model = seeded(seed, lambda: open_clip.CLIP(**TINY_CLIP_CONFIG).eval())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / "open_clip_model.safetensors"))
    (dest / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}))


def ensure_tiny_clip() -> Path:
    """The tiny CLIP in the user cache, built on first use."""
    return build_tiny("clip", save_tiny_clip)
