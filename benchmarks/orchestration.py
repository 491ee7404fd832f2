"""Per-image overhead of the deployed path against calling the stages directly in one process.

Both sides produce the same shards (tiny generator, no filter, shard size 64
by default) from the same fixture images, in this process's machine:

- direct: `cgaug.tasks.generation.produce.write_planned_shard` for every shard in one warm
  process (models loaded once, no Prefect, no claims, no reports);
- deployed: a real stack (`cgaug.stack`: `prefect server start`, process
  workers, deploy/prefect.yaml) and `cgaug/generate` from creation to
  COMPLETED, with the shards split over child runs `--shards-per-child` at a
  time.

The overhead is split into what it is made of, measured from the run's own
records: per child run C (worker pick-up, process start, imports, model load,
API calls), per shard b (claim, report, artifact, task-run bookkeeping) and
per parent run R (plan, index, summary, polling tail). Extrapolation to real
generation: only the generation time per image changes (g: about 1/3 s per
image on an H100 for SD1.5 + seg ControlNet at 512x1024, 20 steps, CFG; see
research/generation-performance.md), and the model load grows to L_real (SD1.5
+ ControlNet + SAM-H + CLIP + segmenter from local disk, ~20 s, a guess to be
replaced by a GPU measurement). Then, for shard size S and k shards per child:

    overhead fraction = (C - L_tiny + L_real) / (k·S·g) + b / (S·g) + R / (N·g)

Run: `python benchmarks/orchestration.py [--shards 3] [--shard-size 64] [--shards-per-child 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REAL_SECONDS_PER_IMAGE = 1 / 3.0  # H100, SD1.5 + seg ControlNet, 512x1024, 20 steps, CFG (research estimate)
REAL_MODEL_LOAD_S = 20.0  # SD1.5 + ControlNet + filter models from local disk, per child process (estimate)


def prepare(root: Path, images: int) -> Path:
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank_sources import build_from_folder

    source = root / "cityscapes"
    write_fixtures(source, images=images, seed=0, height=128, width=256)
    write_fixture_masks(source / "bank_masks", seed=0)
    build_from_folder(str(source / "bank_masks"), str(source / "bank.parquet"))
    return source


def config_dict(shard_size: int, variants: int) -> dict:
    return {"run": {"variants": variants, "shard_size": shard_size}, "generator": {"model": "tiny"},
            "filters": {"mode": "none"}}


def direct(source: Path, out: Path, cfg: dict) -> dict:
    """The stages called directly: plan, then write_planned_shard per shard, in this warm process."""
    from cgaug.config import CGAugConfig
    from cgaug.models.tiny import ensure_tiny_model
    from cgaug.tasks.generation.generate import load_generator
    from cgaug.tasks.generation.plan import shards_of
    from cgaug.tasks.generation.produce import write_planned_shard
    from cgaug.tasks.generation.run import plan_run

    config = CGAugConfig.model_validate(cfg)
    ensure_tiny_model()  # build the tiny model's cache first: both sides then only load it
    start = time.perf_counter()
    load_generator(config.generator)  # model load, once (the deployed side pays it per child: counted there)
    load = time.perf_counter() - start
    plan, _ = plan_run(str(source), str(out), str(source / "bank.parquet"), config)
    start = time.perf_counter()
    for shard, entries in shards_of(plan).items():
        write_planned_shard(str(source), str(out), str(source / "bank.parquet"), config, shard, entries)
    return {"images": len(plan), "seconds": time.perf_counter() - start, "model_load_s": load}


def deployed(source: Path, out: Path, cfg: dict, state: Path, shards_per_child: int) -> dict:
    """`cgaug/generate` on a real stack; the wall time and the children's own timings."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cgaug import stack
    from cgaug.storage.fs import open_root
    from cgaug.storage.reports import read_report

    started = stack.up(state, cpu_workers=1)
    try:
        params = {"source": str(source), "out": str(out), "bank": str(source / "bank.parquet"), "config": cfg,
                  "orchestration": {"in_process": False, "shards_per_child": shards_per_child, "poll_s": 0.5,
                                    "quality_floor": None}}
        with temporary_settings({PREFECT_API_URL: started.api_url}):
            begin = time.perf_counter()
            run = run_deployment("cgaug/generate", parameters=params, timeout=3600, poll_interval=0.5,
                                 as_subflow=False)
            wall = time.perf_counter() - begin
            children = _children(run.id)
        if not run.state.is_completed():
            raise RuntimeError(f"the deployed run ended {run.state}")
        root = open_root(str(out), create=False)
        shard_ids = sorted(int(p.stem.split("-")[1]) for p in (out / "shards").glob("*.parquet"))
        by_child: dict[str, list[float]] = {}
        for shard in shard_ids:  # the reports say which child produced a shard and how long it took
            quality, producer = read_report(root, shard)
            by_child.setdefault(producer.get("flow_run", "?"), []).append(quality.stats.seconds or 0.0)
        child_wall = sum(c.total_run_time.total_seconds() for c in children)
        child_latency = sum((c.start_time - c.expected_start_time).total_seconds() for c in children)
        return {"wall_s": wall, "children": len(children), "shards": len(shard_ids),
                "child_run_s": child_wall, "child_pickup_s": child_latency,
                "shard_seconds_by_child": list(by_child.values())}
    finally:
        stack.down(state)


