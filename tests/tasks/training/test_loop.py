"""The two-stage loop on fake shards: overfitting a fixed batch, checkpoints, exact resume, run-dir errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from cgaug.config import load_train_config  # noqa: E402
from cgaug.models.segmenters.training import build_train_model  # noqa: E402
from cgaug.tasks.training.dataset import PairDataset  # noqa: E402
from cgaug.tasks.training.loop import RunDirError, StepRunner, loss_generator, train  # noqa: E402
from tests.train_helpers import fake_shards  # noqa: E402


@pytest.fixture(scope="module")
def shards(dataset, tmp_path_factory):
    return fake_shards(dataset, tmp_path_factory)


def tiny(**run):
    return load_train_config(preset="tiny", overrides={
        "data": {"anomaly_source": "generated", "crop_size": (64, 128)},
        "run": {"max_steps_per_epoch": 2, **run}})


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_loss_decreases_on_a_fixed_batch(dataset, shards):
    cfg = tiny().model_copy(update={"stage2": tiny().stage2.model_copy(update={"lr": 1e-2})})
    ds = PairDataset(str(dataset), str(shards), cfg.data, cfg.run.seed)
    batch = torch.utils.data.default_collate(list(ds)[:2])
    model = build_train_model(cfg.model)
    runner = StepRunner(model, cfg, 2, torch.device("cpu"), steps_per_epoch=1)
    losses = [runner.step(batch, loss_generator(0, 0, 0))["loss"] for _ in range(12)]
    assert losses[-1] < 0.8 * losses[0]


def test_resume_from_the_stage_1_checkpoint_reproduces_the_next_epoch(dataset, shards, tmp_path):
    whole = train(str(tmp_path / "a"), cfg=tiny(), source=str(dataset), shards=str(shards))
    assert whole["finished"] and [r["stage"] for r in whole["history"]] == [1, 2]
    first = train(str(tmp_path / "b"), cfg=tiny(), source=str(dataset), shards=str(shards), stop_after_epoch=0)
    assert not first["finished"] and (tmp_path / "b/checkpoints/last.pt").is_file()
    resumed = train(str(tmp_path / "b"), resume=True)
    assert resumed["finished"] and resumed["history"][0] == first["history"][0]
    for key in ("loss", "unc", "ce", "ce_sel", "selection_rate"):
        assert resumed["history"][1][key] == whole["history"][1][key], key
    run = tmp_path / "a"
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"epoch-0000.pt", "epoch-0001.pt", "last.pt"}
    assert len(json.loads((run / "metrics.json").read_text())) == 2 and (run / "model.pt").is_file()
    assert not list(run.rglob(".*.tmp-*"))  # atomic writes leave no temporary file


def test_stage_1_moves_only_w(dataset, shards, tmp_path):
    cfg = tiny()
    before = build_train_model(cfg.model).state_dict()
    train(str(tmp_path / "run"), cfg=cfg, source=str(dataset), shards=str(shards), stop_after_epoch=0)
    after = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"uncertainty.weight", "uncertainty.bias"}


def test_run_directory_errors_name_the_file(dataset, shards, tmp_path):
    with pytest.raises(RunDirError, match="not a cgaug training run"):
        train(str(tmp_path / "empty"), resume=True)
    train(str(tmp_path / "run"), cfg=tiny(), source=str(dataset), shards=str(shards), stop_after_epoch=0)
    with pytest.raises(RunDirError, match="already holds a run"):
        train(str(tmp_path / "run"), cfg=tiny(), source=str(dataset), shards=str(shards))
