"""Damage to a finished output (flipped bytes, truncation, deletion of shards, index, manifest) and the
crash debris of a killed run are repaired by one rerun; nothing is deleted without a copy in quarantine/."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cgaug.cli import app
from cgaug.storage.claims import try_claim
from cgaug.storage.fs import TMP_MARKER, open_root
from cgaug.storage.layout import report_name
from tests.faults.conftest import assert_whole, debris, run_flow, shard_bytes
from tests.faults.dead import dead_owner, temp_token

SHARD = "shard-00001.parquet"


def flip(path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def broken_png(path) -> None:
    """A valid Parquet file whose first image is not a PNG (the hash differs; decoding would fail too)."""
    table = pq.read_table(path)
    blobs = table.column("image_png").to_pylist()
    blobs[0] = blobs[0][:40]
    column = table.schema.get_field_index("image_png")
    pq.write_table(table.set_column(column, "image_png", pa.array(blobs, pa.binary())), path,
                   row_group_size=16)


DAMAGE = {  # name -> (file under OUT, how; whether a damaged copy must be kept in quarantine/)
    "shard_flipped_byte": ("shards/" + SHARD, flip, True),
    "shard_broken_png": ("shards/" + SHARD, broken_png, True),
    "shard_truncated": ("shards/" + SHARD, truncate, True),
    "shard_deleted": ("shards/" + SHARD, lambda p: p.unlink(), False),
    "index_garbage": ("index.parquet", lambda p: p.write_bytes(b"not an index"), True),
    "index_flipped_byte": ("index.parquet", flip, True),
    "index_deleted": ("index.parquet", lambda p: p.unlink(), False),
    "manifest_garbage": ("manifest.json", lambda p: p.write_text("{torn"), True),
    "manifest_deleted": ("manifest.json", lambda p: p.unlink(), False),
    "report_deleted": ("reports/shard-00001.json", lambda p: p.unlink(), False),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_one_rerun_repairs_the_damage(damage, copy_of, small_source):
    out = copy_of()
    name, harm, kept = DAMAGE[damage]
    before = shard_bytes(out)
    original = (out / name).read_bytes()
    harm(out / name)
    damaged = (out / name).read_bytes() if (out / name).exists() else None
    if name.startswith("shards/") or name.startswith("index"):
        result = CliRunner().invoke(app, ["shards", "verify", str(out)])
        assert result.exit_code == 1  # verify sees it before the repair
    run_flow(small_source, out)
    assert_whole(out)
    after = shard_bytes(out)
    assert {k: v for k, v in after.items() if k != SHARD} == {k: v for k, v in before.items() if k != SHARD}
    copies = [p for p in (out / "quarantine").rglob("*") if p.is_file() and p.name != "reasons.json"] \
        if (out / "quarantine").exists() else []
    if kept:
        assert [p.read_bytes() for p in copies] == [damaged] and damaged != original
        reasons = json.loads(next((out / "quarantine").rglob("reasons.json")).read_text())
        assert list(reasons) == [name]
    else:
        assert copies == []
    assert (out / "reports" / "shard-00001.json").exists()


def test_the_debris_of_a_killed_run_is_swept_and_its_claim_does_not_block(copy_of, small_source):
    out = copy_of()
    root = open_root(str(out))
    (out / "shards" / SHARD).unlink()  # killed while writing shard 1: no shard, a temp file, its claim
    (out / "manifest.json").unlink()
    dead = dead_owner()
    try_claim(root, 1, ttl_s=300, owner=dead)
    for name in (f"shards/.{SHARD}{TMP_MARKER}{temp_token(dead)}-x", f"reports/.r.json{TMP_MARKER}{temp_token(dead)}-y",
                 f".index.parquet{TMP_MARKER}{temp_token(dead)}-z"):
        (out / name).write_bytes(b"half")
    (out / report_name(2)).unlink()  # killed between the commit of shard 2 and its report
    for entry in (out / "journal").glob("shard-00002.*"):
        entry.unlink()
    start = time.monotonic()
    summary = run_flow(small_source, out)
    assert time.monotonic() - start < 120  # not the 300 s TTL of the dead claim
    assert summary["shards_written"] == 1 and summary["complete"] is True
    assert_whole(out)
    assert json.loads((out / report_name(2)).read_text())["recovered"] is True
    assert len(list((out / "journal").glob("shard-00002.*"))) == 1


def test_verify_names_the_shards_of_missing_samples(copy_of):
    out = copy_of()
    (out / "shards" / SHARD).unlink()
    from cgaug.storage.shards import write_index

    write_index(open_root(str(out)))  # what an older release did: index what exists
    result = CliRunner().invoke(app, ["shards", "verify", str(out), "--no-decode"])
    assert result.exit_code == 1
    assert "incomplete: 2 of 6 planned samples missing (shards shard-00001)" in result.output
    assert debris(out) == []


def test_an_in_process_run_waits_for_a_live_producer_instead_of_failing(copy_of, small_source, caplog):
    import socket
    import subprocess
    import threading

    from cgaug.config import Orchestration
    from cgaug.flows.generate import generate_dataset_flow
    from cgaug.storage.fs import host_tag, start_ticks
    from tests.faults.conftest import fault_config

    out = copy_of()
    (out / "shards" / SHARD).unlink()
    (out / "manifest.json").unlink()
    producer = subprocess.Popen(["sleep", "60"])  # alive, on this host: its claim holds
    owner = {"host": socket.gethostname(), "host_tag": host_tag(), "pid": producer.pid,
             "start": start_ticks(producer.pid)}
    try_claim(open_root(str(out)), 1, ttl_s=300, owner=owner)
    threading.Timer(3.0, lambda: (producer.kill(), producer.wait())).start()  # then it dies mid-shard
    start = time.monotonic()
    summary = generate_dataset_flow(source=str(small_source), out=str(out), bank=str(small_source / "bank.parquet"),
                                    config=fault_config(), orchestration=Orchestration(poll_s=0.2))
    assert time.monotonic() - start >= 3.0
    assert summary["complete"] is True and summary["shards_written"] == 1
    assert "waiting for 1 shards that another live producer is making: shard 00001 claimed by" in caplog.text
    assert_whole(out)
