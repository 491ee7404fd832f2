"""Segmenters with the learnable uncertainty function u(x) of two-stage noise-aware training.

Both models return ``(logits, u)`` at the input resolution: logits (B, C, H, W) for the CE terms and
the prediction, u (B, H, W) for the relative contrastive loss and as the anomaly score (higher = more
anomalous). Both split their parameters into named groups, which the stage configuration names in
`trainable` (`TRAIN_GROUPS` lists them per kind).

DeepLabv3+ (segmentation-models-pytorch): the penultimate features z(x) are the decoder output;
the classifier is the segmentation head's convolution. u(x) = -logsumexp_k(z(x) . w_k + b_k) with W
(and b, `uncertainty_bias`) a copy of the classifier's weights, so at step 0 u is exactly the energy
score of the logits (the bilinear upsampling of the head is linear, so it commutes with W and is
applied to both). Stage 1 moves W away from the classifier; the logits never depend on W.

Mask2Former (transformers): following the reference (Mask2Anomaly), the "W" is an anomaly class
embedding: a second class predictor (`class_embed2`, a copy of `class_predictor`, weight and bias)
applied to the same decoder query embeddings z_q. With p_q = softmax(class_embed2(z_q)) without the
no-object entry and m_q(x) = sigmoid(mask logit of query q at x):

    u(x) = 1 - max_c sum_q p_q[c] * m_q(x)

the Mask2Anomaly score, which at step 0 equals the score of the closed-world model's own class
predictor. The logits are Mask2Former's semantic map sum_q softmax(class_predictor(z_q))[c] m_q(x),
as the reference passes them to its criterion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cgaug.models.segmenter import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_CONFIG,
    CheckpointError,
    SmpSegmenter,
    load_segmenter,
    read_torch_payload,
)

if TYPE_CHECKING:
    from cgaug.config import TrainModelConfig

TRAIN_GROUPS: dict[str, tuple[str, ...]] = {
    "deeplab": ("encoder", "aspp", "decoder", "classifier", "uncertainty"),
    "mask2former": ("backbone", "pixel_decoder", "transformer_decoder", "classifier", "uncertainty"),
}
TINY_M2F: dict[str, Any] = {
    "backbone": {"image_size": 64, "patch_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1],
                 "num_heads": [1, 1, 2, 2], "window_size": 4,
                 "out_features": ["stage1", "stage2", "stage3", "stage4"]},
    "hidden_dim": 32, "num_queries": 10, "encoder_layers": 1, "decoder_layers": 2, "num_attention_heads": 2,
    "encoder_feedforward_dim": 32, "dim_feedforward": 32, "mask_feature_size": 32, "feature_size": 32,
    "use_auxiliary_loss": False, "train_num_points": 256,
}
"""A ~0.35 M-parameter Mask2Former (Swin backbone) for CPU tests; its outputs mean nothing."""


class UncertaintyModel(nn.Module):
    """What the trainer needs: forward -> (logits, u), named parameter groups, the closed-world config."""

    kind: str
    num_classes: int

    def groups(self) -> dict[str, list[nn.Parameter]]:
        raise NotImplementedError

    def group_modules(self) -> dict[str, list[nn.Module]]:
        raise NotImplementedError

    def export_config(self) -> dict[str, Any]:
        """JSON settings that rebuild this architecture (stored in checkpoints)."""
        raise NotImplementedError


def _params(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters()]


class DeepLabUncertainty(UncertaintyModel):
    """An smp DeepLabV3+ with a copy W of its classifier on the decoder features (see the module docstring)."""

    kind = "deeplab"

    def __init__(self, model: nn.Module, smp_config: dict[str, Any], bias: bool = True):
        super().__init__()
        head = getattr(model, "segmentation_head", None)
        if not isinstance(head, nn.Sequential) or not isinstance(head[0], nn.Conv2d) \
                or not hasattr(getattr(model, "decoder", None), "aspp"):
            raise CheckpointError(f"{smp_config.get('arch')}: expected a DeepLabV3Plus-like smp model "
                                  "(decoder.aspp and a segmentation_head starting with a Conv2d)")
        self.model = model
        self.smp_config = dict(smp_config)
        classifier: nn.Conv2d = head[0]
        self.num_classes = classifier.out_channels
        self.uncertainty = nn.Conv2d(classifier.in_channels, classifier.out_channels, classifier.kernel_size,
                                     padding=classifier.padding, bias=bias)
        with torch.no_grad():
            self.uncertainty.weight.copy_(classifier.weight)
            if bias and classifier.bias is not None:
                self.uncertainty.bias.copy_(classifier.bias)
            elif bias:
                self.uncertainty.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.encoder(x)
        z = self.model.decoder(features)
        head = self.model.segmentation_head
        logits = head(z)
        projected = head[1](self.uncertainty(z))  # the head's upsampling, so u == energy(logits) at init
        return logits, -torch.logsumexp(projected.float(), dim=1)

    def group_modules(self) -> dict[str, list[nn.Module]]:
        decoder = self.model.decoder
        return {
            "encoder": [self.model.encoder],
            "aspp": [decoder.aspp],
            "decoder": [m for name, m in decoder.named_children() if name != "aspp"],
            "classifier": [self.model.segmentation_head],
            "uncertainty": [self.uncertainty],
        }

    def groups(self) -> dict[str, list[nn.Parameter]]:
        return {name: _params(modules) for name, modules in self.group_modules().items()}

    def export_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "smp": self.smp_config, "uncertainty_bias": self.uncertainty.bias is not None}


class Mask2FormerUncertainty(UncertaintyModel):
    """transformers' Mask2Former with the reference's anomaly class embedding (see the module docstring)."""

    kind = "mask2former"

    def __init__(self, model: nn.Module, bias: bool = True):
        super().__init__()
        self.hf = model
        predictor: nn.Linear = model.class_predictor
        self.num_classes = predictor.out_features - 1  # the last entry is "no object"
        self.class_embed2 = nn.Linear(predictor.in_features, predictor.out_features, bias=bias)
        with torch.no_grad():
            self.class_embed2.weight.copy_(predictor.weight)
            if bias:
                self.class_embed2.bias.copy_(predictor.bias)

    def queries(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (B, Q, D) last decoder query embeddings after the layer norm, mask logits (B, Q, H, W) at x's size)."""
        out = self.hf.model(pixel_values=x, output_hidden_states=True, return_dict=True)
        z = out.transformer_decoder_intermediate_states[-1].transpose(0, 1)
        masks = nn.functional.interpolate(out.masks_queries_logits[-1], size=x.shape[-2:], mode="bilinear",
                                          align_corners=False)
        return z, masks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, masks = self.queries(x)
        mask_probs = masks.float().sigmoid()
        cls = self.hf.class_predictor(z).float().softmax(-1)[..., :-1]
        semantic = torch.einsum("bqc,bqhw->bchw", cls, mask_probs)
        anomaly_cls = self.class_embed2(z).float().softmax(-1)[..., :-1]
        anomaly = torch.einsum("bqc,bqhw->bchw", anomaly_cls, mask_probs)
        return semantic, 1.0 - anomaly.max(dim=1).values

    def group_modules(self) -> dict[str, list[nn.Module]]:
        pixel = self.hf.model.pixel_level_module
        return {
            "backbone": [pixel.encoder],
            "pixel_decoder": [pixel.decoder],
            "transformer_decoder": [self.hf.model.transformer_module],
            "classifier": [self.hf.class_predictor],
            "uncertainty": [self.class_embed2],
        }

    def groups(self) -> dict[str, list[nn.Parameter]]:
        return {name: _params(modules) for name, modules in self.group_modules().items()}

    def export_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "hf_config": self.hf.config.to_dict(),
                "uncertainty_bias": self.class_embed2.bias is not None}


