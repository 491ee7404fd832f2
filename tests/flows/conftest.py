from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_server):
    """Every flow test talks to the session's temporary Prefect API."""
    return prefect_server
