"""The stored plan of an output: ``OUT/plan.parquet`` and the settings it was made with, ``OUT/config.json``.

The plan fixes every shard's inputs (source ids, variants, seeds), so it is read
by every producer of a shard and written only by the parent run that extends
it. ``config.json`` records the settings the plan's samples are made with; a
run whose content settings differ (another fingerprint) must not add to the
output, or its samples would disagree with the ones already there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from cgaug.config import CGAugConfig
from cgaug.records import SampleSpec, SourceRecord
from cgaug.storage.fs import Root, open_root
from cgaug.storage.layout import CONFIG_FILE, PLAN_FILE

PLAN_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("source_id", pa.string()),
    ("city", pa.string()),
    ("split", pa.string()),
    ("image_path", pa.string()),  # relative to the source root, so a moved dataset still resolves
    ("label_path", pa.string()),
    ("variant", pa.int32()),
    ("attempt", pa.int32()),
    ("seed", pa.int64()),
    ("shard", pa.int32()),
])


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One planned sample: what to make (`spec`) and from which source image."""

    spec: SampleSpec
    source: SourceRecord  # paths relative to the source root


class PlanMismatch(ValueError):
    """An output directory planned with settings that change sample content."""


def plan_to_table(plan: list[PlanEntry]) -> pa.Table:
    rows = [{
        "sample_id": e.spec.sample_id, "source_id": e.spec.source_id, "city": e.source.city,
        "split": e.source.split, "image_path": e.source.image_path, "label_path": e.source.label_path,
        "variant": e.spec.variant, "attempt": e.spec.attempt, "seed": e.spec.seed, "shard": e.spec.shard,
    } for e in plan]
    return pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)


def plan_from_table(table: pa.Table) -> list[PlanEntry]:
    missing = set(PLAN_SCHEMA.names) - set(table.column_names)
    if missing:
        raise ValueError(f"plan table lacks columns {sorted(missing)}; expected {PLAN_SCHEMA.names}")
    return [
        PlanEntry(
            SampleSpec(row["sample_id"], row["source_id"], row["variant"], row["attempt"], row["seed"],
                       row["shard"]),
            SourceRecord(row["source_id"], row["city"], row["split"], row["image_path"], row["label_path"]),
        )
        for row in table.to_pylist()
    ]


def load_plan(out: str) -> list[PlanEntry]:
    """The plan of `out`; empty when nothing was planned there yet."""
    root = open_root(out)
    return plan_from_table(root.read_parquet(PLAN_FILE)) if root.exists(PLAN_FILE) else []


def planned_samples(root: Root) -> dict[str, int] | None:
    """{sample id: shard} of the plan next to the shards, or None when the root has no plan.

    Raises:
        ValueError: plan.parquet is unreadable.
    """
    if not root.exists(PLAN_FILE):
        return None
    try:
        table = root.read_parquet(PLAN_FILE, columns=["sample_id", "shard"])
    except (OSError, pa.ArrowException, KeyError) as error:
        raise ValueError(f"{root.uri(PLAN_FILE)}: not a readable plan ({error})") from error
    return dict(zip(table.column("sample_id").to_pylist(), table.column("shard").to_pylist(), strict=True))


def write_plan(out: str, plan: list[PlanEntry]) -> None:
    """Replace the plan of `out` atomically (readers see the old plan or the new one, never a part)."""
    open_root(out).write_parquet_atomic(PLAN_FILE, plan_to_table(plan))


def check_config(out: str, config: CGAugConfig) -> None:
    """Refuse to extend an output made with different content settings: its samples would disagree.

    Raises:
        PlanMismatch: ``config.json`` of `out` records another fingerprint; the message lists the
            settings that differ.
    """
    root = open_root(out)
    if not root.exists(CONFIG_FILE):
        return
    recorded = json.loads(root.read_bytes(CONFIG_FILE))
    if recorded.get("config_fingerprint") != config.output_fingerprint():
        old, new = recorded.get("config", {}), config.model_dump(mode="json")
        changed = sorted(f"{section}.{key}" for section in new for key in new[section]
                         if old.get(section, {}).get(key) != new[section][key])
        raise PlanMismatch(
            f"{root.uri()} was generated with other settings (fingerprint {recorded.get('config_fingerprint')}, "
            f"now {config.output_fingerprint()}; differing: {', '.join(changed) or 'unknown'}). "
            "Use a new output directory, or the recorded settings (config.json there).")
