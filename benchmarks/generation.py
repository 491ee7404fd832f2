"""SD1.5 + seg-ControlNet throughput at 512x1024 with CFG: the reference configuration against ours,
and both against the GPU's physical limit.

Both configurations run in this process, on the same GPU, through cgaug's own generation
code (`cgaug.tasks.generation.generate.generate_float`: per-sample CPU generators, exact-size
control tensors, batching, padding, out-of-memory halving), with the full-size networks
built from the JSON configs in `cgaug/models/configs/sd15` (random weights, no download:
kernel timings do not depend on the values; the images are noise):
- reference: fp32, batch 1, DDIM 50 steps, eta 0 (the MultiShiftSeg setting), torch's
  default math settings (fp32 matmuls; cuDNN may use TF32 for convolutions);
- ours: bf16, batch 8, UniPC 20 steps, channels-last weights, SDPA attention, VAE
  slicing; once eager and once with UNet and ControlNet under `torch.compile`.
`--smoke` runs the same code with the tiny networks at 64x128, 5 and 2 steps, one torch
thread, "ours" in fp32 (bf16 convolutions are emulated, hence slow, on most CPUs) and the
compiled run with the "eager" dynamo backend (graph capture with fullgraph=True, no code
generation). Its numbers only prove that the path works; the ratio means nothing there.

Guidance 9.0 (classifier-free guidance on: UNet and ControlNet see twice the batch),
control scale 1.0. Each configuration gets one untimed warm-up call of its own batch
shape (for the compiled one, that call compiles), then `--repeats` timed calls.

FLOPs per image: `torch.utils.flop_counter.FlopCounterMode` over one forward of each
network at batch 1 on the meta device (no memory, no time): matmuls, convolutions and
attention (on meta, SDPA decomposes into counted bmm's); norms, activations and other
elementwise work are not counted. Per image = steps x 2 (CFG) x (UNet + ControlNet) + one
VAE decode + two text encodings (prompt, negative). SD1.5 at 512x1024: UNet 1848.5 and
ControlNet 663.2 GFLOP per forward, 105.6 TFLOP per image at 20 steps.

Physical limit: images/s x FLOPs/image against the GPU's dense bf16 tensor-core peak
(`PEAK_BF16_TFLOPS`, matched on the device name; `--peak-tflops` for other GPUs).

Run:  python benchmarks/generation.py [--repeats R] [--no-compile] [--json OUT]   (needs a CUDA GPU)
      python benchmarks/generation.py --smoke   (CPU, tiny networks at 64x128, seconds: what CI runs)
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; never wait on hub retries

PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (  # dense (no sparsity), datasheets; first match wins
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
)
CFG_GUIDANCE = 9.0
PALETTE = np.array([[140, 140, 140], [235, 255, 7], [180, 120, 120], [4, 200, 3], [6, 230, 230],
                    [0, 102, 200], [150, 5, 61], [51, 0, 255]], np.uint8)  # ADE road, sidewalk, building, ...


@dataclass(frozen=True)
class Scale:
    """What `--smoke` shrinks: network sizes, image size, steps, timed calls."""

    name: str
    height: int
    width: int
    reference_steps: int
    ours_steps: int
    repeats: int
    ours_dtype: str  # "bf16" on the GPU; the CPU smoke uses fp32: bf16 convolutions crawl on most CPUs


FULL = Scale("full-size SD1.5 + seg ControlNet (random weights)", 512, 1024, 50, 20, 3, "bf16")
SMOKE = Scale("smoke: tiny networks on the CPU, ours in fp32", 64, 128, 5, 2, 1, "fp32")


@dataclass
class Result:
    name: str
    dtype: str
    batch_size: int
    scheduler: str
    steps: int
    compiled: bool
    images: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0
    images_per_second: float = 0.0
    tflop_per_image: float = 0.0
    achieved_tflops: float = 0.0
    fraction_of_peak: float | None = None
    peak_memory_gib: float | None = None
    oom_halvings: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("benchmarks/generation.py: no CUDA GPU is visible. The full benchmark times full-size SD1.5 at "
              "512x1024 and would take hours on a CPU, so it refuses to run here. Use --smoke for the CPU "
              "check of the same code path (tiny networks, seconds).", file=sys.stderr)
        return 2
    scale = SMOKE if args.smoke else FULL
    if args.smoke:
        torch.set_num_threads(1)  # CI machines are small and busy: spinning thread pools make it 3x slower
    repeats = args.repeats or scale.repeats
    device = "cpu" if args.smoke else "cuda"
    backend = args.compile_backend or ("eager" if args.smoke else "inductor")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = args.peak_tflops
    if peak is None and device == "cuda":
        peak = peak_tflops(name)
    print(f"device: {name}; {scale.name}; {scale.height}x{scale.width}, CFG {CFG_GUIDANCE}; "
          f"timed calls per configuration: {repeats}; torch {torch.__version__}")

    flops = count_flops(args.smoke, scale.height, scale.width)
    print(f"FLOPs per forward (GFLOP, batch 1): UNet {flops['unet'] / 1e9:.1f}, ControlNet "
          f"{flops['controlnet'] / 1e9:.1f}, VAE decode {flops['vae_decode'] / 1e9:.1f}, "
          f"text encoder {flops['text_encoder'] / 1e9:.2f}")

    results: list[Result] = []

    def record(result: Result | None = None) -> None:
        """Print and save each configuration as it finishes (a run killed by a time box keeps the others);
        without a result, mark the file complete."""
        complete = result is None
        if result is not None:
            results.append(result)
            print(_line(result), flush=True)
        if args.json:
            _write_json(Path(args.json), {"device": name, "scale": asdict(scale), "flops_per_forward": flops,
                                          "peak_bf16_tflops": peak, "complete": complete,
                                          "results": [asdict(r) for r in results]}, announce=complete)

    record(run_reference(args.smoke, scale, device, repeats, flops, peak))
    run_ours(args.smoke, scale, device, repeats, flops, peak, compile_too=not args.no_compile, backend=backend,
             done=record)
    _summary(results, scale, flops, peak, name)
    record()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny networks at 64x128 on the CPU, a few steps: the code path in seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per configuration (default 3 full, 1 smoke)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd configuration")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend (default inductor; --smoke: eager, dynamo tracing only)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of this GPU in TFLOP/s, for GPUs missing from the table")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak for a CUDA device name, None when the GPU is not in the table."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


# ---------------------------------------------------------------- networks and FLOPs


def build_pipeline(smoke: bool, device: str, dtype: Any) -> Any:
    """Random-weight networks in `dtype` on `device`: tiny ones in smoke mode, else full-size SD1.5."""
    if smoke:
        pipe = copy.deepcopy(_tiny())
        return pipe if dtype == pipe.unet.dtype else pipe.to(device=device, dtype=dtype)
    from cgaug.models.configs import random_pipeline

    return random_pipeline(device=device, dtype=dtype, seed=0)


def count_flops(smoke: bool, height: int, width: int) -> dict[str, float]:
    """FLOPs of one batch-1 forward of each network at `height` x `width` (see the module docstring)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if smoke:
        parts = _tiny().components
    else:
        from cgaug.models.configs import random_components

        parts = random_components("meta")
    unet, controlnet, vae, text = parts["unet"], parts["controlnet"], parts["vae"], parts["text_encoder"]
    device = next(unet.parameters()).device
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = torch.zeros(1, unet.config.in_channels, height // factor, width // factor, device=device)
    context = torch.zeros(1, 77, unet.config.cross_attention_dim, device=device)
    step = torch.tensor([500], device=device)
    counts: dict[str, float] = {}

    def measure(key: str, fn: Any) -> Any:
        with FlopCounterMode(display=False) as counter:
            out = fn()
        counts[key] = float(counter.get_total_flops())
        return out

    with torch.no_grad():
        down, mid = measure("controlnet", lambda: controlnet(
            latent, step, encoder_hidden_states=context,
            controlnet_cond=torch.zeros(1, 3, height, width, device=device), return_dict=False))
        measure("unet", lambda: unet(latent, step, encoder_hidden_states=context,
                                     down_block_additional_residuals=down, mid_block_additional_residual=mid))
        measure("vae_decode", lambda: vae.decode(latent))
        measure("text_encoder", lambda: text(torch.zeros(1, 77, dtype=torch.long, device=device)))
    return counts


@functools.cache
def _tiny() -> Any:
    """The tiny pipeline, built once (1-2 s) and copied for each configuration."""
    from cgaug.models.tiny import tiny_pipeline

    return tiny_pipeline(seed=0)


def flop_per_image(flops: dict[str, float], steps: int) -> float:
    """Steps x CFG (2) x (UNet + ControlNet) + VAE decode + two text encodings."""
    return steps * 2 * (flops["unet"] + flops["controlnet"]) + flops["vae_decode"] + 2 * flops["text_encoder"]


# ---------------------------------------------------------------- configurations


def run_reference(smoke: bool, scale: Scale, device: str, repeats: int, flops: dict[str, float],
                  peak: float | None) -> Result:
    import torch

    from cgaug.config import GeneratorConfig

    cfg = GeneratorConfig(model="random", controlnet=None, scheduler="ddim", steps=scale.reference_steps,
                          eta=0.0, guidance_scale=CFG_GUIDANCE, batch_size=1, dtype="fp32", device=device,
                          short_side=scale.height, channels_last=False, compile=False)
    base = build_pipeline(smoke, device, torch.float32)
    result = _time(base, cfg, "reference", scale, repeats, flops, peak, compile_backend="inductor")
    del base
    _release(device)
    return result


def run_ours(smoke: bool, scale: Scale, device: str, repeats: int, flops: dict[str, float],
             peak: float | None, *, compile_too: bool, backend: str,
             done: Callable[[Result], None] = lambda _: None) -> list[Result]:
    import torch

    from cgaug.config import GeneratorConfig

    cfg = GeneratorConfig(model="random", controlnet=None, scheduler="unipc", steps=scale.ours_steps,
                          guidance_scale=CFG_GUIDANCE, batch_size=8, dtype=scale.ours_dtype, device=device,
                          short_side=scale.height, channels_last=True, compile=False)
    base = build_pipeline(smoke, device, {"bf16": torch.bfloat16, "fp32": torch.float32}[scale.ours_dtype])
    results = [_time(base, cfg, "ours", scale, repeats, flops, peak, compile_backend=backend)]
    done(results[-1])
    if compile_too:
        compiled = cfg.model_copy(update={"compile": True})
        results.append(_time(base, compiled, "ours", scale, repeats, flops, peak, compile_backend=backend))
        results[-1].extra["compile_backend"] = backend
        if backend == "inductor":
            results[-1].extra["compile_mode"] = compiled.compile_mode
        done(results[-1])
    del base
    _release(device)
    return results


def _time(base: Any, cfg: Any, name: str, scale: Scale, repeats: int, flops: dict[str, float],
          peak: float | None, *, compile_backend: str) -> Result:
    """One warm-up call of the configuration's batch shape, then `repeats` timed calls."""
    import torch

    from cgaug.models.generator import optimize_pipeline, with_scheduler
    from cgaug.tasks.generation.generate import GenerationReport, generate_float

    pipe = optimize_pipeline(with_scheduler(base, cfg.scheduler), cfg, compile_backend=compile_backend)
    count = cfg.batch_size
    maps, prompts, negatives = _inputs(count, scale.height, scale.width)
    if torch.cuda.is_available() and cfg.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warm = GenerationReport()
    generate_float(pipe, cfg, maps, prompts, negatives, list(range(count)), report=warm)
    report = GenerationReport()
    for repeat in range(repeats):
        seeds = list(range((repeat + 1) * count, (repeat + 2) * count))
        generate_float(pipe, cfg, maps, prompts, negatives, seeds, report=report)
    result = Result(name=name, dtype=cfg.dtype, batch_size=cfg.batch_size,
                    scheduler=cfg.scheduler, steps=cfg.steps, compiled=cfg.compile, images=report.samples,
                    seconds=report.seconds, warmup_seconds=warm.seconds,
                    images_per_second=report.images_per_second,
                    oom_halvings=warm.oom_halvings + report.oom_halvings)
    result.tflop_per_image = flop_per_image(flops, cfg.steps) / 1e12
    result.achieved_tflops = result.images_per_second * result.tflop_per_image
    result.fraction_of_peak = result.achieved_tflops / peak if peak else None
    if torch.cuda.is_available() and cfg.device == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30
    return result


def _inputs(count: int, height: int, width: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Blocky ADE-coloured label maps (16x16 cells) and prompts of the production's length."""
    rng = np.random.default_rng(0)
    cells = rng.integers(0, len(PALETTE), (count, height // 16, width // 16))
    maps = [np.ascontiguousarray(PALETTE[np.kron(c, np.ones((16, 16), int))]) for c in cells]
    prompt = ("An image sampled from various stereo video sequences taken by dash cam in Zurich in a rainy "
              "night., There is a dog accidentally staying on the road., best quality, extremely detailed, "
              "realistic, high resolution")
    negative = "longbody, lowres, bad anatomy, worst quality, low quality, blurry, cartoon, grey picture"
    return maps, [prompt] * count, [negative] * count


def _release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------- output


def _label(result: Result) -> str:
    mode = "compiled" if result.compiled else "eager"
    return (f"{result.name:<9} {result.dtype} batch {result.batch_size} {result.scheduler} "
            f"{result.steps} steps {mode}")


def _line(result: Result) -> str:
    parts = [f"{result.images} images in {result.seconds:.2f} s", f"warm-up {result.warmup_seconds:.1f} s",
             f"{result.tflop_per_image:.3g} TFLOP/image", f"{result.achieved_tflops:.3g} TFLOP/s"]
    if result.fraction_of_peak is not None:
        parts.append(f"{100 * result.fraction_of_peak:.1f} % of the bf16 peak")
    if result.peak_memory_gib is not None:
        parts.append(f"peak memory {result.peak_memory_gib:.1f} GiB")
    if result.oom_halvings:
        parts.append(f"{result.oom_halvings} out-of-memory halvings")
    return f"{_label(result):<46}: {result.images_per_second:9.3f} images/s  ({', '.join(parts)})"


def _summary(results: list[Result], scale: Scale, flops: dict[str, float], peak: float | None,
             name: str) -> None:
    reference = results[0].images_per_second
    ratios = [f"{'compiled' if r.compiled else 'eager'} {r.images_per_second / reference:.2f}x"
              for r in results[1:] if reference > 0]
    print(f"ratio ours/reference: {', '.join(ratios)}")
    ours_flop = flop_per_image(flops, scale.ours_steps)
    if peak is None:
        print(f"physical limit: skipped (no dense bf16 peak known for {name!r}; pass --peak-tflops)")
        return
    limit = peak * 1e12 / ours_flop
    best = max(results[1:], key=lambda r: r.images_per_second)
    print(f"physical limit ({peak:g} TFLOP/s dense bf16, {name}): {limit:.2f} images/s at "
          f"{scale.ours_steps} steps with CFG; best of ours reaches "
          f"{best.images_per_second / limit:.1%} of it")


def _write_json(path: Path, data: dict[str, Any], announce: bool = True) -> None:
    """Atomic: a temporary file in the same directory, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if announce:
        print(f"results written to {path}")


if __name__ == "__main__":
    sys.exit(main())
