"""The README is a contract: its walkthrough (every ```sh and ```python block, in order) runs as written.

The blocks run in one empty folder, with the interpreter's bin folder (the venv's, holding `cgaug`)
first on PATH, as a user who followed the install would have it. Indented blocks and ```text blocks
are illustrations (real data, GPUs, servers) and are not run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of the walkthrough's fenced blocks, in README order."""
    return [(lang, code) for lang, code in FENCE.findall(text) if lang in ("sh", "python")]


def test_the_readme_has_a_walkthrough_that_reaches_every_stage():
    blocks = runnable_blocks(README.read_text())
    shell = "\n".join(code for lang, code in blocks if lang == "sh")
    for command in ("cgaug fixtures", "cgaug generate", "cgaug shards verify", "cgaug filter calibrate",
                    "cgaug train", "cgaug eval"):
        assert command in shell, command
    assert any(lang == "python" and "load_dataset" in code for lang, code in blocks)


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path):
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / ".hf-datasets"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    for number, (lang, code) in enumerate(runnable_blocks(README.read_text()), start=1):
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (f"README block {number} ({lang}) failed with exit {result.returncode}:\n"
                                        f"{code}\n--- stdout ---\n{result.stdout[-3000:]}\n"
                                        f"--- stderr ---\n{result.stderr[-3000:]}")
    assert (tmp_path / "sample.png").is_file() and (tmp_path / "RUN" / "model.pt").is_file()
    assert (tmp_path / "REPORT").is_dir() and (tmp_path / "EXPORT").is_dir()
