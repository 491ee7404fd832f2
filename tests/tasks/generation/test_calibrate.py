"""Calibration: thresholds for a target acceptance, on score sets whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from cgaug.cli.filter import app
from cgaug.storage.fs import open_root
from cgaug.tasks.generation.calibrate import attempt_scores, calibrate, pass_matrix, threshold_for_rate

GATES_TYPE = pa.list_(pa.struct([("attempt", pa.int32()), ("name", pa.string()), ("score", pa.float64()),
                                 ("threshold", pa.float64()), ("passed", pa.bool_()), ("reason", pa.string())]))


def test_threshold_for_a_rate_by_hand():
    values = np.arange(1.0, 11.0)  # 1..10
    assert threshold_for_rate(values, 0.7, strict=False) == 4.0  # 4..10 pass: 7 of 10
    strict = threshold_for_rate(values, 0.7, strict=True)
    assert 3.0 < strict < 4.0 and (values > strict).sum() == 7
    assert threshold_for_rate(values, 1.0, strict=False) == 1.0
    assert (values >= threshold_for_rate(values, 0.0, strict=False)).sum() == 0
    assert (values > threshold_for_rate(values, 0.0, strict=True)).sum() == 0


def test_one_gate_joint_equals_alone():
    values = np.linspace(0, 1, 101)[:, None]
    result = calibrate(["sam_iou"], values, 0.7)
    [gate] = result.gates
    assert gate.joint == gate.alone and result.per_gate_rate == pytest.approx(0.7)
    assert result.joint_pass_rate == pytest.approx(71 / 101)  # ties included: 0.30 .. 1.00 with a strict gate


def test_identical_gates_need_no_extra_slack_but_independent_ones_do():
    rng = np.random.default_rng(0)
    a = rng.random(2000)
    same = calibrate(["anomaly_mean", "consistency_miou"], np.column_stack([a, a]), 0.5)
    assert same.per_gate_rate == pytest.approx(0.5) and same.joint_pass_rate == pytest.approx(0.5, abs=1e-3)
    independent = np.column_stack([a, rng.random(2000)])
    result = calibrate(["anomaly_mean", "consistency_miou"], independent, 0.5)
    assert result.per_gate_rate == pytest.approx(np.sqrt(0.5), abs=0.02)  # two independent gates: r^2 = 0.5
    measured = pass_matrix(independent, ["anomaly_mean", "consistency_miou"],
                           [g.joint for g in result.gates]).all(axis=1).mean()
    assert measured == pytest.approx(result.joint_pass_rate) and measured >= 0.5
    assert result.gates[0].joint < result.gates[0].alone  # each gate must be more lenient than alone


def test_attempt_scores_one_row_per_generation():
    table = pa.table({
        "sample_id": ["a", "b"],
        "gates": pa.array([
            [{"attempt": 0, "name": "sam_iou", "score": 0.5, "threshold": 0.7, "passed": False, "reason": "x"},
             {"attempt": 0, "name": "clip_image_text", "score": 0.3, "threshold": 0.2, "passed": True, "reason": None},
             {"attempt": 1, "name": "sam_iou", "score": None, "threshold": 0.7, "passed": False, "reason": "x"},
             {"attempt": 1, "name": "clip_image_text", "score": 0.1, "threshold": 0.2, "passed": False,
              "reason": "y"}],
            [{"attempt": 0, "name": "clip_image_text", "score": 0.4, "threshold": 0.2, "passed": True,
              "reason": None}],  # no objects: no sam_iou record
        ], type=GATES_TYPE)})
    names, matrix = attempt_scores(table)
    assert names == ["sam_iou", "clip_image_text"]
    np.testing.assert_array_equal(matrix, [[0.5, 0.3], [-np.inf, 0.1], [np.inf, 0.4]])
    with pytest.raises(ValueError, match="no gate scores"):
        attempt_scores(pa.table({"sample_id": ["a"], "gates": pa.array([[]], type=GATES_TYPE)}))


def _output(tmp_path, rng_seed: int = 0):
    """A minimal output root: index.parquet with gate records, config.json with the run's thresholds."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for i in range(40):
        records = []
        for attempt in range(2):
            for name in ("sam_iou", "clip_image_text"):
                records.append({"attempt": attempt, "name": name, "score": float(rng.random()), "threshold": 0.5,
                                "passed": True, "reason": None})
        rows.append({"sample_id": f"s{i}", "gates": records})
    out = tmp_path / "out"
    root = open_root(str(out))
    root.write_parquet_atomic("index.parquet", pa.Table.from_pylist(rows, schema=pa.schema(
        [("sample_id", pa.string()), ("gates", GATES_TYPE)])))
    config = {"config": {"filters": {"sam_iou_threshold": 0.5, "clip_text_threshold": None, "max_attempts": 3}}}
    root.write_bytes_atomic("config.json", json.dumps(config).encode())
    return out


def test_cli_prints_thresholds_and_writes_png_plots(tmp_path):
    out = _output(tmp_path)
    result = CliRunner().invoke(app, ["calibrate", str(out), "--target-accept", "0.7", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["generations"] == 80 and data["max_attempts"] == 3
    assert data["sample_acceptance"] == pytest.approx(1 - 0.3**3)
    sam = data["gates"][0]
    assert sam["name"] == "sam_iou" and sam["current"] == 0.5 and 0.3 < sam["current_pass_rate"] < 0.7
    assert data["joint_pass_rate"] >= 0.7
    for path in data["plots"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert sorted(p.name for p in (out / "calibration").iterdir()) == ["clip_image_text.png", "sam_iou.png"]
    table = CliRunner().invoke(app, ["calibrate", str(out), "--plots", str(tmp_path / "plots")])
    assert table.exit_code == 0 and "sam_iou_threshold:" in table.output and "clip_text_threshold:" in table.output
    assert (tmp_path / "plots" / "sam_iou.png").is_file()


def test_cli_fails_clearly_without_index_or_scores(tmp_path):
    missing = CliRunner().invoke(app, ["calibrate", str(tmp_path)])
    assert missing.exit_code == 1 and "no index" in missing.output
    root = open_root(str(tmp_path / "unfiltered"))
    root.write_parquet_atomic("index.parquet", pa.table({"sample_id": ["a"], "gates": pa.array([[]], GATES_TYPE)}))
    empty = CliRunner().invoke(app, ["calibrate", str(tmp_path / "unfiltered")])
    assert empty.exit_code == 1 and "--filters tiny|default" in empty.output