def _children(parent_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])))


def extrapolate(per_child_s: float, per_shard_s: float, per_run_s: float, sizes: list[int], ks: list[int],
                total_images: int) -> list[dict]:
    g = REAL_SECONDS_PER_IMAGE
    rows = []
    for size in sizes:
        for k in ks:
            fraction = (per_child_s + REAL_MODEL_LOAD_S) / (k * size * g) + per_shard_s / (size * g) \
                + per_run_s / (total_images * g)
            rows.append({"shard_size": size, "shards_per_child": k, "overhead": fraction})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--shards-per-child", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    variants = 4
    images = -(-args.shards * args.shard_size // variants)
    with tempfile.TemporaryDirectory(prefix="cgaug-bench-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(root / "cache"))
        source = prepare(root, images)
        cfg = config_dict(args.shard_size, variants)
        base = direct(source, root / "direct", cfg)
        dep = deployed(source, root / "deployed", cfg, root / "stack", args.shards_per_child)
    n = base["images"]
    per_image_direct = base["seconds"] / n
    per_image_deployed = dep["wall_s"] / n
    # Decomposition, from the children's own records (reports time each shard's generation):
    # - per child C: worker pick-up + process start + imports (run creation -> Running), plus the excess
    #   of each child's first shard over a direct shard (imports of the model code, model load);
    # - per shard b: child run time not spent generating (claim, quality, report, artifact, task-run
    #   API calls), divided by the shards;
    # - per parent run R: the rest of the wall time (parent pick-up, plan, launch, polling tail, index).
    # Later shards of a child also generate slower than direct ones here: the tiny generator shares
    # this machine's CPUs with the server, the parent and the workers. That slowdown is printed but
    # not extrapolated: on a GPU worker the generator does not compete for the CPU.
    direct_shard = base["seconds"] / dep["shards"]
    firsts = [seconds[0] - direct_shard for seconds in dep["shard_seconds_by_child"]]
    laters = [t / direct_shard for seconds in dep["shard_seconds_by_child"] for t in seconds[1:]]
    production = sum(sum(seconds) for seconds in dep["shard_seconds_by_child"])
    per_child = dep["child_pickup_s"] / dep["children"] + sum(firsts) / len(firsts)
    per_shard = max(dep["child_run_s"] - production, 0.0) / dep["shards"]
    per_run = max(dep["wall_s"] - dep["child_run_s"] - dep["child_pickup_s"], 0.0)
    slowdown = sum(laters) / len(laters) if laters else float("nan")
    print(f"orchestration overhead, tiny generator, {n} images in {dep['shards']} shards of {args.shard_size}, "
          f"{dep['children']} child runs ({args.shards_per_child} shards each)")
    print(f"  direct (one warm process):  {base['seconds']:8.2f} s  {per_image_direct * 1000:8.1f} ms/image "
          f"(+ {base['model_load_s']:.1f} s model load once)")
    print(f"  deployed (cgaug/generate):  {dep['wall_s']:8.2f} s  {per_image_deployed * 1000:8.1f} ms/image  "
          f"ratio {per_image_deployed / per_image_direct:.2f}x")
    print(f"  overhead per image: {(per_image_deployed - per_image_direct) * 1000:.1f} ms; made of "
          f"C = {per_child:.1f} s per child run (pick-up, start, imports, tiny model load), "
          f"b = {per_shard:.2f} s per shard, R = {per_run:.1f} s per parent run; CPU contention slowed "
          f"later shards' generation {slowdown:.2f}x (CPU-only artifact, not extrapolated)")
    print(f"  extrapolated to real generation (g = {REAL_SECONDS_PER_IMAGE:.2f} s/image, model load "
          f"{REAL_MODEL_LOAD_S:.0f} s per child, 10000 images):")
    rows = extrapolate(max(per_child - base["model_load_s"], 0.0), per_shard, per_run, [64, 256],
                       [1, 4, 16, 32, 64], 10_000)
    for row in rows:
        mark = "ok" if row["overhead"] <= 0.05 else "  "
        print(f"    shard size {row['shard_size']:4d}, {row['shards_per_child']:3d} shards per child: "
              f"{row['overhead'] * 100:6.1f} % {mark}")
    if args.json:
        args.json.write_text(json.dumps({"direct": base, "deployed": dep, "per_child_s": per_child,
                                         "per_shard_s": per_shard, "per_run_s": per_run,
                                         "extrapolated": rows}, indent=2))


if __name__ == "__main__":
    main()
