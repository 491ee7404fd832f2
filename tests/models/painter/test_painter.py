"""The painter: determinism, covariate shift from the prompt, labels it follows, OOD looks, backend contract."""

from __future__ import annotations

import numpy as np
import pytest

from cgaug.config import PromptConfig
from cgaug.labels import ade_color
from cgaug.models.painter import STAND_IN, PainterBackend, paint, paint_batch, painter_info
from cgaug.models.painter.classes import UNKNOWN, class_index, class_map, ood_look
from cgaug.models.painter.geometry import horizon_row
from tests.models.painter.scenes import paste, street

CFG = PromptConfig()
BASE = CFG.base_template


def prompt(weather: str = "clear", time: str = "day", place: str = "Rome") -> str:
    return CFG.domain_template.format(place=place, weather=weather, time=time)


def luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.asarray([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def cond() -> np.ndarray:
    return street(5)[0]


def test_same_seed_repeats_bit_for_bit_and_other_seeds_differ(cond):
    first = paint(cond, prompt(), 7)
    assert first.shape == cond.shape and first.dtype == np.uint8
    assert np.array_equal(first, paint(cond, prompt(), 7))
    assert not np.array_equal(first, paint(cond, prompt(), 8))


def test_a_sample_does_not_depend_on_its_batch(cond):
    maps = [cond, street(6)[0], cond]
    prompts = [prompt("rainy", "night"), BASE, prompt("snowy", place="Tokyo")]
    seeds = [3, 4, 5]
    batch = paint_batch(maps, prompts, seeds, *cond.shape[:2])
    for image, args in zip(batch, zip(maps, prompts, seeds, strict=True), strict=True):
        assert np.array_equal(image, paint(*args))


def test_output_size_is_the_requested_one(cond):
    image = paint_batch([cond], [BASE], [0], 64, 96)[0]
    assert image.shape == (64, 96, 3)


def test_weathers_differ_and_night_is_darker(cond):
    day, night = paint(cond, prompt("clear", "day"), 1), paint(cond, prompt("clear", "night"), 1)
    assert luminance(night).mean() < 0.5 * luminance(day).mean()
    images = [paint(cond, prompt(weather), 1) for weather in CFG.weathers]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i].astype(int) - images[j].astype(int)).mean() > 5, (CFG.weathers[i], CFG.weathers[j])


