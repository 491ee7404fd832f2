from __future__ import annotations

from collections import Counter

import numpy as np
import yaml

from cgaug.config import PromptConfig, load_config
from cgaug.tasks.generation.prompts import objects_phrase, sample_prompt

BASE = "An image sampled from various stereo video sequences taken by dash cam."


def test_reference_text_forms():
    cfg = PromptConfig()
    texts = {sample_prompt(["dog"], cfg, np.random.default_rng(s)).text for s in range(200)}
    plain = (f"{BASE}, There is a dog accidentally staying on the road., "
             "best quality, extremely detailed, realistic, high resolution")
    assert plain in texts
    domain = [t for t in texts if t != plain]
    assert domain and all(t.startswith(
        "An image sampled from various stereo video sequences taken by dash cam in ") for t in domain)
    assert all(", There is a dog accidentally staying on the road., best quality" in t for t in domain)


def test_reference_vocabulary_and_negative():
    cfg = PromptConfig()
    assert cfg.weathers == ["cloudy", "rainy", "snowy", "foggy", "clear"]
    assert cfg.times == {"day": 0.7, "night": 0.3}
    assert len(cfg.places) == 96 and len(set(cfg.places)) == 96
    assert not any("&amp;" in p for p in cfg.places) and "Santa Barbara & Montecito" in cfg.places
    assert "，" not in cfg.negative and cfg.negative.endswith("video progress bar, TV program icon, grey picture")


def test_attribute_frequencies_match_reference_probabilities():
    cfg = PromptConfig()
    prompts = [sample_prompt(["box"], cfg, np.random.default_rng(s)) for s in range(4000)]
    domain = [p for p in prompts if p.domain]
    assert abs(len(domain) / 4000 - 0.5) < 0.03
    night = sum(p.time_of_day == "night" for p in domain) / len(domain)
    assert abs(night - 0.3) < 0.03
    weathers = Counter(p.weather for p in domain)
    assert set(weathers) == set(cfg.weathers) and min(weathers.values()) > 0.15 * len(domain)
    plain = [p for p in prompts if not p.domain]
    assert all(p.weather is None and p.place is None and p.time_of_day is None for p in plain)
    for p in domain:
        assert f"in {p.place} in a {p.weather} {p.time_of_day}." in p.text


def test_objects_phrase_for_several_and_none():
    cfg = PromptConfig()
    assert objects_phrase(["dog", "box", "dog"], cfg) == \
        "There is a dog and a box accidentally staying on the road."
    prompt = sample_prompt([], cfg, np.random.default_rng(0))
    assert prompt.objects_phrase == "" and "There is" not in prompt.text


def test_yaml_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"prompts": {"weathers": ["hazy"], "times": {"dusk": 1.0},
                                                "domain_probability": 1.0, "places": ["Bern"]}}))
    cfg = load_config(path).prompts
    p = sample_prompt(["cone"], cfg, np.random.default_rng(0))
    assert (p.weather, p.time_of_day, p.place) == ("hazy", "dusk", "Bern")
    assert "in Bern in a hazy dusk." in p.text


def test_same_seed_same_prompt():
    cfg = PromptConfig()
    first = sample_prompt(["dog"], cfg, np.random.default_rng(9))
    assert first == sample_prompt(["dog"], cfg, np.random.default_rng(9))
