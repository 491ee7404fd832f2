"""The generate step on the tiny pipeline: sizes, nearest resize, per-sample seeds, batching, padding,
out-of-memory halving, input checks, the photo condition and the settings stored for regeneration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: no 23 s retries

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from cgaug.config import CGAugConfig, GeneratorConfig  # noqa: E402
from cgaug.models.generator import load_pipeline, photo_controlnet_name  # noqa: E402
from cgaug.models.hub import clear_cache  # noqa: E402
from cgaug.models.tiny import build_tiny_photo_controlnet, build_tiny_pipeline  # noqa: E402
from cgaug.storage.schema import SHARD_SCHEMA  # noqa: E402
from cgaug.tasks.generation.generate import (  # noqa: E402
    GenerationReport,
    generate,
    generate_float,
    generation_size,
    generator_settings,
    load_generator,
    resize_nearest,
    run_batches,
)
from tests.generator_helpers import PALETTE, make_maps, make_photos, make_texts, tiny_config  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _fresh_pipeline_cache():
    """Pipelines cached by this module's tests must not leak into other modules."""
    yield
    clear_cache()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-gen") / "pipe")


@pytest.fixture(scope="module")
def cfg(tiny_dir) -> GeneratorConfig:
    return tiny_config(tiny_dir)


@pytest.fixture(scope="module")
def pipe(cfg):
    return load_pipeline(cfg)


@pytest.fixture(scope="module")
def photo_cfg(tiny_dir, tmp_path_factory) -> GeneratorConfig:
    photo_dir = build_tiny_photo_controlnet(tmp_path_factory.mktemp("photo-cn") / "controlnet")
    return tiny_config(tiny_dir, photo_control="canny", photo_controlnet=str(photo_dir))


# ---------------------------------------------------------------- sizes and resizing


@pytest.mark.parametrize(("size", "short_side", "multiple", "expected"), [
    ((1024, 2048), 512, 8, (512, 1024)),
    ((256, 512), 64, 8, (64, 128)),
    ((2048, 1024), 512, 8, (1024, 512)),  # portrait: the width is the short side
    ((1000, 1500), 512, 8, (512, 768)),
    ((1024, 2020), 512, 8, (512, 1008)),  # 1010 -> nearest multiple of 8
    ((37, 100), 20, 8, (24, 56)),  # 20 -> 24 (2.5 rounds up), 54.05 -> 56
    ((512, 512), 8, 64, (64, 64)),  # never below one multiple
])
def test_generation_size_by_hand(size, short_side, multiple, expected):
    cfg = GeneratorConfig(short_side=short_side, size_multiple=multiple)

    assert generation_size(*size, cfg) == expected


def test_generation_size_rejects_emptylabels():
    with pytest.raises(ValueError, match="0x64"):
        generation_size(0, 64, GeneratorConfig())


def test_nearest_resize_keeps_only_palette_colours():
    rng = np.random.default_rng(1)
    label = PALETTE[rng.integers(0, len(PALETTE), (37, 53))]
    palette = {tuple(c) for c in PALETTE}

    for height, width in [(64, 128), (16, 24), (100, 30)]:
        resized = resize_nearest(label, height, width)
        assert resized.shape == (height, width, 3)
        assert {tuple(c) for c in resized.reshape(-1, 3)} <= palette


def test_nearest_resize_doubling_repeats_pixels():
    label = PALETTE[np.random.default_rng(2).integers(0, len(PALETTE), (5, 7))]

    expected = np.repeat(np.repeat(label, 2, axis=0), 2, axis=1)
    assert np.array_equal(resize_nearest(label, 10, 14), expected)


# ---------------------------------------------------------------- generation


def test_output_has_the_label_shape_and_is_uint8(pipe, cfg):
    maps, (prompts, negatives) = make_maps(3, 40, 72), make_texts(3)  # generated at 32x56 (57.6 -> 56)

    images = generate(pipe, cfg, maps, prompts, negatives, [1, 2, 3])

    assert len(images) == 3
    assert all(img.shape == (40, 72, 3) and img.dtype == np.uint8 for img in images)
    assert generate_float(pipe, cfg, maps, prompts, negatives, [1, 2, 3]).shape == (3, 32, 56, 3)


def test_same_seeds_are_bit_identical(pipe, cfg):
    maps, (prompts, negatives) = make_maps(4), make_texts(4)

    first = generate(pipe, cfg, maps, prompts, negatives, [10, 11, 12, 13])
    second = generate(pipe, cfg, maps, prompts, negatives, [10, 11, 12, 13])

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], first[1])


