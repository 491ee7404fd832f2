"""The training tree (`cgaug train`, the `cgaug-train` flow; method.md, Part 2).

Layers: a preset (`TRAIN_PRESETS`) < a YAML file < `CGAUG_TRAIN__*`
environment variables < overrides (CLI flags). `TrainConfig.fingerprint`
identifies the settings that change the trained weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from cgaug.config import base
from cgaug.config.base import ConfigError, StrictModel


class TrainDataConfig(StrictModel):
    """What a training batch is made of: originals with anomaly mix, paired with accepted CG-Aug samples."""

    split: str = "train"  # source split and shard split
    # shards: each original is paired with an accepted CG-Aug sample (the method); originals: with itself, so
    # no generated image is used (closed-world training, and the OOD-only baselines of `cgaug experiment`)
    augmented: Literal["shards", "originals"] = "shards"
    # Shard rows usable as augmented images: those the quality filter passed, and those of a run without a
    # filter ("unfiltered"); rejected and skipped rows never. With the filter on (the paper's setting) a
    # shard holds no unfiltered rows, so this equals the reference's "accepted only".
    verdicts: list[str] = Field(default_factory=lambda: ["accepted", "unfiltered"])
    min_scores: dict[str, float] = Field(default_factory=dict)  # e.g. {"sam_iou": 0.8}: quality-score floors
    batch_size: int = Field(8, ge=1)  # pairs per step: B originals + B augmented (reference: 8 + 8)
    crop_size: tuple[int, int] = (700, 700)  # (height, width); the same crop on both (reference: 700 x 700)
    flip_probability: float = Field(0.0, ge=0.0, le=1.0)  # horizontal flip after the crop (reference: none)
    # The reference Mask2Former recipe's augmentations, before the crop, the same draw on both images, each
    # with `augment_probability` (`augment.AUGMENTATIONS`); empty: none (the reference DeepLab recipe)
    augmentations: list[Literal["color", "blur", "sharpness", "autocontrast", "equalize", "resize", "rotate",
                                "hflip", "vflip"]] = Field(default_factory=list)
    augment_probability: float = Field(0.5, ge=0.0, le=1.0)
    mixup: bool = True  # blend the original into the augmented image (reference)
    mixup_max: float = Field(0.3, ge=0.0, le=1.0)  # weight p = min(U(0, 1), mixup_max) (reference)
    anomaly_mix: bool = True  # paste one OOD object with pixels into each original, label 254 (reference)
    anomaly_source: Literal["bank", "generated"] = "bank"  # bank: ADE20K/folder image + mask; generated:
    # objects cut from accepted generated images with their (SAM) OOD masks, beyond the reference
    bank: str | None = None  # object bank Parquet; None: SOURCE/bank.parquet
    bank_images: str | None = None  # root of the bank's source images (ADE20K release parent, COCO image
    # folder, mask folder); None: a bank_images/ folder beside the bank file when there is one
    anomaly_scales: list[float] = Field(  # object scale factors, drawn uniformly (reference's ood_scale_array)
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    anomaly_probability: float = Field(1.0, ge=0.0, le=1.0)  # of an original getting an object
    use_noise_mask: bool = False  # void the shard's pixel noise mask in augmented labels (beyond the reference)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet normalisation (reference)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    num_workers: int = Field(4, ge=0)
    prefetch_factor: int = Field(2, ge=1)

    @field_validator("anomaly_scales")
    @classmethod
    def _scales(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < s <= 1 for s in value):
            raise ValueError(f"expected a non-empty list of factors in (0, 1], found {value}")
        return value


class TrainModelConfig(StrictModel):
    """The closed-world segmenter to fine-tune and its learnable uncertainty function."""

    # deeplab: an smp DeepLabV3+, or the reference's WideResNet38 DeepLabV3+ when `checkpoint` holds its
    # weights (detected by key names); deeplab_wrn38: always the WideResNet38 one (`models.segmenters.wrn38`)
    kind: Literal["deeplab", "deeplab_wrn38", "mask2former"] = "deeplab"
    checkpoint: str | None = None  # state dict .pt/.pth or save_pretrained dir; None: random init (tests only)
    num_classes: int = Field(19, ge=1)
    encoder_name: str = "resnet101"  # smp encoder (DeepLab with an smp checkpoint)
    decoder_channels: int = Field(256, ge=1)  # DeepLab
    tiny: bool = False  # a small random-weight network (CPU tests); ignores encoder_name / decoder_channels
    # The paper writes W without bias; the reference copies the classifier's bias into its anomaly head
    # (Mask2Former class_embed2), which makes u equal the energy score exactly at step 0. Follow the code.
    # A classifier without bias (the WideResNet38 DeepLab's) gives a bias-free W whatever this says.
    uncertainty_bias: bool = True


class TrainLossConfig(StrictModel):
    """L = L_unc + beta1 CE(orig) + beta2 CE_sel(aug); every number from method.md Part 2."""

    margins: tuple[float, float, float] = (10.0, 5.0, 5.0)  # alpha1, alpha2, alpha3 (DeepLab reference)
    betas: tuple[float, float] = (50.0, 10.0)  # beta1 (CE originals), beta2 (noise-aware CE augmented)
    # Terms 1-2 draw k = floor(sample_ratio * base) pixels per set, capped by the set sizes (`losses`)
    sample_ratio: float = Field(1.0, gt=0.0, le=1.0)  # reference: 1, so k = the smallest set
    sample_base: Literal["batch", "originals"] = "batch"  # base: every pixel of the 2B images (reference) or B
    # sampled: the reference pairs k sampled pixels of each set one to one; all_pairs: the paper's expectation
    # over every (o, i) pair of the k sampled pixels (k x k hinge terms)
    pairing: Literal["sampled", "all_pairs"] = "sampled"
    shared_ood: bool = True  # one OOD sample serves terms 1 and 2 (reference); False: a draw per term
    pair_term: Literal["all", "sampled"] = "all"  # term 3 over every paired pixel (reference) or k sampled
    select_ratio: float = Field(0.8, gt=0.0, le=1.0)  # rho: fraction of labelled augmented pixels kept in CE_sel
    select_rounding: Literal["floor", "ceil"] = "floor"  # int(rho * n) (reference) or ceil (at least one)
    # Mask2Former's own losses in stages with `mask_losses` (the reference's stage 2): class, mask, dice
    # weights (exps/M2F.yaml), the no-object class weight, and the point sampling of the mask losses
    mask_weights: tuple[float, float, float] = (5.0, 10.0, 10.0)
    no_object_weight: float = Field(0.1, ge=0.0)
    mask_points: int | None = Field(None, ge=1)  # points per mask; None: the model config's train_num_points
    # clean_points: augmented images' masks are supervised on their lowest-BCE points (the reference's
    # noise-aware selection, see `losses.mask2former_losses`); none: uniform points like the originals
    mask_selection: Literal["clean_points", "none"] = "clean_points"
    original_mask_weight: float = Field(2.0, ge=0.0)  # the reference doubles the originals' mask and dice terms
    ood_id: int = 254
    ignore_id: int = 255


class TrainStageConfig(StrictModel):
    """One stage: which parameter groups train, for how long and how fast."""

    epochs: int = Field(1, ge=0)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    trainable: list[str] = Field(default_factory=lambda: ["uncertainty"])  # group names of the model
    scheduler: Literal["constant", "poly"] = "constant"  # poly: lr (1 - t/T)^0.9 over the stage's steps
    optimizer: Literal["adam", "adamw"] = "adam"
    lr_multipliers: dict[str, float] = Field(default_factory=dict)  # group -> lr factor (e.g. backbone: 0.1)
    norm_weight_decay: float | None = Field(None, ge=0.0)  # for norm, embedding and position-bias parameters;
    # None: weight_decay (detectron2's WEIGHT_DECAY_NORM / _EMBED are 0 in the reference's Mask2Former stage 2)
    grad_clip: float | None = Field(None, gt=0.0)  # max global grad norm in this stage; None: run.grad_clip
    # train: the whole model in train mode, frozen layers included, so every BatchNorm normalises with batch
    # statistics and re-estimates its running ones (reference); eval: frozen groups in eval mode
    frozen_mode: Literal["train", "eval"] = "train"
    eval_groups: list[str] = Field(default_factory=list)  # groups in eval mode whatever (reference M2F: backbone)
    mask_losses: bool = False  # add Mask2Former's class / mask / dice losses (loss.mask_weights)


class TrainRunConfig(StrictModel):
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    amp: bool = False  # autocast on CUDA (bf16 when supported, else fp16 with loss scaling); reference: fp32
    grad_clip: float | None = Field(None, gt=0.0)  # max global grad norm; None: no clipping (reference DeepLab)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # smoke runs (`--max-steps`)
    validate_every: int = Field(1, ge=1)  # epochs
    validation: list[str] = Field(default_factory=list)  # KIND=DIR eval sets, or "shards=OUT[@SPLIT]"
    validation_limit: int | None = Field(None, ge=1)  # frames per validation set
    progress: bool = True


class TrainConfig(StrictModel):
    """The training tree: `cgaug train` and the `cgaug-train` flow."""

    preset: Literal["tiny", "deeplab", "mask2former"] = "deeplab"
    run: TrainRunConfig = Field(default_factory=TrainRunConfig)
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    loss: TrainLossConfig = Field(default_factory=TrainLossConfig)
    stage1: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig(**TRAIN_PRESETS["deeplab"]["stage1"]))
    stage2: TrainStageConfig = Field(default_factory=lambda: TrainStageConfig(**TRAIN_PRESETS["deeplab"]["stage2"]))

    def fingerprint(self) -> str:
        """A hash of the settings that change the trained weights (not device, progress or workers)."""
        data = self.model_dump(mode="json")
        for volatile in ("device", "progress"):
            data["run"].pop(volatile)
        data["data"].pop("num_workers")
        data["data"].pop("prefetch_factor")
        if data["data"]["augmented"] == "shards":  # the default leaves the fingerprints of earlier runs as they were
            data["data"].pop("augmented")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # DeepLab reference (exps/DeepLab.yaml, train_deeplab.py; docs/fidelity.md): stage 1 W only, Adam 1e-4,
    # wd 1e-4; stage 2 ASPP + the 1x1 bottlenecks + W at 1e-6 (the final 3x3 block and the classifier stay
    # frozen); 9 + 40 epochs as the code runs them (range(1, 50), switch at 10); the whole model in train
    # mode; beta (50, 10); margins (10, 5, 5); batch 8 + 8, 700 x 700 crops, no flip, fp32, no clipping.
    "deeplab": {
        "model": {"kind": "deeplab"},
        "loss": {"margins": (10.0, 5.0, 5.0), "betas": (50.0, 10.0)},
        "stage1": {"epochs": 9, "lr": 1e-4, "weight_decay": 1e-4, "trainable": ["uncertainty"]},
        "stage2": {"epochs": 40, "lr": 1e-6, "weight_decay": 1e-4,
                   "trainable": ["aspp", "bottleneck", "uncertainty"]},
    },
    # Mask2Former reference (exps/M2F.yaml, train_m2f.py, anomaly_ft.yaml): stage 1 the anomaly class embedding
    # only, Adam 1e-4, wd 1e-4, 4 epochs; stage 2 every parameter (backbone in eval mode throughout), AdamW
    # 1e-5, wd 0.05 (0 for norm and embedding parameters), backbone lr x0.1, full-model clipping at 0.01, with
    # Mask2Former's class / mask / dice losses (5, 10, 10) added, 45 epochs; beta (0, 0); margins
    # (0.7, 0.5, 0.2); 700 x 700 crops after colour, blur, sharpness, contrast, resize, rotation and flips.
    "mask2former": {
        "model": {"kind": "mask2former", "num_classes": 19},
        "data": {"crop_size": (700, 700), "augmentations": ["color", "blur", "sharpness", "autocontrast",
                                                            "equalize", "resize", "rotate", "hflip", "vflip"]},
        "loss": {"margins": (0.7, 0.5, 0.2), "betas": (0.0, 0.0)},
        "stage1": {"epochs": 4, "lr": 1e-4, "weight_decay": 1e-4, "trainable": ["uncertainty"],
                   "eval_groups": ["backbone"]},
        "stage2": {"epochs": 45, "lr": 1e-5, "weight_decay": 0.05, "optimizer": "adamw",
                   "lr_multipliers": {"backbone": 0.1}, "norm_weight_decay": 0.0, "grad_clip": 0.01,
                   "trainable": ["backbone", "pixel_decoder", "transformer_decoder", "classifier", "uncertainty"],
                   "eval_groups": ["backbone"], "mask_losses": True},
    },
    # A small random-weight DeepLab on small crops: the whole flow on a CPU in about a minute.
    "tiny": {
        "model": {"kind": "deeplab", "tiny": True},
        "data": {"batch_size": 2, "crop_size": (128, 256), "num_workers": 0},
        "loss": {"margins": (10.0, 5.0, 5.0), "betas": (50.0, 10.0), "sample_ratio": 0.25},
        "run": {"amp": False, "progress": False},
        "stage1": {"epochs": 1, "lr": 1e-3, "weight_decay": 1e-4, "trainable": ["uncertainty"]},
        "stage2": {"epochs": 1, "lr": 1e-4, "weight_decay": 1e-4, "trainable": ["aspp", "decoder", "uncertainty"]},
    },
}
"""Per-backbone defaults; a config file, CGAUG_TRAIN__* variables and flags override them."""


def load_train_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrainConfig:
    """Resolve the training layers: preset < YAML file < `CGAUG_TRAIN__*` environment < overrides.

    The preset comes from `preset`, else the file's `preset` key, else "deeplab".

    Raises:
        ConfigError: unreadable file, unknown preset or key, or invalid value, naming where it came from.
    """
    data = base.read_yaml_sections(path)
    env = base.env_layer(environ).get(base.TRAIN_ENV_SECTION, {})
    if not isinstance(env, dict):
        raise ConfigError(f"environment: {base.ENV_PREFIX}{base.TRAIN_ENV_SECTION.upper()} must name a section")
    flags = base.drop_none(overrides or {})
    name = preset or flags.get("preset") or env.get("preset") or data.get("preset") or "deeplab"
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; expected one of {', '.join(TRAIN_PRESETS)}")
    defaults = json.loads(json.dumps(TRAIN_PRESETS[name]))
    origin = f"config file {path}, CGAUG_TRAIN__* environment or flags" if path else \
        "preset, CGAUG_TRAIN__* environment or flags"
    return base.layered(TrainConfig, [defaults, data, env, flags, {"preset": name}], "training configuration",
                        origin)
