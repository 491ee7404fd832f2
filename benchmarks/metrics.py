"""Streaming anomaly metrics: throughput and peak memory at 10^8 pixels, against scikit-learn, in one process.

Three score kinds, fed image by image (default 10^6-pixel images):
- u8: 8-bit heat-map scores (256 distinct values; the float16 dense path, fixed 1 MiB state);
- f32q: float32 scores on 2**22 levels (k / 2**22: D = 4.2 M distinct values, sparse runs);
- f32: float32 uniform scores (rng.random: up to 2**24 distinct values).
scikit-learn (`roc_auc_score` + `average_precision_score` + `roc_curve` for FPR@95) runs on one concatenated
array of `--sklearn-pixels` pixels (it needs everything in memory; 10^8 would need several GiB), and both are
compared on that same data. Peak memory is tracemalloc's (numpy reports its buffers to it).

Run: `python benchmarks/metrics.py [--pixels 1e8] [--image 1e6] [--sklearn-pixels 1e7] [--kinds u8,f32q,f32]`.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from cgaug.tasks.evaluation.metrics import AnomalyAccumulator, anomaly_metrics


def make_image(kind: str, rng: np.random.Generator, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "u8":
        scores = rng.integers(0, 256, pixels, dtype=np.uint8)
        level = scores / 255.0
    elif kind == "f32q":
        scores = (rng.integers(0, 1 << 22, pixels) / float(1 << 22)).astype(np.float32)
        level = scores
    else:
        scores = rng.random(pixels, dtype=np.float32)
        level = scores
    labels = (rng.random(pixels, dtype=np.float32) < 0.01 + 0.05 * level).astype(np.uint8)
    labels[: pixels // 50] = 255  # some void
    return scores, labels


def run_stream(kind: str, pixels: int, image: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    accumulator = AnomalyAccumulator()
    generate = update = 0.0
    tracemalloc.start()
    for _ in range(pixels // image):
        start = time.perf_counter()
        scores, labels = make_image(kind, rng, image)
        generate += time.perf_counter() - start
        start = time.perf_counter()
        accumulator.update(scores, labels)
        update += time.perf_counter() - start
        del scores, labels
    state = accumulator.nbytes
    start = time.perf_counter()
    result = accumulator.compute()
    compute = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"result": result, "update_s": update, "compute_s": compute, "peak": peak, "state": state,
            "distinct": accumulator.table().values.size, "generate_s": generate}


def run_sklearn(kind: str, pixels: int, seed: int = 1) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    scores, labels = make_image(kind, rng, pixels)
    tracemalloc.start()
    start = time.perf_counter()
    keep = labels != 255
    s, y = scores[keep].astype(np.float64), labels[keep]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    reference = {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s),
                 "fpr95": float(fpr[np.argmax(tpr >= 0.95)])}
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    start = time.perf_counter()
    ours = anomaly_metrics(scores, labels)
    ours_seconds = time.perf_counter() - start
    ours_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    difference = max(abs(ours[k] - reference[k]) for k in reference)
    return {"seconds": seconds, "peak": peak, "ours_seconds": ours_seconds, "ours_peak": ours_peak,
            "max_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=float, default=1e8)
    parser.add_argument("--image", type=float, default=1e6, help="pixels per update (one image)")
    parser.add_argument("--sklearn-pixels", type=float, default=1e7)
    parser.add_argument("--kinds", default="u8,f32q,f32")
    args = parser.parse_args()
    mib = 2**20
    for kind in args.kinds.split(","):
        stream = run_stream(kind, int(args.pixels), int(args.image))
        rate = args.pixels / (stream["update_s"] + stream["compute_s"]) / 1e6
        print(f"[{kind}] streaming {args.pixels:.0e} px in {int(args.image):.0e}-px images: "
              f"update {stream['update_s']:.1f} s + compute {stream['compute_s']:.1f} s ({rate:.1f} Mpx/s), "
              f"{stream['distinct']:,} distinct scores, state {stream['state'] / mib:.1f} MiB, "
              f"peak {stream['peak'] / mib:.0f} MiB (incl. one image's data); {stream['result']}")
        ref = run_sklearn(kind, int(args.sklearn_pixels))
        print(f"[{kind}] sklearn on {args.sklearn_pixels:.0e} px in memory: {ref['seconds']:.1f} s, "
              f"peak {ref['peak'] / mib:.0f} MiB; ours on the same array: {ref['ours_seconds']:.1f} s, "
              f"peak {ref['ours_peak'] / mib:.0f} MiB; max |difference| {ref['max_abs_difference']:.1e}")


if __name__ == "__main__":
    main()
