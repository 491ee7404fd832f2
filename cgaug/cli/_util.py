"""Small helpers shared by the command modules."""

from __future__ import annotations

import sys


def self_command() -> str:
    """How to call this command again in printed hints: the path it was started with, else `cgaug`."""
    return sys.argv[0] if sys.argv and sys.argv[0].endswith("cgaug") else "cgaug"
