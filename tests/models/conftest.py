"""Model tests compare floats bit for bit, so they all run with one torch thread."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def _fixed_threads():
    """Float results depend on the thread count at ~1e-6; bit-identity checks need one count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
