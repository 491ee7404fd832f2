"""The painter's entry points: `paint`, `paint_batch` and `PainterBackend` (the generator's signature)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from cgaug.config import PromptConfig
from cgaug.models.painter import atmosphere
from cgaug.models.painter.classes import class_index, class_map, is_thing_lut
from cgaug.models.painter.frame import Frame
from cgaug.models.painter.geometry import horizon_row, instances, noise, runs
from cgaug.models.painter.materials import paint_materials
from cgaug.models.painter.prompt import parse_prompt, place_style

PAINTER_VERSION = 1
"""Bump whenever the pixels for a given (map, prompt, seed) change."""
STAND_IN = "procedural painter, not a diffusion model"


def _check(cond: np.ndarray, position: int) -> None:
    if cond.dtype != np.uint8 or cond.ndim != 3 or cond.shape[2] != 3:
        raise ValueError(f"painter: conditioning map {position}: expected a (H, W, 3) uint8 ADE-coloured array, "
                         f"found {cond.shape} {cond.dtype}")


def paint(cond: np.ndarray, prompt: str, seed: int, height: int | None = None, width: int | None = None,
          prompt_config: PromptConfig | None = None) -> np.ndarray:
    """One street scene, (height, width, 3) uint8, following an ADE-coloured map and a prompt's domain.

    The map is resized (nearest) to the output size first. The result depends on the map, the
    weather / time / place read from the prompt and the seed only.
    """
    _check(cond, 0)
    height, width = height or cond.shape[0], width or cond.shape[1]
    if cond.shape[:2] != (height, width):
        cond = np.asarray(Image.fromarray(cond).resize((width, height), Image.Resampling.NEAREST))
    weather, time_of_day, place = parse_prompt(prompt, prompt_config)
    cls = class_map(cond)
    rng = np.random.default_rng([seed, 0])
    frame = Frame(
        height=height, width=width, seed=int(seed), weather=weather, night=time_of_day == "night",
        style=place_style(place), cls=cls, runs=runs(cls), instances=instances(cls, is_thing_lut()),
        horizon=horizon_row(cls, class_index("road")),
        coarse=noise(rng, height, width, (4, 8)).reshape(-1),
        mid=noise(rng, height, width, (16, 32)).reshape(-1),
        grain=rng.random(height * width, dtype=np.float32),
    )
    paint_materials(frame)
    image = atmosphere.render(frame)
    return np.clip(image * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)


def paint_batch(cond_maps: list[np.ndarray], prompts: list[str], seeds: list[int], height: int, width: int,
                prompt_config: PromptConfig | None = None) -> list[np.ndarray]:
    """`paint` per sample: each image depends on its own (map, prompt, seed), never on the batch."""
    if not len(cond_maps) == len(prompts) == len(seeds):
        raise ValueError(f"painter: expected one prompt and seed per conditioning map, found {len(cond_maps)} maps, "
                         f"{len(prompts)} prompts, {len(seeds)} seeds")
    for position, cond in enumerate(cond_maps):
        _check(cond, position)
    return [paint(cond, prompt, seed, height, width, prompt_config)
            for cond, prompt, seed in zip(cond_maps, prompts, seeds, strict=True)]


def painter_info() -> dict[str, Any]:
    """What the painter is, for manifests and reports: it stands in for a diffusion model."""
    return {"model": "painter", "painter_version": PAINTER_VERSION, "stand_in": STAND_IN}


class PainterBackend:
    """Drop-in for the diffusion generator in `cgaug.flows.shard._generator`: `run` and `settings`.

    Wiring it is `backend = PainterBackend(config.prompts); return backend, backend.settings`.
    Negative prompts and photo inputs are accepted and ignored (the painter has no use for them).
    """

    def __init__(self, prompt_config: PromptConfig | None = None) -> None:
        self.prompt_config = prompt_config

    def __call__(self, cond_maps: list[np.ndarray], prompts: list[str], negatives: list[str], seeds: list[int],
                 **ignored: Any) -> list[np.ndarray]:
        if len(negatives) != len(cond_maps):
            raise ValueError(f"painter: expected one negative prompt per conditioning map, found {len(negatives)} "
                             f"for {len(cond_maps)} maps")
        if not cond_maps:
            return []
        height, width = cond_maps[0].shape[:2]
        return paint_batch(cond_maps, prompts, seeds, height, width, self.prompt_config)

    def settings(self, height: int, width: int) -> dict[str, Any]:
        """The shard's generator columns: with the seed and prompt, all that determines a painted image.

        The keys are those of `cgaug.models.generator.generator_settings` (the shard schema's columns);
        the diffusion-only ones are None. `generator_model` names the painter and its version,
        `generator_variant` says it is a stand-in.
        """
        return {
            "generator_model": f"painter-v{PAINTER_VERSION}",
            "generator_controlnet": None,
            "generator_revision": str(PAINTER_VERSION),
            "scheduler": None,
            "steps": None,
            "guidance_scale": None,
            "control_scale": None,
            "eta": None,
            "dtype": "float32",
            "gen_height": height,
            "gen_width": width,
            "generator_variant": f"stand-in: {STAND_IN}",
            "generator_controlnet_revision": None,
            "photo_control": "none",
            "photo_controlnet": None,
            "photo_controlnet_revision": None,
            "photo_control_scale": None,
            "photo_control_params": None,
        }
