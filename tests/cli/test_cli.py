"""The command line end to end, as a user types it (fixtures -> bank -> generate -> inspect -> export)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from cgaug.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.e2e
def test_generate_inspect_export(tmp_path, prefect_server, tiny_home):
    data, out, export = tmp_path / "data", tmp_path / "out", tmp_path / "export"
    invoke("fixtures", str(data), "--images", "6")
    invoke("bank", "build", str(data / "bank_masks"), "--from", "folder", "--out", str(data / "bank.parquet"))
    invoke("generate", "--source", str(data), "--out", str(out), "--generator", "tiny", "--variants", "2",
           "--shard-size", "4", "--no-progress")
    assert len(list((out / "shards").glob("shard-*.parquet"))) == 3
    assert pq.read_table(out / "index.parquet").num_rows == 12
    assert "ok" in invoke("shards", "verify", str(out)).output
    stats = json.loads(invoke("shards", "stats", str(out)).output)
    assert stats["rows"] == 12

    sample = pq.read_table(out / "index.parquet", columns=["sample_id"])["sample_id"][0].as_py()
    invoke("shards", "show", str(out), "--sample", sample, "--out", str(tmp_path / "s.png"))
    assert Image.open(tmp_path / "s.png").width == 3 * 512

    invoke("export", "cityscapes", str(out), str(export))
    assert len(list((export / "gtFine").rglob("*_gtFine_labelTrainIds.png"))) == 12

    # tampering is caught with a non-zero exit
    shard = sorted((out / "shards").glob("*.parquet"))[0]
    data_bytes = bytearray(shard.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF
    shard.write_bytes(bytes(data_bytes))
    result = runner.invoke(app, ["shards", "verify", str(out)])
    assert result.exit_code == 1 and shard.name in result.output


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  sede: 3\n")
    result = runner.invoke(app, ["generate", "--source", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--config", str(bad)])
    assert result.exit_code == 2 and "sede" in result.output


def test_every_command_has_help():
    for args in ([], ["generate"], ["demo"], ["fixtures"], ["bank"], ["bank", "build"], ["shards"],
                 ["shards", "verify"], ["export", "cityscapes"], ["models", "tiny"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, args


def _refused(args: list[str], out, *expected: str) -> str:
    """`generate` exits 2 with one paragraph, no traceback, and creates nothing."""
    result = runner.invoke(app, ["generate", "--out", str(out), "--generator", "tiny", "--no-progress", *args])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert text.startswith("error: ") and "Traceback" not in text
    for part in expected:
        assert part in text, text
    return text


def test_a_missing_bank_exits_2_before_planning(dataset, tmp_path):
    out = tmp_path / "out"
    _refused(["--source", str(dataset), "--bank", str(tmp_path / "nope.parquet")], out,
             f"{tmp_path / 'nope.parquet'}: no such object bank file", "cgaug bank build")
    assert not out.exists()


def test_a_missing_source_exits_2_and_leaves_no_output_folder(tmp_path):
    out = tmp_path / "out"
    _refused(["--source", str(tmp_path / "nosuch")], out,
             f"the source cannot be used: {tmp_path / 'nosuch'}: no Cityscapes split 'train'",
             "Point --source at a Cityscapes-format root")
    assert not out.exists()


def test_a_bank_that_is_not_parquet_or_has_no_usable_mask_is_refused(dataset, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cgaug.storage.bank import BANK_SCHEMA
    from cgaug.storage.png import encode_png

    text_file = tmp_path / "bank.parquet"
    text_file.write_text("name,mask\n")
    _refused(["--source", str(dataset), "--bank", str(text_file)], tmp_path / "out",
             f"{text_file}: not a readable Parquet file")
    table = pq.read_table(dataset / "bank.parquet")
    blank = pa.array([encode_png(np.zeros((h, w), bool)) for h, w in zip(
        table.column("height").to_pylist(), table.column("width").to_pylist(), strict=True)], pa.binary())
    empty = tmp_path / "empty_masks.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("mask_png"), BANK_SCHEMA.field("mask_png"),
                                    blank), empty)
    _refused(["--source", str(dataset), "--bank", str(empty)], tmp_path / "out",
             f"{empty}: none of the", "has a usable mask")


def test_an_out_folder_that_is_not_a_cgaug_output_needs_force(dataset, tmp_path):
    from cgaug.config import CGAugConfig
    from cgaug.tasks.generation.run import check_inputs

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("\\begin{document}")
    _refused(["--source", str(dataset)], mine, f"--out {mine} is a non-empty folder that is not a cgaug output",
             "--force")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    config = CGAugConfig.model_validate({"generator": {"model": "tiny"}})
    check_inputs(str(dataset), str(mine), str(dataset / "bank.parquet"), config, force=True)  # accepted
    (mine / "config.json").write_text("{}")
    check_inputs(str(dataset), str(mine), str(dataset / "bank.parquet"), config)  # a cgaug output resumes


def test_a_model_that_is_not_there_exits_2(dataset, tmp_path):
    _refused(["--source", str(dataset), "--generator", str(tmp_path / "no-model")], tmp_path / "out",
             "generator.model", "was not found")


def test_a_filter_model_that_is_not_there_exits_2_before_the_first_shard(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _refused(["--source", str(dataset), "--filters", "default"], tmp_path / "out",
             "filters.sam_model 'facebook/sam-vit-huge' was not found", "not in the Hugging Face cache")


def test_filter_models_are_checked_only_for_the_gates_that_load_them(dataset, tmp_path):
    from cgaug.config import CGAugConfig
    from cgaug.tasks.generation.run import InputError, check_inputs

    bank, missing = str(dataset / "bank.parquet"), str(tmp_path / "nowhere" / "model.pt")

    def config(**filters):
        return CGAugConfig.model_validate({"generator": {"model": "tiny"}, "filters": {"mode": "tiny", **filters}})

    with pytest.raises(InputError, match=r"filters\.segmenter_model '.*model\.pt' was not found: no such file"):
        check_inputs(str(dataset), str(tmp_path / "a"), bank, config(segmenter_model=missing))
    with pytest.raises(InputError, match=r"filters\.anomaly_model '.*model\.pt' was not found: no such file"):
        check_inputs(str(dataset), str(tmp_path / "b"), bank, config(anomaly_model=missing))
    # no gate needs the segmenter: its reference is not looked at
    check_inputs(str(dataset), str(tmp_path / "c"), bank,
                 config(segmenter_model=missing, consistency_gate=False, anomaly_gate=False))
    # an existing checkpoint file (e.g. `cgaug train`'s model.pt) passes; the loader checks its format
    (tmp_path / "model.pt").write_bytes(b"checkpoint")
    check_inputs(str(dataset), str(tmp_path / "d"), bank, config(segmenter_model=str(tmp_path / "model.pt")))


def test_generate_offers_the_robustness_options():
    text = " ".join(runner.invoke(app, ["generate", "--help"]).output.split())
    assert "--claim-ttl" in text and "--force" in text and "--debug" in text
