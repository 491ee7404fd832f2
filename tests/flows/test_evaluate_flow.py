"""`cgaug-eval` end to end on tiny benchmark-layout datasets with the tiny segmenter: flow, artifacts and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cgaug.cli.eval import eval_command
from cgaug.config import EvalOptions
from cgaug.flows.evaluate import artifact_key, dataset_names, evaluate_flow

pytest.importorskip("segmentation_models_pytorch")


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory) -> dict[str, Path]:
    """SMIYC RoadAnomaly21 (3 validation frames + 1 unlabelled test frame) and MUAD (2 frames)."""
    root = tmp_path_factory.mktemp("benchmarks")
    rng = np.random.default_rng(0)
    ra21 = root / "dataset_AnomalyTrack"
    for i in range(3):
        label = np.zeros((48, 64), np.uint8)
        label[16:32, 20:44] = 1
        label[:4] = 255
        save(ra21 / "images" / f"validation000{i}.jpg", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        save(ra21 / "labels_masks" / f"validation000{i}_labels_semantic.png", label)
    save(ra21 / "images" / "airplane0000.jpg", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    muad = root / "test_OOD"
    for i in range(2):
        label = rng.integers(0, 19, (40, 80)).astype(np.uint8)
        label[10:20, 30:50] = 19 + i
        label[0] = 255
        save(muad / "leftImg8bit" / f"{i:06d}_leftImg8bit.png", rng.integers(0, 256, (40, 80, 3), dtype=np.uint8))
        save(muad / "leftLabel" / f"{i:06d}_leftLabel.png", label)
    return {"smiyc_ra21": ra21, "muad": muad}


def check_report(out: Path, names: list[str]) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["datasets"]] == names
    assert pq.read_table(out / "results.parquet").num_rows == len(names)
    for name in names:
        for suffix in ("_roc.png", "_pr.png", ".parquet"):
            assert (out / "curves" / f"{name}{suffix}").is_file()
        with Image.open(out / "grids" / f"{name}.png") as grid:
            grid.load()
        assert (out / "datasets" / f"{name}.json").is_file()
    return results


def test_flow_writes_the_report_and_artifacts(benchmarks, tmp_path):
    from prefect.artifacts import Artifact

    out = tmp_path / "report"
    specs = [f"smiyc_ra21={benchmarks['smiyc_ra21']}", f"muad={benchmarks['muad']}"]
    summary = evaluate_flow(checkpoint="tiny", datasets=specs, out=str(out), options=EvalOptions(examples=2))
    results = check_report(out, ["smiyc_ra21", "muad"])
    ra21, muad = results["datasets"]
    assert ra21["images"] == 3 and ra21["positives"] == 3 * 16 * 24 and ra21["miou"] is None
    assert muad["images"] == 2 and muad["positives"] == 2 * 10 * 20 and muad["miou"] is not None
    assert all(0.0 <= r[k] <= 1.0 for r in (ra21, muad) for k in ("auroc", "ap", "fpr95"))
    assert summary["datasets"] == results["datasets"]
    table = Artifact.get(artifact_key("smiyc_ra21"))
    assert table is not None and table.type == "table" and "auroc" in str(table.data)
    markdown = Artifact.get("eval-summary")
    assert markdown is not None and "| muad | 2 |" in str(markdown.data)


def test_names_and_keys():
    assert dataset_names([("muad", "a"), ("muad", "b"), ("cityscapes", "c")]) == ["muad", "muad-2", "cityscapes"]
    assert artifact_key("smiyc_ra21") == "eval-smiyc-ra21"


@pytest.fixture
def cli() -> typer.Typer:
    """A throwaway app: the main `cgaug` command registers `eval_command` the same way."""
    app = typer.Typer()
    app.command("eval")(eval_command)

    @app.command("other")
    def _other() -> None:  # a second command keeps `eval` a named sub-command, as in the real app
        """Unused."""

    return app


def test_cli_eval_writes_results_curves_and_grid(cli, benchmarks, tmp_path):
    out = tmp_path / "cli-report"
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", "tiny", "--dataset", f"muad={benchmarks['muad']}",
                                      "--out", str(out), "--fpr-rule", "closest", "--limit", "1", "--examples", "1",
                                      "--window", "32x48", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["datasets"][0]["images"] == 1
    results = check_report(out, ["muad"])
    assert results["meta"]["fpr_rule"] == "closest" and results["meta"]["options"]["window"] == [32, 48]


def test_cli_errors_are_clear(cli, benchmarks, tmp_path):
    runner = CliRunner()
    bad_kind = runner.invoke(cli, ["eval", "--checkpoint", "tiny", "--dataset", f"lost_found={tmp_path}",
                                   "--out", str(tmp_path / "o")])
    assert bad_kind.exit_code == 2 and "unknown kind 'lost_found'" in bad_kind.output
    bad_window = runner.invoke(cli, ["eval", "--checkpoint", "tiny", "--dataset", f"muad={benchmarks['muad']}",
                                     "--out", str(tmp_path / "o"), "--window", "big"])
    assert bad_window.exit_code == 2 and "HEIGHTxWIDTH" in bad_window.output
    missing = runner.invoke(cli, ["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset",
                                  f"muad={benchmarks['muad']}", "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "nope.pt: no such file or directory" in missing.output
