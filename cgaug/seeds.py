"""Derived randomness: every random choice of a sample comes from its own seed.

A sample's seed is a hash of (run seed, sample id, variant, attempt), so it
does not depend on which shard, worker or order produced the sample, and a
retry (attempt + 1) gets fresh randomness without touching other samples.
Each stage draws from its own stream so that, for example, changing the
prompt vocabulary does not move the pasted objects.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED_BITS = 63  # fits int64 Parquet columns and torch.Generator.manual_seed

STAGE_STREAMS = {"compose": 1, "prompt": 2, "generate": 3, "filter": 4}


def derive_seed(run_seed: int, sample_id: str, variant: int, attempt: int) -> int:
    """The seed of one attempt at one sample; stable across Python versions and machines."""
    key = f"{run_seed}\x1f{sample_id}\x1f{variant}\x1f{attempt}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << SEED_BITS) - 1)


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """An independent numpy generator for one stage of one sample."""
    if stage not in STAGE_STREAMS:
        raise KeyError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_STREAMS)}")
    return np.random.default_rng(np.random.SeedSequence([seed, STAGE_STREAMS[stage]]))


def sample_id_for(source_id: str, variant: int) -> str:
    """The id of the `variant`-th generated sample of a source image."""
    return f"{source_id}__v{variant:03d}"
