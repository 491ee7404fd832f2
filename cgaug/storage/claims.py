"""Shard claims: at most one producer works on a shard at a time, across processes and machines.

Workers on a pool never see each other, and the orchestrator can launch the
same shard twice (a retried parent, an overlapping scheduled run, a child run
launched again after its worker died). Before producing a shard, a producer
claims it with a small file ``OUT/claims/shard-00007.json``; a second producer
finds the claim and leaves the shard alone. The holder refreshes the claim's
heartbeat while it works. A claim records its owner's host and process
(`cgaug.storage.fs.process_identity`): a claim whose owner is a dead process
on this host (a SIGKILLed run) is broken at once by the next claimant; a claim
of another host counts as dead only once its heartbeat is older than its TTL
(a lost machine). Either way killed work is redone, never blocked for ever.

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
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cgaug.storage.fs import Root, WriteError, fault_point, process_alive, process_identity, temp_name
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

    def owner_alive(self) -> bool | None:
        """Whether the owner process still runs; None when it is on another host (only the TTL tells)."""
        return process_alive(self.owner.get("host_tag"), self.owner.get("pid"), self.owner.get("start"))

    def dead(self, now: float | None = None) -> bool:
        """Breakable: the owner is a dead process on this host, or the heartbeat is older than the TTL."""
        return self.owner_alive() is False or self.stale(now)

    def describe(self) -> str:
        shown = {k: v for k, v in self.owner.items() if k not in ("host_tag", "start")}
        who = ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))
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
    return dict(process_identity())


def try_claim(root: Root, shard_id: int, ttl_s: float, owner: dict[str, Any] | None = None
              ) -> ShardClaim | ClaimInfo:
    """Claim a shard: the held claim, or the live claim of someone else (then leave the shard alone).

    A dead claim (its owner a dead process on this host, or its heartbeat older than its own
    TTL) is broken and taken over.
    """
    if ttl_s <= 0:
        raise ValueError(f"claim TTL must be positive seconds, found {ttl_s}")
    fault_point("before_claim", shard_id)
    now = time.time()
    info = ClaimInfo(uuid.uuid4().hex, owner or default_owner(), now, now, float(ttl_s))
    for _ in range(3):  # a claim can vanish between our look and our create: look again, boundedly
        if _create_exclusive(root, shard_id, _encode(info)):
            return ShardClaim(root, shard_id, info)
        current = read_claim(root, shard_id)
        if current is not None and not current.dead():
            return current
        _break(root, shard_id, current)
    current = read_claim(root, shard_id)
    if current is None:
        raise RuntimeError(f"{root.uri(claim_name(shard_id))}: could not claim the shard after 3 tries")
    return current


def sweep_claims(root: Root, ttl_s: float) -> list[str]:
    """Remove every dead claim (see `ClaimInfo.dead`), and unreadable ones older than `ttl_s`; returns them."""
    removed = []
    for name in root.list(CLAIMS_DIR, ".json"):
        label = name.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            shard_id = int(label.removeprefix("shard-"))
            claim_name(shard_id)
        except ValueError:
            continue  # not a claim of ours
        info = read_claim(root, shard_id)
        age = root.age_s(name)
        if (info is None and age is not None and age > ttl_s) or (info is not None and info.dead()):
            _break(root, shard_id, info)
            removed.append(name)
    return removed


def _encode(info: ClaimInfo) -> bytes:
    return json.dumps({"token": info.token, "owner": info.owner, "created": info.created,
                       "heartbeat": info.heartbeat, "ttl_s": info.ttl_s}).encode()


def _create_exclusive(root: Root, shard_id: int, data: bytes) -> bool:
    name = claim_name(shard_id)
    final = root.join(name)
    directory, base = os.path.split(final)
    if root.is_local:
        tmp = temp_name(directory, base)
        try:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.link(tmp, final)  # atomic, and fails when the claim exists
            return True
        except FileExistsError:
            return False
        except OSError as error:  # disk full, permission denied: name the claim, leave no temporary file
            raise WriteError(error.errno, error.strerror or str(error), root.uri(name)) from error
        finally:
            with contextlib.suppress(FileNotFoundError):
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
        tomb = temp_name(root.join(CLAIMS_DIR), f"broken-{shard_label(shard_id)}")
        try:
            os.rename(root.join(name), tomb)
        except FileNotFoundError:
            return
        # Renamed a claim that may have been replaced in between by a fresh one: put a fresh one back.
        with open(tomb, "rb") as f:
            try:
                renamed = json.loads(f.read() or b"{}")
            except ValueError:  # an unreadable claim (a torn write of an old release): nothing to keep
                renamed = {}
        if seen is not None and isinstance(renamed, dict) and renamed.get("token") != seen.token and \
                time.time() - renamed.get("heartbeat", 0) <= renamed.get("ttl_s", 0):
            with contextlib.suppress(FileExistsError):
                os.link(tomb, root.join(name))
        os.unlink(tomb)
        return
    current = read_claim(root, shard_id)
    if current is None or (seen is not None and current.token == seen.token):
        root.remove(name)
