"""`cgaug train` end to end: fixture dataset -> tiny-generated shards -> two stages on CPU -> resume."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cgaug.cli import app

runner = CliRunner()


def _flat(text: str) -> str:
    """Typer's error box wraps lines at the terminal width: join its words again."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.slow
@pytest.mark.e2e
def test_generate_then_train_tiny_and_resume(dataset, tmp_path, prefect_server, tiny_home):
    shards, run = tmp_path / "shards", tmp_path / "run"
    result = runner.invoke(app, ["generate", "--source", str(dataset), "--out", str(shards), "--generator", "tiny",
                                 "--variants", "1", "--shard-size", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    config = tmp_path / "train.yaml"
    config.write_text("data:\n  verdicts: [unfiltered]\n  anomaly_source: generated\n  crop_size: [64, 128]\n")
    result = runner.invoke(app, ["train", "--source", str(dataset), "--shards", str(shards), "--out", str(run),
                                 "--preset", "tiny", "--config", str(config), "--max-steps", "2",
                                 "--validation", f"shards={shards}@train"])
    assert result.exit_code == 0, result.output
    summary, _ = json.JSONDecoder().raw_decode(result.output[result.output.index('{\n  "out"'):])
    assert summary["epochs"] == 2 and summary["model"].endswith("model.pt")
    assert (run / "checkpoints/last.pt").is_file() and (run / "loss_curves.png").is_file()
    history = json.loads((run / "metrics.json").read_text())
    assert [r["stage"] for r in history] == [1, 2] and all("val/cgaug_shards/ap" in r for r in history)
    assert (run / "checkpoints/best.pt").is_file()
    from prefect.artifacts import Artifact

    summary_artifact = Artifact.get("train-summary")
    assert summary_artifact is not None and "data:image/png;base64," in summary_artifact.data
    assert Artifact.get("train-metrics") is not None
    again = runner.invoke(app, ["train", "--resume", str(run)])  # a finished run resumes to the same end
    assert again.exit_code == 0, again.output
    import torch

    from cgaug.models.segmenters import load_segmenter  # what `cgaug eval --checkpoint RUN/model.pt` loads

    logits, score = load_segmenter(run / "model.pt").predict(torch.rand(1, 3, 64, 128))
    assert logits.shape == (1, 19, 64, 128) and score.shape == (1, 64, 128)

def test_missing_shards_and_bad_inputs_are_clear_errors(dataset, tmp_path):
    result = runner.invoke(app, ["train", "--source", str(dataset), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "needs --shards" in _flat(result.output)
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing"), "--preset", "tiny"])
    assert result.exit_code == 2 and "takes everything from RUN_DIR" in _flat(result.output)
    result = runner.invoke(app, ["train", "--source", str(dataset), "--shards", str(tmp_path), "--out",
                                 str(tmp_path / "run"), "--preset", "huge"])
    assert result.exit_code == 2 and "unknown training preset 'huge'" in result.output
