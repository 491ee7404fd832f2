"""Training throughput: images/s of the whole step and of the data loader alone.

    .venv/bin/python benchmarks/training.py [--smoke] [--full] [--presets P,..] [--steps N] [--workers W]
                                            [--json OUT]

Writes fixture datasets and fast CG-Aug-like shards (a colour shift instead of the generator,
tests/train_helpers.py) into a temporary folder, then measures:
- loader: examples/s the DataLoader delivers (reading shards, originals, crop, mixup, anomaly mix);
- train: images/s of full training steps (B originals + B augmented per step), loader included.
The tiny preset runs on the CPU on 6 images of 256x512; `--full` (or a visible GPU) also measures the
deeplab preset (ResNet-101 DeepLabv3+, random weights, its own 512x1024 crops and batch of 8 + 8) on
the GPU, on Cityscapes-size 1024x2048 images, enough of them that every loader worker yields a full
batch. `--presets deeplab` runs that one alone. The loader is fast enough when its rate exceeds the
training rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


FULL_SIZE = (1024, 2048)  # Cityscapes frames: what the production loader decodes
SMALL_SIZE = (256, 512)  # the tiny preset's fixture images


def _data(tmp: Path, images: int, size: tuple[int, int] = SMALL_SIZE, variants: int = 2) -> tuple[Path, Path]:
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank_sources import build_from_folder
    from tests.train_helpers import write_fake_shards

    source = tmp / "cityscapes"
    write_fixtures(source, images=images, seed=0, height=size[0], width=size[1])
    write_fixture_masks(source / "bank_masks", seed=0)
    build_from_folder(str(source / "bank_masks"), str(source / "bank.parquet"))
    return source, write_fake_shards(source, tmp / "shards", variants=variants)


def preset_data(tmp: Path, preset: str, workers: int, size: tuple[int, int] | None = None
                ) -> tuple[Path, Path, dict[str, Any]]:
    """The fixture dataset and shards for `preset`: 6 small images for tiny; for the others images of
    `size` (default Cityscapes' 1024x2048), a full batch for each of `workers` loader workers."""
    if preset == "tiny":
        size, images, variants = size or SMALL_SIZE, 6, 2
    else:
        from cgaug.config import load_train_config

        batch = load_train_config(preset=preset).data.batch_size
        size, images, variants = size or FULL_SIZE, batch * max(workers, 1), 1
    source, shards = _data(tmp / preset, images, size, variants)
    return source, shards, {"images": images, "image_size": list(size)}


def measure(source: Path, shards: Path, preset: str, steps: int, workers: int, device: str) -> dict[str, Any]:
    import torch

    from cgaug.config import load_train_config
    from cgaug.models.device import torch_device
    from cgaug.models.segmenters.training import build_train_model
    from cgaug.tasks.training.dataset import PairDataset, make_loader
    from cgaug.tasks.training.loop import StepRunner, loss_generator

    overrides = {"data": {"anomaly_source": "generated", "num_workers": workers}, "run": {"device": device}}
    cfg = load_train_config(preset=preset, overrides=overrides)
    dataset = PairDataset(str(source), str(shards), cfg.data, 0)
    if dataset.batches_per_epoch(cfg.data.batch_size, workers) == 0:  # the loops below would never end
        raise ValueError(f"{len(dataset)} images give no full batch of {cfg.data.batch_size} to each of "
                         f"{workers} loader workers; write more images")
    loader = make_loader(dataset, cfg.data.batch_size, workers)
    started, examples = time.perf_counter(), 0
    epoch = 0
    while examples < steps * cfg.data.batch_size:
        dataset.set_epoch(epoch)
        for batch in loader:
            examples += 2 * batch["image"].shape[0]
        epoch += 1
    loader_rate = examples / (time.perf_counter() - started)
    dev = torch_device(cfg.run.device, "run.device")
    model = build_train_model(cfg.model).to(dev)
    runner = StepRunner(model, cfg, 2, dev, steps_per_epoch=steps)
    done = images = 0
    started = None
    while done < steps + 1:
        dataset.set_epoch(epoch)
        epoch += 1
        for batch in loader:
            runner.step(batch, loss_generator(0, 0, done))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if started is None:  # the first step warms up kernels and allocators
                started = time.perf_counter()
            else:
                images += 2 * batch["image"].shape[0]
            done += 1
            if done >= steps + 1:
                break
    return {"loader_images_per_s": loader_rate, "train_images_per_s": images / (time.perf_counter() - started),
            "batch_size": cfg.data.batch_size, "crop_size": list(cfg.data.crop_size), "amp": cfg.run.amp,
            "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few steps only")
    parser.add_argument("--full", action="store_true", help="also the deeplab preset on the GPU")
    parser.add_argument("--presets", help="comma-separated presets to run [tiny, plus deeplab with --full or a GPU]")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this JSON file (after each preset)")
    args = parser.parse_args(argv)
    import torch

    steps = 2 if args.smoke else args.steps
    gpu = torch.cuda.is_available()
    presets = args.presets.split(",") if args.presets else ["tiny", *(["deeplab"] if args.full or gpu else [])]
    if any(p != "tiny" for p in presets) and not gpu:
        print("benchmarks/training.py: the full-size presets need a CUDA GPU, and none is visible; "
              "run the tiny preset (the default without --full) on a CPU", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            device = "cpu" if preset == "tiny" else "cuda"
            source, shards, data = preset_data(Path(tmp), preset, args.workers)
            result = measure(source, shards, preset, steps, args.workers, device)
            print(f"{preset:8s} on {device}: training {result['train_images_per_s']:7.1f} images/s, "
                  f"data loader alone {result['loader_images_per_s']:7.1f} images/s "
                  f"({args.workers} workers)", flush=True)
            runs.append({"preset": preset, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                         **data, "workers": args.workers, "steps": steps, **result})
            if args.json:
                _write_json(Path(args.json), {"complete": len(runs) == len(presets), "runs": runs})
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader (benchmarks/gpu_check.py after a time box) never sees half a file."""
    from cgaug.storage.fs import open_root

    open_root(str(path.parent)).write_bytes_atomic(path.name, json.dumps(data, indent=2).encode())


if __name__ == "__main__":
    sys.exit(main())
