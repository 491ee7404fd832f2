"""Session-wide test settings and shared data: offline hub, one Prefect test server, fixture dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect API for the whole session (starting one costs ~8 s)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory) -> Path:
    """A private cache home so the tiny model is built once per session, not in ~/.cache."""
    home = tmp_path_factory.mktemp("xdg")
    os.environ["XDG_CACHE_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """6 fixture images (256x512) and an object bank built from fixture masks."""
    from cgaug.fixtures import write_fixture_masks, write_fixtures
    from cgaug.storage.bank_sources import build_from_folder

    root = tmp_path_factory.mktemp("cityscapes")
    write_fixtures(root, images=6, seed=0)
    write_fixture_masks(root / "bank_masks", seed=0)
    build_from_folder(str(root / "bank_masks"), str(root / "bank.parquet"))
    return root


@pytest.fixture
def dataset_copy(dataset, tmp_path) -> Path:
    target = tmp_path / "cityscapes"
    shutil.copytree(dataset, target)
    return target
