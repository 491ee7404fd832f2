"""Building the model two-stage training starts from: a registry of trainable kinds.

The closed-world checkpoint (`model.checkpoint`) is read by the one segmenter loader, so every
format evaluation accepts can start a training run, including a previous run's ``model.pt``
(whose uncertainty head is kept). Without a checkpoint, only the tiny presets start from random
weights (CPU tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cgaug.models.segmenters.base import CheckpointError
from cgaug.models.segmenters.loader import load_segmenter
from cgaug.models.segmenters.smp import TINY_CONFIG, create_smp
from cgaug.models.segmenters.uncertainty import (
    DeepLabUncertainty,
    Mask2FormerUncertainty,
    UncertaintyModel,
    tiny_mask2former_config,
)
from cgaug.models.tiny import seeded

if TYPE_CHECKING:
    from cgaug.config import TrainModelConfig


def _smp_config(cfg: TrainModelConfig) -> dict[str, Any]:
    if cfg.tiny:
        return dict(TINY_CONFIG, classes=cfg.num_classes)
    return {"arch": "DeepLabV3Plus", "encoder_name": cfg.encoder_name, "encoder_weights": None,
            "classes": cfg.num_classes, "decoder_channels": cfg.decoder_channels}


def _check_classes(origin: str, found: int, expected: int) -> None:
    if found != expected:
        raise CheckpointError(f"{origin}: the checkpoint predicts {found} classes, but model.num_classes is "
                              f"{expected}; expected a closed-world checkpoint with {expected} classes")


def _build_deeplab(cfg: TrainModelConfig, seed: int) -> DeepLabUncertainty:
    if cfg.checkpoint is None:
        config = _smp_config(cfg)
        model = seeded(seed, lambda: create_smp(config, "random init"))
    else:
        segmenter = load_segmenter(cfg.checkpoint, field="model.checkpoint")
        _check_classes(cfg.checkpoint, segmenter.num_classes, cfg.num_classes)
        if isinstance(segmenter.model, DeepLabUncertainty):  # a previous training export: keep its W
            return segmenter.model.train()
        if segmenter.model.__class__.__name__ != "DeepLabV3Plus" or not segmenter.config:
            raise CheckpointError(f"{cfg.checkpoint}: holds a {type(segmenter.model).__name__}; model.kind "
                                  "'deeplab' expects an smp DeepLabV3Plus checkpoint with its config")
        model, config = segmenter.model, segmenter.config
    return DeepLabUncertainty(model.train(), config, bias=cfg.uncertainty_bias)


def _build_mask2former(cfg: TrainModelConfig, seed: int) -> Mask2FormerUncertainty:
    from transformers import Mask2FormerForUniversalSegmentation

    if cfg.checkpoint is None:
        if not cfg.tiny:
            raise CheckpointError("model.checkpoint: a full-size Mask2Former needs a closed-world checkpoint "
                                  "(a save_pretrained directory or a .pt with config + state_dict); "
                                  "random init is offered for model.tiny only")
        hf_config = tiny_mask2former_config(cfg.num_classes)
        model = seeded(seed, lambda: Mask2FormerForUniversalSegmentation(hf_config))
    else:
        segmenter = load_segmenter(cfg.checkpoint, field="model.checkpoint")
        if not isinstance(segmenter.model, Mask2FormerUncertainty):
            raise CheckpointError(f"{cfg.checkpoint}: holds a {type(segmenter.model).__name__}; model.kind "
                                  "'mask2former' expects a Mask2Former checkpoint (a save_pretrained directory "
                                  "or a .pt with config + state_dict)")
        _check_classes(cfg.checkpoint, segmenter.num_classes, cfg.num_classes)
        if segmenter.config.get("kind") == "mask2former":  # a previous training export: keep its head
            return segmenter.model.train()
        model = segmenter.model.hf
    return Mask2FormerUncertainty(model.train(), bias=cfg.uncertainty_bias)


TRAIN_MODELS: dict[str, Callable[[Any, int], UncertaintyModel]] = {
    "deeplab": _build_deeplab, "mask2former": _build_mask2former}
"""The registry of trainable architectures: kind -> builder(TrainModelConfig, seed)."""


def build_train_model(cfg: TrainModelConfig, seed: int = 0) -> UncertaintyModel:
    """The model of `cfg` with its uncertainty head initialised from the classifier.

    Raises:
        CheckpointError: missing or unreadable checkpoint, wrong architecture or class count.
        KeyError: an unknown kind (listing the known ones).
    """
    try:
        builder = TRAIN_MODELS[cfg.kind]
    except KeyError:
        raise KeyError(f"model.kind {cfg.kind!r} is unknown; expected one of {', '.join(TRAIN_MODELS)}") from None
    return builder(cfg, seed)
