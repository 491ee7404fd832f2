"""How the `cgaug` flow schedules shard work: in process or fanned out to the GPU pool.

None of it changes a sample's content, so none of it is part of the output
fingerprint (`cgaug.config.generate.CGAugConfig.output_fingerprint`): an
output made in process can be completed by a fan-out run, and the other way
round. The fan-out itself is `cgaug.flows.fanout`.
"""

from __future__ import annotations

from pydantic import Field

from cgaug.config.base import StrictModel

DEFAULT_SHARD_DEPLOYMENT = "cgaug-shard/gpu"


class Orchestration(StrictModel):
    """How the parent runs shard work; none of it changes a sample's content (not fingerprinted)."""

    in_process: bool = True  # run shards in this process (local CLI) instead of child runs on the pool
    shard_deployment: str = DEFAULT_SHARD_DEPLOYMENT
    # 0 = auto: pending shards split evenly over the pool's online workers, at most
    # cgaug.flows.fanout.MAX_AUTO_SHARDS_PER_CHILD each. More shards per child amortise the child's process
    # start and model load (benchmarks/orchestration.py); fewer balance load and retry in smaller units.
    shards_per_child: int = Field(0, ge=0)
    max_children: int = Field(64, ge=1)  # child runs in flight at once (bounds API and pool load)
    child_attempts: int = Field(3, ge=1)  # launches per shard before the parent fails
    child_timeout_s: float | None = Field(None, gt=0)  # a child unfinished after this is given up on
    poll_s: float = Field(2.0, gt=0)  # how often the parent reads its children's states
    claim_ttl_s: float = Field(300.0, gt=0)  # a producer silent this long is dead (cgaug.storage.claims)
    quality_floor: float | None = Field(0.3, ge=0.0, le=1.0)  # acceptance below: cgaug.shard.low-quality
