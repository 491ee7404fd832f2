"""Quality-filter time per image relative to generation time per image, on the same batch.

The filter must not bottleneck generation (target: at most 10% of generation time on a GPU).
Both sides run in this process on the same compositions and prompts:

- generation: the ControlNet pipeline (`cgaug.tasks.generation.generate.generate`) on a batch of compositions;
- filter: every gate on the generated batch (`cgaug.tasks.generation.filter.judge`), plus each gate alone.

Modes:
- `--smoke`: the tiny generator and tiny filter models on the CPU at 256x512 (seconds; run by the tests);
- default: full-size architectures with random weights on a GPU (SD1.5 + ControlNet, SAM ViT-H,
  SegFormer-B5, CLIP ViT-B-16) at 1024x2048, bf16. Random weights cost the same FLOPs as trained ones.

Run: `python benchmarks/filtering.py [--smoke] [--batch N] [--repeats R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cgaug.config import CGAugConfig, FilterConfig
from cgaug.seeds import stage_rng
from cgaug.tasks.generation.filter import judge
from cgaug.tasks.generation.gates import GATES, FilterInput


def _compositions(workdir: Path, count: int, height: int, width: int, cfg: CGAugConfig) -> list[tuple]:
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank import ObjectBank
    from cgaug.storage.bank_sources import build_from_folder
    from cgaug.storage.cityscapes import list_sources, read_label_ids
    from cgaug.tasks.generation.compose import compose, usable_classes
    from cgaug.tasks.generation.prompts import sample_prompt

    write_fixtures(workdir / "cs", images=count, height=height, width=width)
    write_fixture_masks(workdir / "masks")
    build_from_folder(str(workdir / "masks"), str(workdir / "bank.parquet"))
    bank = ObjectBank.open(str(workdir / "bank.parquet"))
    classes = usable_classes(bank, cfg.compose)
    items = []
    for i, record in enumerate(list_sources(str(workdir / "cs"), "train")[:count]):
        composition, _ = compose(read_label_ids(record), bank, cfg.compose, stage_rng(i, "compose"), classes)
        prompt = sample_prompt([o.class_name for o in composition.objects], cfg.prompts, stage_rng(i, "prompt"))
        items.append((composition, prompt))
    return items


def _full_size_pipeline(cfg: CGAugConfig, dtype: Any, device: str = "cuda") -> Any:
    """SD1.5 + seg-ControlNet built from the published configs with random weights (no download), with
    the production's scheduler and speed settings: the networks `benchmarks/generation.py` times."""
    from cgaug.models.configs import random_pipeline
    from cgaug.models.generator import optimize_pipeline, with_scheduler

    base = random_pipeline(device=device, dtype=dtype, seed=0)
    return optimize_pipeline(with_scheduler(base, cfg.generator.scheduler), cfg.generator)


