"""Prompt sampling: weather, time of day, place and the pasted objects' phrase.

The defaults follow the reference (docs/fidelity.md): with probability 0.5 the plain
template, otherwise the domain template with a uniform weather, day (0.7) or
night (0.3) and a uniform place; then the object phrase and the quality
suffix, joined by ", " exactly as the reference joins them. All four
attributes are always drawn (so the random stream does not depend on the
coin), but only those that appear in the text are recorded.
"""

from __future__ import annotations

import numpy as np

from cgaug.config import PromptConfig
from cgaug.records import Prompt


def objects_phrase(class_names: list[str] | tuple[str, ...], cfg: PromptConfig) -> str:
    """The sentence naming the pasted classes (each once, in paste order); empty when none."""
    unique = list(dict.fromkeys(class_names))
    if not unique:
        return ""
    return cfg.object_phrase.format(object=cfg.object_joiner.join(unique))


def sample_prompt(class_names: list[str] | tuple[str, ...], cfg: PromptConfig,
                  rng: np.random.Generator) -> Prompt:
    """One prompt for a sample whose pasted objects have `class_names`.

    Args:
        class_names: prompt names of the pasted objects (may be empty).
        cfg: vocabulary, templates and probabilities.
        rng: this sample's prompt stream (`cgaug.seeds.stage_rng(seed, "prompt")`).
    """
    use_domain = bool(rng.random() < cfg.domain_probability)
    weather = cfg.weathers[rng.integers(len(cfg.weathers))]
    times = list(cfg.times)
    weights = np.asarray([cfg.times[t] for t in times], dtype=float)
    time_of_day = times[rng.choice(len(times), p=weights / weights.sum())]
    place = cfg.places[rng.integers(len(cfg.places))]

    scene = (cfg.domain_template.format(place=place, weather=weather, time=time_of_day)
             if use_domain else cfg.base_template)
    phrase = objects_phrase(class_names, cfg)
    parts = [scene, phrase, cfg.quality_suffix]
    return Prompt(
        text=cfg.separator.join(part for part in parts if part),
        negative=cfg.negative,
        domain=use_domain,
        weather=weather if use_domain else None,
        time_of_day=time_of_day if use_domain else None,
        place=place if use_domain else None,
        objects_phrase=phrase,
    )