def test_a_sample_in_a_batch_equals_the_sample_alone(pipe, cfg):
    maps, (prompts, negatives) = make_maps(4), make_texts(4)
    seeds = [10, 11, 12, 13]

    batch = generate_float(pipe, cfg, maps, prompts, negatives, seeds)
    alone = generate_float(pipe, cfg, maps[2:3], prompts[2:3], negatives[2:3], seeds[2:3])
    np.testing.assert_allclose(batch[2] * 255, alone[0] * 255, rtol=0, atol=1e-3)

    # uint8 rounding can flip a value sitting on a .5 boundary, never by more than one level
    batch_u8 = generate(pipe, cfg, maps, prompts, negatives, seeds)
    alone_u8 = generate(pipe, cfg, maps[2:3], prompts[2:3], negatives[2:3], seeds[2:3])
    assert np.abs(batch_u8[2].astype(int) - alone_u8[0]).max() <= 1


def test_chunking_by_batch_size_does_not_change_samples(pipe, cfg):
    maps, (prompts, negatives) = make_maps(5), make_texts(5)
    seeds = [1, 2, 3, 4, 5]

    in_fours = generate_float(pipe, cfg, maps, prompts, negatives, seeds)
    twos = cfg.model_copy(update={"batch_size": 2})
    in_twos = generate_float(pipe, twos, maps, prompts, negatives, seeds)

    np.testing.assert_allclose(in_fours * 255, in_twos * 255, rtol=0, atol=1e-3)


@pytest.mark.parametrize("change", ["seed", "cond", "prompt"])
def test_changing_one_sample_changes_only_that_sample(pipe, cfg, change):
    maps, (prompts, negatives) = make_maps(4), make_texts(4)
    seeds = [20, 21, 22, 23]
    before = generate_float(pipe, cfg, maps, prompts, negatives, seeds)

    if change == "seed":
        seeds = [20, 21, 99, 23]
    elif change == "cond":
        maps = [*maps[:2], make_maps(1, seed=5)[0], maps[3]]
    else:
        prompts = [*prompts[:2], "a snowy night in Tokyo", prompts[3]]
    after = generate_float(pipe, cfg, maps, prompts, negatives, seeds)

    for i in (0, 1, 3):
        np.testing.assert_allclose(after[i] * 255, before[i] * 255, rtol=0, atol=1e-3)
    assert np.abs(after[2] - before[2]).mean() * 255 > 0.1


def test_ddim_eta_is_passed_and_other_schedulers_ignore_it(cfg):
    maps, (prompts, negatives) = make_maps(2), make_texts(2)

    def run(scheduler: str, eta: float) -> np.ndarray:
        c = cfg.model_copy(update={"scheduler": scheduler, "eta": eta})
        return generate_float(load_pipeline(c), c, maps, prompts, negatives, [1, 2])

    assert not np.allclose(run("ddim", 0.0), run("ddim", 1.0), atol=1e-3)
    assert np.array_equal(run("unipc", 0.0), run("unipc", 1.0))


def test_empty_request_returns_nothing(pipe, cfg):
    assert generate(pipe, cfg, [], [], [], []) == []


def test_mismatched_counts_are_refused(pipe, cfg):
    with pytest.raises(ValueError, match="'seeds': 1"):
        generate(pipe, cfg, make_maps(2), *make_texts(2), [1])


def test_maps_of_different_sizes_are_refused(pipe, cfg):
    maps = [make_maps(1, 48, 96)[0], make_maps(1, 48, 104)[0]]

    with pytest.raises(ValueError, match="conditioning map 1"):
        generate(pipe, cfg, maps, *make_texts(2), [1, 2])


def test_non_uint8_rgb_maps_are_refused(pipe, cfg):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        generate(pipe, cfg, [np.zeros((48, 96), np.uint8)], *make_texts(1), [1])
    with pytest.raises(ValueError, match="float32"):
        generate(pipe, cfg, [np.zeros((48, 96, 3), np.float32)], *make_texts(1), [1])


# ---------------------------------------------------------------- batching: padding, partial batches, OOM


def _recording_run(calls: list[list[int]], fail_above: int | None = None):
    def run(index: list[int]) -> np.ndarray:
        calls.append(list(index))
        if fail_above is not None and len(index) > fail_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return np.array(index, dtype=np.float32)

    return run


@pytest.mark.parametrize(("pad", "expected_calls", "padded"), [
    (False, [[0, 1, 2, 3], [4, 5, 6]], 0),
    (True, [[0, 1, 2, 3], [4, 5, 6, 6]], 1),
])
def test_run_batches_chunks_and_pads_by_hand(pad, expected_calls, padded):
    calls: list[list[int]] = []
    report = GenerationReport()

    chunks = run_batches(_recording_run(calls), 7, 4, pad=pad, report=report)

    assert calls == expected_calls
    assert np.concatenate(chunks).tolist() == list(range(7))  # padding outputs dropped, order kept
    assert (report.samples, report.batches, report.padded, report.batch_size) == (7, 2, padded, 4)


