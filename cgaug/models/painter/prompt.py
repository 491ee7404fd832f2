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
    cars: tuple[tuple[float, float, float], ...]  # body colours: one family per city, like its taxis


def _rgb(*colors: tuple[int, int, int]) -> tuple[tuple[float, float, float], ...]:
    return tuple((r / 255, g / 255, b / 255) for r, g, b in colors)


def _style(name: str, facades: tuple[tuple[int, int, int], ...], road: tuple[int, int, int],
           sidewalk: tuple[int, int, int], foliage: tuple[int, int, int], grass: tuple[int, int, int],
           window: tuple[int, int, int], window_period: float, cars: tuple[tuple[int, int, int], ...]
           ) -> PlaceStyle:
    r, s, f, g, w = _rgb(road, sidewalk, foliage, grass, window)
    return PlaceStyle(name, _rgb(*facades), r, s, f, g, w, window_period, _rgb(*cars))


RED_CARS = ((155, 25, 25), (180, 40, 30), (130, 20, 28), (190, 60, 40))
BLUE_CARS = ((30, 55, 130), (45, 75, 155), (25, 45, 105), (60, 90, 165))
YELLOW_CARS = ((215, 165, 25), (230, 180, 40), (205, 140, 20), (240, 190, 55))

DEFAULT_STYLE = _style("european", ((215, 190, 140), (205, 180, 135), (225, 200, 150), (200, 170, 125)),
                       (76, 76, 80), (160, 160, 165), (60, 105, 40), (110, 150, 70), (50, 60, 75), 0.055, RED_CARS)
"""The base template's look: a Cityscapes-like German street."""

# Within a style, road (dark neutral), sidewalk (light neutral), facades (one family of colours, hued or
# much brighter) and cars (one family, unlike the facades) stay apart in colour, so that the painted
# classes remain separable: a segmenter can learn them, and so nearly can a nearest-mean classifier.
PLACE_STYLES: tuple[PlaceStyle, ...] = (
    _style("brick", ((150, 70, 50), (165, 85, 60), (140, 65, 48), (170, 90, 65)),
           (72, 70, 72), (165, 165, 165), (55, 100, 45), (100, 145, 65), (40, 45, 55), 0.06, BLUE_CARS),
    _style("glass towers", ((100, 135, 170), (120, 150, 180), (90, 125, 160), (130, 160, 190)),
           (70, 72, 76), (185, 182, 175), (50, 110, 55), (95, 155, 75), (30, 50, 75), 0.035, YELLOW_CARS),
    _style("mediterranean", ((235, 205, 150), (230, 195, 145), (240, 215, 165), (225, 200, 150)),
           (88, 84, 80), (165, 165, 170), (75, 105, 50), (140, 150, 80), (70, 60, 50), 0.07, BLUE_CARS),
    _style("desert", ((215, 175, 115), (205, 165, 110), (225, 185, 125), (200, 160, 105)),
           (95, 90, 86), (160, 158, 158), (95, 115, 60), (165, 150, 90), (60, 55, 50), 0.06, RED_CARS),
    _style("tropical", ((240, 190, 140), (235, 175, 130), (245, 205, 150), (230, 180, 150)),
           (75, 75, 78), (170, 170, 172), (30, 110, 45), (70, 160, 60), (40, 55, 60), 0.06, BLUE_CARS),
    _style("northern stone", ((130, 95, 70), (140, 105, 80), (120, 88, 66), (150, 112, 85)),
           (62, 62, 66), (155, 155, 158), (45, 85, 45), (85, 125, 65), (35, 40, 45), 0.055, BLUE_CARS),
    _style("white modern", ((240, 238, 230), (228, 232, 238), (238, 228, 205), (232, 232, 226)),
           (80, 80, 85), (160, 160, 162), (60, 120, 55), (100, 165, 80), (45, 60, 80), 0.045, RED_CARS),
    _style("painted", ((95, 150, 130), (105, 160, 140), (85, 140, 125), (110, 165, 150)),
           (82, 78, 76), (168, 168, 170), (65, 115, 45), (120, 160, 70), (45, 45, 50), 0.065, RED_CARS),
)


def place_style(place: str | None) -> PlaceStyle:
    """The style of a place: a stable hash into PLACE_STYLES; no place -> DEFAULT_STYLE."""
    if not place:
        return DEFAULT_STYLE
    return PLACE_STYLES[zlib.crc32(place.encode()) % len(PLACE_STYLES)]