# --- building ---------------------------------------------------------------------------------------------


def _tiny_seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _smp_config(cfg: TrainModelConfig) -> dict[str, Any]:
    if cfg.tiny:
        return dict(TINY_CONFIG, classes=cfg.num_classes)
    return {"arch": "DeepLabV3Plus", "encoder_name": cfg.encoder_name, "encoder_weights": None,
            "classes": cfg.num_classes, "decoder_channels": cfg.decoder_channels}


def _build_deeplab(cfg: TrainModelConfig, seed: int) -> DeepLabUncertainty:
    from cgaug.models.segmenter import _create

    if cfg.checkpoint is None:
        config = _smp_config(cfg)
        model = _tiny_seeded(lambda: _create(config, "random init"), seed)
    else:
        segmenter = load_segmenter(cfg.checkpoint)
        _check_classes(cfg.checkpoint, segmenter.num_classes, cfg.num_classes)
        if isinstance(segmenter.model, DeepLabUncertainty):  # a previous training export: keep its W
            return segmenter.model.train()
        if segmenter.model.__class__.__name__ != "DeepLabV3Plus" or not segmenter.config:
            raise CheckpointError(f"{cfg.checkpoint}: holds a {type(segmenter.model).__name__}; model.kind "
                                  "'deeplab' expects an smp DeepLabV3Plus checkpoint with its config")
        model, config = segmenter.model, segmenter.config
    return DeepLabUncertainty(model.train(), config, bias=cfg.uncertainty_bias)


def _check_classes(origin: str, found: int, expected: int) -> None:
    if found != expected:
        raise CheckpointError(f"{origin}: the checkpoint predicts {found} classes, but model.num_classes is "
                              f"{expected}; expected a closed-world checkpoint with {expected} classes")


def tiny_mask2former_config(num_classes: int = 19):
    from transformers import Mask2FormerConfig, SwinConfig

    options = {k: v for k, v in TINY_M2F.items() if k != "backbone"}
    return Mask2FormerConfig(backbone_config=SwinConfig(**TINY_M2F["backbone"]), num_labels=num_classes, **options)


