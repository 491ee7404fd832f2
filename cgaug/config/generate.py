"""The generation tree (`cgaug generate`, the `cgaug` flow): run, compose, prompts, generator, filters.

Layered as every tree is (`cgaug.config.base`). Thresholds and probabilities
are named fields, never literals in stage code. `CGAugConfig.output_fingerprint`
identifies the settings that change a sample's content; an output records it
in config.json and the manifest, so what it covers must never change for an
existing output (how work is scheduled, `cgaug.config.orchestration`, is not
part of it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cgaug.config.base import TRAIN_ENV_SECTION, StrictModel, drop_none, env_layer, layered, read_yaml_sections
from cgaug.labels import OodClassList

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


class PromptConfig(StrictModel):
    """Prompt vocabulary and probabilities: the reference's templates, vocabulary and probabilities.

    Two deliberate text differences (docs/fidelity.md): the negative prompt uses ASCII commas where the
    reference has two full-width ones, and HTML entities such as ``&amp;`` are decoded.
    """

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


class ComposeConfig(StrictModel):
    """Cut-and-paste geometry. Pixel sizes are at `reference_height` label rows and scale with the label."""

    reference_height: int = Field(1024, gt=0)
    road_classes: list[str] = Field(default_factory=lambda: ["road"])  # Cityscapes classes objects stand on
    object_size_px: tuple[int, int] = (200, 500)  # longest side after scaling (reference)
    object_size_mode: Literal["clamp", "uniform"] = "clamp"  # clamp: the reference; uniform: random in range
    margin_px: int = Field(150, ge=0)  # distance of the object's anchor (bottom edge centre) from the border;
    # the reference anchors the centre (docs/fidelity.md)
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


class GeneratorConfig(StrictModel):
    """How images are generated; every field that changes pixels is stored with each sample."""

    # hub id, local dir, "tiny" (random-weight test pipeline) or "painter" (procedural stand-in, no weights)
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
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
    # speed only: pixels change at float-rounding level at most (see cgaug.tasks.generation.generate)
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


class FilterConfig(StrictModel):
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

    # Which models a run loads follows from the gates; the loader and the input check both ask here.
    @property
    def uses_sam(self) -> bool:
        return self.mode != "none" and self.object_gate

    @property
    def uses_segmenter(self) -> bool:
        return self.mode != "none" and (self.consistency_gate or (self.anomaly_gate and self.anomaly_model is None))

    @property
    def uses_anomaly_model(self) -> bool:
        return self.mode != "none" and self.anomaly_gate and self.anomaly_model is not None

    @property
    def uses_clip(self) -> bool:
        return self.mode != "none" and (self.clip_text_gate or self.clip_object_gate)

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


class RunConfig(StrictModel):
    seed: int = 0
    variants: int = Field(1, ge=1)  # generated samples per source image
    shard_size: int = Field(64, ge=1)
    limit: int | None = Field(None, ge=1)  # first N source images (sorted by id)
    split: str = "train"
    on_error: Literal["skip", "raise"] = "skip"  # bad input samples: record and go on, or stop


class CGAugConfig(StrictModel):
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
    env = {k: v for k, v in env_layer(environ).items() if k != TRAIN_ENV_SECTION}  # training has its own tree
    origin = f"config file {path}, CGAUG_* environment or flags" if path else "CGAUG_* environment or flags"
    return layered(CGAugConfig, [read_yaml_sections(path), env, drop_none(overrides or {})], "configuration", origin)
