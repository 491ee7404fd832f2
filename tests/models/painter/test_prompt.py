"""Reading weather, time and place back from prompts, and the place styles."""

from __future__ import annotations

import numpy as np

from cgaug.config import REFERENCE_PLACES, PromptConfig
from cgaug.models.painter import parse_prompt, place_style
from cgaug.models.painter.prompt import DEFAULT_STYLE, PLACE_STYLES
from cgaug.tasks.generation.prompts import sample_prompt


def test_sampled_prompts_parse_back_to_their_recorded_attributes():
    cfg = PromptConfig()
    domains = 0
    for seed in range(400):
        record = sample_prompt(["dog", "box"] if seed % 3 else [], cfg, np.random.default_rng(seed))
        weather, time_of_day, place = parse_prompt(record.text, cfg)
        if record.domain:
            domains += 1
            assert (weather, time_of_day, place) == (record.weather, record.time_of_day, record.place), record.text
        else:
            assert (weather, time_of_day, place) == ("clear", "day", None), record.text
    assert 100 < domains < 300  # both kinds were exercised


def test_every_reference_place_parses_including_punctuation():
    cfg = PromptConfig()
    for place in REFERENCE_PLACES:
        text = cfg.domain_template.format(place=place, weather="foggy", time="night") + ", best quality"
        assert parse_prompt(text, cfg) == ("foggy", "night", place)


def test_other_templates_and_free_text():
    cfg = PromptConfig(domain_template="Dashcam, {weather} {time}, {place}.", weathers=["stormy", "clear"],
                       times={"dusk": 1.0})
    assert parse_prompt("Dashcam, stormy dusk, Atlantis.", cfg) == ("stormy", "dusk", "Atlantis")
    assert parse_prompt("a Snowy street in Tokyo at night") == ("snowy", "night", "Tokyo")
    assert parse_prompt("a street") == ("clear", "day", None)


def test_place_styles_are_stable_and_varied():
    assert place_style(None) is DEFAULT_STYLE
    assert place_style("Tokyo") is place_style("Tokyo")
    used = {place_style(p).name for p in REFERENCE_PLACES}
    assert len(used) >= len(PLACE_STYLES) - 1
