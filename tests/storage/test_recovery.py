"""Resume repairs: debris swept, damaged shards and indexes set aside (never deleted), lost records rebuilt."""

from __future__ import annotations

import json
import os

import pytest

from cgaug.storage.claims import try_claim
from cgaug.storage.fs import TMP_MARKER, Root, open_root
from cgaug.storage.layout import INDEX_NAME, MANIFEST_NAME, claim_name, report_name, shard_name
from cgaug.storage.recovery import recover
from cgaug.storage.reports import journal, quality_of_shard, write_report
from cgaug.storage.shards import verify, write_index
from tests.faults.dead import dead_owner, temp_token
from tests.storage.test_shards import build_dataset, dataset_rows, write_plan_of

PRODUCER = {"host": "test"}
PLANNED = {shard: [row["sample_id"] for row in rows] for shard, rows in dataset_rows().items()}


@pytest.fixture
def done(root) -> Root:
    """A finished output: plan, two shards with their reports and journal entries, index and manifest."""
    write_plan_of(root, PLANNED)
    build_dataset(root)
    for shard in PLANNED:
        write_report(root, quality_of_shard(root, shard), PRODUCER)
    write_index(root)
    return root


def quarantined(root: Root) -> dict[str, str]:
    """{original name: reason} over every quarantine batch."""
    found = {}
    for batch in root.fs.ls(root.join("quarantine"), detail=False) if root.exists("quarantine") else []:
        found |= {name: entry["reason"] for name, entry in
                  json.loads(root.fs.cat_file(f"{batch.rstrip('/')}/reasons.json")).items()}
    return found


def test_an_intact_output_needs_nothing(done):
    before = {name: done.sha256(name) for name in (*[shard_name(s) for s in PLANNED], INDEX_NAME, MANIFEST_NAME)}
    result = recover(done, 300, PLANNED, PRODUCER)
    assert result.notes() == [] and result.index_current
    assert {name: done.sha256(name) for name in before} == before
    assert not done.exists("quarantine")


