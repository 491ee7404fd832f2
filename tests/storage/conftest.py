"""Output roots for storage tests: every backend test runs on a local folder and on memory://."""

from __future__ import annotations

import uuid

import fsspec
import pytest

from cgaug.storage.fs import Root, open_root


@pytest.fixture
def memory_uri():
    """A fresh memory:// root, removed afterwards (the memory filesystem is process-global)."""
    name = f"cgaug-test-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path, memory_uri) -> Root:
    return open_root(tmp_path / "out" if request.param == "local" else memory_uri)
