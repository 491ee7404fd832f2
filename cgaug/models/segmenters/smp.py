"""segmentation-models-pytorch segmenters: the tiny test model, configs, and the logits-model wrapper.

A checkpoint's config holds `smp.create_model` arguments (``arch``, ``encoder_name``, ``classes``, ...;
an smp `save_pretrained` directory names the class in ``_model_class``) and optionally ``mean``/``std``
(ImageNet's by default, the encoders' convention) and ``size_divisor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cgaug.models.segmenters.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SIZE_DIVISOR,
    BaseSegmenter,
    CheckpointError,
    energy_score,
    input_size,
    load_state,
)
from cgaug.models.tiny import seeded

if TYPE_CHECKING:
    import torch

TINY_CONFIG: dict[str, Any] = {
    "arch": "DeepLabV3Plus", "encoder_name": "tu-mobilenetv3_small_050", "encoder_weights": None,
    "classes": 19, "decoder_channels": 32,
}
"""A 0.3 M-parameter DeepLabV3+ (MobileNetV3 encoder) for tests and demos; its numbers mean nothing."""
TINY_SEED = 0
_WRAPPER_KEYS = ("mean", "std", "size_divisor")


class SmpSegmenter(BaseSegmenter):
    """A logits model (e.g. any segmentation-models-pytorch model) with normalisation, padding and energy.

    Inputs are padded (edge replication) up to a multiple of `size_divisor` and the outputs cropped back,
    so any image size works with encoders that downsample 32 times.
    """

    def __init__(self, model: torch.nn.Module, *, num_classes: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, size_divisor: int = SIZE_DIVISOR, name: str = "model"):
        import torch

        super().__init__()
        self.model = model.eval()
        self.num_classes = num_classes
        self.size_divisor = size_divisor
        self.name = name
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def _forward(self, images: torch.Tensor, short_side: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        x = images
        if short_side is not None:
            x = F.interpolate(x, size=input_size(*x.shape[-2:], short_side), mode="bilinear", align_corners=False,
                              antialias=True)
        height, width = x.shape[-2:]
        x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        pad_h, pad_w = -height % self.size_divisor, -width % self.size_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        logits, score = self._scores(x.to(self.dtype))
        return logits[..., :height, :width], score[..., :height, :width]

    def _scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, anomaly score) of a normalised, padded batch; models with their own score override it."""
        logits = self.model(x)
        return logits, energy_score(logits)


def create_smp(config: dict[str, Any], origin: str) -> torch.nn.Module:
    """The smp architecture a config names, with random weights (never downloaded ones)."""
    import segmentation_models_pytorch as smp

    kwargs = {k: v for k, v in config.items() if k not in _WRAPPER_KEYS and not k.startswith("_")}
    arch = kwargs.pop("arch", None) or config.get("_model_class")
    if not arch:
        raise CheckpointError(f"{origin}: the config names no architecture; expected an 'arch' entry "
                              f"(one of {', '.join(smp.MODEL_ARCHITECTURES_MAPPING)})")
    kwargs["encoder_weights"] = None  # weights come from the checkpoint, never from a download
    try:
        return smp.create_model(arch, **kwargs)
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{origin}: cannot build {arch} from its config {kwargs}: {error}") from error


def smp_segmenter(config: dict[str, Any], state: dict[str, Any] | None, origin: str) -> SmpSegmenter:
    """The segmenter of an smp config, with `state` loaded strictly (None: random weights)."""
    model = create_smp(config, origin)
    if state is not None:
        load_state(model, state, origin, config)
    segmenter = SmpSegmenter(model, num_classes=int(config.get("classes", 19)),
                             mean=tuple(config.get("mean", IMAGENET_MEAN)), std=tuple(config.get("std", IMAGENET_STD)),
                             size_divisor=int(config.get("size_divisor", SIZE_DIVISOR)), name=origin)
    segmenter.config = dict(config)
    return segmenter


def build_tiny_segmenter(seed: int = TINY_SEED) -> SmpSegmenter:
    """The tiny segmenter, initialised from `seed` without touching the global RNG."""
    return seeded(seed, lambda: smp_segmenter(dict(TINY_CONFIG), None, "tiny"))
