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
