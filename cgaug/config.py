"""One typed configuration tree shared by the CLI and the flows.

Layers, lowest to highest: defaults here < a YAML file < `CGAUG_*`
environment variables (nested with `__`, e.g. `CGAUG_RUN__SEED=3`) < explicit
overrides (CLI flags). Every model forbids unknown keys, so a typo is an error
naming the key instead of a silently ignored setting. Thresholds and
probabilities are named fields, never literals in stage code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cgaug.labels import OodClassList

ENV_PREFIX = "CGAUG_"
ENV_NESTED = "__"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


REFERENCE_PLACES: tuple[str, ...] = (
    "New York City", "Tokyo", "The Bay Area", "London", "Singapore", "Los Angeles", "Hong Kong", "Beijing",
    "Shanghai", "Sydney", "Chicago", "Toronto", "Frankfurt", "Zurich", "Houston", "Seoul", "Melbourne", "Paris",
    "Geneva", "Dubai", "Mumbai", "Rome", "Seattle", "Shenzhen", "Osaka", "Boston", "Kyoto", "Miami", "Vancouver",
    "Tel Aviv", "Moscow", "Perth", "Brisbane", "Austin", "Hangzhou", "Delhi", "Madrid", "Auckland", "Abu Dhabi",
    "Manchester", "Nice", "Guangzhou", "Athens", "Doha", "Lisbon", "Dublin", "Riyadh", "Montreal", "Monaco",
    "Las Vegas", "Istanbul", "Warsaw", "Jerusalem", "San Diego", "Calgary", "Johannesburg", "Scottsdale",
    "Barcelona", "Milan", "Bengaluru", "Edinburgh", "Santa Barbara & Montecito", "Kolkata",
    "Greenwich & Darien", "Hyderabad", "West Palm Beach", "Ho Chi Minh City", "Florence", "Cairo", "Cape Town",
    "St. Petersburg", "Lagos", "Budapest", "Nairobi", "Netanya", "Herzliya", "Sharjah", "Durban", "Cape Winelands",
    "Garden Route", "Casablanca", "Pretoria", "Accra", "Luanda", "Dar Es Salaam", "Whale Coast", "Windhoek",
    "Marrakech", "Addis Ababa", "Kigali", "Maputo", "Mombasa", "Tangier", "Lusaka", "Swakopmund", "Walvis Bay",
)  # the reference's list with its HTML entities ("&amp;") decoded


class PromptConfig(_Strict):
    """Prompt vocabulary and probabilities; defaults reproduce the reference exactly."""

    base_template: str = "An image sampled from various stereo video sequences taken by dash cam."
    domain_template: str = (
        "An image sampled from various stereo video sequences taken by dash cam "
        "in {place} in a {weather} {time}."
    )
    domain_probability: float = Field(0.5, ge=0.0, le=1.0)
    weathers: list[str] = Field(default_factory=lambda: ["cloudy", "rainy", "snowy", "foggy", "clear"])
    times: dict[str, float] = Field(default_factory=lambda: {"day": 0.7, "night": 0.3})
    places: list[str] = Field(default_factory=lambda: list(REFERENCE_PLACES))
    object_phrase: str = "There is a {object} accidentally staying on the road."
    object_joiner: str = " and a "  # several pasted classes: "There is a dog and a box ..."
    quality_suffix: str = "best quality, extremely detailed, realistic, high resolution"
    negative: str = (
        "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
        "worst quality, low quality, time-lapse photography, blurry, pixelated, low resolution, cartoon, "
        "video progress bar, TV program icon, grey picture"
    )
    separator: str = ", "  # the reference joins "{prompt}, {objects}, {quality}"

    @field_validator("weathers", "places")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one entry")
        return value

    @field_validator("times")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(p < 0 for p in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"expected non-negative weights with a positive sum, found {value}")
        return value


class ComposeConfig(_Strict):
    """Cut-and-paste geometry. Pixel sizes are at `reference_height` label rows and scale with the label."""

    reference_height: int = Field(1024, gt=0)
    road_classes: list[str] = Field(default_factory=lambda: ["road"])  # Cityscapes classes objects stand on
    object_size_px: tuple[int, int] = (200, 500)  # longest side after scaling (reference)
    object_size_mode: Literal["clamp", "uniform"] = "clamp"  # clamp: the reference; uniform: random in range
    margin_px: int = Field(150, ge=0)  # object centre distance from the border (reference)
    margin_min_px: int = Field(10, ge=0)
    margin_step_px: int = Field(10, gt=0)
    objects_per_image: dict[int, float] = Field(default_factory=lambda: {1: 1.0})
    perspective: bool = False  # scale objects with their row below the horizon
    perspective_min_factor: float = Field(0.35, gt=0.0, le=1.0)  # size factor at the horizon row
    horizon_percentile: float = Field(1.0, ge=0.0, le=100.0)  # of road rows: the estimated horizon
    contact_band: float = Field(0.05, gt=0.0, le=1.0)  # bottom fraction of an object that must touch road
    min_road_fraction: float = Field(0.0, ge=0.0, le=1.0)  # of object pixels over road (bottom edge always)
    class_balanced: bool = True  # pick a class uniformly, then an instance of it
    ood_classes: list[str] | OodClassList | None = None  # None: all bank classes; a list; or a named list
    min_object_area_px: int = Field(100, ge=1)  # smaller pasted objects (after clipping) are retried
    max_placement_tries: int = Field(20, ge=1)  # per object and margin level; bounded, recorded when exhausted
    min_road_pixels: int = Field(1, ge=1)  # fewer road pixels than this -> sample skipped (no_road)

    @field_validator("road_classes")
    @classmethod
    def _known_road_classes(cls, value: list[str]) -> list[str]:
        from cgaug.labels import CITYSCAPES_BY_NAME

        unknown = [name for name in value if name not in CITYSCAPES_BY_NAME]
        if unknown or not value:
            raise ValueError(f"expected Cityscapes class names (e.g. 'road'), found {value}")
        return value

    @field_validator("object_size_px")
    @classmethod
    def _size_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"expected 0 < min <= max, found {value}")
        return value

    @field_validator("objects_per_image")
    @classmethod
    def _count_distribution(cls, value: dict[int, float]) -> dict[int, float]:
        if not value or any(k < 0 for k in value) or any(p < 0 for p in value.values()) \
                or sum(value.values()) <= 0:
            raise ValueError(f"expected {{count: weight}} with counts >= 0 and a positive sum, found {value}")
        return value


SchedulerName = Literal["unipc", "dpmpp", "ddim"]
DtypeName = Literal["auto", "fp32", "fp16", "bf16"]


class GeneratorConfig(_Strict):
    """How images are generated; every field that changes pixels is stored with each sample."""

    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # hub id, local dir, or "tiny"
    controlnet: str | None = "lllyasviel/sd-controlnet-seg"  # None: `model` is a full ControlNet pipeline
    revision: str | None = None  # of `model`
    controlnet_revision: str | None = None
    variant: str | None = None  # weight files of `model` only, e.g. "fp16" (half the download)
    local_files_only: bool = False
    scheduler: SchedulerName = "unipc"
    steps: int = Field(20, ge=1)
    guidance_scale: float = 9.0
    control_scale: float = 1.0
    eta: float = 0.0  # DDIM only
    short_side: int = Field(512, ge=8)  # generation resolution; the image is resized back to label size
    size_multiple: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    dtype: DtypeName = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"
    # speed only: pixels change at float-rounding level at most (see cgaug.models.generator)
    channels_last: bool = True  # NHWC UNet/ControlNet weights: faster convolutions on tensor cores
    compile: bool = False  # torch.compile UNet and ControlNet; minutes of warm-up, pads the last batch
    compile_mode: Literal["default", "reduce-overhead", "max-autotune",
                          "max-autotune-no-cudagraphs"] = "default"
    # optional second condition from the source photo (MultiControlNet), beyond the reference
    photo_control: Literal["none", "canny", "lineart"] = "none"
    photo_controlnet: str | None = None  # None: the usual SD1.5 ControlNet for it ("tiny": offline)
    photo_controlnet_revision: str | None = None
    photo_control_scale: float = 0.5
    canny_thresholds: tuple[int, int] = (100, 200)  # low, high hysteresis thresholds of the Canny detector

    @field_validator("canny_thresholds")
    @classmethod
    def _canny_order(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"expected 0 <= low <= high, found {value}")
        return value


TINY_GENERATOR = {"controlnet": None, "local_files_only": True, "steps": 2, "short_side": 64,
                  "batch_size": 4}
"""Settings the tiny offline generator uses unless a field is set explicitly."""


FilterMode = Literal["none", "tiny", "default"]


class FilterConfig(_Strict):
    """Automatic quality filtering (method step 5): gates, thresholds, labels, regeneration, models.

    A gate passes when its score reaches its threshold (the object gate: exceeds it, as in the
    reference). Thresholds are in each model's own units (SAM IoU and mIoU in [0, 1], CLIP cosine
    similarities, the segmenter's free energy): `cgaug filter calibrate OUT` suggests values from
    the scores of a run. A model loads only when a gate that needs it is on.
    """

    mode: FilterMode = "none"  # none: no filtering (verdict unfiltered); tiny: random-weight test models
    # gates
    object_gate: bool = True  # SAM prompted with each pasted object's box; IoU with the pasted mask
    anomaly_gate: bool = True  # mean anomaly score inside the SAM mask (pasted mask without SAM)
    clip_text_gate: bool = True  # CLIP cosine similarity of the whole image and its prompt
    clip_object_gate: bool = True  # crop closer to "a photo of a {ood class}" than to any Cityscapes class
    consistency_gate: bool = True  # segmenter agrees with the label on in-distribution pixels (mIoU)
    # thresholds; None: the score is computed and recorded but never rejects (until calibrated)
    sam_iou_threshold: float | None = Field(0.7, ge=0.0, le=1.0)  # pass: IoU > threshold (reference)
    # pass: mean energy >= threshold. None by default: the reference's -3.02 is in Mask2Anomaly's units,
    # not the energy of the segmenter used here; calibrate it on a run first.
    anomaly_threshold: float | None = None
    clip_text_threshold: float | None = Field(0.2, ge=-1.0, le=1.0)  # pass: cosine >= threshold
    clip_object_threshold: float | None = Field(0.0, ge=-2.0, le=2.0)  # cos(ood) - max cos(cityscapes)
    # pass: mIoU >= threshold. None by default: a Cityscapes segmenter disagrees most on the strongest
    # weather / night shifts, the samples CG-Aug wants; its disagreement still becomes the noise mask.
    consistency_threshold: float | None = Field(None, ge=0.0, le=1.0)
    # labels of accepted samples
    ood_region: Literal["sam", "intersection"] = "sam"  # sam: the SAM masks (reference); or SAM ∩ pasted
    keep_unconfirmed_as: Literal["void", "original"] = "void"  # pasted pixels SAM did not confirm
    # regeneration
    max_attempts: int = Field(3, ge=1)  # generations per composition, each with a new derived seed
    recompose_after_last_failure: bool = False  # then one new composition gets max_attempts more
    # models: hub id, local directory (or file for clip_pretrained), or "tiny"
    sam_model: str = "facebook/sam-vit-huge"  # facebook/sam-vit-base is faster
    segmenter_model: str = "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"
    anomaly_model: str | None = None  # None: the segmenter's own energy (one forward pass for both gates)
    clip_model: str = "ViT-B-16"  # open_clip architecture name, local directory, or "tiny"
    clip_pretrained: str | None = "laion2b_s34b_b88k"  # open_clip tag or weights file
    clip_class_template: str = "a photo of a {}."
    clip_crop_context: float = Field(1.25, ge=1.0)  # object crop side = longest box side x this
    segmenter_short_side: int | None = Field(1024, ge=32)  # None: the processor's own size
    local_files_only: bool = False
    batch_size: int = Field(8, ge=1)
    dtype: DtypeName = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"

    @model_validator(mode="after")
    def _tiny_defaults(self) -> FilterConfig:
        """`mode: tiny` takes the tiny models and their thresholds for every field not set explicitly."""
        if self.mode != "tiny":
            return self
        unset = {k: v for k, v in TINY_FILTERS.items() if k not in self.model_fields_set}
        for key, value in unset.items():
            object.__setattr__(self, key, value)
        self.model_fields_set.update(unset)
        return self


TINY_FILTERS: dict[str, Any] = {
    "sam_model": "tiny", "segmenter_model": "tiny", "clip_model": "tiny", "clip_pretrained": None,
    "local_files_only": True, "segmenter_short_side": None, "batch_size": 4,
    # Random weights give arbitrary scores; these pass roughly half of the tiny generator's images per
    # attempt (measured with `cgaug filter calibrate`), so runs exercise acceptance and regeneration.
    "sam_iou_threshold": 0.005, "anomaly_threshold": -3.0, "clip_text_threshold": 0.0,
    "clip_object_threshold": -0.11, "consistency_threshold": 0.0005,
}
"""Settings `filters.mode: tiny` uses unless a field is set explicitly."""


class RunConfig(_Strict):
    seed: int = 0
    variants: int = Field(1, ge=1)  # generated samples per source image
    shard_size: int = Field(64, ge=1)
    limit: int | None = Field(None, ge=1)  # first N source images (sorted by id)
    split: str = "train"
    on_error: Literal["skip", "raise"] = "skip"  # bad input samples: record and go on, or stop


class CGAugConfig(_Strict):
    run: RunConfig = Field(default_factory=RunConfig)
    compose: ComposeConfig = Field(default_factory=ComposeConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)

    @model_validator(mode="after")
    def _tiny_defaults(self) -> CGAugConfig:
        """`model: tiny` takes the tiny generator's settings for every field not set explicitly."""
        gen = self.generator
        if gen.model != "tiny":
            return self
        unset = {k: v for k, v in TINY_GENERATOR.items() if k not in gen.model_fields_set}
        if unset:
            object.__setattr__(self, "generator", gen.model_copy(update=unset))
            self.generator.model_fields_set.update(unset)
        return self

    def output_fingerprint(self) -> str:
        """A hash of every setting that changes a sample's content (not batch size, device or sharding)."""
        data = self.model_dump(mode="json")
        data["run"] = {"seed": data["run"]["seed"], "split": data["run"]["split"]}
        # Speed settings change pixels at rounding level only, so they may differ between runs of one output.
        for volatile in ("batch_size", "device", "channels_last", "compile", "compile_mode"):
            data["generator"].pop(volatile)
        # Filtering decides verdicts, labels and which seed's image is kept; off, its settings change nothing.
        if data["filters"]["mode"] == "none":
            data.pop("filters")
        else:
            for volatile in ("batch_size", "device"):
                data["filters"].pop(volatile)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, key and value."""


def _set_nested(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {key} is not a section")
    target[path[-1]] = value


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def env_layer(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`CGAUG_SECTION__FIELD=value` variables as a nested dict; JSON values (lists, maps) are parsed."""
    layer: dict[str, Any] = {}
    for name, raw in (os.environ if environ is None else environ).items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX):].lower().split(ENV_NESTED)
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable {name}: invalid JSON ({exc})") from exc
        _set_nested(layer, path, value)
    return layer


