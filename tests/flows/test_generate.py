"""The `cgaug` flow end to end on fixture data with the tiny generator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cgaug.config import CGAugConfig
from cgaug.flows.generate import generate_dataset_flow
from cgaug.labels import CITYSCAPES_BY_NAME, ade_palette
from cgaug.records import OOD_TRAIN_ID
from cgaug.storage.fs import open_root
from cgaug.storage.png import decode_png
from cgaug.storage.shards import verify
from cgaug.tasks.generation.regenerate import RegenerateError, regenerate_sample
from cgaug.tasks.generation.run import PlanMismatch

ROAD = CITYSCAPES_BY_NAME["road"].id


def tiny_config(**run) -> CGAugConfig:
    return CGAugConfig.model_validate({"run": {"variants": 2, "shard_size": 4, **run},
                                       "generator": {"model": "tiny"}})


def run(dataset: Path, out: Path, config: CGAugConfig | None = None) -> dict:
    return generate_dataset_flow(source=str(dataset), out=str(out), bank=str(dataset / "bank.parquet"),
                                 config=config or tiny_config())


@pytest.fixture(scope="module")
def generated(dataset, tiny_home, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    return out, run(dataset, out)


def _shards(out: Path) -> list[Path]:
    return sorted((out / "shards").glob("*.parquet"))


def test_six_images_two_variants_three_shards(generated):
    out, summary = generated
    assert summary["shards"] == 3 and summary["shards_written"] == 3
    assert len(_shards(out)) == 3
    index = pq.read_table(out / "index.parquet")
    assert index.num_rows == 12 and len(set(index["sample_id"].to_pylist())) == 12
    assert set(index["verdict"].to_pylist()) == {"unfiltered"}
    assert verify(open_root(str(out))) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_rows"] == 12 and len(manifest["shards"]) == 3


def test_shards_open_with_pandas_and_duckdb(generated):
    import duckdb
    import pandas as pd

    out, _ = generated
    frame = pd.read_parquet(out / "shards")
    assert len(frame) == 12
    count = duckdb.sql(f"select count(*) from read_parquet('{out}/shards/*.parquet')").fetchall()[0][0]
    assert count == 12
    weathers = duckdb.sql(f"select count(*) from '{out}/index.parquet' where prompt_domain").fetchall()[0][0]
    assert weathers == int(frame["prompt_domain"].sum())


def test_labels_maps_and_objects_are_coherent(generated, dataset):
    out, _ = generated
    palette = {tuple(int(v) for v in c) for c in ade_palette()} | {(0, 0, 0)}
    for shard in _shards(out):
        for row in pq.read_table(shard).to_pylist():
            label = decode_png(row["label_png"])
            ood = decode_png(row["ood_mask_png"], mask=True)
            np.testing.assert_array_equal(label == OOD_TRAIN_ID, ood)
            cond = decode_png(row["cond_png"])
            assert {tuple(c) for c in np.unique(cond.reshape(-1, 3), axis=0).tolist()} <= palette
            image = decode_png(row["image_png"])
            assert image.shape == (row["height"], row["width"], 3) == (256, 512, 3)
            city = row["source_id"].split("_")[0]
            source_ids = np.asarray(Image.open(
                dataset / "gtFine" / "train" / city / f"{row['source_id']}_gtFine_labelIds.png"))
            assert row["num_objects"] == len(row["objects"]) >= 1
            for obj in row["objects"]:
                bottom = ood[obj["y1"] - 1, obj["x0"]:obj["x1"]]
                cols = obj["x0"] + np.flatnonzero(bottom)
                assert cols.size and (source_ids[obj["y1"] - 1, cols] == ROAD).all()
            assert row["seed"] > 0 and row["generator_model"] == "tiny" and row["steps"] == 2


def test_second_run_does_no_work(generated, dataset):
    out, _ = generated
    before = {p: p.stat().st_mtime_ns for p in [*_shards(out), out / "index.parquet", out / "manifest.json"]}
    summary = run(dataset, out)
    assert summary["shards_written"] == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_same_seed_is_bit_identical(generated, dataset, tmp_path):
    out, _ = generated
    again = tmp_path / "again"
    run(dataset, again)
    for a, b in zip(_shards(out), _shards(again), strict=True):
        ta, tb = pq.read_table(a), pq.read_table(b)
        for column in ("sample_id", "seed", "prompt", "objects", "image_png", "label_png", "cond_png"):
            assert ta[column].to_pylist() == tb[column].to_pylist(), column


def test_more_variants_extend_without_touching_existing(generated, dataset, tmp_path):
    import shutil

    out, _ = generated
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p.name: p.read_bytes() for p in _shards(copy)}
    summary = run(dataset, copy, tiny_config(variants=3))
    assert summary["shards_written"] == 2  # 6 new samples -> shards 3 and 4
    assert {p.name: p.read_bytes() for p in _shards(copy) if p.name in before} == before
    assert pq.read_table(copy / "index.parquet").num_rows == 18
    with pytest.raises(PlanMismatch, match=r"run\.seed"):
        run(dataset, copy, tiny_config(seed=9))


def test_bad_inputs_are_recorded_and_the_rest_written(dataset_copy, tiny_home, tmp_path):
    train = dataset_copy / "leftImg8bit" / "train"
    labels = dataset_copy / "gtFine" / "train"
    images = sorted(train.rglob("*_leftImg8bit.png"))
    stems = [p.name.removesuffix("_leftImg8bit.png") for p in images]
    city = lambda stem: stem.split("_")[0]  # noqa: E731
    # 0: truncated image; 1: unknown label id; 2: image without its label; 3: no road
    data = images[0].read_bytes()
    images[0].write_bytes(data[: len(data) // 2])
    label_1 = labels / city(stems[1]) / f"{stems[1]}_gtFine_labelIds.png"
    ids = np.asarray(Image.open(label_1)).copy()
    ids[0, 0] = 200
    Image.fromarray(ids).save(label_1)
    (labels / city(stems[2]) / f"{stems[2]}_gtFine_labelIds.png").unlink()
    label_3 = labels / city(stems[3]) / f"{stems[3]}_gtFine_labelIds.png"
    Image.fromarray(np.full_like(ids, CITYSCAPES_BY_NAME["building"].id)).save(label_3)

    out = tmp_path / "out"
    run(dataset_copy, out, tiny_config(variants=1))
    index = pq.read_table(out / "index.parquet").to_pylist()
    reasons = {row["source_id"]: row["reasons"] for row in index if row["verdict"] == "skipped"}
    assert reasons == {stems[0]: ["unreadable_image"], stems[1]: ["unknown_label_id"],
                       stems[2]: ["missing_label"], stems[3]: ["no_road"]}
    assert sum(row["verdict"] == "unfiltered" for row in index) == 2
    assert verify(open_root(str(out))) == []
    # a skipped row has no image: `shards regenerate` says so with the recorded reason, before loading anything
    no_road = next(row["sample_id"] for row in index if row["reasons"] == ["no_road"])
    with pytest.raises(RegenerateError, match=rf"{no_road}' is skipped \(no_road\): it has no image to regenerate"):
        regenerate_sample(str(out), no_road)


def test_non_local_output_root(dataset, tiny_home):
    out = "memory://cgaug-test/out"
    summary = generate_dataset_flow(source=str(dataset), out=out, bank=str(dataset / "bank.parquet"),
                                    config=tiny_config(variants=1))
    assert summary["shards"] == 2
    assert verify(open_root(out)) == []


@pytest.mark.slow
def test_killed_run_leaves_no_partial_shard_and_resumes(dataset, tiny_home, tmp_path, prefect_server):
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "XDG_CACHE_HOME": str(tiny_home),
           "CGAUG_RUN__SHARD_SIZE": "2"}
    cmd = [sys.executable, "-m", "cgaug", "generate", "--source", str(dataset), "--out", str(out),
           "--generator", "tiny", "--variants", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "shards").glob("*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, "generate ended before writing a shard"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = _shards(out)
    assert 1 <= len(written) < 6
    for shard in written:  # every visible shard is whole
        assert pq.read_table(shard).num_rows == 2
    assert not (out / "manifest.json").exists()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(_shards(out)) == 6
    assert verify(open_root(str(out))) == []


def test_photo_condition_runs_through_the_flow(dataset, tiny_home, tmp_path):
    config = CGAugConfig.model_validate({"run": {"variants": 1, "shard_size": 8, "limit": 2},
                                         "generator": {"model": "tiny", "photo_control": "canny"}})
    out = tmp_path / "photo"
    run(dataset, out, config)
    rows = pq.read_table(out / "index.parquet").to_pylist()
    assert [r["photo_control"] for r in rows] == ["canny", "canny"]
    assert all(r["photo_controlnet"] == "tiny" and r["verdict"] == "unfiltered" for r in rows)
    assert verify(open_root(str(out))) == []
