"""One loader for every segmenter checkpoint the project writes or accepts, dispatched by kind.

`load_segmenter(ref)` reads:
- ``"tiny"``: a randomly initialised (seeded, so reproducible) smp DeepLabV3+ (`smp.TINY_CONFIG`);
- a directory: an smp `save_pretrained` one (config.json naming ``_model_class`` + model.safetensors),
  or a transformers one (config.json with ``model_type``): a semantic segmentation model with its
  image processor (e.g. SegFormer), or a closed-world Mask2Former;
- a hub id: a transformers semantic segmentation model from the Hugging Face cache (or hub);
- a ``.pt`` / ``.pth`` file from `torch.save`: ``{"config": {...}, "state_dict": {...}}`` where the
  config holds `smp.create_model` arguments, a transformers Mask2Former config, or the export of
  two-stage training (``{"kind": "deeplab" | "mask2former", ...}``, `cgaug train`'s ``RUN_DIR/model.pt``,
  whose anomaly score is its learnable u(x)); or a bare state dict of the tiny architecture.

The kind of a checkpoint comes from its config (`checkpoint_kind`), never from its file name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgaug.models.hub import TINY, ModelNotFound, is_hub_id
from cgaug.models.segmenters.base import BaseSegmenter, CheckpointError, CheckpointNotFound, read_torch_payload
from cgaug.models.segmenters.hf import load_transformers
from cgaug.models.segmenters.smp import TINY_CONFIG, build_tiny_segmenter, smp_segmenter

if TYPE_CHECKING:
    import torch

KINDS = ("smp", "transformers", "deeplab", "mask2former")
"""smp: segmentation-models-pytorch; transformers: semantic segmentation with a processor (SegFormer...);
deeplab / mask2former: the training models with their uncertainty function (`uncertainty`)."""


def checkpoint_kind(config: dict[str, Any]) -> str:
    """The kind (one of KINDS) of a checkpoint, from its config."""
    if config.get("kind") is not None:  # a two-stage training export
        return str(config["kind"])
    if config.get("model_type") == "mask2former":
        return "mask2former"
    return "transformers" if "model_type" in config else "smp"


def _state_builders() -> dict[str, Callable[[dict[str, Any], dict[str, Any], str], BaseSegmenter]]:
    """kind -> builder(config, state dict, origin) for `.pt` checkpoints (the training kinds import torch)."""
    from cgaug.models.segmenters.uncertainty import mask2former_segmenter, trained_segmenter

    return {"smp": smp_segmenter, "deeplab": trained_segmenter, "mask2former": mask2former_segmenter}


def load_segmenter(ref: str | Path, device: str | torch.device = "cpu", *, dtype: torch.dtype | None = None,
                   field: str = "checkpoint", local_files_only: bool = False) -> BaseSegmenter:
    """The segmenter of `ref` (see the module docstring) on `device`, in eval mode.

    Args:
        dtype: cast the weights (e.g. bf16 for the filter on CUDA); None keeps the checkpoint's.
        field: the config key or flag `ref` came from, named in errors.
        local_files_only: never download a hub model (a hub id must be in the cache).

    Raises:
        CheckpointNotFound: no such file, directory or available hub model (also a ModelNotFound).
        CheckpointError: unreadable file, unknown layout or weights that do not fit.
    """
    name = str(ref)
    if name == TINY:
        segmenter: BaseSegmenter = build_tiny_segmenter()
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            segmenter = _load_directory(path, field, local_files_only)
        elif path.is_file():
            segmenter = _load_file(path)
        elif is_hub_id(name) and path.suffix not in (".pt", ".pth"):
            try:
                segmenter = load_transformers(name, field, local_files_only)
            except ModelNotFound as error:
                raise CheckpointNotFound(str(error)) from error
        else:
            raise CheckpointNotFound(
                f"{field}: {path}: no such file or directory; expected 'tiny', a hub id, a save_pretrained "
                "directory (config.json + weights) or a .pt/.pth file")
    return segmenter.to(device, dtype)


def _load_directory(path: Path, field: str, local_files_only: bool) -> BaseSegmenter:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} holds no config.json, so it is not a saved model directory; expected the "
                              "folder an smp or transformers model's save_pretrained writes")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config_file}: not JSON ({error})") from None
    kind = checkpoint_kind(config)
    if kind == "mask2former":
        from cgaug.models.segmenters.uncertainty import mask2former_directory

        return mask2former_directory(str(path))
    if kind == "transformers":
        return load_transformers(str(path), field, local_files_only)
    if kind != "smp":
        raise CheckpointError(f"{path}: a {kind!r} training export is a .pt file (RUN_DIR/model.pt), "
                              "not a directory")
    return smp_segmenter(config, _read_safetensors(path / "model.safetensors", path), str(path))


def _read_safetensors(weights: Path, directory: Path) -> dict[str, Any]:
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such file (the weights of the save_pretrained directory {directory})")
    from safetensors.torch import load_file

    try:
        return load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types on corrupt files
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error})") from None


def _load_file(path: Path) -> BaseSegmenter:
    payload = read_torch_payload(path)
    if "state_dict" not in payload:  # a bare state dict: the tiny architecture's
        return smp_segmenter(dict(TINY_CONFIG), payload, str(path))
    config = payload.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: has a 'state_dict' but no 'config' dict naming the architecture")
    kind = checkpoint_kind(config)
    if kind not in KINDS:
        raise CheckpointError(f"{path}: model kind {kind!r} is unknown; expected one of {', '.join(KINDS)}")
    builders = _state_builders()
    if kind not in builders:
        raise CheckpointError(f"{path}: a {kind} checkpoint loads from its save_pretrained directory (with its "
                              f"image processor), not from a .pt file; .pt files hold {', '.join(builders)} models")
    return builders[kind](dict(config), payload["state_dict"], str(path))
