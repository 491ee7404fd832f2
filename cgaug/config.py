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
    ood_classes: list[str] | None = None  # restrict the bank to these classes
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
    revision: str | None = None
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


TINY_GENERATOR = {"controlnet": None, "local_files_only": True, "steps": 2, "short_side": 64,
                  "batch_size": 4}
"""Settings the tiny offline generator uses unless a field is set explicitly."""


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
        for volatile in ("batch_size", "device"):
            data["generator"].pop(volatile)
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
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path}: cannot read YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections, found {type(loaded).__name__}")
        data = loaded
    data = _deep_merge(data, env_layer(environ))
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