def test_run_batches_halves_on_out_of_memory_and_remembers_the_size():
    calls: list[list[int]] = []
    report, limits = GenerationReport(), {}

    chunks = run_batches(_recording_run(calls, fail_above=2), 7, 8, pad=True, report=report,
                             limits=limits, size_key=(64, 128))

    # 8 fails (padded: 7 + one copy), 4 fails, then batches of 2, the last one padded
    assert calls == [[0, 1, 2, 3, 4, 5, 6, 6], [0, 1, 2, 3], [0, 1], [2, 3], [4, 5], [6, 6]]
    assert np.concatenate(chunks).tolist() == list(range(7))
    assert (report.oom_halvings, report.batch_size, report.batches, report.padded) == (2, 2, 4, 1)
    assert limits == {(64, 128): 2}

    again, calls2 = GenerationReport(), []
    run_batches(_recording_run(calls2, fail_above=2), 3, 8, pad=False, report=again, limits=limits,
                    size_key=(64, 128))
    assert calls2 == [[0, 1], [2]] and again.oom_halvings == 0


def test_run_batches_gives_up_when_one_sample_does_not_fit():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_batches(_recording_run([], fail_above=0), 3, 4, pad=False, report=GenerationReport())


def test_other_errors_are_not_mistaken_for_out_of_memory():
    def run(index):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches(run, 3, 4, pad=False, report=GenerationReport())


class _OutOfMemoryAbove:
    """The real pipeline, except that batches above `limit` raise CUDA's out-of-memory error."""

    def __init__(self, pipe, limit: int):
        self._pipe, self.limit, self.sizes = pipe, limit, []

    def __call__(self, **kwargs):
        self.sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self._pipe(**kwargs)

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def test_out_of_memory_halves_the_batch_and_keeps_every_sample(pipe, cfg):
    maps, (prompts, negatives) = make_maps(5), make_texts(5)
    seeds = [7, 8, 9, 10, 11]
    flaky = _OutOfMemoryAbove(pipe, limit=2)
    report = GenerationReport()

    got = generate_float(flaky, cfg, maps, prompts, negatives, seeds, report=report)
    expected = generate_float(pipe, cfg, maps, prompts, negatives, seeds)

    np.testing.assert_allclose(got * 255, expected * 255, rtol=0, atol=1e-3)
    assert flaky.sizes == [4, 2, 2, 1]
    assert (report.oom_halvings, report.batch_size, report.samples) == (1, 2, 5)

    # the next call on the same pipeline starts at the size that fitted
    generate(flaky, cfg, maps[:3], prompts[:3], negatives[:3], seeds[:3])
    assert flaky.sizes[4:] == [2, 1]


def test_padding_the_last_batch_does_not_change_samples(pipe, cfg):
    maps, (prompts, negatives) = make_maps(5), make_texts(5)
    seeds = [1, 2, 3, 4, 5]
    padded_report = GenerationReport()

    padded = generate_float(pipe, cfg, maps, prompts, negatives, seeds, pad=True, report=padded_report)
    smaller = generate_float(pipe, cfg, maps, prompts, negatives, seeds, pad=False)

    np.testing.assert_allclose(padded * 255, smaller * 255, rtol=0, atol=1e-3)
    assert (padded_report.batches, padded_report.padded, padded_report.samples) == (2, 3, 5)
    assert padded_report.seconds > 0 and padded_report.images_per_second > 0


def test_cpu_does_not_pad_by_default(pipe, cfg):
    report = GenerationReport()
    generate(pipe, cfg, make_maps(5), *make_texts(5), [1, 2, 3, 4, 5], report=report)

    assert (report.batches, report.padded) == (2, 0)


# ---------------------------------------------------------------- second condition from the photo


def test_changing_one_photo_changes_only_that_sample(photo_cfg):
    pipe = load_pipeline(photo_cfg)
    maps, (prompts, negatives), photos = make_maps(3), make_texts(3), make_photos(3)
    before = generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2, 3], photos=photos)

    again = generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2, 3], photos=photos)
    after = generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2, 3],
                               photos=[photos[0], make_photos(1, seed=9)[0], photos[2]])

    assert np.array_equal(before, again)
    for i in (0, 2):
        np.testing.assert_allclose(after[i] * 255, before[i] * 255, rtol=0, atol=1e-3)
    assert np.abs(after[1] - before[1]).mean() * 255 > 0.1


def test_photo_mask_blanks_the_photo_condition(photo_cfg):
    pipe = load_pipeline(photo_cfg)
    maps, (prompts, negatives), photos = make_maps(2), make_texts(2), make_photos(2)
    blank = generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2],
                               photos=[np.zeros_like(p) for p in photos])

    masked = generate_float(pipe, photo_cfg, maps, prompts, negatives, [1, 2], photos=photos,
                                photo_masks=[np.ones(p.shape[:2], np.uint8) for p in photos])

    np.testing.assert_allclose(masked * 255, blank * 255, rtol=0, atol=1e-3)  # edges all masked = no edges


