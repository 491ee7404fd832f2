"""Every GPU figure in one short run: environment, generation, filtering and training benchmarks.

GPU time is scarce (about 15 minutes per lent session, machine start included), so one command
runs every benchmark, each in its own process under `timeout` (a hang or crash in one part does
not lose the others), collects their JSON and prints one summary table. Use the shell wrapper:

    make venv                                        # once, where the network is reachable: .venv
    benchmarks/gpu_check.sh --out gpu-results        # on the GPU machine: at most ~9 minutes, no network
    benchmarks/gpu_check.sh --dry-run --out /tmp/dry # the same plumbing on a CPU, each --smoke mode (CI)

Options: `--budget-s N` scales the time boxes (540 s in all by default, per part in `parts()`); `--only
a,b` runs a subset of parts (a rerun of a failed one); `--inject-sleep S` first runs a part that sleeps
past a time box of S seconds (tests); `PYTHON=/path/to/python` picks another interpreter than
`.venv/bin/python`. In a dry run a failed part fails the run too, after the rest have run. Parts, in
order, each writing DIR/PART.json and DIR/logs/PART.log:

1. env: nvidia-smi name/memory/driver, torch/CUDA/diffusers/transformers versions,
   `torch.cuda.is_available()` (on the GPU a missing CUDA device fails this part);
2. generation: `benchmarks/generation.py` (reference fp32 DDIM-50 batch 1 against ours bf16 UniPC-20
   batch 8, eager and compiled, and the fraction of the dense bf16 peak);
3. filtering: `benchmarks/filtering.py` (full-size filter models against full-size generation);
4. training: `benchmarks/training.py --full --presets deeplab` (ResNet-101 DeepLabv3+ steps at
   512x1024 crops and the data loader on 1024x2048 images).

Then DIR/summary.json and DIR/summary.md (the table printed at the end; both are rewritten after each
part, so a run killed from outside keeps what finished). Every file goes under DIR: caches
(XDG_CACHE_HOME, inductor, triton, Hugging Face) and temporary files included. The exit status is
0 when every part is ok, 1 otherwise (after running the rest), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
DEFAULT_BUDGET_S = 540.0  # the time boxes of each mode sum to this: 9 minutes
KILL_AFTER_S = 10  # SIGKILL this long after the SIGTERM of an expired time box
TIMEOUT_CODES = (124, 137)  # `timeout`: the command timed out (TERM), or needed KILL


@dataclass(frozen=True)
class Part:
    """One benchmark process: `args` follow the interpreter, "{json}" stands for its JSON path."""

    name: str
    box_s: float  # time box at the default budget
    args: tuple[str, ...]
    key: Callable[[dict[str, Any]], str]  # the summary's key numbers from the part's JSON


@dataclass
class Row:
    part: str
    status: str  # ok, failed, timeout
    key: str
    seconds: float
    box_s: float
    returncode: int | None
    json: str | None  # path relative to DIR, when the part wrote one
    log: str
    error: str = ""  # the log's last lines, when not ok


# ---------------------------------------------------------------- key numbers per part


def env_key(data: dict[str, Any]) -> str:
    gpus = data.get("nvidia_smi") or []
    gpu = "; ".join(f"{g['name']} {g['memory_total_mib'] / 1024:.0f} GiB, driver {g['driver']}" for g in gpus) \
        or "no nvidia-smi"
    cuda = f"CUDA {data.get('torch_cuda')}, available: {data.get('cuda_available')}"
    return f"{gpu}; torch {data.get('torch')} ({cuda}); diffusers {data.get('diffusers')}"


def generation_key(data: dict[str, Any]) -> str:
    results = data.get("results") or []
    if not results:
        return "no configuration finished"
    reference = results[0]["images_per_second"]
    parts = [f"reference {reference:.3g} img/s"]
    for result in results[1:]:
        mode = "compiled" if result["compiled"] else "eager"
        ratio = f" ({result['images_per_second'] / reference:.1f}x)" if reference else ""
        parts.append(f"ours {mode} {result['images_per_second']:.3g} img/s{ratio}")
    fractions = [r["fraction_of_peak"] for r in results[1:] if r.get("fraction_of_peak") is not None]
    if fractions:
        parts.append(f"best {max(fractions):.1%} of the bf16 peak")
    if not data.get("complete", True):
        parts.append("incomplete")
    return "; ".join(parts)


def filtering_key(data: dict[str, Any]) -> str:
    gates = data.get("gate_ms_per_image") or {}
    slowest = max(gates, key=gates.get) if gates else None
    text = (f"generation {data['generation_ms_per_image']:.1f} ms/img, filter {data['filter_ms_per_image']:.1f} "
            f"ms/img = {data['filter_over_generation']:.1%} of generation")
    return text + (f"; slowest gate {slowest} {gates[slowest]:.1f} ms/img" if slowest else "")


def training_key(data: dict[str, Any]) -> str:
    runs = [f"{r['preset']} {r['crop_size'][0]}x{r['crop_size'][1]} batch {r['batch_size']}: train "
            f"{r['train_images_per_s']:.1f} img/s, loader {r['loader_images_per_s']:.1f} img/s "
            f"({r['workers']} workers)" for r in data.get("runs", [])]
    return "; ".join(runs) + ("" if data.get("complete", True) else "; incomplete")


def parts(dry_run: bool) -> list[Part]:
    """The parts in order. Dry run: each benchmark's --smoke mode on the CPU, the same JSON and summary."""
    env = ("benchmarks/gpu_check.py", "--env-json", "{json}")
    generation = ("benchmarks/generation.py", "--json", "{json}")
    filtering = ("benchmarks/filtering.py", "--json", "{json}")
    training = ("benchmarks/training.py", "--json", "{json}")
    if dry_run:  # on a busy 2-core machine: env 10 s, generation 90-105 s, filtering 60-95 s, training 30-50 s
        return [Part("env", 40, env, env_key),
                Part("generation", 200, (*generation, "--smoke"), generation_key),
                Part("filtering", 160, (*filtering, "--smoke", "--batch", "2", "--repeats", "1"), filtering_key),
                Part("training", 140, (*training, "--smoke", "--presets", "tiny"), training_key)]
    # GPU boxes, for an H100/H200 (guesses until the first run; --budget-s scales them): env imports torch
    # from a cold disk; generation is 4 reference images (fp32 DDIM-50, ~6 s each), 2 x 4 batches of 8 and
    # inductor compiling UNet and ControlNet (~2 min); filtering writes 8 Cityscapes-size compositions, builds
    # SAM ViT-H and the rest, then times 6 x 3 judge calls; training writes 16 Cityscapes-size images and
    # shards (~30 s of CPU), then the loader alone and 9 steps.
    return [Part("env", 40, (*env, "--require-cuda"), env_key),
            Part("generation", 260, (*generation, "--repeats", "3"), generation_key),
            Part("filtering", 140, (*filtering, "--repeats", "2"), filtering_key),
            Part("training", 100, (*training, "--full", "--presets", "deeplab", "--steps", "8", "--workers", "2"),
                 training_key)]


