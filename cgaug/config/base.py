"""What every configuration tree shares: strict models, the layers and their errors.

Layers, lowest to highest: defaults in the models < a YAML file < `CGAUG_*`
environment variables (nested with `__`, e.g. `CGAUG_RUN__SEED=3`) < explicit
overrides (CLI flags). Every model forbids unknown keys, so a typo is an error
naming the key instead of a silently ignored setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

ENV_PREFIX = "CGAUG_"
ENV_NESTED = "__"
TRAIN_ENV_SECTION = "train"
"""`CGAUG_TRAIN__SECTION__FIELD` variables configure training (e.g. `CGAUG_TRAIN__LOSS__SELECT_RATIO=0.7`),
not generation: the generation tree leaves this section of the environment alone."""

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors and a validated configuration never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, key and value."""


def _set_nested(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {key} is not a section")
    target[path[-1]] = value


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section (a nested mapping merges, anything else replaces)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides without their None values, so that an unset flag never overrides a file or the environment."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


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


def layered(model: type[ModelT], layers: list[Mapping[str, Any]], what: str, origin: str) -> ModelT:
    """`layers` merged, lowest first, and validated as `model`.

    Raises:
        ConfigError: an unknown key or invalid value, saying `what` failed and `origin` (where the layers
            came from).
    """
    data: dict[str, Any] = {}
    for layer in layers:
        data = deep_merge(data, layer)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {what} ({origin}):\n{exc}") from exc
