"""Markdown tables and data URIs for artifacts, by hand."""

from __future__ import annotations

import base64

from cgaug.tasks.reporting.markdown import data_uri, table


def test_table_with_alignment_and_empty_cells():
    assert table(["name", "n"], [("a", 1), ("b", None)], align="lr") == [
        "| name | n |", "|---|---:|", "| a | 1 |", "| b |  |"]
    assert table(["x"], []) == ["| x |", "|---|"]


def test_data_uri_round_trips():
    uri = data_uri(b"\x89PNG\x00\xff", "image/png")
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == b"\x89PNG\x00\xff"