def _build_mask2former(cfg: TrainModelConfig, seed: int) -> Mask2FormerUncertainty:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    if cfg.checkpoint is None:
        if not cfg.tiny:
            raise CheckpointError("model.checkpoint: a full-size Mask2Former needs a closed-world checkpoint "
                                  "(a save_pretrained directory or a .pt with config + state_dict); "
                                  "random init is offered for model.tiny only")
        hf_config = tiny_mask2former_config(cfg.num_classes)
        model = _tiny_seeded(lambda: Mask2FormerForUniversalSegmentation(hf_config), seed)
    else:
        path = Path(cfg.checkpoint).expanduser()
        if path.is_dir():
            try:
                model = Mask2FormerForUniversalSegmentation.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError) as error:
                raise CheckpointError(f"{path}: not a Mask2Former save_pretrained directory ({error})") from None
        elif path.is_file():
            payload = read_torch_payload(path)
            if not isinstance(payload.get("config"), dict) or "state_dict" not in payload:
                raise CheckpointError(f"{path}: expected {{'config': Mask2FormerConfig dict, 'state_dict': ...}}")
            model = Mask2FormerForUniversalSegmentation(Mask2FormerConfig.from_dict(payload["config"]))
            _strict_load(model, payload["state_dict"], str(path))
        else:
            raise CheckpointError(f"{path}: no such file or directory (model.checkpoint)")
        _check_classes(str(path), model.config.num_labels, cfg.num_classes)
    return Mask2FormerUncertainty(model.train(), bias=cfg.uncertainty_bias)


def _strict_load(model: nn.Module, state: dict[str, Any], origin: str) -> None:
    from cgaug.models.segmenter import _load_state

    _load_state(model, state, origin, {})


TRAIN_MODELS = {"deeplab": _build_deeplab, "mask2former": _build_mask2former}
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


def model_from_export(config: dict[str, Any], state: dict[str, Any], origin: str) -> UncertaintyModel:
    """Rebuild a trained model from `export_config()` and its state dict (what training checkpoints hold)."""
    kind = config.get("kind")
    bias = bool(config.get("uncertainty_bias", True))
    if kind == "deeplab":
        from cgaug.models.segmenter import _create

        model: UncertaintyModel = DeepLabUncertainty(_create(dict(config["smp"]), origin), config["smp"], bias)
    elif kind == "mask2former":
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

        hf = Mask2FormerForUniversalSegmentation(Mask2FormerConfig.from_dict(config["hf_config"]))
        model = Mask2FormerUncertainty(hf, bias)
    else:
        raise CheckpointError(f"{origin}: model kind {kind!r} is unknown; expected one of {', '.join(TRAIN_MODELS)}")
    _strict_load(model, state, origin)
    return model


def set_trainable(model: UncertaintyModel, trainable: list[str]) -> list[nn.Parameter]:
    """Freeze every parameter, unfreeze the named groups; frozen modules go to eval mode (BN stats fixed).

    Returns the trainable parameters. Raises ValueError naming unknown groups and the valid ones.
    """
    groups = model.group_modules()
    unknown = sorted(set(trainable) - set(groups))
    if unknown or not trainable:
        raise ValueError(f"trainable groups {unknown or trainable} are not groups of a {model.kind} model; "
                         f"expected a non-empty subset of {list(groups)}")
    model.requires_grad_(False)
    model.eval()
    params: list[nn.Parameter] = []
    for name in trainable:
        for module in groups[name]:
            module.requires_grad_(True)
            module.train()
            params.extend(module.parameters())
    return params


def trainable_names(model: nn.Module) -> Iterator[str]:
    """Names of the parameters that currently require gradients."""
    return (name for name, p in model.named_parameters() if p.requires_grad)


def describe(model: UncertaintyModel) -> str:
    sizes = {name: sum(p.numel() for p in params) for name, params in model.groups().items()}
    return f"{model.kind} ({json.dumps(sizes)} parameters per group)"


class TrainedSegmenter(SmpSegmenter):
    """A trained `UncertaintyModel` behind the evaluation interface: its anomaly score is u(x), not the energy."""

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x)


def trained_segmenter(config: dict[str, Any], state: dict[str, Any], origin: str,
                      model: UncertaintyModel | None = None) -> TrainedSegmenter:
    """What `load_segmenter` returns for a training export (``{"config": {"kind": ...}, "state_dict"}``)."""
    model = model if model is not None else model_from_export(config, state, origin)
    segmenter = TrainedSegmenter(model, num_classes=model.num_classes, name=origin,
                                 mean=tuple(config.get("mean", IMAGENET_MEAN)),
                                 std=tuple(config.get("std", IMAGENET_STD)))
    segmenter.config = dict(config)
    return segmenter