def _full_size_filters(cfg: FilterConfig, dtype: Any, device: str = "cuda") -> Any:
    """SAM ViT-H, SegFormer-B5 (Cityscapes head) and CLIP ViT-B-16 with random weights, built on `device`
    ("meta" in the tests: the architectures without memory) with the processors their hub releases use."""
    import open_clip
    import torch
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamModel,
        SamProcessor,
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
    )

    from cgaug.models.filters import ClipScorer, FilterModels, SamMasker
    from cgaug.models.filters.pixel import PixelSegmenter
    from cgaug.models.segmenters import CITYSCAPES_TRAIN_NAMES, cityscapes_class_map
    from cgaug.models.segmenters.hf import HfSegmenter

    sam_cfg = SamConfig(vision_config={"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
                                       "global_attn_indexes": [7, 15, 23, 31], "initializer_range": 0.02})
    seg_cfg = SegformerConfig(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768,
                              num_labels=19, id2label=dict(enumerate(CITYSCAPES_TRAIN_NAMES)))
    with torch.device(device):  # initialised where they run: seconds instead of a minute on the CPU
        sam = SamModel(sam_cfg).eval().to(dtype=dtype)
        seg = SegformerForSemanticSegmentation(seg_cfg).eval().to(dtype=dtype)
        clip = open_clip.create_model("ViT-B-16", pretrained=None, device=device).eval().to(dtype=dtype)
    common = {"device": device, "dtype": dtype, "batch_size": cfg.batch_size}
    return FilterModels(
        masker=SamMasker(sam, SamProcessor(image_processor=SamImageProcessor()), **common),
        segmenter=PixelSegmenter(HfSegmenter(seg, SegformerImageProcessor(do_reduce_labels=False)),
                                 cityscapes_class_map(seg_cfg.id2label, "filters.segmenter_model"),
                                 batch_size=cfg.batch_size, short_side=cfg.segmenter_short_side),
        clip=ClipScorer(clip, open_clip.get_tokenizer("ViT-B-16"), template=cfg.clip_class_template,
                        context=cfg.clip_crop_context, **common))


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(run: Any, repeats: int) -> tuple[float, Any]:
    """Best wall time of `repeats` calls (after one warm-up call) and the last result."""
    result = run()
    best = float("inf")
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        result = run()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU (seconds)")
    parser.add_argument("--batch", type=int, help="images per batch [smoke 4, full 8]")
    parser.add_argument("--repeats", type=int, help="timed repetitions after a warm-up [smoke 2, full 3]")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from cgaug.models.generator import load_pipeline
    from cgaug.tasks.generation.generate import generate

    if args.smoke:
        cfg = CGAugConfig.model_validate({"generator": {"model": "tiny"}, "filters": {"mode": "tiny"}})
        batch, repeats, height, width = args.batch or 4, args.repeats or 2, 256, 512
    else:
        if not torch.cuda.is_available():
            print("the full-size benchmark needs a CUDA GPU; use --smoke on a CPU", file=sys.stderr)
            return 2
        cfg = CGAugConfig.model_validate({"generator": {"dtype": "bf16", "batch_size": args.batch or 8},
                                          "filters": {"mode": "default", "dtype": "bf16",
                                                      "batch_size": args.batch or 8}})
        batch, repeats, height, width = args.batch or 8, args.repeats or 3, 1024, 2048
    with tempfile.TemporaryDirectory() as tmp:
        items = _compositions(Path(tmp), batch, height, width, cfg)
    if args.smoke:
        from cgaug.models.filters import load_filter_models

        pipe, models = load_pipeline(cfg.generator), load_filter_models(cfg.filters)
    else:
        pipe = _full_size_pipeline(cfg, torch.bfloat16)
        models = _full_size_filters(cfg.filters, torch.bfloat16)
    conds = [c.cond_map for c, _ in items]
    prompts, negatives = [p.text for _, p in items], [p.negative for _, p in items]
    seeds = list(range(len(items)))
    gen_time, images = _timed(lambda: generate(pipe, cfg.generator, conds, prompts, negatives, seeds), repeats)
    inputs = [FilterInput(image, c.label, c.ood_mask, c.objects, p.text)
              for image, (c, p) in zip(images, items, strict=True)]
    filter_time, _ = _timed(lambda: judge(inputs, models, cfg.filters), repeats)
    per_gate = {}
    for gate in GATES:
        alone = cfg.filters.model_copy(update={g.switch: g is gate for g in GATES})
        per_gate[gate.name], _ = _timed(lambda alone=alone: judge(inputs, models, alone), repeats)
    device = "cuda " + torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu"
    n = len(items)
    print(f"device: {device}; batch {n} at {height}x{width} (generation at "
          f"{cfg.generator.short_side} short side, {cfg.generator.steps} steps); best of {repeats}")
    print(f"generation: {1000 * gen_time / n:9.1f} ms/image")
    print(f"filter:     {1000 * filter_time / n:9.1f} ms/image (all gates)")
    for name, seconds in per_gate.items():
        print(f"  {name:20s} {1000 * seconds / n:9.1f} ms/image")
    print(f"filter / generation: {100 * filter_time / gen_time:.1f}%")
    if args.json:
        _write_json(Path(args.json), {
            "device": device, "batch": n, "height": height, "width": width, "repeats": repeats,
            "generation_short_side": cfg.generator.short_side, "generation_steps": cfg.generator.steps,
            "generation_ms_per_image": 1000 * gen_time / n, "filter_ms_per_image": 1000 * filter_time / n,
            "gate_ms_per_image": {name: 1000 * seconds / n for name, seconds in per_gate.items()},
            "filter_over_generation": filter_time / gen_time})
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader (benchmarks/gpu_check.py after a time box) never sees half a file."""
    from cgaug.storage.fs import open_root

    open_root(str(path.parent)).write_bytes_atomic(path.name, json.dumps(data, indent=2).encode())


if __name__ == "__main__":
    sys.exit(main())