@pytest.mark.parametrize("scene", [1, 4, 8])
def test_fog_takes_more_contrast_at_the_horizon_than_at_the_bottom(scene):
    cond = street(scene)[0]
    cls = class_map(cond)
    height = cls.shape[0]
    horizon = horizon_row(cls, class_index("road"))
    ground = np.isin(cls, [class_index(n) for n in ("road", "sidewalk", "grass")])
    rows = np.arange(height)[:, None]
    band = max(2, (height - horizon) // 6)
    far = ground & (rows >= horizon) & (rows < horizon + band)
    near = ground & (rows >= height - band)
    clear, foggy = luminance(paint(cond, prompt("clear"), 2)), luminance(paint(cond, prompt("foggy"), 2))
    far_ratio = foggy[far].std() / clear[far].std()
    near_ratio = foggy[near].std() / clear[near].std()
    assert far_ratio < 0.7 * near_ratio, (far_ratio, near_ratio)


def test_snow_brightens_the_road(cond):
    road = class_map(cond) == class_index("road")
    clear, snowy = luminance(paint(cond, prompt("clear"), 3)), luminance(paint(cond, prompt("snowy"), 3))
    assert snowy[road].mean() > clear[road].mean() + 30


@pytest.mark.parametrize("text", [BASE, prompt("clear", place="Lagos"), prompt("clear", place="Moscow")])
def test_a_nearest_class_mean_classifier_transfers_between_painted_images(text):
    """Classes keep their colours across images and seeds: what a segmenter needs to learn them."""
    main = np.asarray([class_index(n) for n in ("road", "sidewalk", "building", "tree", "sky", "car")])
    for fit_scene, test_scene in ((1, 2), (5, 6)):
        fit_cond, test_cond = street(fit_scene)[0], street(test_scene)[0]
        fit_cls, test_cls = class_map(fit_cond), class_map(test_cond)
        fit_image, test_image = paint(fit_cond, text, 10 + fit_scene), paint(test_cond, text, 20 + test_scene)
        means = np.stack([fit_image[fit_cls == c].mean(axis=0) for c in main])
        pixels = np.isin(test_cls, main)
        distance = ((test_image[pixels][:, None, :].astype(np.float64) - means[None]) ** 2).sum(axis=-1)
        accuracy = (main[distance.argmin(axis=1)] == test_cls[pixels]).mean()
        assert accuracy >= 0.8, (fit_scene, test_scene, accuracy)


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of the mask (a square dilation), outside it."""
    grown = mask.copy()
    for axis in (0, 1):
        for shift in range(1, width + 1):
            grown |= np.roll(mask, shift, axis) | np.roll(mask, -shift, axis)
    return grown & ~mask


@pytest.mark.parametrize("weather", ["clear", "rainy", "foggy", "snowy"])
def test_a_pasted_object_stands_out_from_the_road_around_it(weather):
    cond, label_ids = street(3)
    pasted, mask = paste(cond, label_ids, "box")
    image = paint(pasted, prompt(weather), 4).astype(np.float64)
    around = _ring(mask, 4) & (class_map(pasted) == class_index("road"))
    assert around.sum() > 20
    distance = np.linalg.norm(image[mask].mean(axis=0) - image[around].mean(axis=0))
    assert distance > 30, distance


def test_an_object_is_textured_not_flat():
    cond, label_ids = street(3)
    pasted, mask = paste(cond, label_ids, "box", size=0.35)
    image = paint(pasted, prompt(), 4).astype(np.float64)
    assert image[mask].std(axis=0).mean() > 10


def test_two_ood_classes_look_different():
    cond, label_ids = street(3)
    with_box, mask = paste(cond, label_ids, "box")
    with_animal, _ = paste(cond, label_ids, "animal")  # same silhouette and place, another class
    box = paint(with_box, prompt(), 4)[mask].astype(np.float64)
    animal = paint(with_animal, prompt(), 4)[mask].astype(np.float64)
    assert np.linalg.norm(box.mean(axis=0) - animal.mean(axis=0)) > 30
    looks = {ood_look(class_index(n)) for n in ("box", "animal", "barrel", "ashcan", "bag")}
    assert len({(look.base, look.pattern) for look in looks}) == 5


def test_colours_outside_the_palette_are_painted_neutral():
    cond = np.zeros((32, 48, 3), np.uint8)  # black: no ADE class
    cond[:16] = ade_color("sky")
    cls = class_map(cond)
    assert (cls[16:] == UNKNOWN).all() and (cls[:16] == class_index("sky")).all()
    image = paint(cond, BASE, 0).astype(np.float64)
    bottom = image[20:]
    assert np.abs(bottom - bottom.mean(axis=-1, keepdims=True)).mean() < 10  # grey, not coloured


def test_road_and_skyscraper_colour_decodes_as_road():
    cond = np.full((4, 4, 3), ade_color("road"), np.uint8)
    assert (class_map(cond) == class_index("road")).all()


def test_backend_has_the_generator_signature_and_says_it_is_a_stand_in(cond):
    backend = PainterBackend()
    images = backend([cond, cond], [BASE, prompt("rainy")], ["neg", "neg"], [1, 2], photos=None, report=None)
    assert [image.shape for image in images] == [cond.shape, cond.shape]
    assert np.array_equal(images[1], paint(cond, prompt("rainy"), 2))
    settings = backend.settings(128, 256)
    assert settings["generator_model"].startswith("painter")
    assert STAND_IN in settings["generator_variant"] and "not a diffusion model" in STAND_IN
    assert (settings["gen_height"], settings["gen_width"]) == (128, 256)
    assert painter_info()["stand_in"] == STAND_IN
    with pytest.raises(ValueError, match="one negative prompt"):
        backend([cond], [BASE], [], [1])


def test_backend_settings_fill_exactly_the_generator_columns_of_a_shard():
    from cgaug.storage.schema import SHARD_SCHEMA

    generator_columns = SHARD_SCHEMA.names[SHARD_SCHEMA.names.index("generator_model"):
                                           SHARD_SCHEMA.names.index("config_fingerprint")]
    assert set(PainterBackend().settings(64, 64)) == set(generator_columns)


def test_bad_maps_are_refused_with_the_position():
    with pytest.raises(ValueError, match="conditioning map 1"):
        paint_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], [BASE, BASE], [0, 1], 8, 8)
    with pytest.raises(ValueError, match="one prompt and seed"):
        paint_batch([np.zeros((8, 8, 3), np.uint8)], [BASE], [0, 1], 8, 8)


def test_a_painted_scene_follows_its_label_map_and_noise_does_not():
    """The measure the browser test applies to UI previews separates painting from random-weight noise."""
    from tests.models.painter.scenes import explained_by_labels

    cond, _ = street(4)
    painted = paint(cond, "An image sampled from various stereo video sequences taken by dash cam.", 1)
    noise = np.random.default_rng(0).integers(0, 256, cond.shape, dtype=np.uint8)
    assert explained_by_labels(painted, cond) > 0.5
    assert explained_by_labels(noise, cond) < 0.1
