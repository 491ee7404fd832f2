"""The shard row schema: its columns and types, what a bad row or file is told, a lossless Parquet round trip."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cgaug.storage.fs import open_root
from cgaug.storage.png import encode_png
from cgaug.storage.schema import (
    BLOB_COLUMNS,
    INDEX_SCHEMA,
    SCHEMA_VERSION,
    SHARD_SCHEMA,
    empty_row,
    scores_as_dict,
)
from cgaug.storage.shards import shard_complete, shard_name, verify, write_index, write_shard

# The contract readers depend on, written out by hand: ids, outcome, prompt, seed and blobs.
REQUIRED = {
    "sample_id": pa.string(), "source_id": pa.string(), "city": pa.string(), "split": pa.string(),
    "variant": pa.int32(), "attempt": pa.int32(), "attempts": pa.int32(), "seed": pa.int64(),
    "image_seed": pa.int64(), "shard": pa.int32(), "verdict": pa.string(), "reasons": pa.list_(pa.string()),
    "scores": pa.list_(pa.struct([("name", pa.string()), ("score", pa.float64())])),
    "prompt": pa.string(), "negative_prompt": pa.string(),
    "weather": pa.string(), "time_of_day": pa.string(), "place": pa.string(), "height": pa.int32(),
    "width": pa.int32(), "config_fingerprint": pa.string(), "created_at": pa.timestamp("us", tz="UTC"),
    "image_png": pa.binary(), "label_png": pa.binary(), "cond_png": pa.binary(), "ood_mask_png": pa.binary(),
    "noise_mask_png": pa.binary(),
}


def full_row(sample_id: str = "aachen_000000_000019__v000") -> dict:
    """A row with every column set (no nulls), values exactly representable in their column types."""
    label = np.full((4, 6), 7, dtype=np.uint8)
    label[1:3, 2:4] = 254
    label[0, 0] = 255
    row = empty_row()
    row.update(
        sample_id=sample_id, source_id="aachen_000000_000019", city="aachen", split="train", variant=0,
        attempt=1, attempts=2, seed=2**62 + 5, image_seed=2**63 - 1, shard=0, verdict="accepted",
        reasons=["retried"], detail="second attempt kept", scores={"clip": 0.25, "sam_iou": 0.75},
        gates=[{"attempt": 0, "name": "sam_iou", "score": 0.5, "threshold": 0.6, "passed": False,
                "reason": "sam_iou_low"}],
        prompt="a street", negative_prompt="blurry", prompt_domain=True, weather="rainy", time_of_day="night",
        place="Tokyo", objects_phrase="a dog",
        objects=[{"class_name": "dog", "ade_class": "animal", "object_id": "o1", "bank_source_id": "ade/1",
                  "x0": 2, "y0": 1, "x1": 4, "y1": 3, "scale": 0.5, "area": 4}],
        num_objects=1, ood_area=4, height=4, width=6,
        generator_model="tiny", generator_controlnet="tiny-cn", generator_revision="main", generator_variant="fp16",
        generator_controlnet_revision="main", scheduler="UniPC", steps=2, guidance_scale=7.5, control_scale=1.0,
        eta=0.0, dtype="fp32", gen_height=8, gen_width=8, photo_control="canny", photo_controlnet="cn-canny",
        photo_controlnet_revision="main", photo_control_scale=0.5, photo_control_params='{"canny_low": 100}',
        config_fingerprint="80503f127d676db7", created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        image_png=encode_png(np.zeros((4, 6, 3), dtype=np.uint8)), label_png=encode_png(label),
        cond_png=encode_png(np.ones((4, 6, 3), dtype=np.uint8)), ood_mask_png=encode_png(label == 254),
        noise_mask_png=encode_png(label == 255),
    )
    return row


def test_required_columns_have_their_types_and_the_schema_carries_its_version():
    found = {field.name: field.type for field in SHARD_SCHEMA}
    assert {name: found.get(name) for name in REQUIRED} == REQUIRED
    assert SHARD_SCHEMA.metadata == {b"cgaug.schema_version": str(SCHEMA_VERSION).encode()}
    assert len(set(SHARD_SCHEMA.names)) == len(SHARD_SCHEMA.names)
    assert set(BLOB_COLUMNS) == {name for name, kind in found.items() if kind == pa.binary()}


def test_index_schema_is_the_shard_schema_without_blobs_plus_the_shard_file():
    expected = [f for f in SHARD_SCHEMA if f.name not in BLOB_COLUMNS] + [pa.field("shard_file", pa.string())]
    assert INDEX_SCHEMA.names == [f.name for f in expected]
    assert all(a.type.equals(b.type) for a, b in zip(INDEX_SCHEMA, expected, strict=True))


def test_empty_row_names_every_column_and_sets_none():
    row = empty_row()
    assert list(row) == SHARD_SCHEMA.names and set(row.values()) == {None}
    row["sample_id"] = "x"
    assert empty_row()["sample_id"] is None  # a fresh dict every call


def test_a_full_row_round_trips_through_parquet_unchanged(tmp_path):
    row = full_row()
    write_shard(open_root(tmp_path), 0, [row])
    parquet = pq.ParquetFile(tmp_path / shard_name(0))
    assert parquet.schema_arrow.equals(SHARD_SCHEMA)  # list items read back named "element": same type
    assert parquet.schema_arrow.metadata == SHARD_SCHEMA.metadata
    [back] = parquet.read().to_pylist()
    back["scores"] = scores_as_dict(back["scores"])  # stored as {name, score} structs, given as a dict
    assert back == row


@pytest.mark.parametrize(("mutate", "column"), [
    (lambda r: r.pop("image_seed"), "image_seed"),
    (lambda r: r.update(colour="red"), "colour"),
    (lambda r: r.update(attempts="two"), "attempts"),
    (lambda r: r.update(label_png=np.zeros((2, 2), dtype=np.uint8)), "label_png"),
    (lambda r: r.update(created_at="yesterday"), "created_at"),
    (lambda r: r["objects"][0].update(x0="left"), "objects"),
])
def test_a_row_with_a_missing_extra_or_wrong_typed_column_is_refused_naming_it(tmp_path, mutate, column):
    root = open_root(tmp_path)
    row = full_row()
    mutate(row)
    with pytest.raises(ValueError, match=rf"\b{column}\b"):
        write_shard(root, 0, [row])
    assert not root.exists(shard_name(0))


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop_columns(["weather"]), "missing ['weather'], unknown []"),
    (lambda t: t.append_column("colour", pa.array(["red"])), "missing [], unknown ['colour']"),
    (lambda t: t.set_column(t.schema.get_field_index("seed"), "seed", t.column("seed").cast(pa.string())),
     "column 'seed' is string, expected int64"),
])
def test_a_shard_file_with_another_schema_is_incomplete_and_verify_names_the_column(tmp_path, change, message):
    root = open_root(tmp_path)
    write_shard(root, 0, [full_row()])
    write_index(root, {})
    table = change(pq.read_table(tmp_path / shard_name(0)))
    pq.write_table(table.replace_schema_metadata(SHARD_SCHEMA.metadata), tmp_path / shard_name(0))
    assert not shard_complete(root, 0, [full_row()["sample_id"]])
    assert any(message in problem for problem in verify(root, decode_blobs=False)), verify(root)