def test_a_flipped_byte_sets_the_shard_aside_and_keeps_a_copy(done):
    data = bytearray(done.read_bytes(shard_name(1)))
    data[len(data) // 2] ^= 0xFF
    done.write_bytes_atomic(shard_name(1), bytes(data))
    result = recover(done, 300, PLANNED, PRODUCER)
    assert list(result.quarantined) == [shard_name(1)] and not done.exists(shard_name(1))
    assert quarantined(done) == {shard_name(1): "sha256 differs from the recorded one"}
    [copy] = done.fs.glob(done.join("quarantine/*/shards/shard-00001.parquet"))
    assert done.fs.cat_file(copy) == bytes(data)  # the damaged file itself, not deleted
    assert not result.index_current and shard_name(0) in result.sound


@pytest.mark.parametrize("damage", ["garbage", "other_rows"])
def test_an_index_that_does_not_match_the_manifest_is_set_aside(done, damage):
    if damage == "garbage":
        done.write_bytes_atomic(INDEX_NAME, b"not parquet at all")
    else:
        table = done.read_parquet(INDEX_NAME)
        done.write_parquet_atomic(INDEX_NAME, table.slice(0, 2))
    result = recover(done, 300, PLANNED, PRODUCER)
    assert list(result.quarantined) == [INDEX_NAME] and not result.index_current
    assert not done.exists(INDEX_NAME)


def test_an_unreadable_manifest_is_set_aside(done):
    done.write_bytes_atomic(MANIFEST_NAME, b"{not json")
    result = recover(done, 300, PLANNED, PRODUCER)
    assert MANIFEST_NAME in result.quarantined and not result.index_current
    assert set(result.sound) == {shard_name(0), shard_name(1)}  # the journal still knows the hashes


def test_a_shard_without_report_or_journal_entry_gets_them_from_its_contents(done):
    done.remove(report_name(1))
    for name in done.list("journal", ".json"):
        if "shard-00001" in name:
            done.remove(name)
    done.remove(MANIFEST_NAME)  # nothing records its hash: it is read whole before it is trusted
    result = recover(done, 300, PLANNED, PRODUCER)
    assert result.recovered == [1] and not result.quarantined
    report = json.loads(done.read_bytes(report_name(1)))
    assert report["recovered"] is True and report["sha256"] == done.sha256(shard_name(1))
    assert report["producer"] == {"recovered_by": PRODUCER}
    assert [e["sha256"] for e in journal(done)[1]] == [report["sha256"]]
    assert recover(done, 300, PLANNED, PRODUCER).recovered == []  # once is enough


def test_a_shard_no_record_knows_with_a_broken_png_is_set_aside(done):
    import pyarrow as pa

    table = done.read_parquet(shard_name(0))
    blobs = table.column("image_png").to_pylist()
    blobs[0] = b"\x89PNG broken"
    table = table.set_column(table.schema.get_field_index("image_png"), "image_png", pa.array(blobs, pa.binary()))
    done.write_parquet_atomic(shard_name(0), table)
    done.remove(MANIFEST_NAME)
    for name in done.list("journal", ".json"):
        done.remove(name)
    result = recover(done, 300, PLANNED, PRODUCER)
    assert list(result.quarantined) == [shard_name(0)]
    assert "image_png does not decode as PNG" in result.quarantined[shard_name(0)]


def test_debris_of_dead_writers_is_swept_and_live_work_is_left_alone(done):
    dead = dead_owner()
    leftovers = [f"shards/.shard-00002.parquet{TMP_MARKER}{temp_token(dead)}-ab", f".{INDEX_NAME}{TMP_MARKER}"
                 f"{temp_token(dead)}-cd", f"claims/.shard-00002.json{TMP_MARKER}{temp_token(dead)}-ef"]
    foreign_old = f"reports/.shard-00003.json{TMP_MARKER}0badc0de.12.34-aa"
    foreign_new = f"journal/.x.json{TMP_MARKER}0badc0de.12.34-bb"
    for name in [*leftovers, foreign_old, foreign_new]:
        done.fs.makedirs(done.join(os.path.dirname(name)), exist_ok=True)
        done.fs.pipe_file(done.join(name), b"half")
    if done.is_local:
        os.utime(done.join(foreign_old), (0, 0))
    try_claim(done, 2, ttl_s=300, owner=dead)
    try_claim(done, 0, ttl_s=300)  # a live producer (this process) holds shard 0: not even hashed
    mine = done.join(f"shards/.shard-00000.parquet{TMP_MARKER}")
    live_temp = f"{mine}{temp_token(dict(dead, pid=os.getpid(), start=_my_start()))}-zz"
    done.fs.pipe_file(live_temp, b"in progress")
    result = recover(done, 300, PLANNED, PRODUCER)
    assert sorted(result.temps) == sorted(leftovers + ([foreign_old] if done.is_local else []))
    assert result.claims == [claim_name(2)] and done.exists(claim_name(0))
    assert done.fs.exists(live_temp) and done.exists(foreign_new)
    assert shard_name(0) not in result.sound and not result.index_current  # busy: the index is redone later


def _my_start() -> int:
    from cgaug.storage.fs import process_identity

    return int(process_identity()["start"])


def test_recovered_output_verifies_after_reindexing(done):
    done.write_bytes_atomic(INDEX_NAME, b"garbage")
    recover(done, 300, PLANNED, PRODUCER)
    write_index(done)
    assert verify(done) == []


def test_memory_roots_recover_too(memory_uri):
    root = open_root(memory_uri)
    write_plan_of(root, PLANNED)
    build_dataset(root)
    root.remove(MANIFEST_NAME)
    result = recover(root, 300, PLANNED, PRODUCER)
    assert sorted(result.recovered) == [0, 1] and not result.quarantined
