"""The command line end to end, as a user types it (fixtures -> bank -> generate -> inspect -> export)."""

from __future__ import annotations

import json

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
