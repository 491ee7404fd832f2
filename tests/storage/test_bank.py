"""The object bank file: round trips, class filters, schema checks, atomic and fsspec writes."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cgaug.storage import bank as bank_mod
from cgaug.storage.bank import (
    BANK_SCHEMA,
    VERSION_KEY,
    BankItem,
    EmptyBankError,
    ObjectBank,
    bank_stats,
    write_bank,
)


def _item(object_id: str, class_name: str, mask: np.ndarray, origin=(0, 0), ade: str | None = None,
          source: str = "folder") -> BankItem:
    return BankItem(object_id=object_id, class_name=class_name, ade_class=ade or class_name, source=source,
                    source_id=f"src/{object_id}", mask=mask, origin=origin)


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture
def items() -> list[BankItem]:
    full = np.zeros((40, 60), dtype=bool)
    full[5:9, 10:13] = True  # box x 10..13, y 5..9: 12 px
    full[20, 50] = True  # a second blob: tight box spans both
    window = np.zeros((10, 10), dtype=bool)
    window[2:5, 3:4] = True  # 3 px; placed at origin (100, 200) -> box (103, 202, 104, 205)
    return [
        _item("a", "barrel", full),
        _item("b", "animal", window, origin=(100, 200)),
        _item("c", "barrel", _disk(30, 30, 15, 12, 6.5)),
        _item("d", "box", np.zeros((5, 5), dtype=bool)),  # empty: skipped
    ]


def test_round_trip_crops_masks_and_records_boxes(tmp_path, items):
    out = str(tmp_path / "bank.parquet")
    assert write_bank(items, out, builder="test") == 3
    bank = ObjectBank.open(out)
    assert len(bank) == 3
    assert bank.classes == ("animal", "barrel")
    assert bank.builder == "test"

    a = bank.entry(0)
    assert (a.object_id, a.class_name, a.ade_class, a.source, a.source_id) == ("a", "barrel", "barrel",
                                                                                "folder", "src/a")
    assert a.box == (10, 5, 51, 21)
    assert a.area == 13
    expected = np.zeros((16, 41), dtype=bool)
    expected[0:4, 0:3] = True
    expected[15, 40] = True
    np.testing.assert_array_equal(bank.mask(0), expected)

    b = bank.entry(1)
    assert b.box == (103, 202, 104, 205)
    assert b.area == 3
    np.testing.assert_array_equal(bank.mask(1), np.ones((3, 1), dtype=bool))

    disk = _disk(30, 30, 15, 12, 6.5)
    ys, xs = np.nonzero(disk)
    c = bank.entry(2)
    assert c.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert c.area == disk.sum()
    np.testing.assert_array_equal(bank.mask(2), disk[ys.min():ys.max() + 1, xs.min():xs.max() + 1])

    np.testing.assert_array_equal(bank.indices_of("barrel"), [0, 2])
    np.testing.assert_array_equal(bank.indices_of("animal"), [1])


def test_file_is_plain_parquet_with_the_declared_schema(tmp_path, items):
    out = tmp_path / "bank.parquet"
    write_bank(items, str(out), builder="test")
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(BANK_SCHEMA)
    assert table.schema.metadata[VERSION_KEY] == b"1"
    assert table.column("height").to_pylist() == [16, 3, 13]
    assert table.column("width").to_pylist() == [41, 1, 13]


def test_mask_is_cached_and_read_only(tmp_path, items):
    out = str(tmp_path / "bank.parquet")
    write_bank(items, out, builder="test")
    bank = ObjectBank.open(out)
    first = bank.mask(2)
    assert bank.mask(2) is first
    with pytest.raises(ValueError):
        first[0, 0] = not first[0, 0]


def test_class_filter_keeps_only_named_classes(tmp_path, items):
    out = str(tmp_path / "bank.parquet")
    write_bank(items, out, builder="test")
    bank = ObjectBank.open(out, classes=["barrel"])
    assert len(bank) == 2
    assert bank.classes == ("barrel",)
    assert [bank.entry(i).object_id for i in range(len(bank))] == ["a", "c"]
    np.testing.assert_array_equal(bank.indices_of("barrel"), [0, 1])
    assert bank.mask(1).shape == (13, 13)  # radius 6.5: 6 rows either side of the centre
    with pytest.raises(KeyError, match=r"'animal' is not in object bank.*available: \['barrel'\]"):
        bank.indices_of("animal")


def test_class_filter_errors(tmp_path, items):
    out = str(tmp_path / "bank.parquet")
    write_bank(items, out, builder="test")
    with pytest.raises(ValueError, match=r"\['unicorn'\] are not in the object bank; available: \['animal'"):
        ObjectBank.open(out, classes=["barrel", "unicorn"])
    with pytest.raises(EmptyBankError, match="class filter is empty"):
        ObjectBank.open(out, classes=[])


def test_index_out_of_range(tmp_path, items):
    out = str(tmp_path / "bank.parquet")
    write_bank(items, out, builder="test")
    bank = ObjectBank.open(out)
    with pytest.raises(IndexError, match="index 3 out of range"):
        bank.entry(3)
    with pytest.raises(IndexError):
        bank.mask(-1)


def test_write_rejects_bad_items(tmp_path):
    mask = np.ones((2, 2), dtype=bool)
    out = str(tmp_path / "bank.parquet")
    with pytest.raises(ValueError, match="duplicate object_id 'x'"):
        write_bank([_item("x", "barrel", mask), _item("x", "barrel", mask)], out, builder="t")
    with pytest.raises(ValueError, match="ade_class 'dog' is not an ADE20K-150"):
        write_bank([_item("x", "dog", mask)], out, builder="t")
    with pytest.raises(ValueError, match="source 'web' is not one of"):
        write_bank([_item("x", "barrel", mask, source="web")], out, builder="t")
    with pytest.raises(ValueError, match="expected a 2-D mask"):
        write_bank([_item("x", "barrel", np.ones((2, 2, 3), dtype=bool))], out, builder="t")
    with pytest.raises(EmptyBankError):
        write_bank([_item("x", "barrel", np.zeros((3, 3), dtype=bool))], out, builder="t")
    assert os.listdir(tmp_path) == []


def test_open_rejects_files_that_are_not_banks(tmp_path, items):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"object_id": ["a"]}), plain)
    with pytest.raises(ValueError, match=f"{plain}: not an object bank: file metadata lacks"):
        ObjectBank.open(str(plain))

    partial = tmp_path / "partial.parquet"
    schema = pa.schema([("object_id", pa.string()), ("class_name", pa.string())],
                       metadata={VERSION_KEY: b"1"})
    pq.write_table(pa.table({"object_id": ["a"], "class_name": ["barrel"]}, schema=schema), partial)
    with pytest.raises(ValueError, match=f"{partial}: not an object bank: column 'ade_class' missing"):
        ObjectBank.open(str(partial))

    good = tmp_path / "bank.parquet"
    write_bank(items, str(good), builder="test")
    table = pq.read_table(good)
    wrong_type = tmp_path / "wrong_type.parquet"
    index = table.schema.get_field_index("area")
    pq.write_table(table.set_column(index, "area", table.column("area").cast(pa.float64())), wrong_type)
    with pytest.raises(ValueError, match="column 'area' has type double, expected int64"):
        ObjectBank.open(str(wrong_type))

    future = tmp_path / "future.parquet"
    pq.write_table(table.replace_schema_metadata({VERSION_KEY: b"99"}), future)
    with pytest.raises(ValueError, match="schema version '99', expected 1"):
        ObjectBank.open(str(future))

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=f"{garbage}: not a readable Parquet file"):
        ObjectBank.open(str(garbage))

    with pytest.raises(FileNotFoundError, match=r"missing\.parquet: no such object bank file"):
        ObjectBank.open(str(tmp_path / "missing.parquet"))


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(BANK_SCHEMA.with_metadata({VERSION_KEY: b"1"}).empty_table(), empty)
    with pytest.raises(EmptyBankError, match="has no objects"):
        ObjectBank.open(str(empty))


@pytest.mark.parametrize("area_says_empty", [True, False])
def test_a_bank_without_a_usable_mask_is_refused_when_opened(tmp_path, items, area_says_empty):
    from cgaug.storage.png import encode_png

    good = tmp_path / "bank.parquet"
    write_bank(items, str(good), builder="test")
    table = pq.read_table(good)
    shapes = zip(table.column("height").to_pylist(), table.column("width").to_pylist(), strict=True)
    empty = pa.array([encode_png(np.zeros((h, w), bool)) for h, w in shapes], pa.binary())
    table = table.set_column(table.schema.get_field_index("mask_png"), BANK_SCHEMA.field("mask_png"), empty)
    if area_says_empty:  # the area column agrees: nothing needs decoding
        table = table.set_column(table.schema.get_field_index("area"), BANK_SCHEMA.field("area"),
                                 pa.array([0] * table.num_rows, pa.int64()))
    bad = tmp_path / "empty_masks.parquet"
    pq.write_table(table, bad)
    with pytest.raises(EmptyBankError, match=r"empty_masks\.parquet: none of the 3 objects has a usable mask"):
        ObjectBank.open(str(bad))
    assert len(ObjectBank.open(str(good))) == 3  # one usable mask is enough


def test_corrupt_mask_blob_names_the_object(tmp_path, items):
    good = tmp_path / "bank.parquet"
    write_bank(items, str(good), builder="test")
    table = pq.read_table(good)
    blobs = table.column("mask_png").to_pylist()
    blobs[1] = b"\x89PNG broken"
    index = table.schema.get_field_index("mask_png")
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(index, BANK_SCHEMA.field("mask_png"), pa.array(blobs, pa.binary())), bad)
    bank = ObjectBank.open(str(bad))
    assert bank.mask(0).shape == (16, 41)
    with pytest.raises(ValueError, match="object 'b': mask_png is not a readable PNG"):
        bank.mask(1)


def test_atomic_write_leaves_no_tmp_and_keeps_old_file_on_failure(tmp_path, items):
    out = tmp_path / "sub" / "bank.parquet"
    write_bank(items, str(out), builder="first")
    assert os.listdir(out.parent) == ["bank.parquet"]

    def failing_items():
        # more than one row group, so part of the new file is already on disk when the source fails
        for k in range(bank_mod._ROW_GROUP_SIZE + 10):
            yield _item(f"x{k}", "barrel", np.ones((1, 1), dtype=bool))
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        write_bank(failing_items(), str(out), builder="second")
    assert os.listdir(out.parent) == ["bank.parquet"]
    assert ObjectBank.open(str(out)).builder == "first"


def test_many_rows_span_row_groups(tmp_path):
    n = bank_mod._ROW_GROUP_SIZE + 3
    masks = [np.eye(1 + k % 4, dtype=bool) for k in range(n)]
    out = tmp_path / "bank.parquet"
    assert write_bank((_item(f"o{k}", "barrel", m) for k, m in enumerate(masks)), str(out), "t") == n
    assert pq.ParquetFile(out).metadata.num_row_groups == 2
    bank = ObjectBank.open(str(out))
    assert len(bank) == n
    for k in (0, bank_mod._ROW_GROUP_SIZE - 1, bank_mod._ROW_GROUP_SIZE, n - 1):
        np.testing.assert_array_equal(bank.mask(k), masks[k])
        assert bank.entry(k).object_id == f"o{k}"


def test_memory_uri_round_trip(items):
    fs = fsspec.filesystem("memory")
    uri = "memory://cgaug-test-bank/bank.parquet"
    try:
        assert write_bank(items, uri, builder="mem") == 3
        assert [p.rsplit("/", 1)[-1] for p in fs.ls("/cgaug-test-bank", detail=False)] == ["bank.parquet"]
        bank = ObjectBank.open(uri, classes=["animal"])
        assert len(bank) == 1
        assert bank.entry(0).box == (103, 202, 104, 205)
        np.testing.assert_array_equal(bank.mask(0), np.ones((3, 1), dtype=bool))
    finally:
        fs.rm("/cgaug-test-bank", recursive=True)


def test_stats_counts_per_class_and_source(tmp_path, items):
    out = str(tmp_path / "bank.parquet")
    extra = _item("e", "dog", np.ones((2, 2), dtype=bool), ade="animal", source="coco")
    write_bank([*items, extra], out, builder="test")
    stats = bank_stats(out)
    assert stats["entries"] == 4
    assert stats["classes"] == {"animal": 1, "barrel": 2, "dog": 1}
    assert stats["ade_classes"] == {"animal": 2, "barrel": 2}
    assert stats["sources"] == {"coco": 1, "folder": 3}
    assert stats["builder"] == "test"


def test_tight_box():
    mask = np.zeros((5, 7), dtype=bool)
    assert bank_mod.tight_box(mask) is None
    mask[1, 2] = mask[3, 5] = True
    assert bank_mod.tight_box(mask) == (2, 1, 6, 4)
