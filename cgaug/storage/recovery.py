"""Resume safely: sweep a crashed run's debris, check each shard against its records, set aside what fails.

A run can end anywhere: SIGKILLed while writing a shard (a temporary file and a
claim are left), between a shard's commit and its report (a whole shard with no
report or journal entry), while indexing (no manifest), or a disk can flip bytes
later. `recover` runs at the start of every run, before the pending shards are
worked out, and leaves the root in a state the rest of the run can trust:

- debris: temporary files and claims whose owner is a dead process on this host
  are removed at once, those of other hosts once they are older than the TTL;
- each shard on disk is hashed and compared with the sha256 the manifest or the
  journal recorded for it (cheap next to generating it); a shard no record knows
  is read whole (schema, sample ids, every PNG) before it is trusted;
- a shard or index that fails, and a manifest that cannot be read, is moved to
  ``OUT/quarantine/<batch>/`` with a note of why (never deleted), so the run
  produces the shard again and rebuilds the index;
- a sound shard without its report or journal entry gets them from its own
  contents (the commit, the journal entry and the report are one unit);
- whether manifest and index still describe the shards decides whether the
  run has to rebuild them.

Shards that a live producer has claimed are left alone: they may be mid-commit.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cgaug.storage.claims import read_claim, sweep_claims
from cgaug.storage.fs import Root, process_alive, temp_owner
from cgaug.storage.layout import (
    CLAIMS_DIR,
    INDEX_NAME,
    JOURNAL_DIR,
    MANIFEST_NAME,
    REPORTS_DIR,
    SHARD_SUFFIX,
    SHARDS_DIR,
    quarantine_name,
    quarantine_reasons,
    report_name,
    shard_label,
)
from cgaug.storage.reports import journal, quality_of_shard, write_report
from cgaug.storage.shards import Manifest, read_manifest, shard_problems

_TEMP_DIRS = ("", SHARDS_DIR, CLAIMS_DIR, REPORTS_DIR, JOURNAL_DIR)


@dataclass(slots=True)
class Recovery:
    """What `recover` found and did."""

    temps: list[str] = field(default_factory=list)  # temporary files removed
    claims: list[str] = field(default_factory=list)  # dead claims removed
    quarantined: dict[str, str] = field(default_factory=dict)  # original name -> why it was set aside
    recovered: list[int] = field(default_factory=list)  # shards whose report / journal entry were rebuilt
    sound: dict[str, str] = field(default_factory=dict)  # shard name -> sha256 of every shard found sound
    index_current: bool = False  # manifest and index describe exactly the sound shards and the plan

    def notes(self) -> list[str]:
        """One line per kind of repair, for the log and the run summary (empty when nothing was wrong)."""
        lines = []
        if self.temps or self.claims:
            lines.append(f"removed debris of an earlier run: {len(self.temps)} temporary files, "
                         f"{len(self.claims)} dead claims")
        for name, why in self.quarantined.items():
            lines.append(f"set aside {name} into quarantine/ ({why}); it is produced again")
        if self.recovered:
            shown = ", ".join(shard_label(s) for s in self.recovered[:20])
            lines.append(f"rebuilt the report and journal entry of {len(self.recovered)} shards from their "
                         f"contents ({shown})")
        return lines


def sweep(root: Root, ttl_s: float) -> tuple[list[str], list[str]]:
    """Remove temporary files and claims whose owners are gone; returns (temporary files, claims) removed.

    An owner on this host is gone when its process is dead; one on another host when the file
    (or the claim's heartbeat) is older than `ttl_s`.
    """
    temps = []
    for prefix in _TEMP_DIRS:
        for name in root.list_temps(prefix):
            owner = temp_owner(posixpath.basename(name))
            alive = process_alive(*owner) if owner is not None else None
            age = root.age_s(name) if alive is None else None
            if alive is False or (age is not None and age > ttl_s):
                root.remove(name)
                temps.append(name)
    return temps, sweep_claims(root, ttl_s)


def quarantine(root: Root, name: str, reason: str, batch: str) -> str:
    """Move `name` to ``quarantine/<batch>/<name>`` and record why; returns the new name."""
    dest = quarantine_name(batch, name)
    root.move(name, dest)
    record_name = quarantine_reasons(batch)
    reasons = json.loads(root.read_bytes(record_name)) if root.exists(record_name) else {}
    reasons[name] = {"reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    root.write_bytes_atomic(record_name, json.dumps(reasons, indent=2).encode() + b"\n")
    return dest


def recover(root: Root, ttl_s: float, planned: dict[int, list[str]] | None,
            producer: dict[str, Any]) -> Recovery:
    """Sweep, check and repair `root` before a run works out what is left to do (see the module doc).

    `planned` maps each planned shard to its sample ids (None: no plan to compare with);
    `producer` names this process in rebuilt reports and journal entries.
    """
    result = Recovery()
    result.temps, result.claims = sweep(root, ttl_s)
    batch = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    manifest = _readable_manifest(root, batch, result)
    entries = journal(root)
    known: dict[str, set[str]] = {}
    for info in manifest.shards if manifest is not None else ():
        known.setdefault(info.name, set()).add(info.sha256)
    for shard_id, writes in entries.items():
        known.setdefault(f"{SHARDS_DIR}/{shard_label(shard_id)}{SHARD_SUFFIX}", set()).update(
            e["sha256"] for e in writes if isinstance(e.get("sha256"), str))
    busy = False
    for name in root.list(SHARDS_DIR, SHARD_SUFFIX):
        shard_id = _shard_id(name)
        claim = read_claim(root, shard_id) if shard_id is not None else None
        if claim is not None and not claim.dead():
            busy = True  # a live producer may be committing it right now
            continue
        digest = root.sha256(name)
        expected = planned.get(shard_id) if planned is not None and shard_id is not None else None
        recorded = digest in known.get(name, set())
        if not recorded:
            problems = (["sha256 differs from the recorded one"] if known.get(name)
                        else shard_problems(root, name, expected))
            if problems:
                result.quarantined[name] = problems[0]
                quarantine(root, name, "; ".join(problems[:5]), batch)
                continue
        result.sound[name] = digest
        if shard_id is not None and _repair_records(root, shard_id, digest, recorded, entries.get(shard_id, []),
                                                    producer):
            result.recovered.append(shard_id)
    result.index_current = not busy and _index_current(root, manifest, result, planned, batch)
    return result


def _readable_manifest(root: Root, batch: str, result: Recovery) -> Manifest | None:
    try:
        return read_manifest(root)
    except FileNotFoundError:
        return None
    except ValueError as error:
        result.quarantined[MANIFEST_NAME] = str(error)
        quarantine(root, MANIFEST_NAME, str(error), batch)
        return None


def _shard_id(name: str) -> int | None:
    label = posixpath.basename(name).removesuffix(SHARD_SUFFIX)
    try:
        return int(label.removeprefix("shard-")) if label.startswith("shard-") else None
    except ValueError:
        return None


def _repair_records(root: Root, shard_id: int, digest: str, recorded: bool, writes: list[dict[str, Any]],
                    producer: dict[str, Any]) -> bool:
    """Write the report and/or journal entry a sound shard lacks; True when anything was written.

    Entries of releases that did not record hashes count for a shard whose hash the manifest knows.
    """
    hashes = {entry.get("sha256") for entry in writes}
    has_entry = digest in hashes or (recorded and None in hashes)
    report = report_name(shard_id)
    try:
        data = json.loads(root.read_bytes(report)) if root.exists(report) else None
        has_report = isinstance(data, dict) and data.get("sha256", digest) == digest and "shard" in data
    except ValueError:
        has_report = False
    if has_entry and has_report:
        return False
    write_report(root, quality_of_shard(root, shard_id), {"recovered_by": producer}, report=not has_report,
                 recovered=True)
    return True


def _index_current(root: Root, manifest: Manifest | None, result: Recovery,
                   planned: dict[int, list[str]] | None, batch: str) -> bool:
    """Whether manifest and index describe exactly the sound shards (and the plan); a damaged index is set aside."""
    if manifest is None:
        return False
    if root.exists(INDEX_NAME):
        digest = root.sha256(INDEX_NAME)
        if digest != manifest.index.get("sha256"):
            reason = f"sha256 {digest[:12]}... differs from the manifest's"
            result.quarantined[INDEX_NAME] = reason
            quarantine(root, INDEX_NAME, reason, batch)
            return False
    else:
        return False
    listed = {info.name: info.sha256 for info in manifest.shards}
    if listed != result.sound:
        return False
    if manifest.complete is None:  # an older release's manifest: verify compares with the plan itself
        return True
    samples = sum(len(ids) for ids in planned.values()) if planned is not None else None
    return (manifest.plan or {}).get("samples") == samples