def read_yaml_sections(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML config file ({} without a file), or a ConfigError naming the file."""
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path}: cannot read YAML ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, found {type(loaded).__name__}")
    return loaded


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> CGAugConfig:
    """Resolve the configuration layers into one validated tree.

    Args:
        path: optional YAML file with the same sections as `CGAugConfig`.
        overrides: nested values that win over everything (CLI flags); None values are dropped
            so that unset flags never override the file or the environment.
        environ: the environment to read `CGAUG_*` from (default `os.environ`).

    Raises:
        ConfigError: unreadable file, unknown key or invalid value, naming where it came from.
    """
    data = read_yaml_sections(path)
    env = {k: v for k, v in env_layer(environ).items() if k != TRAIN_ENV_SECTION}  # training has its own tree
    data = _deep_merge(data, env)
    data = _deep_merge(data, _drop_none(overrides or {}))
    try:
        return CGAugConfig.model_validate(data)
    except ValidationError as exc:
        origin = f"config file {path}, CGAUG_* environment or flags" if path else "CGAUG_* environment or flags"
        raise ConfigError(f"invalid configuration ({origin}):\n{exc}") from exc


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


# --- training (method.md, Part 2) ------------------------------------------------------------------------

TRAIN_ENV_SECTION = "train"
"""`CGAUG_TRAIN__SECTION__FIELD` variables configure training (e.g. `CGAUG_TRAIN__LOSS__SELECT_RATIO=0.7`)."""


class TrainDataConfig(_Strict):
    """What a training batch is made of: originals with anomaly mix, paired with accepted CG-Aug samples."""

    split: str = "train"  # source split and shard split
    verdicts: list[str] = Field(default_factory=lambda: ["accepted"])  # shard rows usable as augmented images
    min_scores: dict[str, float] = Field(default_factory=dict)  # e.g. {"sam_iou": 0.8}: quality-score floors
    batch_size: int = Field(8, ge=1)  # pairs per step: B originals + B augmented (reference: 8 + 8)
    crop_size: tuple[int, int] = (512, 1024)  # (height, width); the same crop on an original and its pair
    flip_probability: float = Field(0.5, ge=0.0, le=1.0)  # horizontal flip, the same on both images
    mixup: bool = True  # blend the original into the augmented image (reference)
    mixup_max: float = Field(0.3, ge=0.0, le=1.0)  # weight p = min(U(0, 1), mixup_max) (reference)
    anomaly_mix: bool = True  # paste one OOD object with pixels into each original, label 254 (reference)
    anomaly_source: Literal["bank", "generated"] = "bank"  # bank: ADE20K/folder image + mask; generated:
    # objects cut from accepted generated images with their (SAM) OOD masks, beyond the reference
    bank: str | None = None  # object bank Parquet; None: SOURCE/bank.parquet
    bank_images: str | None = None  # root of the bank's source images (ADE20K release parent, mask folder)
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


class TrainModelConfig(_Strict):
    """The closed-world segmenter to fine-tune and its learnable uncertainty function."""

    kind: Literal["deeplab", "mask2former"] = "deeplab"
    checkpoint: str | None = None  # state dict .pt/.pth or save_pretrained dir; None: random init (tests only)
    num_classes: int = Field(19, ge=1)
    encoder_name: str = "resnet101"  # smp encoder (DeepLab); the reference uses a WideResNet38 (not in smp)
    decoder_channels: int = Field(256, ge=1)  # DeepLab
    tiny: bool = False  # a small random-weight network (CPU tests); ignores encoder_name / decoder_channels
    # The paper writes W without bias; the reference copies the classifier's bias into its anomaly head
    # (Mask2Former class_embed2), which makes u equal the energy score exactly at step 0. Follow the code.
    uncertainty_bias: bool = True


class TrainLossConfig(_Strict):
    """L = L_unc + beta1 CE(orig) + beta2 CE_sel(aug); every number from method.md Part 2."""

    margins: tuple[float, float, float] = (10.0, 5.0, 5.0)  # alpha1, alpha2, alpha3 (DeepLab reference)
    betas: tuple[float, float] = (50.0, 10.0)  # beta1 (CE originals), beta2 (noise-aware CE augmented)
    sample_ratio: float = Field(0.1, gt=0.0, le=1.0)  # of all pixels, per set; capped by the set sizes
    # sampled: the reference pairs k sampled pixels of each set one to one; all_pairs: the paper's expectation
    # over every (o, i) pair of the k sampled pixels (k x k hinge terms)
    pairing: Literal["sampled", "all_pairs"] = "sampled"
    select_ratio: float = Field(0.8, gt=0.0, le=1.0)  # rho: fraction of labelled augmented pixels kept in CE_sel
    ood_id: int = 254
    ignore_id: int = 255


class TrainStageConfig(_Strict):
    """One stage: which parameter groups train, for how long and how fast."""

    epochs: int = Field(1, ge=0)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    trainable: list[str] = Field(default_factory=lambda: ["uncertainty"])  # group names of the model
    scheduler: Literal["constant", "poly"] = "constant"  # poly: lr (1 - t/T)^0.9 over the stage's steps


class TrainRunConfig(_Strict):
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    amp: bool = True  # autocast on CUDA (bf16 when supported, else fp16 with loss scaling); never on CPU
    grad_clip: float | None = Field(1.0, gt=0.0)  # max global grad norm; None: no clipping
    max_steps_per_epoch: int | None = Field(None, ge=1)  # smoke runs (`--max-steps`)
    validate_every: int = Field(1, ge=1)  # epochs
    validation: list[str] = Field(default_factory=list)  # KIND=DIR eval sets, or "shards=OUT[@SPLIT]"
    validation_limit: int | None = Field(None, ge=1)  # frames per validation set
    progress: bool = True


class TrainConfig(_Strict):
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
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # DeepLab reference: stage 1 W only, 10 epochs, Adam 1e-4, wd 1e-4; stage 2 ASPP + decoder + W at 1e-6,
    # 50 epochs in total; beta (50, 10); margins (10, 5, 5); batch 8 + 8.
    "deeplab": {
        "model": {"kind": "deeplab"},
        "loss": {"margins": (10.0, 5.0, 5.0), "betas": (50.0, 10.0)},
        "stage1": {"epochs": 10, "lr": 1e-4, "weight_decay": 1e-4, "trainable": ["uncertainty"]},
        "stage2": {"epochs": 40, "lr": 1e-6, "weight_decay": 1e-4, "trainable": ["aspp", "decoder", "uncertainty"]},
    },
    # Mask2Former reference: stage 1 the anomaly class embedding only for 5 epochs, stage 2 everything
    # (backbone kept frozen as the reference's FREEZE_AT 5 and train(False) do); beta (0, 0); margins
    # (0.7, 0.5, 0.2); crop 380x760; lr 1e-5 (its anomaly_ft.yaml BASE_LR).
    "mask2former": {
        "model": {"kind": "mask2former", "num_classes": 19},
        "data": {"crop_size": (380, 760)},
        "loss": {"margins": (0.7, 0.5, 0.2), "betas": (0.0, 0.0)},
        "stage1": {"epochs": 5, "lr": 1e-5, "weight_decay": 1e-4, "trainable": ["uncertainty"]},
        "stage2": {"epochs": 5, "lr": 1e-5, "weight_decay": 1e-4,
                   "trainable": ["pixel_decoder", "transformer_decoder", "classifier", "uncertainty"]},
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
    data = read_yaml_sections(path)
    env = env_layer(environ).get(TRAIN_ENV_SECTION, {})
    if not isinstance(env, dict):
        raise ConfigError(f"environment: {ENV_PREFIX}{TRAIN_ENV_SECTION.upper()} must name a section")
    name = preset or _drop_none(overrides or {}).get("preset") or env.get("preset") or data.get("preset") \
        or "deeplab"
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; expected one of {', '.join(TRAIN_PRESETS)}")
    merged = _deep_merge(json.loads(json.dumps(TRAIN_PRESETS[name])), data)
    merged = _deep_merge(merged, env)
    merged = _deep_merge(merged, _drop_none(overrides or {}))
    merged["preset"] = name
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        origin = f"config file {path}, CGAUG_TRAIN__* environment or flags" if path else \
            "preset, CGAUG_TRAIN__* environment or flags"
        raise ConfigError(f"invalid training configuration ({origin}):\n{exc}") from exc
