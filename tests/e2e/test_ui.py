"""The Prefect UI renders a shard's quality table: checked in headless Chromium, with a screenshot."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgaug.cli.stack import latest_artifact
from tests.e2e.conftest import artifacts, child_runs, parameters, run_generate

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.browser]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=20000"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs the Debian package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def render(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, url],
                          capture_output=True, text=True, timeout=120)


class Cells(HTMLParser):
    """The text of every table cell, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_shard_quality_table_is_visible_in_the_ui(pool, e2e_source, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    run = run_generate(pool.api_url, parameters(e2e_source, tmp_path / "out", shards_per_child=2, quality_floor=None))
    assert run.state.is_completed()
    [child] = child_runs(pool.api_url, run.id)
    quality = artifacts(pool.api_url, "cgaug-shard-quality", [child.id])
    assert len(quality) == 2
    with temporary_settings({PREFECT_API_URL: pool.api_url}):  # what `cgaug stack demo` prints
        assert latest_artifact(run.id, "cgaug-run-summary").startswith("# cgaug run summary")
    artifact = sorted(quality, key=lambda a: a.created)[0]
    page = f"{pool.ui_url}/artifacts/artifact/{artifact.id}"

    dom = render(page, tmp_path / "profile", "--dump-dom")
    cells = Cells()
    cells.feed(dom.stdout)
    table = {row[0]: row[1] for row in cells.rows if len(row) == 2}
    assert table.get("shard", "").startswith("shard-0000"), f"no quality table rendered at {page}"
    assert {"acceptance", "samples", "dropped by reason", "OOD classes", "domains", "wall time"} <= set(table)
    assert table["samples"].startswith("2 rows")

    shot = tmp_path / "ui-shard-quality.png"
    render(page, tmp_path / "profile", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1000, 1400) and pixels.std() > 10  # a rendered page, not a blank one
    [preview] = sorted(artifacts(pool.api_url, "cgaug-shard-preview", [child.id]), key=lambda a: a.created)[:1]
    preview_dom = render(f"{pool.ui_url}/artifacts/artifact/{preview.id}", tmp_path / "profile", "--dump-dom")
    assert '<img src="data:image/jpeg;base64,' in preview_dom.stdout  # the samples show inline
    keep = os.environ.get("CGAUG_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


class Images(HTMLParser):
    """The inline (data URI) JPEG images of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[Image.Image] = []

    def handle_starttag(self, tag, attrs):
        src = dict(attrs).get("src") or ""
        if tag == "img" and src.startswith("data:image/jpeg;base64,"):
            self.images.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def test_demo_previews_show_painted_scenes_not_noise(pool, e2e_source, tmp_path):
    """`cgaug stack demo`'s generator (the painter): each preview's image panel follows its label map."""
    from tests.models.painter.scenes import explained_by_labels

    config = {"run": {"variants": 1, "shard_size": 2}, "generator": {"model": "painter"}, "filters": {"mode": "none"}}
    run = run_generate(pool.api_url, parameters(e2e_source, tmp_path / "out", config, shards_per_child=1))
    assert run.state.is_completed()
    children = child_runs(pool.api_url, run.id)
    previews = artifacts(pool.api_url, "cgaug-shard-preview", [child.id for child in children])
    assert previews
    explained = []
    for preview in previews:
        dom = render(f"{pool.ui_url}/artifacts/artifact/{preview.id}", tmp_path / "profile", "--dump-dom").stdout
        assert "stand-in for the diffusion model" in dom
        found = Images()
        found.feed(dom)
        assert found.images, "no inline preview image rendered"
        for picture in found.images:
            pixels = np.asarray(picture)
            panel = pixels.shape[1] // 3
            height = panel * 128 // 256  # e2e_source images are 128 x 256; the caption band is below
            image, cond = pixels[:height, :panel], pixels[:height, panel:2 * panel]
            explained.append(explained_by_labels(image, cond))
    # Painted scenes: ~0.6-0.9 by day, ~0.25 at night (dark); noise that ignores the map scores ~0.
    assert min(explained) > 0.1 and np.mean(explained) > 0.4, explained
