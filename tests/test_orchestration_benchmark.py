"""benchmarks/orchestration.py: the extrapolation model, by hand (the run itself needs a stack: minutes)."""

from __future__ import annotations

import pytest

from tests.bench_helpers import load_benchmark


def _bench():
    return load_benchmark("orchestration")


def test_overhead_fraction_by_hand():
    bench = _bench()
    [row] = bench.extrapolate(per_child_s=10.0, per_shard_s=1.0, per_run_s=30.0, sizes=[64], ks=[1],
                              total_images=10_000)
    g, load = bench.REAL_SECONDS_PER_IMAGE, bench.REAL_MODEL_LOAD_S
    assert row["overhead"] == pytest.approx((10 + load) / (64 * g) + 1 / (64 * g) + 30 / (10_000 * g))
    assert (g, load) == (pytest.approx(1 / 3), 20.0)


def test_more_shards_per_child_amortise_the_child_cost():
    rows = _bench().extrapolate(18.0, 0.2, 10.0, [64], [1, 16, 64], 10_000)
    overheads = [r["overhead"] for r in rows]
    assert overheads == sorted(overheads, reverse=True) and overheads[-1] < 0.05 < overheads[0]
