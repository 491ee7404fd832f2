"""The run-level steps of generation around the shards: validate the inputs, plan, index. No Prefect.

`check_inputs` is the boundary: every input is checked before anything is
planned or created, and a refusal (`InputError`) names the path, the cause and
the fix. `plan_run` extends the stored plan idempotently, so a rerun with the
same inputs plans nothing new; `index_dataset` writes the index and, last, the
manifest that readers verify. The flow in `cgaug.flows.generate` only chains them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cgaug.config import CGAugConfig
from cgaug.models.hub import TINY, ModelNotFound, is_hub_id, locate, not_found_message
from cgaug.storage.fs import open_root
from cgaug.storage.layout import CONFIG_FILE, MANIFEST_NAME, PLAN_FILE
from cgaug.storage.plan import PlanEntry, PlanMismatch, check_config, load_plan, plan_to_table
from cgaug.tasks.generation.compose import bank_class_filter, usable_classes
from cgaug.tasks.generation.generate import PAINTER_MODEL
from cgaug.tasks.generation.plan import extend_plan, shards_of
from cgaug.tasks.generation.produce import open_bank

__all__ = ["InputError", "PlanMismatch", "RunIncomplete", "check_inputs", "index_dataset", "plan_run",
           "planned_ids", "shard_is_complete"]

OUTPUT_MARKERS = (CONFIG_FILE, PLAN_FILE, MANIFEST_NAME)  # any of them: the folder is a cgaug output


class InputError(ValueError):
    """An input the run cannot start with (source, bank, model, output folder); the message says the fix."""


class RunIncomplete(RuntimeError):
    """The run ended with planned samples missing; what exists is indexed, a rerun completes it."""


def check_inputs(source: str, out: str, bank: str, config: CGAugConfig, *, force: bool = False) -> None:
    """Validate every input before anything is planned or created.

    Raises:
        InputError: the source has no readable split, the bank is missing, unreadable, not a
            bank, without a usable mask or without the configured classes, a model reference
            names nothing, or `out` is a non-empty folder that is not a cgaug output (unless
            `force`) or cannot be written; the message names the path, the cause and the fix.
    """
    from cgaug.storage.cityscapes import list_sources

    try:
        list_sources(source, config.run.split)
    except (OSError, ValueError) as error:
        raise InputError(f"the source cannot be used: {error}. Point --source at a Cityscapes-format "
                         f"root (leftImg8bit/{config.run.split}/... and gtFine/{config.run.split}/...), or "
                         "choose another split (--split).") from error
    try:
        usable_classes(open_bank(bank, bank_class_filter(config.compose)), config.compose)
    except (OSError, ValueError) as error:  # EmptyBankError and every refusal of a bad file are ValueErrors
        raise InputError(f"the object bank cannot be used: {error}. Build one with `cgaug bank build MASKS "
                         "--from folder --out BANK` (or from ADE20K/COCO) and pass it with --bank.") from error
    _check_models(config)
    _check_out(out, force)


def _check_models(config: CGAugConfig) -> None:
    """Every model the run will load must be there now, not found missing inside the first shard."""
    gen, filters = config.generator, config.filters
    references: list[tuple[str | None, str, str | None]] = []  # (value, field, marker; None: file or folder)
    if gen.model != PAINTER_MODEL:  # the procedural stand-in loads no model, ControlNet included
        references += [(gen.model, "generator.model", "model_index.json"),
                       (gen.controlnet, "generator.controlnet", "config.json"),
                       (gen.photo_controlnet, "generator.photo_controlnet", "config.json")]
    if filters.uses_sam:
        references.append((filters.sam_model, "filters.sam_model", "config.json"))
    if filters.uses_segmenter:  # a saved directory, a checkpoint file (`cgaug train`'s model.pt) or a hub id
        references.append((filters.segmenter_model, "filters.segmenter_model", None))
    if filters.uses_anomaly_model:
        references.append((filters.anomaly_model, "filters.anomaly_model", None))
    for name, field, marker in references:
        if not name or name == TINY:
            continue
        if marker is None:
            path = Path(name).expanduser()
            if path.exists():
                continue  # its format is checked by the loader, which names the field
            if not is_hub_id(name):
                raise InputError(not_found_message(name, field, f"no such file or directory: {path}"))
            ref, local = name, False
        else:
            try:
                ref, local = locate(name, field, marker=marker)
            except ModelNotFound as error:
                raise InputError(str(error)) from error
        if not local and os.environ.get("HF_HUB_OFFLINE") and not _in_hub_cache(ref, marker or "config.json"):
            raise InputError(not_found_message(name, field, "not in the Hugging Face cache"))


def _in_hub_cache(repo: str, marker: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return is_hub_id(repo) and isinstance(try_to_load_from_cache(repo, marker), str)


def _check_out(out: str, force: bool) -> None:
    """A local `out` must be empty, a cgaug output, or `force`d, and writable (its nearest existing folder)."""
    if "://" in out and not out.startswith("file://"):
        return
    path = Path(out.removeprefix("file://")).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is a file; expected a folder for the dataset. Choose another --out.")
    if path.is_dir() and not force and any(path.iterdir()) and not any(
            (path / marker).exists() for marker in OUTPUT_MARKERS):
        raise InputError(f"--out {path} is a non-empty folder that is not a cgaug output (it has no "
                         f"{CONFIG_FILE}); writing there would mix the dataset with its files. Choose an empty "
                         "or new folder, or pass --force to write there anyway.")
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {path}: permission denied ({existing} is not writable for this user). Choose "
                         "a folder you can write to, or change its permissions.")


def _relative(root: str, path: str) -> str:
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise ValueError(f"source file {path} is not under the source root {root}")
    return path[len(prefix):]


def plan_run(source: str, out: str, bank: str, config: CGAugConfig) -> tuple[list[PlanEntry], int]:
    """Extend (or create) the stored plan of `out` for `source` and write it back.

    Returns the plan and how many samples this call added (new source images or variants).
    """
    from cgaug.storage.cityscapes import list_sources

    root = open_root(out)
    check_config(out, config)
    sources = [
        record.__class__(record.source_id, record.city, record.split, _relative(source, record.image_path),
                         _relative(source, record.label_path))
        for record in list_sources(source, config.run.split)
    ]
    existing = load_plan(out)
    plan = extend_plan(existing, sources, config.run)
    if len(plan) != len(existing) or not root.exists(PLAN_FILE):
        root.write_parquet_atomic(PLAN_FILE, plan_to_table(plan))
    if not root.exists(CONFIG_FILE):  # the settings the plan's samples are made with, recorded once
        record = {"config_fingerprint": config.output_fingerprint(), "config": config.model_dump(mode="json"),
                  "source": source, "bank": bank}
        root.write_bytes_atomic(CONFIG_FILE, json.dumps(record, indent=2).encode())
    return plan, len(plan) - len(existing)


def planned_ids(plan: list[PlanEntry]) -> dict[int, list[str]]:
    return {shard: [e.spec.sample_id for e in entries] for shard, entries in shards_of(plan).items()}


def shard_is_complete(out: str, plan: list[PlanEntry]):
    from cgaug.storage.shards import shard_complete

    root = open_root(out)
    ids = planned_ids(plan)
    return lambda shard: shard_complete(root, shard, ids[shard])


def index_dataset(out: str, source: str, bank: str, config: CGAugConfig) -> dict[str, Any]:
    from cgaug.storage.shards import write_index

    manifest = write_index(open_root(out), {
        "config": config.model_dump(mode="json"), "config_fingerprint": config.output_fingerprint(),
        "source": source, "bank": bank,
    })
    return manifest.to_dict()


