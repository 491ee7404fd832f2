"""Shards, index and manifest: round trips, ordinary readers, tamper detection, idempotent, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from cgaug.storage.fs import Root, open_root
from cgaug.storage.png import encode_png
from cgaug.storage.schema import SCHEMA_VERSION, SHARD_SCHEMA, empty_row, scores_column
from cgaug.storage.shards import (
    INDEX_NAME,
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    iter_samples,
    read_manifest,
    read_sample,
    shard_complete,
    shard_name,
    stats,
    verify,
    write_index,
    write_shard,
)

H, W = 8, 12


def make_arrays(sample_id: str, h: int = H, w: int = W, ood_box: tuple[int, int, int, int] = (2, 3, 5, 7)):
    """Deterministic per-sample arrays: a random image and cond map, a label with 254 on a box."""
    rng = np.random.default_rng(zlib.crc32(sample_id.encode()))
    ood = np.zeros((h, w), dtype=bool)
    y0, x0, y1, x1 = ood_box
    ood[y0:y1, x0:x1] = True
    label = rng.choice(np.array([0, 1, 2, 8, 10, 13, 255], dtype=np.uint8), size=(h, w))
    label[ood] = 254
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "label": label,
        "cond": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "ood_mask": ood,
        "noise_mask": rng.random((h, w)) < 0.2,
    }


def make_row(sample_id: str, shard: int, *, verdict: str = "unfiltered", variant: int = 0,
             source_id: str = "aachen_000000_000019", weather: str | None = "rain", ood_class: str = "dog",
             reasons: tuple[str, ...] = (), blobs: bool | None = None,
             ood_box: tuple[int, int, int, int] = (2, 3, 5, 7)) -> dict:
    """A plausible shard row; skipped rows (and `blobs=False`) carry no blobs."""
    skipped = verdict == "skipped"
    row = empty_row()
    row.update(
        sample_id=sample_id, source_id=source_id, city=source_id.split("_")[0], split="train",
        variant=variant, attempt=0, seed=zlib.crc32(sample_id.encode()), shard=shard,
        verdict=verdict, reasons=list(reasons), detail="; ".join(reasons) or None,
        scores={} if skipped else {"clip": 0.31, "sam_iou": 0.8},
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        generator_model="tiny", steps=2, guidance_scale=7.5, control_scale=1.0, dtype="float32",
        config_fingerprint="f00d",
    )
    if skipped:
        return row
    y0, x0, y1, x1 = ood_box
    row.update(
        prompt=f"a city street in {weather}, a {ood_class} on the road", negative_prompt="blurry",
        prompt_domain=True, weather=weather, time_of_day="night", place="Berlin",
        objects_phrase=f"a {ood_class}",
        objects=[{"class_name": ood_class, "ade_class": "animal" if ood_class == "dog" else ood_class,
                  "object_id": f"obj-{ood_class}", "bank_source_id": "ade/1", "x0": x0, "y0": y0, "x1": x1,
                  "y1": y1, "scale": 0.5, "area": (y1 - y0) * (x1 - x0)}],
        num_objects=1, ood_area=(y1 - y0) * (x1 - x0), height=H, width=W, gen_height=H, gen_width=W,
    )
    if blobs is False:
        return row
    arrays = make_arrays(sample_id, ood_box=ood_box)
    row.update({f"{key}_png": encode_png(value) for key, value in arrays.items()})
    return row


def dataset_rows() -> dict[int, list[dict]]:
    """Two shards: 2 unfiltered, 1 accepted, 1 rejected without images, 2 skipped."""
    return {
        0: [make_row("s000", 0),
            make_row("s001", 0, variant=1, weather="snow", ood_class="box", ood_box=(0, 0, 2, 3)),
            make_row("s002", 0, verdict="skipped", reasons=("no_road",))],
        1: [make_row("s003", 1, source_id="bonn_000001_000002", verdict="accepted"),
            make_row("s004", 1, verdict="rejected", weather="fog", reasons=("low_clip",), blobs=False),
            make_row("s005", 1, verdict="skipped", reasons=("bad_label",))],
    }


def build_dataset(root: Root) -> dict[int, list[dict]]:
    rows = dataset_rows()
    for shard_id, shard_rows in rows.items():
        write_shard(root, shard_id, shard_rows)
    write_index(root, {"config_fingerprint": "f00d", "config": {"variants": 2}})
    return rows


def entries(root: Root, prefix: str) -> list[str]:
    """Every name under `prefix`, hidden temporary files included."""
    directory = root.join(prefix)
    if not root.fs.isdir(directory):
        return []
    return sorted(os.path.basename(e.rstrip("/")) for e in root.fs.ls(directory, detail=False))


# --- writing and reading back ----------------------------------------------------------------------------


def test_round_trip_verifies_and_reads_back_every_array(root):
    rows = build_dataset(root)
    assert verify(root) == []
    for shard_rows in rows.values():
        for row in shard_rows:
            sample = read_sample(root, row["sample_id"])
            assert sample["verdict"] == row["verdict"] and sample["seed"] == row["seed"]
            assert sample["objects"] == row["objects"]
            if row["image_png"] is None:
                assert sample["image"] is None and sample["label"] is None and sample["noise_mask"] is None
                continue
            expected = make_arrays(row["sample_id"], ood_box=(0, 0, 2, 3) if row["sample_id"] == "s001"
                                   else (2, 3, 5, 7))
            for key, value in expected.items():
                assert sample[key].dtype == value.dtype and np.array_equal(sample[key], value), key
    assert "image_png" not in read_sample(root, "s000")


def test_manifest_records_shards_with_hashes_counts_and_extra_keys(root):
    build_dataset(root)
    data = json.loads(root.read_bytes(MANIFEST_NAME))
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["total_rows"] == 6
    assert data["counts"] == {"accepted": 1, "rejected": 1, "skipped": 2, "unfiltered": 2}
    assert [s["name"] for s in data["shards"]] == ["shards/shard-00000.parquet", "shards/shard-00001.parquet"]
    for entry in data["shards"]:
        content = root.read_bytes(entry["name"])
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["bytes"] == len(content)
    assert [s["rows"] for s in data["shards"]] == [3, 3]
    assert data["index"] == {"name": INDEX_NAME, "rows": 6,
                             "sha256": hashlib.sha256(root.read_bytes(INDEX_NAME)).hexdigest()}
    assert data["config_fingerprint"] == "f00d" and data["config"] == {"variants": 2}
    assert datetime.fromisoformat(data["created_at"]).tzinfo is not None
    manifest = read_manifest(root)
    assert manifest.extra == {"config_fingerprint": "f00d", "config": {"variants": 2}}
    assert manifest.shards[0] == ShardInfo(**data["shards"][0])


def test_index_has_no_blobs_is_sorted_and_names_shard_files(root):
    build_dataset(root)
    index = root.read_parquet(INDEX_NAME)
    assert not {"image_png", "label_png"} & set(index.column_names)
    assert index.column("sample_id").to_pylist() == ["s000", "s001", "s002", "s003", "s004", "s005"]
    assert index.column("shard_file").to_pylist() == ["shards/shard-00000.parquet"] * 3 + [
        "shards/shard-00001.parquet"] * 3


def test_shards_keep_small_row_groups(tmp_path):
    root = open_root(tmp_path)
    rows = [make_row(f"r{i:03d}", 0) for i in range(40)]
    write_shard(root, 0, rows)
    with root.open(shard_name(0)) as f:
        assert pq.ParquetFile(f).num_row_groups == 3  # 16 + 16 + 8: readers never load 40 images at once


def test_ordinary_tools_read_shards_and_index(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    pd = pytest.importorskip("pandas")
    build_dataset(open_root(tmp_path))
    shard_glob = f"{tmp_path}/shards/*.parquet"
    assert pq.read_table(tmp_path / "shards" / "shard-00000.parquet").num_rows == 3
    assert pq.ParquetDataset(tmp_path / "shards").read(columns=["sample_id"]).num_rows == 6
    assert len(pd.read_parquet(tmp_path / "index.parquet")) == 6
    frame = pd.read_parquet(tmp_path / "shards" / "shard-00001.parquet", columns=["sample_id", "verdict"])
    assert frame.set_index("sample_id")["verdict"].to_dict() == {
        "s003": "accepted", "s004": "rejected", "s005": "skipped"}
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{shard_glob}')").fetchall() == [(6,)]
    by_verdict = dict(duckdb.sql(f"SELECT verdict, count(*) FROM read_parquet('{tmp_path}/index.parquet') "
                                 "GROUP BY verdict").fetchall())
    assert by_verdict == {"accepted": 1, "rejected": 1, "skipped": 2, "unfiltered": 2}
    classes = duckdb.sql(f"SELECT o.class_name FROM (SELECT unnest(objects) AS o FROM "
                         f"read_parquet('{shard_glob}')) ORDER BY 1").fetchall()
    assert [c for (c,) in classes] == ["box", "dog", "dog", "dog"]


def test_stats_counts_verdicts_reasons_attributes_and_classes(root):
    build_dataset(root)
    result = stats(root)
    assert result["rows"] == 6 and result["shards"] == 2
    assert result["bytes"] == sum(root.size(shard_name(i)) for i in (0, 1))
    assert result["verdicts"] == {"accepted": 1, "rejected": 1, "skipped": 2, "unfiltered": 2}
    assert result["reasons"] == {"bad_label": 1, "low_clip": 1, "no_road": 1}
    assert result["weather"] == {"fog": 1, "rain": 2, "snow": 1}  # generated rows only
    assert result["time_of_day"] == {"night": 4} and result["place"] == {"Berlin": 4}
    assert result["ood_classes"] == {"box": 1, "dog": 3}
    assert result["mean_ood_area"] == pytest.approx((12 + 6 + 12 + 12) / 4)


def test_iter_samples_filters_by_verdict(root):
    build_dataset(root)
    assert [s["sample_id"] for s in iter_samples(root)] == ["s000", "s001", "s002", "s003", "s004", "s005"]
    kept = list(iter_samples(root, verdicts=("unfiltered", "accepted")))
    assert [s["sample_id"] for s in kept] == ["s000", "s001", "s003"]
    assert all(s["image"].shape == (H, W, 3) for s in kept)
    assert [s["sample_id"] for s in iter_samples(root, "skipped")] == ["s002", "s005"]


def test_read_sample_unknown_id_is_a_clear_key_error(root):
    build_dataset(root)
    with pytest.raises(KeyError, match=r"sample 'nope' is not in .*index\.parquet \(6 samples\)"):
        read_sample(root, "nope")


def test_read_manifest_missing_or_corrupt_is_clear(root):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json: no manifest"):
        read_manifest(root)
    root.write_bytes_atomic(MANIFEST_NAME, b"{not json")
    with pytest.raises(ValueError, match=r"manifest\.json: not valid JSON"):
        read_manifest(root)
    root.write_bytes_atomic(MANIFEST_NAME, b'{"schema_version": 1}')
    with pytest.raises(ValueError, match=r"lacks keys \['created_at', 'shards'"):
        read_manifest(root)


# --- bad rows ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.pop("seed"), r"sample 'x1' \(row 1\) has missing columns \['seed'\];"),
    (lambda r: r.update(colour="red"), r"sample 'x1' \(row 1\) has unknown columns \['colour'\];"),
    (lambda r: r.update(shard=3), r"sample 'x1' has shard=3, expected 0"),
    (lambda r: r.update(height="tall"), r"sample 'x1', column 'height': expected int32, found 'tall'"),
    (lambda r: r.update(seed=2**70), r"sample 'x1', column 'seed': expected int64"),
    (lambda r: r.update(sample_id=""), r"has sample_id '', expected a non-empty string"),
])
def test_bad_rows_are_refused_naming_sample_and_column(tmp_path, mutate, message):
    root = open_root(tmp_path)
    row = make_row("x1", 0)
    mutate(row)
    with pytest.raises(ValueError, match=message):
        write_shard(root, 0, [make_row("x0", 0), row])
    assert root.list("shards", ".parquet") == []


def test_duplicate_ids_and_skipped_rows_with_blobs_are_refused(tmp_path):
    root = open_root(tmp_path)
    with pytest.raises(ValueError, match="sample 'x0' occurs twice"):
        write_shard(root, 0, [make_row("x0", 0), make_row("x0", 0)])
    skipped = make_row("x1", 0, verdict="skipped")
    skipped["image_png"] = b"png"
    with pytest.raises(ValueError, match=r"skipped sample 'x1' carries blobs \['image_png'\]"):
        write_shard(root, 0, [skipped])


def test_write_index_refuses_reserved_keys_and_duplicate_ids(tmp_path):
    root = open_root(tmp_path)
    write_shard(root, 0, [make_row("a", 0)])
    with pytest.raises(ValueError, match=r"keys \['shards'\] are reserved"):
        write_index(root, {"shards": []})
    with pytest.raises(ValueError, match="extra_manifest must be JSON-serialisable"):
        write_index(root, {"source": object()})
    write_shard(root, 1, [make_row("a", 1)])
    with pytest.raises(ValueError, match=r"sample ids occur in more than one row: \['a'\]"):
        write_index(root, {})
    assert not root.exists(MANIFEST_NAME)


def test_empty_root_indexes_to_an_empty_dataset(root):
    manifest = write_index(root, {})
    assert manifest.total_rows == 0 and manifest.shards == ()
    assert verify(root) == []


# --- idempotent and atomic writes -------------------------------------------------------------------------


def test_writing_the_same_shard_twice_does_not_rewrite_it(root, monkeypatch):
    rows = dataset_rows()[0]
    first = write_shard(root, 0, rows)
    before = root.fs.info(root.join(shard_name(0)))
    stamp = os.stat(root.join(shard_name(0))).st_mtime_ns if root.is_local else before.get("created")

    def no_write(*args, **kwargs):
        raise AssertionError("a valid shard was rewritten")

    monkeypatch.setattr(Root, "write_parquet_atomic", no_write)
    again = [make_row(r["sample_id"], 0, verdict=r["verdict"]) for r in reversed(rows)]  # same ids, new order
    assert write_shard(root, 0, again) == first
    after = root.fs.info(root.join(shard_name(0)))
    assert after["size"] == before["size"]
    assert (os.stat(root.join(shard_name(0))).st_mtime_ns if root.is_local else after.get("created")) == stamp


def test_existing_valid_shard_with_other_samples_is_an_error(root):
    write_shard(root, 0, [make_row("a", 0)])
    expected = r"holds other samples \(only in the file: \['a'\], only in the new rows: \['b'\]\)"
    with pytest.raises(FileExistsError, match=expected):
        write_shard(root, 0, [make_row("b", 0)])


def test_existing_invalid_shard_is_replaced(root):
    root.write_bytes_atomic(shard_name(0), b"PAR1 this is no parquet footer")
    info = write_shard(root, 0, [make_row("a", 0)])
    assert info.rows == 1
    assert root.read_parquet(shard_name(0)).column("sample_id").to_pylist() == ["a"]


def test_failure_mid_write_leaves_no_shard_and_no_temporary(root, monkeypatch):
    original = pq.ParquetWriter.write_table

    def crash_after_first_row_group(self, table, *args, **kwargs):
        original(self, table.slice(0, 1), *args, **kwargs)  # some bytes do reach the temporary file
        raise OSError("worker killed (injected)")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", crash_after_first_row_group)
    with pytest.raises(OSError, match="injected"):
        write_shard(root, 0, dataset_rows()[0])
    assert entries(root, "shards") == []
    monkeypatch.undo()
    assert not shard_complete(root, 0, ["s000", "s001", "s002"])
    write_shard(root, 0, dataset_rows()[0])  # the retry succeeds
    assert shard_complete(root, 0, ["s000", "s001", "s002"])


def test_shard_complete_requires_exactly_the_expected_ids(root):
    expected = ["s000", "s001", "s002"]
    assert not shard_complete(root, 0, expected)  # missing
    write_shard(root, 0, dataset_rows()[0])
    assert shard_complete(root, 0, list(reversed(expected)))
    assert not shard_complete(root, 0, expected[:2])
    assert not shard_complete(root, 0, [*expected, "s999"])
    root.write_bytes_atomic(shard_name(1), b"garbage")
    assert not shard_complete(root, 1, ["s003"])


def test_shard_complete_rejects_another_schema(root):
    rows = [r | {"scores": scores_column(r["scores"])} for r in dataset_rows()[0]]
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    root.write_parquet_atomic(shard_name(0), table.drop_columns(["noise_mask_png"]))
    assert not shard_complete(root, 0, ["s000", "s001", "s002"])


def test_write_index_removes_the_old_manifest_first(root, monkeypatch):
    build_dataset(root)

    def crash(*args, **kwargs):
        raise OSError("index write failed (injected)")

    monkeypatch.setattr(Root, "write_parquet_atomic", crash)
    with pytest.raises(OSError, match="injected"):
        write_index(root, {})
    assert not root.exists(MANIFEST_NAME)  # a stale manifest never describes a half-rebuilt index


# --- tamper detection --------------------------------------------------------------------------------------


def test_flipped_byte_in_a_shard_is_reported(root):
    build_dataset(root)
    path = root.join(shard_name(1))
    data = bytearray(root.fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    root.fs.pipe_file(path, bytes(data))
    problems = verify(root)
    assert any(p.startswith(root.uri(shard_name(1))) and "sha256" in p and "manifest says" in p
               for p in problems), problems
    assert not any(root.uri(shard_name(0)) in p for p in problems)


def test_deleted_shard_is_reported(root):
    build_dataset(root)
    root.remove(shard_name(0))
    problems = verify(root)
    assert f"{root.uri(shard_name(0))}: listed in manifest.json but missing" in problems
    assert any("index.parquet: sample ids differ" in p or "missing" in p for p in problems)


def test_unlisted_shard_is_reported(root):
    build_dataset(root)
    write_shard(root, 2, [make_row("late", 2)])
    assert verify(root) == [f"{root.uri(shard_name(2))}: shard file is not listed in manifest.json"]


def test_index_out_of_step_with_shards_is_reported(root):
    build_dataset(root)
    index = root.read_parquet(INDEX_NAME)
    keep = pa.array([s != "s003" for s in index.column("sample_id").to_pylist()])
    root.write_parquet_atomic(INDEX_NAME, index.filter(keep))
    manifest = json.loads(root.read_bytes(MANIFEST_NAME))  # keep the manifest consistent with the new index
    manifest["index"].update(rows=5, sha256=root.sha256(INDEX_NAME))
    root.write_bytes_atomic(MANIFEST_NAME, json.dumps(manifest).encode())
    problems = verify(root)
    assert f"{root.uri(INDEX_NAME)}: 5 rows, the shards hold 6" in problems
    assert any("only in the index: [], only in shards: ['s003']" in p for p in problems), problems


def test_missing_manifest_is_the_one_problem(root):
    build_dataset(root)
    root.remove(MANIFEST_NAME)
    assert len(verify(root)) == 1 and "no manifest" in verify(root)[0]


def test_shard_with_another_schema_is_reported(root):
    build_dataset(root)
    table = root.read_parquet(shard_name(0))
    position = table.schema.get_field_index("attempt")
    table = table.set_column(position, "attempt", table.column("attempt").cast(pa.int64()))
    root.write_parquet_atomic(shard_name(0), table)
    problems = verify(root)
    assert f"{root.uri(shard_name(0))}: column 'attempt' is int64, expected int32" in problems
    assert any("sha256" in p for p in problems)


def test_bad_blobs_are_reported_by_sample_and_column(root):
    wrong_size = make_row("wrong", 0)
    wrong_size["label_png"] = encode_png(np.zeros((H + 1, W), dtype=np.uint8))
    broken = make_row("broken", 0)
    broken["cond_png"] = b"\x89PNG\r\n\x1a\n but then garbage"
    missing = make_row("missing", 0)
    missing["ood_mask_png"] = None
    write_shard(root, 0, [wrong_size, broken, missing, make_row("fine", 0)])
    write_index(root, {})
    problems = verify(root)
    prefix = f"{root.uri(shard_name(0))}: sample"
    assert f"{prefix} 'wrong': label_png decodes to uint8 (9, 12), expected uint8 (8, 12) (from the height " \
           "and width columns)" in problems
    assert any(p.startswith(f"{prefix} 'broken': cond_png does not decode as PNG") for p in problems)
    assert f"{prefix} 'missing': verdict 'unfiltered' but ood_mask_png is null" in problems
    assert len(problems) == 3
    assert verify(root, decode_blobs=False) == []


# --- CLI ---------------------------------------------------------------------------------------------------


def shards_cli():
    """The `cgaug shards` app, imported late: the cgaug.cli package pulls every sub-command in."""
    from cgaug.cli.shards import app

    return app


def test_cli_verify_stats_and_show(root, tmp_path):
    build_dataset(root)
    runner = CliRunner()
    out = root.uri()
    result = runner.invoke(shards_cli(), ["verify", out])
    assert result.exit_code == 0 and result.output.strip() == "ok: 6 rows in 2 shards"
    result = runner.invoke(shards_cli(), ["stats", out])
    assert result.exit_code == 0 and json.loads(result.output)["verdicts"]["skipped"] == 2
    picture = tmp_path / "preview" / "s000.png"
    result = runner.invoke(shards_cli(), ["show", out, "--sample", "s000", "--out", str(picture)])
    assert result.exit_code == 0, result.output
    with Image.open(picture) as image:
        assert image.width == 3 * W and image.height > H
        panels = np.asarray(image.convert("RGB"))[:H]
    assert np.array_equal(panels[:, :W], make_arrays("s000")["image"])
    result = runner.invoke(shards_cli(), ["show", out, "--sample", "nope", "--out", str(picture)])
    assert result.exit_code == 1 and "sample 'nope' is not in" in result.output


def test_cli_verify_fails_with_problems(root):
    build_dataset(root)
    root.remove(shard_name(1))
    result = CliRunner().invoke(shards_cli(), ["verify", root.uri(), "--no-decode"])
    assert result.exit_code == 1
    assert f"{root.uri(shard_name(1))}: listed in manifest.json but missing" in result.output


def test_cli_on_a_missing_root_fails_clearly_and_creates_nothing(tmp_path):
    result = CliRunner().invoke(shards_cli(), ["stats", str(tmp_path / "typo")])
    assert result.exit_code == 1 and "no manifest" in result.output
    assert not (tmp_path / "typo").exists()


def test_storage_modules_never_import_heavy_dependencies():
    code = ("import sys, cgaug.storage.shards, cgaug.storage.export, cgaug.tasks.reporting.previews; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- completeness against the plan -------------------------------------------------------------------------


def write_plan_of(root: Root, shards: dict[int, list[str]]) -> None:
    from cgaug.records import SampleSpec, SourceRecord
    from cgaug.storage.plan import PLAN_FILE, PlanEntry, plan_to_table

    plan = [PlanEntry(SampleSpec(sample_id, "aachen_000000_000019", 0, 0, 1, shard),
                      SourceRecord("aachen_000000_000019", "aachen", "train", "a.png", "a_labelIds.png"))
            for shard, ids in shards.items() for sample_id in ids]
    root.write_parquet_atomic(PLAN_FILE, plan_to_table(plan))


def test_a_dataset_with_planned_samples_missing_is_incomplete(root):
    write_plan_of(root, {0: ["s000", "s001", "s002"], 1: ["s003", "s004", "s005"], 2: ["s006", "s007"],
                         3: ["s008"]})
    build_dataset(root)
    manifest = read_manifest(root)
    assert manifest.complete is False
    assert manifest.plan == {"samples": 9, "missing": 3, "missing_shards": [2, 3]}
    assert json.loads(root.read_bytes(MANIFEST_NAME))["complete"] is False
    problems = verify(root, decode_blobs=False)
    assert problems == [f"incomplete: 3 of 9 planned samples missing (shards shard-00002, shard-00003) "
                        f"in {root.uri()}"]


def test_a_dataset_with_every_planned_sample_is_complete(root):
    write_plan_of(root, {0: ["s000", "s001", "s002"], 1: ["s003", "s004", "s005"]})
    build_dataset(root)
    manifest = read_manifest(root)
    assert manifest.complete is True and manifest.plan == {"samples": 6, "missing": 0, "missing_shards": []}
    assert verify(root) == []
    assert Manifest.from_dict(manifest.to_dict(), "m").to_dict() == manifest.to_dict()


def test_a_manifest_without_completeness_still_reads(root):
    build_dataset(root)  # no plan: nothing to compare with, nothing recorded
    data = json.loads(root.read_bytes(MANIFEST_NAME))
    assert "complete" not in data and read_manifest(root).complete is None and verify(root) == []


def test_a_skipped_or_rejected_row_needs_a_reason(root):
    write_shard(root, 0, [make_row("s000", 0), make_row("s001", 0, verdict="skipped")])
    write_index(root)
    assert verify(root, decode_blobs=False) == [
        f"{root.uri(shard_name(0))}: sample 's001' is skipped without a reason"]
