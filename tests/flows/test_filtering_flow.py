"""The `cgaug` flow with the quality filter on: tiny models for every gate, verdicts, labels, stats, calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cgaug.config import CGAugConfig
from cgaug.flows.generate import generate_dataset_flow
from cgaug.labels import ade_color
from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID
from cgaug.seeds import derive_seed
from cgaug.storage.fs import open_root
from cgaug.storage.png import decode_png
from cgaug.storage.schema import scores_as_dict
from cgaug.storage.shards import verify
from cgaug.tasks.generation.gates import GATES

ALL_GATES = [g.name for g in GATES]


def filtered_config(**filters) -> CGAugConfig:
    return CGAugConfig.model_validate({"run": {"variants": 1, "shard_size": 3, "seed": 5},
                                       "generator": {"model": "tiny"},
                                       "filters": {"mode": "tiny", **filters}})


def run(dataset: Path, out: Path, config: CGAugConfig) -> dict:
    return generate_dataset_flow(source=str(dataset), out=str(out), bank=str(dataset / "bank.parquet"), config=config)


@pytest.fixture(scope="module")
def filtered(dataset, tiny_home, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("filtered")
    return out, run(dataset, out, filtered_config())


def _rows(out: Path) -> list[dict]:
    return [row for shard in sorted((out / "shards").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def test_every_sample_has_a_verdict_scores_and_every_attempt_recorded(filtered):
    out, summary = filtered
    assert verify(open_root(str(out))) == []
    rows = _rows(out)
    assert len(rows) == 6 and set(summary["counts"]) <= {"accepted", "rejected"}
    for row in rows:
        assert row["verdict"] in ("accepted", "rejected")
        assert 1 <= row["attempts"] <= 3 and row["attempt"] == row["attempts"] - 1
        assert sorted(scores_as_dict(row["scores"])) == sorted(ALL_GATES)
        attempts = [g["attempt"] for g in row["gates"]]
        assert attempts == [a for a in range(row["attempts"]) for _ in ALL_GATES]
        assert all(g["threshold"] is not None and g["passed"] == (g["reason"] is None) for g in row["gates"])
        expected_seed = row["seed"] if row["attempt"] == 0 else \
            derive_seed(5, row["sample_id"], row["variant"], row["attempt"])
        assert row["image_seed"] == expected_seed
        last = [g for g in row["gates"] if g["attempt"] == row["attempt"]]
        if row["verdict"] == "accepted":
            assert all(g["passed"] for g in last)
            assert all(all(g["passed"] for g in row["gates"] if g["attempt"] == a) is False
                       for a in range(row["attempt"]))  # every earlier attempt failed some gate
        else:
            assert row["attempts"] == 3
            assert {g["reason"] for g in last if g["reason"]} <= set(row["reasons"])


def test_labels_and_noise_masks_follow_the_policy(filtered):
    out, _ = filtered
    ood_colors = None
    for row in _rows(out):
        label, cond = decode_png(row["label_png"]), decode_png(row["cond_png"])
        ood = decode_png(row["ood_mask_png"], mask=True)
        np.testing.assert_array_equal(label == OOD_TRAIN_ID, ood)
        ood_colors = np.asarray([ade_color(o["ade_class"]) for o in row["objects"]], dtype=np.uint8)
        pasted = (cond[:, :, None, :] == ood_colors[None, None]).all(-1).any(-1)
        if row["verdict"] == "accepted":  # 254 only where SAM confirmed; the rest of the paste is void
            assert (label[pasted & ~ood] == VOID_TRAIN_ID).all()
            assert row["ood_area"] == int(ood.sum())
        else:  # rejected rows keep the pasted label
            np.testing.assert_array_equal(ood, pasted)
        noise = decode_png(row["noise_mask_png"], mask=True)
        assert not (noise & (label >= 19)).any()
    assert ood_colors is not None


def test_shard_stats_and_filter_stats_report_counts_by_reason(filtered):
    from cgaug.cli import app as main_app
    from cgaug.cli.filter import app as filter_app

    out, _ = filtered
    rows = _rows(out)
    result = CliRunner().invoke(main_app, ["shards", "stats", str(out)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["verdicts"] == {v: sum(r["verdict"] == v for r in rows) for v in {r["verdict"] for r in rows}}
    gate_reasons = [r for row in rows if row["verdict"] == "rejected" for r in row["reasons"] if r.endswith("_low")]
    for reason in set(gate_reasons):
        assert stats["reasons"][reason] == gate_reasons.count(reason)
    result = CliRunner().invoke(filter_app, ["stats", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["total"] == 6 and record["accepted"] + record["rejected"] == 6
    assert sum(record["attempts"].values()) == 6
    assert record["gates"]["sam_iou"]["n"] == sum(r["attempts"] for r in rows)


def test_calibrate_on_the_generated_output(filtered, tmp_path):
    from cgaug.cli.filter import app as filter_app

    out, _ = filtered
    result = CliRunner().invoke(filter_app, ["calibrate", str(out), "--target-accept", "0.7",
                                             "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert all(f"{g.threshold_field}:" in result.output for g in GATES)
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == sorted(f"{n}.png" for n in ALL_GATES)


@pytest.mark.slow
def test_a_gate_that_always_rejects_ends_with_nothing_accepted(dataset, tiny_home, tmp_path):
    """End to end through Prefect (the loop itself: tests/tasks/generation/test_filter.py)."""
    out = tmp_path / "out"
    config = filtered_config(max_attempts=2, sam_iou_threshold=1.0, anomaly_gate=False, clip_text_gate=False,
                             clip_object_gate=False, consistency_gate=False)
    config = config.model_copy(update={"run": config.run.model_copy(update={"limit": 3})})
    summary = run(dataset, out, config)
    assert summary["counts"] == {"rejected": 3}
    assert verify(open_root(str(out))) == []
    for row in _rows(out):
        assert row["attempts"] == 2 and [g["attempt"] for g in row["gates"]] == [0, 1]
        assert row["reasons"][0] == "sam_iou_low" and row["image_png"] is not None
