"""Shard claims: exclusive, alive while beating, broken when stale, safe under concurrent claimants."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from cgaug.storage.claims import ClaimInfo, ShardClaim, claim_name, read_claim, sweep_claims, try_claim
from cgaug.storage.fs import open_root, process_identity
from tests.faults.dead import dead_owner


def test_first_claimant_holds_the_shard_and_the_second_sees_who(tmp_path):
    root = open_root(tmp_path)
    mine = try_claim(root, 7, ttl_s=60, owner={"host": "a", "pid": 1})
    assert isinstance(mine, ShardClaim) and mine.held()
    theirs = try_claim(root, 7, ttl_s=60, owner={"host": "b", "pid": 2})
    assert isinstance(theirs, ClaimInfo) and theirs.owner == {"host": "a", "pid": 1}
    assert "host=a" in theirs.describe()
    assert isinstance(try_claim(root, 8, ttl_s=60), ShardClaim)  # other shards are free
    mine.release()
    assert read_claim(root, 7) is None and not (tmp_path / claim_name(7)).exists()
    assert isinstance(try_claim(root, 7, ttl_s=60), ShardClaim)


def test_a_stale_claim_is_broken_and_taken_over(tmp_path):
    root = open_root(tmp_path)
    dead = try_claim(root, 3, ttl_s=0.2, owner={"who": "killed"})
    assert isinstance(dead, ShardClaim)
    time.sleep(0.3)  # no heartbeat: the holder is dead
    assert read_claim(root, 3).stale()
    taken = try_claim(root, 3, ttl_s=60, owner={"who": "next"})
    assert isinstance(taken, ShardClaim) and taken.held()
    assert not dead.held() and dead.heartbeat() is False  # the dead holder cannot revive its claim
    assert read_claim(root, 3).owner == {"who": "next"}
    dead.release()  # a late release of a lost claim leaves the new holder alone
    assert taken.held()


def test_a_claim_of_a_dead_process_on_this_host_is_broken_at_once(tmp_path):
    root = open_root(tmp_path)
    owner = dead_owner()
    assert isinstance(try_claim(root, 4, ttl_s=300, owner=owner), ShardClaim)
    assert read_claim(root, 4).owner_alive() is False and read_claim(root, 4).dead()
    taken = try_claim(root, 4, ttl_s=300)  # no waiting for the 300 s TTL
    assert isinstance(taken, ShardClaim) and read_claim(root, 4).owner == process_identity()
    assert read_claim(root, 4).owner_alive() is True


def test_a_claim_of_another_host_keeps_its_ttl(tmp_path):
    root = open_root(tmp_path)
    remote = dead_owner() | {"host": "elsewhere", "host_tag": "0badc0de"}  # the same pid means nothing there
    try_claim(root, 4, ttl_s=300, owner=remote)
    assert read_claim(root, 4).owner_alive() is None
    assert isinstance(try_claim(root, 4, ttl_s=300), ClaimInfo)  # still theirs
    reused = process_identity() | {"start": process_identity()["start"] + 1}  # our pid, another start time
    try_claim(root, 5, ttl_s=300, owner=reused)
    assert read_claim(root, 5).owner_alive() is False  # a reused pid is not the owner


def test_sweep_removes_dead_and_unreadable_claims_and_keeps_live_ones(tmp_path):
    import os

    root = open_root(tmp_path)
    try_claim(root, 1, ttl_s=300, owner=dead_owner())
    try_claim(root, 2, ttl_s=300)  # ours, alive
    try_claim(root, 3, ttl_s=300, owner={"host": "elsewhere", "host_tag": "0badc0de", "pid": 1})
    (tmp_path / claim_name(4)).write_text("{torn")
    old = tmp_path / claim_name(5)
    old.write_text("{torn")
    os.utime(old, (0, 0))  # unreadable and older than the TTL
    assert sweep_claims(root, ttl_s=300) == [claim_name(1), claim_name(5)]
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == [
        "shard-00002.json", "shard-00003.json", "shard-00004.json"]


def test_keep_alive_keeps_a_short_ttl_claim_fresh(tmp_path):
    root = open_root(tmp_path)
    claim = try_claim(root, 1, ttl_s=0.3)
    with claim.keep_alive(every_s=0.05):
        time.sleep(0.8)  # well past the TTL
        assert not read_claim(root, 1).stale()
        assert isinstance(try_claim(root, 1, ttl_s=0.3), ClaimInfo)
    first_beat = read_claim(root, 1).heartbeat
    assert first_beat > claim.info.created


def test_claims_never_show_half_written_files(tmp_path):
    root = open_root(tmp_path)
    try_claim(root, 2, ttl_s=60)
    assert [p.name for p in (tmp_path / "claims").iterdir()] == ["shard-00002.json"]
    data = json.loads((tmp_path / "claims" / "shard-00002.json").read_text())
    assert set(data) == {"token", "owner", "created", "heartbeat", "ttl_s"}


def test_non_positive_ttl_is_refused(tmp_path):
    with pytest.raises(ValueError, match="TTL"):
        try_claim(open_root(tmp_path), 0, ttl_s=0)


def _contend(path: str, start: float, results) -> None:
    while time.time() < start:
        pass
    got = try_claim(open_root(path), 5, ttl_s=60, owner={"pid": multiprocessing.current_process().pid})
    results.put(isinstance(got, ShardClaim))


@pytest.mark.parametrize("stale_first", [False, True])
def test_exactly_one_of_many_processes_wins(tmp_path, stale_first):
    if stale_first:  # everyone races to break the same dead claim as well
        try_claim(open_root(tmp_path), 5, ttl_s=0.01)
        time.sleep(0.05)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start = time.time() + 0.3
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), start, results)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    wins = [results.get(timeout=5) for _ in procs]
    assert sum(wins) == 1
