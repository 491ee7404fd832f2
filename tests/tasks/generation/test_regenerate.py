"""Regenerating a stored sample from its row: bit-identical on the CPU, differences are measured."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cgaug.cli import app
from cgaug.storage.fs import open_root
from cgaug.storage.layout import INDEX_NAME
from cgaug.tasks.generation.regenerate import regenerate_sample

PREVIOUS = Path(__file__).parents[2] / "data" / "previous_main"


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """The committed output of the previous main (tiny generator + tiny filter, retries included)."""
    base = tmp_path_factory.mktemp("regen")
    shutil.copytree(PREVIOUS / "DATA", base / "DATA")
    shutil.copytree(PREVIOUS / "OUT", base / "OUT")
    return base


def _rows(out: Path) -> list[dict]:
    return open_root(out).read_parquet(INDEX_NAME, columns=["sample_id", "verdict", "attempt", "image_seed",
                                                             "seed"]).to_pylist()


def test_every_stored_sample_regenerates_bit_identical_on_the_cpu(output):
    rows = _rows(output / "OUT")
    assert any(r["attempt"] > 0 for r in rows) or any(r["verdict"] == "rejected" for r in rows)
    for row in rows:
        result = regenerate_sample(str(output / "OUT"), row["sample_id"], source=str(output / "DATA"),
                                   bank=str(output / "DATA" / "bank.parquet"))
        assert result.composition_identical and result.prompt_identical, row
        assert result.settings_differ == {}
        assert result.identical and result.max_pixel_difference == 0, row


def test_a_changed_pixel_is_measured_not_hidden(output):
    sample = _rows(output / "OUT")[0]["sample_id"]
    result = regenerate_sample(str(output / "OUT"), sample, source=str(output / "DATA"),
                               bank=str(output / "DATA" / "bank.parquet"))
    stored = result.stored.copy()
    stored[0, 0] = (stored[0, 0].astype(int) + 7) % 256
    changed = type(result)(result.sample_id, result.image, stored, True, True)
    assert not changed.identical and changed.max_pixel_difference == 7


def test_cli_reports_bit_identical_and_writes_the_image(output, tmp_path, monkeypatch):
    monkeypatch.chdir(output)  # the manifest records the run's relative source and bank paths
    sample = _rows(output / "OUT")[1]["sample_id"]
    result = CliRunner().invoke(app, ["shards", "regenerate", "OUT", "--sample", sample, "--out",
                                      str(tmp_path / "again.png")])
    assert result.exit_code == 0, result.output
    assert '"bit_identical": true' in result.output and (tmp_path / "again.png").is_file()


def test_an_unknown_sample_is_a_clear_error(output):
    with pytest.raises(KeyError, match="nope"):
        regenerate_sample(str(output / "OUT"), "nope", source=str(output / "DATA"),
                          bank=str(output / "DATA" / "bank.parquet"))