def sleeping_part(box_s: float) -> Part:
    """A part that outlives its time box (tests of the time boxes: `--inject-sleep`)."""
    return Part("sleep", box_s, ("-c", "import time; print('sleeping', flush=True); time.sleep(3600)"),
                lambda data: "")


# ---------------------------------------------------------------- running


def child_env(out: Path) -> dict[str, str]:
    """The repository first on the path, nothing online, every cache and temporary file under `out`."""
    cache, tmp = out / "cache", out / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "XDG_CACHE_HOME": str(cache), "HF_HOME": str(cache / "huggingface"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton"),
            "MPLCONFIGDIR": str(cache / "matplotlib"), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1"}


def run_part(part: Part, out: Path, box_s: float, env: dict[str, str]) -> Row:
    """Run one part under `timeout` (its whole process group: loader and compile workers too)."""
    json_path, log = out / f"{part.name}.json", out / "logs" / f"{part.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)  # a previous run's file must not pass for this one's
    args = [a.replace("{json}", str(json_path)) for a in part.args]
    command = ["timeout", f"--kill-after={KILL_AFTER_S}", f"{box_s:g}", sys.executable, *args]
    started = time.monotonic()
    with log.open("w") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                              check=False).returncode
    seconds = time.monotonic() - started
    data, problem = _read_json(json_path)
    if code in TIMEOUT_CODES and seconds >= box_s:
        status = "timeout"
    elif code != 0 or problem:
        status = "failed"
    else:
        status = "ok"
    key = ""
    if data is not None:
        try:
            key = part.key(data)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            status, problem = "failed", f"{json_path.name}: unexpected content ({exc!r})"
    error = "" if status == "ok" else "\n".join(filter(None, [problem, _tail(log)]))
    return Row(part.name, status, key, round(seconds, 1), box_s, code,
               json_path.name if data is not None else None, str(log.relative_to(out)), error)


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.is_file():
        return None, f"{path.name}: not written"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{path.name}: unreadable ({exc})"
    return (data, "") if isinstance(data, dict) else (None, f"{path.name}: expected a JSON object")


def _tail(log: Path, lines: int = 6) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_parts(selected: list[Part], out: Path, scale: float, mode: str, budget_s: float) -> list[Row]:
    """Each part in turn, whatever happened to the one before; the summary is rewritten after each."""
    env = child_env(out)
    rows: list[Row] = []
    for number, part in enumerate(selected, 1):
        box = round(part.box_s * scale, 1)
        print(f"[{number}/{len(selected)}] {part.name} (time box {box:g} s) ...", flush=True)
        rows.append(run_part(part, out, box, env))
        print(f"    {rows[-1].status} in {rows[-1].seconds:g} s; log: {out / rows[-1].log}", flush=True)
        write_summary(rows, out, mode, budget_s)
    return rows


