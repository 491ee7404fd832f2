"""The `cgaug-shard` flow: produce a few planned shards on one GPU worker.

One child run of the `cgaug` parent, scheduled on the GPU pool (deployment
`cgaug-shard/gpu`); the parent's in-process mode calls the same `produce_shard_task`.
Prefect wiring only: the work is `cgaug.tasks.generation.produce.produce_claimed_shard`
(claim, make and write, report); this module names the producer after its flow run and
publishes the shard's quality table (`cgaug-shard-quality` artifact) and preview.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from cgaug.config import CGAugConfig
from cgaug.flows.monitor import publish_shard_preview, publish_shard_quality
from cgaug.storage.fs import process_identity
from cgaug.storage.plan import check_config
from cgaug.tasks.generation.produce import DEFAULT_CLAIM_TTL_S, WRITTEN, produce_claimed_shard


def producer_identity() -> dict[str, Any]:
    """Who produces a shard: host, process (enough to tell later whether it died), and the Prefect flow
    run / worker when there is one."""
    identity: dict[str, Any] = dict(process_identity())
    run_id = flow_run.get_id()
    if run_id:
        identity["flow_run"] = str(run_id)
        identity["flow_run_name"] = flow_run.get_name()
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu:
        identity["gpu"] = gpu
    return identity


@task(name="shard", task_run_name="shard-{shard_id:05d}")
def produce_shard_task(source: str, out: str, bank: str, config: CGAugConfig, shard_id: int,
                       claim_ttl_s: float = DEFAULT_CLAIM_TTL_S, quality_floor: float | None = None
                       ) -> dict[str, Any]:
    outcome = produce_claimed_shard(source, out, bank, config, shard_id, producer=producer_identity(),
                                    claim_ttl_s=claim_ttl_s)
    get_run_logger().info("shard %05d: %s %s", shard_id, outcome["status"], outcome["detail"])
    if outcome["status"] == WRITTEN:
        publish_shard_quality(out, shard_id, quality_floor)
        publish_shard_preview(out, shard_id)
    return outcome


@flow(name="cgaug-shard", log_prints=True)
def produce_shards_flow(source: str, out: str, bank: str, shard_ids: list[int], config: CGAugConfig | None = None,
                        claim_ttl_s: float = DEFAULT_CLAIM_TTL_S, quality_floor: float | None = None
                        ) -> list[dict[str, Any]]:
    """Produce planned shards of `out` (the parent `cgaug` has written the plan) on this worker.

    Args:
        source: Cityscapes-format root, as the parent was given it.
        out: output root holding plan.parquet.
        bank: object bank Parquet file.
        shard_ids: the plan's shard ids to produce, in order.
        config: the parent's configuration (its fingerprint must match OUT/config.json).
        claim_ttl_s: seconds without a heartbeat after which a claim counts as abandoned.
        quality_floor: acceptance rate under which the quality artifact flags the shard.
    """
    config = config or CGAugConfig()
    check_config(out, config)
    return [produce_shard_task(source, out, bank, config, shard_id, claim_ttl_s, quality_floor)
            for shard_id in shard_ids]
