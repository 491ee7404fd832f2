"""Regenerate one stored sample from its row, to prove (or measure) reproducibility.

A row records everything that determines its image: the seed of its composition and prompt, the
prompt itself, the seed the generator was given (`image_seed`, which the filter's retries derive)
and the generator settings. This module rebuilds the composition from the source image and the
bank with the row's seed, checks it against the stored conditioning map, runs the generator of the
output's recorded configuration on the row's prompt and image seed, and compares pixels.

Batching changes pixels at float-rounding level (a sample generated in a batch equals itself
generated alone to ~1e-6, which can move a uint8 value by one), so the sample is regenerated inside
the batch it was made in. That batch is reconstructed from the shard's rows: round r of the shard
loop generates, in plan order, every non-skipped sample whose final attempt is at least r (a retry
and a re-composition both advance the attempt by one per round), same-size maps together, cut into
`generator.batch_size` chunks; each member's composition seed is the plan's until its
re-composition, and its image seed is the plan's at attempt 0 and derived after. On the CPU the
result is then bit-identical at the same torch thread count; on a GPU it is expected to be so on
the same GPU model and software (README, "Reproducibility").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cgaug.config import CGAugConfig
from cgaug.seeds import derive_seed
from cgaug.storage.fs import open_root
from cgaug.storage.layout import CONFIG_FILE, INDEX_NAME
from cgaug.storage.plan import PlanEntry, load_plan
from cgaug.storage.schema import VERDICT_SKIPPED
from cgaug.storage.shards import read_manifest, read_sample
from cgaug.tasks.generation.compose import bank_class_filter, usable_classes
from cgaug.tasks.generation.generate import load_generator
from cgaug.tasks.generation.produce import open_bank
from cgaug.tasks.generation.shard import prepare


class RegenerateError(ValueError):
    """The sample cannot be regenerated (skipped, not planned, settings changed); the message says why."""


@dataclass(frozen=True)
class Regenerated:
    sample_id: str
    image: np.ndarray  # the regenerated image
    stored: np.ndarray  # the image in the shard
    composition_identical: bool  # the rebuilt conditioning map equals the stored one
    prompt_identical: bool  # the prompt drawn from the row's seed equals the stored prompt
    settings_differ: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # column -> (stored, now)

    @property
    def identical(self) -> bool:
        return self.image.shape == self.stored.shape and bool(np.array_equal(self.image, self.stored))

    @property
    def max_pixel_difference(self) -> int:
        if self.image.shape != self.stored.shape:
            return 255
        return int(np.abs(self.image.astype(np.int16) - self.stored.astype(np.int16)).max())

    def summary(self) -> dict[str, Any]:
        return {"sample_id": self.sample_id, "bit_identical": self.identical,
                "max_pixel_difference": self.max_pixel_difference,
                "composition_identical": self.composition_identical, "prompt_identical": self.prompt_identical,
                "settings_differ": {k: list(v) for k, v in self.settings_differ.items()}}


def regenerate_sample(out: str, sample_id: str, *, source: str | None = None,
                      bank: str | None = None) -> Regenerated:
    """Rebuild `sample_id` of the output `out` from its row; `source`/`bank` default to the run's own.

    Raises:
        RegenerateError: the sample was skipped, is not in the plan, or the stored configuration
            does not match its fingerprint.
        KeyError, FileNotFoundError: the sample or the output does not exist.
    """
    root = open_root(out, create=False)
    manifest = read_manifest(root)
    recorded = json.loads(root.read_bytes(CONFIG_FILE))
    config = CGAugConfig.model_validate(recorded["config"])
    if config.output_fingerprint() != recorded.get("config_fingerprint"):
        raise RegenerateError(f"{root.uri(CONFIG_FILE)}: the recorded configuration does not give its recorded "
                              "fingerprint; it was edited or written by another version of cgaug")
    row = read_sample(root, sample_id)
    if row["verdict"] == VERDICT_SKIPPED or row["image"] is None:
        raise RegenerateError(f"sample {sample_id!r} is {row['verdict']} ({', '.join(row['reasons'] or [])}): "
                              "it has no image to regenerate")
    entry = next((e for e in load_plan(out) if e.spec.sample_id == sample_id), None)
    if entry is None:
        raise RegenerateError(f"sample {sample_id!r} is in the shards but not in the plan of {root.uri()}")
    source = source or manifest.extra.get("source")
    bank = bank or manifest.extra.get("bank")
    if not source or not bank:
        raise RegenerateError(f"{root.uri()}: the manifest does not record the source and bank; pass them")

    object_bank = open_bank(bank, bank_class_filter(config.compose))
    classes = usable_classes(object_bank, config.compose)
    batch = _batch_of(root, config, row, [e for e in load_plan(out) if e.spec.shard == entry.spec.shard])
    prepared = [prepare(member, source, object_bank, classes, config, seed=compose_seed)[0]
                for member, compose_seed, _ in batch]
    position = next(i for i, (member, _, _) in enumerate(batch) if member.spec.sample_id == sample_id)
    photo_inputs = {} if prepared[0].photo is None else {
        "photos": [p.photo for p in prepared], "photo_masks": [p.composition.ood_mask for p in prepared]}
    generate, settings = load_generator(config.generator)
    images = generate([p.composition.cond_map for p in prepared], [p.prompt.text for p in prepared],
                      [p.prompt.negative for p in prepared], [image_seed for _, _, image_seed in batch],
                      **photo_inputs)
    mine = prepared[position]
    now = settings(*mine.composition.label.shape)
    return Regenerated(
        sample_id=sample_id, image=images[position], stored=row["image"],
        composition_identical=bool(np.array_equal(mine.composition.cond_map, row["cond"])),
        prompt_identical=mine.prompt.text == row["prompt"],
        settings_differ={key: (row[key], value) for key, value in now.items() if row.get(key) != value},
    )


def _batch_of(root: Any, config: CGAugConfig, row: dict[str, Any], shard_plan: list[PlanEntry],
              ) -> list[tuple[PlanEntry, int, int]]:
    """(entry, composition seed, image seed) of the generator batch that made `row`'s image."""
    run_seed, round_ = config.run.seed, int(row["attempt"])
    meta = {r["sample_id"]: r for r in root.read_parquet(
        INDEX_NAME, columns=["sample_id", "shard", "verdict", "attempt", "seed", "height", "width"]).to_pylist()
        if r["shard"] == row["shard"]}
    size = (row["height"], row["width"])
    members = []
    for entry in shard_plan:  # plan order is the order of the shard loop's rounds
        spec = entry.spec
        found = meta.get(spec.sample_id)
        if (found is None or found["verdict"] == VERDICT_SKIPPED or found["attempt"] < round_
                or (found["height"], found["width"]) != size):
            continue
        compose_seed = spec.seed
        if found["seed"] != spec.seed:  # re-composed: with the seed of the attempt that re-composed
            recomposed_at = next((a for a in range(1, found["attempt"] + 1)
                                  if derive_seed(run_seed, spec.sample_id, spec.variant, a) == found["seed"]), None)
            if recomposed_at is None:
                raise RegenerateError(f"sample {spec.sample_id!r}: its seed {found['seed']} is neither the plan's "
                                      "nor one derived for its attempts")
            compose_seed = found["seed"] if round_ >= recomposed_at else spec.seed
        image_seed = spec.seed if round_ == 0 else derive_seed(run_seed, spec.sample_id, spec.variant, round_)
        members.append((entry, compose_seed, image_seed))
    position = next(i for i, (entry, _, _) in enumerate(members) if entry.spec.sample_id == row["sample_id"])
    size_ = config.generator.batch_size
    start = position // size_ * size_
    return members[start:start + size_]
