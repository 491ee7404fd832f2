"""`cgaug generate --generator painter`: verified shards painted by the stand-in, no model loading."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cgaug.cli import app
from cgaug.config import CGAugConfig
from cgaug.records import OOD_TRAIN_ID
from cgaug.storage.fs import open_root
from cgaug.storage.png import decode_png
from cgaug.storage.shards import verify
from cgaug.tasks.generation.generate import PAINTER_MODEL, load_generator


def _generate(dataset, out) -> dict:
    result = CliRunner().invoke(app, ["generate", "--source", str(dataset), "--out", str(out), "--generator",
                                      "painter", "--variants", "2", "--shard-size", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.fixture(scope="module")
def painted(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("painted")
    return out, _generate(dataset, out)


def _rows(out) -> list[dict]:
    return [row for path in sorted((out / "shards").glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def test_painter_writes_verified_shards_whose_rows_say_stand_in(painted):
    out, summary = painted
    assert summary["shards_written"] == 3
    assert verify(open_root(str(out))) == []
    rows = _rows(out)
    assert len(rows) == 12
    assert {r["generator_model"] for r in rows} == {"painter-v1"}
    assert all("stand-in" in r["generator_variant"] for r in rows)
    assert {r["steps"] for r in rows} == {None}  # no diffusion setting pretends to apply


def test_the_painter_backend_loads_no_pipeline(monkeypatch):
    import cgaug.tasks.generation.generate as generate

    def refuse(*_args, **_kwargs):
        raise AssertionError("the painter must not load a diffusers pipeline")

    monkeypatch.setattr(generate, "load_pipeline", refuse)
    run, settings = load_generator(CGAugConfig.model_validate({"generator": {"model": PAINTER_MODEL}}).generator)
    cond = np.zeros((64, 128, 3), np.uint8)
    assert run([cond], ["a foggy night"], [""], [1])[0].shape == (64, 128, 3)
    assert settings(64, 128)["gen_height"] == 64


def test_images_are_deterministic_per_seed(painted, dataset, tmp_path):
    out, _ = painted
    again = tmp_path / "again"
    _generate(dataset, again)
    first, second = _rows(out), _rows(again)
    assert [r["image_png"] for r in first] == [r["image_png"] for r in second]
    assert len({r["image_png"] for r in first}) == len(first)  # and every sample its own picture


def test_a_pasted_object_differs_from_the_road_around_it(painted):
    out, _ = painted
    contrasts = []
    for row in _rows(out):
        image = decode_png(row["image_png"]).astype(np.float64)
        label = decode_png(row["label_png"])
        ood = label == OOD_TRAIN_ID
        if ood.sum() < 30:
            continue
        ring = _dilate(ood, 4) & ~ood & (label == 0)  # road pixels next to the object
        if ring.sum() < 30:
            continue
        contrasts.append(np.abs(image[ood].mean(axis=0) - image[ring].mean(axis=0)).sum())
    assert contrasts and np.median(contrasts) > 30, contrasts


def test_the_same_sample_under_two_weathers_differs():
    from tests.models.painter.scenes import street

    cond, _ = street(3)
    run, _ = load_generator(CGAugConfig.model_validate({"generator": {"model": PAINTER_MODEL}}).generator)
    template = "An image sampled from various stereo video sequences taken by dash cam in Paris in a {} day."
    clear, snowy = run([cond, cond], [template.format("clear"), template.format("snowy")], ["", ""], [5, 5])
    assert np.abs(clear.astype(int) - snowy.astype(int)).mean() > 10


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        padded = np.pad(out, 1)
        out = padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return out
