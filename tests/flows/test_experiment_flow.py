"""`cgaug experiment mini` end to end on a reduced protocol: the table equals a recomputation from the
saved predictions, read back through the project's own shard reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cgaug.flows.experiment import experiment_flow, prediction_path
from cgaug.tasks.evaluation.metrics import ConfusionMatrix, anomaly_metrics
from cgaug.tasks.experiment.protocol import METHODS, MiniProtocol
from cgaug.tasks.training.dataset import ShardEvalDataset

pytestmark = pytest.mark.slow

REDUCED = MiniProtocol(seeds=[0, 1], train_scenes=12, test_scenes=6, height=64, width=128, batch_size=4,
                       closed_epochs=2, stage1_epochs=1, stage2_epochs=1, test_classes=3, masks_per_class=2)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, prefect_server):
    out = tmp_path_factory.mktemp("experiment")
    result = experiment_flow(out=str(out), protocol=REDUCED)
    return out, result


def _frames(out, name):
    """Scores' ground truth read independently of the experiment's own loader."""
    dataset = ShardEvalDataset(str(out / "painted" / name), split="test")
    items = [dataset.read(sample) for sample in dataset.samples()]
    return ([item.sample_id for item in items], np.stack([item.ood for item in items]),
            np.stack([item.train_ids for item in items]))


def test_the_table_equals_a_recomputation_from_the_saved_predictions(experiment):
    out, _ = experiment
    document = json.loads((out / "results.json").read_text())
    for name in ("shifted", "clear"):
        ids, ood, train_ids = _frames(out, name)
        assert (ood == 1).any()
        for method in METHODS:
            aps = []
            for seed in REDUCED.seeds:
                saved = np.load(prediction_path(out, method, seed, name))
                assert list(saved["sample_ids"]) == ids
                recorded = document["per_seed"][method][str(seed)][name]
                first = anomaly_metrics(saved["scores"], ood, "first")
                closest = anomaly_metrics(saved["scores"], ood, "closest")
                confusion = ConfusionMatrix(19)
                confusion.update(saved["predictions"], train_ids)
                assert recorded["ap"] == pytest.approx(first["ap"], rel=1e-12)
                assert recorded["auroc"] == pytest.approx(first["auroc"], rel=1e-12)
                assert recorded["fpr95_first"] == pytest.approx(first["fpr95"], rel=1e-12)
                assert recorded["fpr95_closest"] == pytest.approx(closest["fpr95"], rel=1e-12)
                assert recorded["miou"] == pytest.approx(confusion.compute()["miou"], rel=1e-12)
                aps.append(first["ap"])
            summary = document["summary"][method][name]["ap"]
            assert summary["mean"] == pytest.approx(np.mean(aps))
            assert summary["std"] == pytest.approx(np.std(aps, ddof=1))


def test_the_outputs_for_the_readme_are_written(experiment):
    out, result = experiment
    text = (out / "results.md").read_text()
    for method in METHODS:
        assert f"| {method}: " in text
    assert "**Claim**" in text and set(result["claim"]["checks"]) >= {"ap", "fpr95_first", "miou_clear"}
    assert (out / "figure.png").stat().st_size > 1000
    assert json.loads((out / "PROTOCOL.json").read_text())["seeds"] == [0, 1]


def test_methods_differ_and_seeds_differ(experiment):
    out, _ = experiment
    load = lambda method, seed: np.load(prediction_path(out, method, seed, "shifted"))["scores"]  # noqa: E731
    assert not np.array_equal(load("A", 0), load("C", 0))  # C's u is not A's energy
    assert not np.array_equal(load("B", 0), load("C", 0))  # the generated images changed training
    assert not np.array_equal(load("A", 0), load("A", 1))  # the seed reaches training


def test_a_second_run_reuses_everything(experiment):
    out, first = experiment
    stamps = {p: p.stat().st_mtime_ns for p in (out / "predictions").glob("*.npz")}
    again = experiment_flow(out=str(out), protocol=REDUCED)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["claim"] == first["claim"]
