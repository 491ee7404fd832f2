"""The segmenter interface evaluation needs, and the segmentation-models-pytorch implementation of it.

Any model can be evaluated if it offers `predict(images) -> (logits or train
ids, anomaly score)`: evaluation upsamples both to the label size, takes the
arg-max of logits for segmentation, and treats higher scores as more
anomalous. The training work item plugs its models in here, either by saving
them in a format `load_segmenter` reads, or by implementing `Segmenter`.

Checkpoints `load_segmenter` reads:
- ``"tiny"``: a randomly initialised (seeded, so reproducible) DeepLabV3+ with a
  0.3 M-parameter MobileNetV3 encoder; for tests and demos, its numbers mean nothing;
- a directory written by an smp model's `save_pretrained` (config.json + model.safetensors);
- a ``.pt`` / ``.pth`` file from `torch.save`: either ``{"config": {...}, "state_dict": {...}}``, where the
  config holds `smp.create_model` arguments (``arch``, ``encoder_name``, ``classes``, ...), or a bare
  state dict of the tiny architecture.
A ``{"config": {"kind": ...}, "state_dict": ...}`` file written by two-stage training (`cgaug train`,
``RUN_DIR/model.pt``) loads its learnable uncertainty function u(x) as the anomaly score.
Images are normalised with the ImageNet mean and std (the encoders' convention) unless the config sets
``mean``/``std``. The anomaly score is the energy, -logsumexp(logits) over classes: high where no class is
confident.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_CONFIG: dict[str, Any] = {
    "arch": "DeepLabV3Plus", "encoder_name": "tu-mobilenetv3_small_050", "encoder_weights": None,
    "classes": 19, "decoder_channels": 32,
}
TINY_SEED = 0
SIZE_DIVISOR = 32  # smp encoders of depth 5 need inputs divisible by 2**5
_WRAPPER_KEYS = ("mean", "std", "size_divisor")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the architecture it claims."""


@runtime_checkable
class Segmenter(Protocol):
    """What evaluation calls.

    `predict` takes a float32 (B, 3, H, W) batch of RGB images in [0, 1] on `device` and returns
    (logits (B, C, h, w) float, or train ids (B, h, w) integer; anomaly scores (B, h, w) float, higher =
    more anomalous). Outputs may be at any resolution: evaluation upsamples them to the label size.
    """

    num_classes: int
    device: torch.device

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def energy_score(logits: torch.Tensor) -> torch.Tensor:
    """-logsumexp over classes, in float32 whatever the logits' precision (AMP gives float16 logits)."""
    import torch

    return -torch.logsumexp(logits.float(), dim=1)


class SmpSegmenter:
    """A logits model (e.g. any segmentation-models-pytorch model) with normalisation, padding and energy.

    Inputs are padded (edge replication) up to a multiple of `size_divisor` and the logits cropped back,
    so any image size works with encoders that downsample 32 times.
    """

    def __init__(self, model: torch.nn.Module, *, num_classes: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, size_divisor: int = SIZE_DIVISOR, name: str = "model"):
        import torch

        self.model = model.eval()
        self.num_classes = num_classes
        self.size_divisor = size_divisor
        self.name = name
        self.config: dict[str, Any] = {}  # the smp.create_model arguments, when built from a config
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> SmpSegmenter:
        self.model.to(device)
        return self

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch of RGB images, found shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        x = (images - self._mean.to(images.device)) / self._std.to(images.device)
        pad_h, pad_w = -height % self.size_divisor, -width % self.size_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.inference_mode():
            logits, score = self._forward(x)
        return logits[..., :height, :width], score[..., :height, :width]

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, anomaly score) of a normalised, padded batch; models with their own score override it."""
        logits = self.model(x)
        return logits, energy_score(logits)


def build_tiny_segmenter(seed: int = TINY_SEED) -> SmpSegmenter:
    """The tiny segmenter, initialised from `seed` without touching the global RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _from_config(dict(TINY_CONFIG), "tiny")


def _create(config: dict[str, Any], origin: str) -> torch.nn.Module:
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


def _from_config(config: dict[str, Any], origin: str, state_dict: dict[str, Any] | None = None) -> SmpSegmenter:
    if config.get("kind") is not None:  # a two-stage training export (cgaug.models.uncertainty)
        from cgaug.models.uncertainty import trained_segmenter

        return trained_segmenter(config, state_dict or {}, origin)
    model = _create(config, origin)
    if state_dict is not None:
        _load_state(model, state_dict, origin, config)
    segmenter = SmpSegmenter(model, num_classes=int(config.get("classes", 19)),
                             mean=tuple(config.get("mean", IMAGENET_MEAN)), std=tuple(config.get("std", IMAGENET_STD)),
                             size_divisor=int(config.get("size_divisor", SIZE_DIVISOR)), name=origin)
    segmenter.config = dict(config)
    return segmenter


def _load_state(model: torch.nn.Module, state: dict[str, Any], origin: str, config: dict[str, Any]) -> None:
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


def load_segmenter(checkpoint: str | Path, device: str = "cpu") -> SmpSegmenter:
    """The segmenter of `checkpoint` ("tiny", a save_pretrained directory or a .pt/.pth file) on `device`.

    Raises:
        CheckpointError: missing path, unreadable file, unknown layout or weights that do not fit.
    """
    if str(checkpoint) == "tiny":
        return build_tiny_segmenter().to(device)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        segmenter = _load_directory(path)
    elif path.is_file():
        segmenter = _load_file(path)
    else:
        raise CheckpointError(f"{path}: no such file or directory; expected 'tiny', a save_pretrained "
                              "directory (config.json + model.safetensors) or a .pt/.pth file")
    return segmenter.to(device)


def _load_directory(path: Path) -> SmpSegmenter:
    import json

    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a save_pretrained directory (no config.json); expected the folder "
                              "an smp model's save_pretrained writes")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_file}: not JSON ({error})") from None
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such file (the weights of the save_pretrained directory {path})")
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types on corrupt files
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error})") from None
    return _from_config(config, str(path), state)


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


def _load_file(path: Path) -> SmpSegmenter:
    payload = read_torch_payload(path)
    if "state_dict" in payload:
        config = payload.get("config")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: has a 'state_dict' but no 'config' dict naming the architecture")
        return _from_config(dict(config), str(path), payload["state_dict"])
    return _from_config(dict(TINY_CONFIG), str(path), payload)
