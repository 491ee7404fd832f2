"""Markdown pieces for Prefect artifacts: tables and inline images, written one way everywhere."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> list[str]:
    """Lines of a pipe table; `align` is one character per column ('l' or 'r'), left by default.

    None becomes an empty cell, so missing values never read as the string "None".
    """
    marks = {"l": "---", "r": "---:"}
    rule = [marks[a] for a in (align or "l" * len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join("" if cell is None else str(cell) for cell in row) + " |" for row in rows]
    return lines


def data_uri(data: bytes, mime: str) -> str:
    """A `data:` URI: the Prefect UI renders these inline in markdown artifacts, no file server needed."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
