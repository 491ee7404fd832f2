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
from typing import Any

import torch
from torch import nn

from cgaug.models.segmenters.base import IMAGENET_MEAN, IMAGENET_STD, CheckpointError, load_state
from cgaug.models.segmenters.smp import SmpSegmenter, create_smp

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


# --- rebuilding and serving ---------------------------------------------------------------------------------


def tiny_mask2former_config(num_classes: int = 19):
    from transformers import Mask2FormerConfig, SwinConfig

    options = {k: v for k, v in TINY_M2F.items() if k != "backbone"}
    return Mask2FormerConfig(backbone_config=SwinConfig(**TINY_M2F["backbone"]), num_labels=num_classes, **options)


def model_from_export(config: dict[str, Any], state: dict[str, Any], origin: str) -> UncertaintyModel:
    """Rebuild a trained model from `export_config()` and its state dict (what training checkpoints hold)."""
    kind = config.get("kind")
    bias = bool(config.get("uncertainty_bias", True))
    if kind == "deeplab":
        model: UncertaintyModel = DeepLabUncertainty(create_smp(dict(config["smp"]), origin), config["smp"], bias)
    elif kind == "mask2former":
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

        hf = Mask2FormerForUniversalSegmentation(Mask2FormerConfig.from_dict(config["hf_config"]))
        model = Mask2FormerUncertainty(hf, bias)
    else:
        raise CheckpointError(f"{origin}: model kind {kind!r} is unknown; expected one of {', '.join(TRAIN_GROUPS)}")
    load_state(model, state, origin, {})
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
    """A trained `UncertaintyModel` behind the segmenter interface: its anomaly score is u(x), not the energy."""

    score_is_energy = False

    def _scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def closed_world_mask2former(hf: nn.Module, origin: str) -> TrainedSegmenter:
    """A closed-world transformers Mask2Former as a segmenter: its own classifier's Mask2Anomaly score.

    The anomaly class embedding starts as a copy of the classifier (step 0 of training), so the
    score is 1 - max_c of the semantic map; `config` is the transformers config (no ``kind``).
    """
    model = Mask2FormerUncertainty(hf.eval())
    segmenter = TrainedSegmenter(model, num_classes=model.num_classes, name=origin)
    segmenter.config = hf.config.to_dict()
    return segmenter


def mask2former_segmenter(config: dict[str, Any], state: dict[str, Any], origin: str) -> TrainedSegmenter:
    """A Mask2Former ``.pt``: a training export (config with ``kind``) or a transformers config + state dict."""
    if config.get("kind") is not None:
        return trained_segmenter(config, state, origin)
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    hf = Mask2FormerForUniversalSegmentation(Mask2FormerConfig.from_dict(config))
    load_state(hf, state, origin, {})
    return closed_world_mask2former(hf, origin)


def mask2former_directory(path: str) -> TrainedSegmenter:
    """A Mask2Former save_pretrained directory (closed-world), read without any download."""
    from transformers import Mask2FormerForUniversalSegmentation

    try:
        hf = Mask2FormerForUniversalSegmentation.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a Mask2Former save_pretrained directory ({error})") from None
    return closed_world_mask2former(hf, path)