def test_photos_are_required_with_and_refused_without_a_photo_condition(photo_cfg, pipe, cfg):
    maps, (prompts, negatives) = make_maps(2), make_texts(2)

    with pytest.raises(ValueError, match=r"photo_control is 'canny'.*source photo"):
        generate(load_pipeline(photo_cfg), photo_cfg, maps, prompts, negatives, [1, 2])
    with pytest.raises(ValueError, match="photo_control is 'none'"):
        generate(pipe, cfg, maps, prompts, negatives, [1, 2], photos=make_photos(2))
    with pytest.raises(ValueError, match="1 ControlNet"):
        generate(pipe, photo_cfg, maps, prompts, negatives, [1, 2], photos=make_photos(2))
    with pytest.raises(ValueError, match="photo 1"):
        generate(load_pipeline(photo_cfg), photo_cfg, maps, prompts, negatives, [1, 2],
                     photos=[make_photos(1)[0], make_photos(1, 40, 96)[0]])


# ---------------------------------------------------------------- settings for regeneration


def test_generator_settings_fill_the_shard_columns():
    cfg = CGAugConfig.model_validate({"generator": {"model": "tiny", "device": "cpu", "eta": 0.5}}).generator

    settings = generator_settings(cfg, (64, 128))

    assert set(settings) <= set(SHARD_SCHEMA.names)
    assert settings == {
        "generator_model": "tiny", "generator_controlnet": None, "generator_revision": None,
        "scheduler": "unipc", "steps": 2, "guidance_scale": 9.0, "control_scale": 1.0, "eta": 0.5,
        "dtype": "fp32", "gen_height": 64, "gen_width": 128, "generator_variant": None,
        "generator_controlnet_revision": None, "photo_control": "none", "photo_controlnet": None,
        "photo_controlnet_revision": None, "photo_control_scale": None, "photo_control_params": None,
    }


def test_all_settings_include_variant_revisions_and_photo_condition():
    cfg = GeneratorConfig(model="m", controlnet="c", revision="r1", controlnet_revision="r2", variant="fp16",
                          photo_control="canny", photo_controlnet="p", photo_controlnet_revision="r3",
                          photo_control_scale=0.3, canny_thresholds=(50, 120), device="cpu")

    settings = generator_settings(cfg, (512, 1024))

    assert settings["generator_variant"] == "fp16"
    assert (settings["generator_revision"], settings["generator_controlnet_revision"]) == ("r1", "r2")
    assert (settings["photo_control"], settings["photo_controlnet"], settings["photo_controlnet_revision"]) \
        == ("canny", "p", "r3")
    assert settings["photo_control_scale"] == 0.3
    assert json.loads(settings["photo_control_params"]) == {"canny_low": 50, "canny_high": 120}
    assert (settings["gen_height"], settings["gen_width"]) == (512, 1024)


def test_photo_settings_are_empty_without_a_photo_condition_and_default_by_model():
    plain = generator_settings(GeneratorConfig(device="cpu", photo_controlnet="ignored"), (8, 8))
    assert plain["photo_control"] == "none"
    assert plain["photo_controlnet"] is plain["photo_control_scale"] is plain["photo_control_params"] is None

    lineart = GeneratorConfig(device="cpu", photo_control="lineart")
    settings = generator_settings(lineart, (8, 8))
    assert settings["photo_controlnet"] == "lllyasviel/control_v11p_sd15_lineart"
    assert settings["photo_control_params"] == "{}"
    tiny = CGAugConfig.model_validate({"generator": {"model": "tiny", "photo_control": "canny"}}).generator
    assert photo_controlnet_name(tiny) == "tiny"


def test_shard_settings_are_schema_columns():
    """Every stored setting has its own shard column, with a value the column's type takes."""
    import pyarrow as pa

    settings = generator_settings(GeneratorConfig(variant="fp16", photo_control="canny", device="cpu"), (8, 8))
    assert set(settings) <= set(SHARD_SCHEMA.names)
    for name, value in settings.items():
        pa.array([value], type=SHARD_SCHEMA.field(name).type)


# ---------------------------------------------------------------- the shard loop's callables


def test_load_generator_binds_the_cached_pipeline_and_the_row_settings(cfg, pipe):
    run, settings = load_generator(cfg)
    maps, (prompts, negatives) = make_maps(2), make_texts(2)

    got = run(maps, prompts, negatives, [3, 4])
    expected = generate(pipe, cfg, maps, prompts, negatives, [3, 4])

    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert settings(48, 96) == generator_settings(cfg, (32, 64))  # the generation size of a 48x96 label

