"""What every segmenter offers, and the small pieces all of them share.

A segmenter takes a float32 (B, 3, H, W) batch of RGB images in [0, 1] and returns (logits, anomaly
score), higher = more anomalous. Evaluation calls it on tensors; the quality filter calls it through
the pixel adapter (`cgaug.models.filters.pixel`), which asks for outputs at the image size and a
resized input; training validates its model through it. The default anomaly score is the free
energy -logsumexp(logits) (Liu et al. 2020); trained models replace it with their u(x).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from cgaug.labels import CITYSCAPES_LABELS, NUM_TRAIN_CLASSES
from cgaug.models.hub import ModelNotFound

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE_DIVISOR = 32  # encoders of depth 5 need inputs divisible by 2**5
CITYSCAPES_TRAIN_NAMES: tuple[str, ...] = tuple(
    label.name for label in sorted(CITYSCAPES_LABELS, key=lambda label: label.train_id)
    if 0 <= label.train_id < NUM_TRAIN_CLASSES)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the architecture it claims."""


class CheckpointNotFound(CheckpointError, ModelNotFound):
    """A checkpoint that is neither a file, a directory nor an available hub model.

    Both kinds of caller catch it: evaluation and training (CheckpointError) and the filter stage,
    which treats it like any other model it cannot find (ModelNotFound).
    """


@runtime_checkable
class Segmenter(Protocol):
    """What evaluation, filtering and training validation call.

    `predict` takes a float32 (B, 3, H, W) batch of RGB images in [0, 1] on `device` and returns
    (logits (B, C, h, w) float, or train ids (B, h, w) integer; anomaly scores (B, h, w) float, higher =
    more anomalous). Outputs may be at any resolution: callers upsample them to the label size.
    """

    num_classes: int

    @property
    def device(self) -> torch.device: ...

    def to(self, device: str | torch.device) -> Segmenter: ...

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def energy_score(logits: torch.Tensor) -> torch.Tensor:
    """-logsumexp over classes, in float32 whatever the logits' precision (AMP gives float16 logits)."""
    import torch

    return -torch.logsumexp(logits.float(), dim=1)


def input_size(height: int, width: int, short_side: int | None, multiple: int = SIZE_DIVISOR) -> tuple[int, int]:
    """A model input size: short side `short_side` (None: the image's), aspect kept, multiples of 32."""
    scale = 1.0 if short_side is None else short_side / min(height, width)
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


class BaseSegmenter:
    """The shared `predict` of the registry's segmenters: input checks, inference mode, output size.

    Subclasses implement `_forward(images, short_side)`, returning (logits, score) at any
    resolution, and set `score_is_energy` to False when their score is not the logits' energy.
    """

    model: torch.nn.Module
    num_classes: int
    name: str = "model"
    score_is_energy = True

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}  # the settings that rebuild the architecture, when known

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def id2label(self) -> dict[int, str]:
        """Class index -> name; anonymous names (``class0``...) when the checkpoint stores none."""
        return {i: f"class{i}" for i in range(self.num_classes)}

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> BaseSegmenter:
        """Move (and cast) the weights in place; returns self."""
        self.model.to(**{k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None})
        return self

    def predict(self, images: torch.Tensor, *, size: tuple[int, int] | None = None,
                short_side: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, anomaly score) of a (B, 3, H, W) batch in [0, 1].

        Args:
            size: return both at this (height, width): logits bilinearly upsampled, and an energy
                score computed from those logits (so it is the energy of what the arg-max sees);
                other scores are upsampled bilinearly. None: the model's output resolution.
            short_side: resize the input to this short side (aspect kept, multiples of 32) before the
                forward pass. None: the model's own input size (the image's, or its processor's).
        """
        import torch
        import torch.nn.functional as F

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch of RGB images, found shape {tuple(images.shape)}")
        with torch.inference_mode():
            logits, score = self._forward(images, short_side)
            if size is not None:
                logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
                score = energy_score(logits) if self.score_is_energy else F.interpolate(
                    score.float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return logits, score

    def _forward(self, images: torch.Tensor, short_side: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def cityscapes_class_map(id2label: dict[int, str], field: str) -> np.ndarray:
    """Model class index -> Cityscapes train id, by label name (``traffic_light`` = ``traffic light``).

    A 19-class model whose labels carry no Cityscapes names (``LABEL_0``, ``class0`` ...) is taken to
    be in train-id order, the convention of Cityscapes checkpoints.

    Raises:
        ValueError: neither; `field` names the config key.
    """
    names = [str(id2label[i]).lower().replace("_", " ").replace("-", " ").strip() for i in range(len(id2label))]
    by_name = {name: i for i, name in enumerate(CITYSCAPES_TRAIN_NAMES)}
    if set(names) == set(by_name) and len(names) == NUM_TRAIN_CLASSES:
        return np.asarray([by_name[name] for name in names], dtype=np.uint8)
    if len(names) == NUM_TRAIN_CLASSES and not set(names) & set(by_name):
        return np.arange(NUM_TRAIN_CLASSES, dtype=np.uint8)
    raise ValueError(f"{field}: expected a segmenter of the {NUM_TRAIN_CLASSES} Cityscapes train "
                     f"classes ({', '.join(CITYSCAPES_TRAIN_NAMES)}), found {len(names)} labels {names[:25]}")


def read_torch_payload(path: Path) -> dict[str, Any]:
    """The dict in a `torch.save` file (weights only: no code runs), or a CheckpointError naming the file."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors all mean "not a usable checkpoint"
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: holds a {type(payload).__name__}; expected a state dict or "
                              "{'config': ..., 'state_dict': ...}")
    return payload


def load_state(model: torch.nn.Module, state: dict[str, Any], origin: str, config: dict[str, Any]) -> None:
    """Strict loading, with an error that says what does not fit instead of torch's wall of keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state))
              if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
                 f"{len(shapes)} shape mismatch(es) (e.g. {'; '.join(shapes[:3])})" if shapes else ""]
        arch = {k: config.get(k) for k in ("arch", "encoder_name", "classes") if k in config}
        raise CheckpointError(f"{origin}: the weights do not fit the architecture {arch}: "
                              f"{', '.join(p for p in parts if p)}")
    model.load_state_dict(state, strict=True)
