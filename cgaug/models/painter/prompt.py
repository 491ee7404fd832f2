"""What the painter reads from a prompt: weather, time of day and place, and each place's style.

`parse_prompt` inverts `cgaug.tasks.generation.prompts.sample_prompt`: the
domain template is turned into a pattern (weather and time from the
vocabulary, the place as free text), the plain template means a clear day in
the default style, and any other text falls back to the first vocabulary words
it contains. A place picks one of a few city styles by a stable hash of its
name (crc32, not Python's salted `hash`), so a place always looks the same.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cache

from cgaug.config import PromptConfig

DEFAULT_WEATHER, DEFAULT_TIME = "clear", "day"


def _alternatives(words: list[str] | tuple[str, ...]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


@cache
def _domain_pattern(template: str, weathers: tuple[str, ...], times: tuple[str, ...]) -> re.Pattern[str]:
    fields = {"place": r"(?P<place>.+?)", "weather": f"(?P<weather>{_alternatives(weathers)})",
              "time": f"(?P<time>{_alternatives(times)})"}
    parts = re.split(r"\{(place|weather|time)\}", template)
    pattern = "".join(fields[part] if i % 2 else re.escape(part) for i, part in enumerate(parts))
    return re.compile(pattern)


def _word(text: str, words: list[str] | tuple[str, ...]) -> str | None:
    found = re.search(rf"\b({_alternatives(words)})\b", text, flags=re.IGNORECASE)
    return found.group(1).lower() if found else None


def parse_prompt(text: str, cfg: PromptConfig | None = None) -> tuple[str, str, str | None]:
    """(weather, time of day, place or None) described by a prompt.

    The domain template of `cfg` is matched first; the base template, or text naming no
    weather or time, gives the defaults (clear, day) and no place.
    """
    cfg = cfg or PromptConfig()
    weathers, times = tuple(cfg.weathers), tuple(cfg.times)
    match = _domain_pattern(cfg.domain_template, weathers, times).search(text)
    if match:
        return match.group("weather"), match.group("time"), match.group("place")
    if text.startswith(cfg.base_template):
        return DEFAULT_WEATHER, DEFAULT_TIME, None
    place = next((p for p in sorted(cfg.places, key=len, reverse=True) if p in text), None)
    return _word(text, weathers) or DEFAULT_WEATHER, _word(text, times) or DEFAULT_TIME, place


@dataclass(frozen=True, slots=True)
class PlaceStyle:
    """Colours that make one city look unlike another (RGB in [0, 1])."""

    name: str
    facades: tuple[tuple[float, float, float], ...]
    road: tuple[float, float, float]
    sidewalk: tuple[float, float, float]
    foliage: tuple[float, float, float]
    grass: tuple[float, float, float]
    window: tuple[float, float, float]
    window_period: float  # window spacing as a fraction of the image height


def _rgb(*colors: tuple[int, int, int]) -> tuple[tuple[float, float, float], ...]:
    return tuple((r / 255, g / 255, b / 255) for r, g, b in colors)


def _style(name: str, facades: tuple[tuple[int, int, int], ...], road: tuple[int, int, int],
           sidewalk: tuple[int, int, int], foliage: tuple[int, int, int], grass: tuple[int, int, int],
           window: tuple[int, int, int], window_period: float) -> PlaceStyle:
    r, s, f, g, w = _rgb(road, sidewalk, foliage, grass, window)
    return PlaceStyle(name, _rgb(*facades), r, s, f, g, w, window_period)


DEFAULT_STYLE = _style("european", ((205, 190, 160), (225, 205, 170), (180, 120, 95), (235, 225, 200)),
                       (78, 78, 82), (168, 160, 150), (60, 105, 40), (110, 150, 70), (50, 60, 75), 0.055)
"""The base template's look: a Cityscapes-like German street."""

PLACE_STYLES: tuple[PlaceStyle, ...] = (
    _style("brick", ((150, 70, 50), (170, 95, 70), (125, 60, 45), (190, 140, 110)),
           (72, 70, 72), (160, 150, 145), (55, 100, 45), (100, 145, 65), (40, 45, 55), 0.06),
    _style("glass towers", ((95, 125, 150), (140, 165, 185), (70, 95, 125), (170, 190, 205)),
           (70, 72, 78), (185, 185, 180), (50, 110, 55), (95, 155, 75), (30, 50, 75), 0.035),
    _style("mediterranean", ((235, 210, 165), (230, 185, 150), (215, 200, 175), (245, 235, 210)),
           (88, 84, 80), (200, 185, 160), (75, 105, 50), (140, 150, 80), (70, 60, 50), 0.07),
    _style("desert", ((215, 180, 125), (195, 160, 110), (230, 210, 165), (180, 140, 95)),
           (95, 88, 80), (205, 190, 160), (95, 115, 60), (165, 150, 90), (60, 55, 50), 0.06),
    _style("tropical", ((240, 175, 120), (110, 185, 200), (235, 225, 140), (215, 120, 120)),
           (75, 75, 78), (190, 180, 170), (30, 110, 45), (70, 160, 60), (40, 55, 60), 0.06),
    _style("northern stone", ((110, 100, 90), (140, 125, 110), (90, 88, 92), (160, 150, 130)),
           (62, 62, 66), (140, 138, 135), (45, 85, 45), (85, 125, 65), (35, 40, 45), 0.055),
    _style("white modern", ((240, 240, 235), (215, 220, 225), (200, 195, 185), (230, 225, 215)),
           (80, 80, 85), (195, 195, 195), (60, 120, 55), (100, 165, 80), (45, 60, 80), 0.045),
    _style("painted", ((205, 95, 85), (95, 150, 110), (225, 190, 90), (110, 130, 185)),
           (82, 78, 76), (175, 165, 150), (65, 115, 45), (120, 160, 70), (45, 45, 50), 0.065),
)


def place_style(place: str | None) -> PlaceStyle:
    """The style of a place: a stable hash into PLACE_STYLES; no place -> DEFAULT_STYLE."""
    if not place:
        return DEFAULT_STYLE
    return PLACE_STYLES[zlib.crc32(place.encode()) % len(PLACE_STYLES)]
