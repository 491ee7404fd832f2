"""Shard claims: at most one producer works on a shard at a time, across processes and machines.

Workers on a pool never see each other, and the orchestrator can launch the
same shard twice (a retried parent, an overlapping scheduled run, a child run
launched again after its worker died). Before producing a shard, a producer
claims it with a small file ``OUT/claims/shard-00007.json``; a second producer
finds the claim and leaves the shard alone. The holder refreshes the claim's
heartbeat while it works; a claim whose heartbeat is older than its TTL
belongs to a dead producer (a SIGKILLed worker, a lost machine) and is broken
by the next claimant, so killed work is redone, never blocked for ever.

Atomicity: locally the claim is published with `os.link` of a fully written
temporary file (fails if the claim exists: an exclusive create that never
shows a half-written claim) and broken with `os.rename` to a unique name
(exactly one breaker wins). On object stores there is no exclusive create;
there a claim is write-then-read-back, which narrows but does not close the
race, and the shard commit itself stays safe (a valid shard is never
rewritten, see `cgaug.storage.shards.write_shard`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cgaug.storage.fs import TMP_MARKER, Root
from cgaug.storage.layout import CLAIMS_DIR, claim_name, shard_label


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    """What a claim file says: who holds it and when it last proved to be alive."""

    token: str
    owner: dict[str, Any]
    created: float
    heartbeat: float
    ttl_s: float

    def stale(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.heartbeat > self.ttl_s

    def describe(self) -> str:
        who = ", ".join(f"{k}={v}" for k, v in sorted(self.owner.items()))
        return f"claimed by {who or 'unknown'} (heartbeat {time.time() - self.heartbeat:.0f} s ago)"


def read_claim(root: Root, shard_id: int) -> ClaimInfo | None:
    """The current claim, or None when there is none (or it vanished/was unreadable mid-write)."""
    try:
        data = json.loads(root.read_bytes(claim_name(shard_id)))
        return ClaimInfo(data["token"], dict(data.get("owner", {})), float(data["created"]),
                         float(data["heartbeat"]), float(data["ttl_s"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


class ShardClaim:
    """A held claim: refresh it with `heartbeat` (or `keep_alive`), give it up with `release`."""

    def __init__(self, root: Root, shard_id: int, info: ClaimInfo) -> None:
        self.root, self.shard_id, self.info = root, shard_id, info
        self.name = claim_name(shard_id)

    def held(self) -> bool:
        current = read_claim(self.root, self.shard_id)
        return current is not None and current.token == self.info.token

    def heartbeat(self) -> bool:
        """Refresh the heartbeat; False (and nothing written) when the claim was broken and taken."""
        if not self.held():
            return False
        self.info = ClaimInfo(self.info.token, self.info.owner, self.info.created, time.time(), self.info.ttl_s)
        self.root.write_bytes_atomic(self.name, _encode(self.info))
        return True

    def release(self) -> None:
        if self.held():
            self.root.remove(self.name)

    @contextlib.contextmanager
    def keep_alive(self, every_s: float | None = None) -> Iterator[ShardClaim]:
        """Heartbeat from a daemon thread while the body runs (three beats per TTL by default)."""
        interval = every_s if every_s is not None else max(self.info.ttl_s / 3.0, 0.05)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                with contextlib.suppress(OSError):
                    if not self.heartbeat():
                        return

        thread = threading.Thread(target=beat, name=f"claim-{shard_label(self.shard_id)}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


def default_owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def try_claim(root: Root, shard_id: int, ttl_s: float, owner: dict[str, Any] | None = None
              ) -> ShardClaim | ClaimInfo:
    """Claim a shard: the held claim, or the live claim of someone else (then leave the shard alone).

    A stale claim (heartbeat older than its own TTL) is broken and taken over.
    """
    if ttl_s <= 0:
        raise ValueError(f"claim TTL must be positive seconds, found {ttl_s}")
    now = time.time()
    info = ClaimInfo(uuid.uuid4().hex, owner or default_owner(), now, now, float(ttl_s))
    for _ in range(3):  # a claim can vanish between our look and our create: look again, boundedly
        if _create_exclusive(root, shard_id, _encode(info)):
            return ShardClaim(root, shard_id, info)
        current = read_claim(root, shard_id)
        if current is not None and not current.stale():
            return current
        _break(root, shard_id, current)
    current = read_claim(root, shard_id)
    if current is None:
        raise RuntimeError(f"{root.uri(claim_name(shard_id))}: could not claim the shard after 3 tries")
    return current


def _encode(info: ClaimInfo) -> bytes:
    return json.dumps({"token": info.token, "owner": info.owner, "created": info.created,
                       "heartbeat": info.heartbeat, "ttl_s": info.ttl_s}).encode()


def _create_exclusive(root: Root, shard_id: int, data: bytes) -> bool:
    name = claim_name(shard_id)
    final = root.join(name)
    directory, base = os.path.split(final)
    if root.is_local:
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{base}{TMP_MARKER}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, final)  # atomic, and fails when the claim exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    if root.exists(name):
        return False
    root.write_bytes_atomic(name, data)
    time.sleep(0.05)  # let a concurrent writer's object land, then see whose claim survived
    current = read_claim(root, shard_id)
    return current is not None and current.token == json.loads(data)["token"]


def _break(root: Root, shard_id: int, seen: ClaimInfo | None) -> None:
    """Remove a stale claim; only the claim that was seen stale is removed (one breaker wins locally)."""
    name = claim_name(shard_id)
    if root.is_local:
        tomb = root.join(f"{CLAIMS_DIR}/.broken-{shard_id:05d}{TMP_MARKER}{uuid.uuid4().hex}")
        try:
            os.rename(root.join(name), tomb)
        except FileNotFoundError:
            return
        # Renamed a claim that may have been replaced in between by a fresh one: put a fresh one back.
        with open(tomb, "rb") as f:
            renamed = json.loads(f.read() or b"{}")
        if seen is not None and renamed.get("token") != seen.token and time.time() - renamed.get(
                "heartbeat", 0) <= renamed.get("ttl_s", 0):
            with contextlib.suppress(FileExistsError):
                os.link(tomb, root.join(name))
        os.unlink(tomb)
        return
    current = read_claim(root, shard_id)
    if current is None or (seen is not None and current.token == seen.token):
        root.remove(name)
