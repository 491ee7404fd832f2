"""benchmarks/generation.py: the CPU smoke run CI executes, the GPU refusal, FLOP counting, peak table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench_helpers import load_benchmark

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "generation.py"

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _bench():
    return load_benchmark("generation")


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_smoke_prints_images_per_second_for_both_configurations_and_their_ratio(tmp_path):
    """What CI runs: tiny networks on the CPU through the production code path (~25 s on 2 cores)."""
    out = tmp_path / "bench.json"
    result = _run("--smoke", "--json", str(out))

    assert result.returncode == 0, result.stderr[-3000:]
    rates = dict(re.findall(r"^(reference .*?|ours .*?)\s*:\s+([0-9.]+) images/s", result.stdout, re.M))
    assert len(rates) == 3, result.stdout
    assert all(float(rate) > 0 for rate in rates.values())
    labels = " | ".join(rates)
    assert "reference fp32 batch 1 ddim 5 steps eager" in labels
    assert "ours      fp32 batch 8 unipc 2 steps eager" in labels and "compiled" in labels
    ratio = re.search(r"^ratio ours/reference: eager ([0-9.]+)x, compiled ([0-9.]+)x$", result.stdout, re.M)
    assert ratio and float(ratio.group(1)) > 0, result.stdout

    data = json.loads(out.read_text())
    reference, eager, compiled = data["results"]
    assert (reference["batch_size"], reference["scheduler"], reference["steps"]) == (1, "ddim", 5)
    assert (eager["batch_size"], eager["scheduler"], eager["steps"]) == (8, "unipc", 2)
    assert (eager["compiled"], compiled["compiled"]) == (False, True)
    assert eager["images"] == compiled["images"] == 8 and reference["images"] == 1
    assert float(ratio.group(1)) == pytest.approx(eager["images_per_second"] / reference["images_per_second"],
                                                  rel=0.01)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_full_benchmark_refuses_to_run_on_a_cpu():
    result = _run(timeout=120)

    assert result.returncode == 2
    assert "no CUDA GPU" in result.stderr and "--smoke" in result.stderr
    assert "images/s" not in result.stdout


def test_flops_match_the_published_sd15_counts():
    """FlopCounterMode on the meta-device SD1.5 networks at 512x1024 (research/generation-performance.md)."""
    bench = _bench()

    flops = bench.count_flops(smoke=False, height=512, width=1024)

    assert flops["unet"] / 1e9 == pytest.approx(1848.5, abs=0.1)
    assert flops["controlnet"] / 1e9 == pytest.approx(663.2, abs=0.1)
    assert flops["vae_decode"] / 1e9 == pytest.approx(5098, abs=1)
    assert flops["text_encoder"] / 1e9 == pytest.approx(13.3, abs=0.05)  # open_clip's ViT-L/14 text_gflops
    per_image = bench.flop_per_image(flops, steps=20)
    assert per_image / 1e12 == pytest.approx(105.6, abs=0.05)
    assert 989e12 / per_image == pytest.approx(9.37, abs=0.01)  # the H100 SXM ceiling in images/s


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0), ("Tesla T4", None),
])
def test_peak_table_matches_device_names(name, peak):
    assert _bench().peak_tflops(name) == peak


# ---------------------------------------------------------------- benchmarks/gpu_check.sh

GPU_CHECK = REPO / "benchmarks" / "gpu_check.sh"
PARTS = ["env", "generation", "filtering", "training"]


def _gpu_check(*args: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(GPU_CHECK), *args], env={**os.environ, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]  # without the header
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_part_and_writes_one_summary(tmp_path):
    """What CI runs: the GPU check's plumbing end to end on the CPU, each benchmark in its --smoke mode
    (~2-4 minutes on a busy 2-core machine)."""
    out = tmp_path / "dry"
    result = _gpu_check("--dry-run", "--out", str(out))

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "dry-run" and summary["ok"] is True
    assert [row["part"] for row in summary["parts"]] == PARTS
    assert all(row["status"] == "ok" and row["key"] for row in summary["parts"]), summary
    assert sum(row["box_s"] for row in summary["parts"]) <= 540
    data = {part: json.loads((out / f"{part}.json").read_text()) for part in PARTS}
    assert data["env"]["torch"] == torch.__version__ and data["env"]["cuda_available"] is False
    assert data["generation"]["complete"] and len(data["generation"]["results"]) == 3
    assert data["filtering"]["filter_ms_per_image"] > 0 and len(data["filtering"]["gate_ms_per_image"]) == 5
    assert [run["preset"] for run in data["training"]["runs"]] == ["tiny"]
    rows = _table_rows((out / "summary.md").read_text())
    assert [(row[0], row[1]) for row in rows] == [(part, "ok") for part in PARTS]
    assert _table_rows(result.stdout) == rows  # the printed table is the written one
    assert "img/s" in rows[1][2] and "of generation" in rows[2][2] and "loader" in rows[3][2]
    assert {p.name for p in (out / "logs").iterdir()} == {f"{part}.log" for part in PARTS}
    assert not (out / "tmp").exists() or not any((out / "tmp").iterdir())  # temporary files cleaned up


def test_gpu_check_reports_a_part_over_its_time_box_and_still_runs_the_next(tmp_path):
    """`--inject-sleep 2`: a first part that sleeps past 2 s; the env part after it must still run, and the
    run must fail."""
    out = tmp_path / "out"
    result = _gpu_check("--dry-run", "--only", "env", "--inject-sleep", "2", "--out", str(out), timeout=120)

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    sleep, env = summary["parts"]
    assert (sleep["part"], sleep["status"], sleep["returncode"]) == ("sleep", "timeout", 124)
    assert 2 <= sleep["seconds"] < 15
    assert (env["part"], env["status"]) == ("env", "ok") and summary["ok"] is False
    assert json.loads((out / "env.json").read_text())["python"]
    assert [(row[0], row[1]) for row in _table_rows(result.stdout)] == [("sleep", "timeout"), ("env", "ok")]


def test_gpu_check_without_a_python_names_make_venv(tmp_path):
    result = _gpu_check("--dry-run", "--out", str(tmp_path), timeout=30, PYTHON=str(tmp_path / "none"))

    assert result.returncode == 2
    assert "make venv" in result.stderr and "PYTHON=" in result.stderr
    assert not any(tmp_path.iterdir())


def _part(bench, name: str, code: str, box_s: float = 60) -> object:
    return bench.Part(name, box_s, ("-c", code, "{json}"), lambda data: f"x={data['x']}")


def test_run_parts_tells_ok_failed_and_timeout_apart_and_keeps_going(tmp_path):
    bench = load_benchmark("gpu_check")
    write = "import json, sys; json.dump({'x': 1}, open(sys.argv[1], 'w'))"
    selected = [
        bench.sleeping_part(1),
        _part(bench, "crash", "import sys; print('boom: the reason', file=sys.stderr); sys.exit(3)"),
        _part(bench, "silent", "pass"),  # exit 0 without its JSON: not ok
        _part(bench, "garbled", "import sys; open(sys.argv[1], 'w').write('{')"),
        _part(bench, "good", write),
        _part(bench, "halved", write, box_s=20),  # --budget-s scales every box
    ]

    rows = bench.run_parts(selected[:-1], tmp_path, 1.0, "dry-run", 540)
    rows.append(bench.run_parts(selected[-1:], tmp_path / "halved", 0.5, "dry-run", 270)[0])

    assert [(r.part, r.status) for r in rows] == [("sleep", "timeout"), ("crash", "failed"), ("silent", "failed"),
                                                 ("garbled", "failed"), ("good", "ok"), ("halved", "ok")]
    assert rows[1].returncode == 3 and "boom: the reason" in rows[1].error
    assert "not written" in rows[2].error and "unreadable" in rows[3].error
    assert rows[4].key == "x=1" and rows[4].json == "good.json" and rows[4].error == ""
    assert rows[5].box_s == 10
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["status"] for row in summary["parts"]] == ["timeout", "failed", "failed", "failed", "ok"]
    assert "boom: the reason" in (tmp_path / "summary.md").read_text()


def test_generation_key_reports_a_partial_run():
    """A generation part killed during compilation still shows the reference and eager numbers."""
    bench = load_benchmark("gpu_check")
    reference = {"images_per_second": 0.2, "compiled": False, "fraction_of_peak": 0.05}
    eager = {"images_per_second": 3.0, "compiled": False, "fraction_of_peak": 0.32}

    key = bench.generation_key({"complete": False, "results": [reference, eager]})

    assert key == "reference 0.2 img/s; ours eager 3 img/s (15.0x); best 32.0% of the bf16 peak; incomplete"
    assert bench.generation_key({"complete": False, "results": []}) == "no configuration finished"


# ---------------------------------------------------------------- full modes, as far as a CPU can check them


@pytest.mark.slow
def test_full_size_filters_and_pipeline_build_with_the_published_sizes():
    """The GPU-only filtering mode, built on the meta device (no memory, ~15 s): SAM ViT-H, SegFormer-B5 and
    CLIP ViT-B/16 with their published parameter counts, processors that construct, the production scheduler."""
    from cgaug.config import CGAugConfig

    bench = load_benchmark("filtering")
    cfg = CGAugConfig.model_validate({"generator": {"dtype": "bf16"}, "filters": {"mode": "default", "dtype": "bf16"}})

    models = bench._full_size_filters(cfg.filters, torch.bfloat16, device="meta")
    pipe = bench._full_size_pipeline(cfg, torch.bfloat16, device="meta")

    def millions(module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    assert millions(models.masker.model) == pytest.approx(641.1, abs=0.1)
    assert millions(models.segmenter.segmenter.model) == pytest.approx(84.6, abs=0.1)
    assert millions(models.clip.model) == pytest.approx(149.6, abs=0.1)
    assert models.masker.processor.image_processor.size["longest_edge"] == 1024
    assert next(models.masker.model.parameters()).dtype == torch.bfloat16
    assert millions(pipe.unet) == pytest.approx(859.5, abs=0.1)
    assert millions(pipe.controlnet) == pytest.approx(361.3, abs=0.1)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"


def test_full_size_training_data_gives_every_loader_worker_a_full_batch(tmp_path):
    """The deeplab preset's batch of 8 from each of 2 workers (images at a small size here: the count and
    sharding are what matter); the tiny preset keeps its 6 images."""
    from cgaug.config import load_train_config
    from cgaug.tasks.training.dataset import PairDataset

    bench = load_benchmark("training")
    source, shards, data = bench.preset_data(tmp_path, "deeplab", workers=2, size=(128, 256))
    cfg = load_train_config(preset="deeplab", overrides={"data": {"anomaly_source": "generated"}})

    assert data == {"images": 16, "image_size": [128, 256]}
    assert PairDataset(str(source), str(shards), cfg.data, 0).batches_per_epoch(8, 2) == 2


def test_training_measure_refuses_a_dataset_too_small_for_a_batch(tmp_path):
    """Instead of looping forever over epochs that yield no batch."""
    bench = load_benchmark("training")
    source, shards, _ = bench.preset_data(tmp_path, "tiny", workers=2)

    with pytest.raises(ValueError, match="no full batch of 8"):
        bench.measure(source, shards, "deeplab", steps=1, workers=2, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these commands would run the full benchmarks")
def test_every_gpu_part_accepts_its_arguments_and_refuses_a_cpu(tmp_path, capsys):
    """The GPU-mode command lines, parsed by their own scripts here: a typo must not wait for a GPU to show.
    Each refuses (without a usage error) because no CUDA device is visible; the time boxes fit 9 minutes."""
    selected = load_benchmark("gpu_check").parts(dry_run=False)
    assert [p.name for p in selected] == PARTS and sum(p.box_s for p in selected) <= 540

    for part in selected:
        script, *args = (a.replace("{json}", str(tmp_path / f"{part.name}.json")) for a in part.args)
        code = load_benchmark(Path(script).stem).main(args)
        err = capsys.readouterr().err
        assert code == (1 if part.name == "env" else 2), (part.name, err)
        assert "CUDA" in err and "usage" not in err, (part.name, err)
    assert json.loads((tmp_path / "env.json").read_text())["cuda_available"] is False