# ---------------------------------------------------------------- summary


def table(rows: list[Row]) -> str:
    """The summary as a Markdown table (printed, and written to summary.md)."""
    lines = ["| part | status | key numbers | seconds (used / box) |", "|---|---|---|---|"]
    for row in rows:
        key = row.key or (f"over its {row.box_s:g} s time box; see {row.log}" if row.status == "timeout" else
                          row.error.splitlines()[-1] if row.error else "")
        key = key.replace("|", "/")
        lines.append(f"| {row.part} | {row.status} | {key} | {row.seconds:g} / {row.box_s:g} |")
    return "\n".join(lines)


def write_summary(rows: list[Row], out: Path, mode: str, budget_s: float) -> None:
    data = {"mode": mode, "budget_s": budget_s, "ok": all(r.status == "ok" for r in rows),
            "parts": [asdict(r) for r in rows]}
    for name, text in (("summary.json", json.dumps(data, indent=2)), ("summary.md", table(rows) + "\n")):
        partial = out / f".{name}.partial"
        partial.write_text(text)
        partial.replace(out / name)


# ---------------------------------------------------------------- the env part


def environment() -> dict[str, Any]:
    """Facts about this machine that the benchmark numbers depend on."""
    import torch

    facts: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                             "cpu_count": os.cpu_count(), "torch": torch.__version__,
                             "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                             "devices": [], "nvidia_smi": _nvidia_smi(), "commit": _commit()}
    for package in ("diffusers", "transformers", "open_clip_torch", "segmentation_models_pytorch", "numpy"):
        try:
            facts[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts[package] = None
    if facts["cuda_available"]:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            facts["devices"].append({"name": props.name, "memory_gib": props.total_memory / 2**30,
                                     "capability": f"{props.major}.{props.minor}"})
    return facts


def _nvidia_smi() -> list[dict[str, Any]] | None:
    """One entry per GPU, None where nvidia-smi is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[field.strip() for field in line.split(",")] for line in text.splitlines() if line.strip()]
    return [{"name": name, "memory_total_mib": float(memory), "driver": driver} for name, memory, driver in rows]


def _commit() -> str | None:
    """The checked-out commit, when the copy has its .git."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_environment(path: Path, require_cuda: bool) -> int:
    facts = environment()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts, indent=2))
    print(json.dumps(facts, indent=2))
    if require_cuda and not facts["cuda_available"]:
        print("gpu_check: torch sees no CUDA device (see nvidia_smi above); the GPU parts cannot run",
              file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Run it through benchmarks/gpu_check.sh (see the module docstring).")
    parser.add_argument("--dry-run", action="store_true",
                        help="each benchmark's --smoke mode on the CPU: the plumbing in a few minutes (CI)")
    parser.add_argument("--out", default="gpu-check", help="folder for every output [gpu-check]")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"the time boxes sum to this many seconds [{DEFAULT_BUDGET_S:g}]")
    parser.add_argument("--only", help="comma-separated parts to run (env, generation, filtering, training)")
    parser.add_argument("--inject-sleep", type=float, metavar="BOX_S",
                        help="tests: first run a part that sleeps past a time box of BOX_S seconds")
    parser.add_argument("--env-json", help=argparse.SUPPRESS)  # the env part itself
    parser.add_argument("--require-cuda", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.env_json:
        return write_environment(Path(args.env_json), args.require_cuda)
    if shutil.which("timeout") is None:
        parser.error("the `timeout` command (GNU coreutils) is missing; it time-boxes each part")
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    selected = parts(args.dry_run)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {p.name for p in selected})
        if unknown:
            parser.error(f"--only: unknown parts {unknown}; expected some of {[p.name for p in selected]}")
        selected = [p for p in selected if p.name in names]
    scale = args.budget_s / DEFAULT_BUDGET_S
    if args.inject_sleep is not None:
        selected.insert(0, sleeping_part(args.inject_sleep / scale))  # its box stays BOX_S once scaled
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mode = "dry-run" if args.dry_run else "gpu"
    print(f"gpu_check ({mode}): {len(selected)} parts, time boxes summing to "
          f"{sum(p.box_s for p in selected) * scale:g} s; python {sys.executable}; output in {out}", flush=True)
    rows = run_parts(selected, out, scale, mode, args.budget_s)
    print()
    print(table(rows))
    print(f"\nsummary: {out / 'summary.md'}, {out / 'summary.json'}")
    for row in rows:
        if row.status != "ok":
            print(f"\n{row.part} {row.status} (exit status {row.returncode}); end of {out / row.log}:\n{row.error}")
    return 0 if all(row.status == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
