"""Loading a script of benchmarks/ as a module, so tests can call its pure functions."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@functools.cache
def load_benchmark(name: str):
    """benchmarks/NAME.py as a module (dataclasses need it registered in sys.modules while it executes)."""
    spec = importlib.util.spec_from_file_location(f"cgaug_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
