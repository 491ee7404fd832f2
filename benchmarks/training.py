"""Training throughput: images/s of the whole step and of the data loader alone.

    .venv/bin/python benchmarks/training.py [--smoke] [--full] [--steps N] [--workers W]

Writes a 6-image fixture dataset and fast CG-Aug-like shards (a colour shift instead of the
generator, tests/train_helpers.py) into a temporary folder, then measures:
- loader: examples/s the DataLoader delivers (reading shards, originals, crop, mixup, anomaly mix);
- train: images/s of full training steps (B originals + B augmented per step), loader included.
The tiny preset runs on the CPU; `--full` (or a visible GPU) also measures the deeplab preset
(ResNet-101 DeepLabv3+, random weights, 512x1024 crops) on the GPU. The loader is fast enough when
its rate exceeds the training rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _data(tmp: Path, images: int) -> tuple[Path, Path]:
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank_sources import build_from_folder
    from tests.train_helpers import write_fake_shards

    source = tmp / "cityscapes"
    write_fixtures(source, images=images, seed=0)
    write_fixture_masks(source / "bank_masks", seed=0)
    build_from_folder(str(source / "bank_masks"), str(source / "bank.parquet"))
    return source, write_fake_shards(source, tmp / "shards")


def measure(source: Path, shards: Path, preset: str, steps: int, workers: int, device: str) -> dict[str, float]:
    import torch

    from cgaug.config import load_train_config
    from cgaug.models.device import torch_device
    from cgaug.models.segmenters.training import build_train_model
    from cgaug.tasks.training.dataset import PairDataset, make_loader
    from cgaug.tasks.training.loop import StepRunner, loss_generator

    overrides = {"data": {"anomaly_source": "generated", "num_workers": workers}, "run": {"device": device}}
    if preset != "tiny":
        overrides["data"] |= {"crop_size": (256, 512), "batch_size": 2}  # fixture images are 256x512
    cfg = load_train_config(preset=preset, overrides=overrides)
    dataset = PairDataset(str(source), str(shards), cfg.data, 0)
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
    return {"loader_images_per_s": loader_rate, "train_images_per_s": images / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few steps only")
    parser.add_argument("--full", action="store_true", help="also the deeplab preset on the GPU")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import torch

    steps = 2 if args.smoke else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        source, shards = _data(Path(tmp), images=6)
        runs = [("tiny", "cpu")]
        if args.full or torch.cuda.is_available():
            runs.append(("deeplab", "cuda"))
        for preset, device in runs:
            result = measure(source, shards, preset, steps, args.workers, device)
            print(f"{preset:8s} on {device}: training {result['train_images_per_s']:7.1f} images/s, "
                  f"data loader alone {result['loader_images_per_s']:7.1f} images/s "
                  f"({args.workers} workers)")


if __name__ == "__main__":
    main()
