"""The names under OUT/: padded and validated shard names, and the layout an older cgaug wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cgaug.storage import layout

PREVIOUS_OUT = Path(__file__).resolve().parents[1] / "data" / "previous_main" / "OUT"


def test_shard_names_are_zero_padded_and_validated():
    assert layout.shard_label(7) == "shard-00007"
    assert layout.shard_name(7) == "shards/shard-00007.parquet"
    assert layout.shard_name(np.int64(12)) == "shards/shard-00012.parquet"
    assert layout.claim_name(3) == "claims/shard-00003.json"
    assert layout.report_name(99_999) == "reports/shard-99999.json"
    assert layout.journal_name(4, "abc") == "journal/shard-00004.abc.json"
    for bad in (-1, 100_000, "3", True, 2.0):
        with pytest.raises(ValueError, match="shard id"):
            layout.shard_name(bad)


def test_lexical_order_of_shard_files_is_numeric_order():
    ids = [0, 9, 10, 99, 100, 12_345, 99_999]
    assert sorted(layout.shard_name(i) for i in ids) == [layout.shard_name(i) for i in ids]


def test_an_output_of_the_previous_main_has_exactly_this_layout():
    """Every file an older cgaug wrote is named by the layout, so new code finds all of it."""
    found = {str(p.relative_to(PREVIOUS_OUT)) for p in PREVIOUS_OUT.rglob("*") if p.is_file()}
    shards = (0, 1)
    expected = {layout.PLAN_FILE, layout.CONFIG_FILE, layout.INDEX_NAME, layout.MANIFEST_NAME}
    expected |= {layout.shard_name(i) for i in shards} | {layout.report_name(i) for i in shards}
    journal = {name for name in found if name.startswith(f"{layout.JOURNAL_DIR}/")}
    assert found == expected | journal
    parsed = [Path(name).name.split(".") for name in journal]  # shard-00000.<token>.json
    rebuilt = {layout.journal_name(int(label.removeprefix("shard-")), token) for label, token, _ in parsed}
    assert rebuilt == journal and len(journal) == len(shards)
