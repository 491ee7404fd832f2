"""Shards and index open in the ordinary tools: Hugging Face `datasets` (offline), pandas, DuckDB.

And outputs written by schema version 1 (a map `scores` column, which `datasets` cannot load) still
verify, resume and index next to new shards.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cgaug.storage.fs import open_root
from cgaug.storage.layout import INDEX_NAME, shard_name
from cgaug.storage.schema import SCHEMA_VERSION, scores_as_dict
from cgaug.storage.shards import iter_rows, verify, write_index, write_shard
from tests.storage.test_schema import full_row

PREVIOUS = Path(__file__).parents[1] / "data" / "previous_main" / "OUT"


@pytest.fixture
def dataset_root(tmp_path):
    root = open_root(tmp_path / "out")
    rows = [full_row(f"aachen_000000_000019__v00{i}") | {"scores": {"sam_iou": 0.5 + i / 10, "clip": -1.0}}
            for i in range(3)]
    write_shard(root, 0, rows)
    write_index(root)
    return tmp_path / "out", rows


def test_hugging_face_datasets_loads_shards_and_index_and_decodes_images(dataset_root, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out, rows = dataset_root
    shards = datasets.load_dataset("parquet", data_files=str(out / "shards" / "*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert shards.num_rows == 3 and shards[0]["sample_id"] == rows[0]["sample_id"]
    assert shards[1]["scores"] == [{"name": "sam_iou", "score": 0.6}, {"name": "clip", "score": -1.0}]
    shards = shards.cast_column("image_png", datasets.Image())  # the README's recipe: PNG bytes -> PIL images
    image = shards[0]["image_png"]
    expected = np.asarray(Image.open(io.BytesIO(rows[0]["image_png"])))
    assert isinstance(image, Image.Image) and np.array_equal(np.asarray(image), expected)
    index = datasets.load_dataset("parquet", data_files=str(out / INDEX_NAME), split="train",
                                  cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(index["sample_id"]) == sorted(r["sample_id"] for r in rows)


def test_pandas_and_duckdb_read_the_index(dataset_root):
    pandas = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    out, _ = dataset_root
    frame = pandas.read_parquet(out / INDEX_NAME)
    assert len(frame) == 3
    best = duckdb.sql(f"SELECT max(s.score) FROM (SELECT unnest(scores) AS s FROM '{out / INDEX_NAME}') "
                      "WHERE s.name = 'sam_iou'").fetchall()[0][0]
    assert best == pytest.approx(0.7)


def test_a_version_1_output_verifies_reads_and_indexes_next_to_new_shards(tmp_path):
    out = tmp_path / "OUT"
    shutil.copytree(PREVIOUS, out)
    root = open_root(out)
    assert pq.read_schema(out / shard_name(0)).metadata[b"cgaug.schema_version"] == b"1"
    assert verify(root) == []
    old_scores = [scores_as_dict(r["scores"]) for r in iter_rows(root)]
    assert any(old_scores)  # the tiny filter's gate scores, read from the map column
    new = full_row("zzz_000000_000019__v000") | {"scores": {"sam_iou": 0.9}, "shard": 7}
    write_shard(root, 7, [new])
    write_index(root)  # v1 and v2 shards in one index, in today's schema
    assert verify(root) == []
    index = pq.read_table(out / INDEX_NAME)
    assert index.schema.metadata[b"cgaug.schema_version"] == str(SCHEMA_VERSION).encode()
    by_id = {r["sample_id"]: scores_as_dict(r["scores"]) for r in index.to_pylist()}
    assert by_id["zzz_000000_000019__v000"] == {"sam_iou": 0.9}
    assert [by_id[r["sample_id"]] for r in iter_rows(root) if r["sample_id"] in by_id][:len(old_scores)] \
        == old_scores
