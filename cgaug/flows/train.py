"""The `cgaug-train` flow: two-stage noise-aware training as one task per stage, then the report.

Tasks pass the run directory and small records, never tensors. Each stage task trains until the
end of its stage from the run directory's last checkpoint, so a retried or re-run task (or a
re-run of the whole flow on the same RUN_DIR) resumes instead of starting over. After each epoch
a table artifact (`train-epochs`) is updated; the report task publishes the metrics table
(`train-metrics`) and a markdown summary with the loss curves inlined as a PNG (`train-summary`),
and writes RUN_DIR/loss_curves.png.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cgaug.config import TrainConfig

CURVES_NAME = "loss_curves.png"


def _publish_epoch(history: list[dict[str, Any]]):
    from cgaug.tasks.training.report import metrics_table

    def publish(record: dict[str, Any]) -> None:
        history.append(record)
        create_table_artifact(metrics_table(history), key="train-epochs",
                              description="cgaug-train: metrics of the epochs finished so far")
        get_run_logger().info("epoch %d (stage %d): loss %.4f, selection rate %.3f, val AP %s", record["epoch"],
                              record["stage"], record["loss"], record["selection_rate"], record.get("val/ap"))

    return publish


@task(name="train-stage", task_run_name="train-stage-{stage}", retries=1)
def train_stage_task(out: str, stage: int, last_epoch: int, config: TrainConfig | None = None,
                     source: str | None = None, shards: str | None = None,
                     bank: str | None = None) -> dict[str, Any]:
    """Train epochs up to `last_epoch` (the stage's last), resuming from RUN_DIR when it holds a run."""
    from cgaug.storage.fs import open_root
    from cgaug.tasks.training.loop import CONFIG_NAME, LAST, train

    root = open_root(out)
    resume = root.exists(CONFIG_NAME) and root.exists(LAST)
    history: list[dict[str, Any]] = []
    result = train(out, cfg=config, source=source, shards=shards, bank=bank, resume=resume,
                   stop_after_epoch=last_epoch, on_epoch=_publish_epoch(history))
    return {k: v for k, v in result.items() if k != "history"} | {"stage": stage}


@task(name="train-report")
def train_report_task(out: str, meta: dict[str, Any]) -> dict[str, Any]:
    import json

    from cgaug.storage.fs import open_root
    from cgaug.tasks.training.loop import METRICS_NAME
    from cgaug.tasks.training.report import loss_curves_png, markdown_report, metrics_table

    root = open_root(out, create=False)
    history = json.loads(root.read_bytes(METRICS_NAME))
    png = loss_curves_png(history)
    root.write_bytes_atomic(CURVES_NAME, png)
    create_table_artifact(metrics_table(history), key="train-metrics", description=f"cgaug-train metrics of {out}")
    create_markdown_artifact(markdown_report(history, png, meta | {"out": out}), key="train-summary",
                             description=f"cgaug-train summary of {out}")
    return {"curves": root.uri(CURVES_NAME), "epochs": len(history)}


@flow(name="cgaug-train")
def train_flow(out: str, source: str | None = None, shards: str | None = None, config: TrainConfig | None = None,
                bank: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Two-stage noise-aware training of a segmenter on Cityscapes originals + CG-Aug shards.

    Args:
        out: run directory (path or fsspec URI): config, checkpoints, metrics, model.pt, loss curves.
        source: Cityscapes-format root of the originals (a new run).
        shards: cgaug output root holding the augmented samples (a new run).
        config: the training configuration (default: the deeplab preset).
        bank: object bank for the anomaly mix (default: data.bank, else SOURCE/bank.parquet).
        resume: continue the run in `out` from its last checkpoint (source, shards, config come from it).

    Returns:
        {"out", "model", "best_ap", "epochs", "curves"}.
    """
    from cgaug.tasks.training.loop import read_run

    if resume:
        _, config, inputs = read_run(out)
        source, shards, bank = inputs["source"], inputs["shards"], inputs.get("bank")
    config = config or TrainConfig()
    if not resume and (source is None or shards is None):
        raise ValueError("a new training run needs source (Cityscapes root) and shards (cgaug output root)")
    ends = [(1, config.stage1.epochs - 1), (2, config.stage1.epochs + config.stage2.epochs - 1)]
    result: dict[str, Any] = {}
    for stage, last_epoch in ends:
        if last_epoch < 0 or (stage == 2 and config.stage2.epochs == 0):
            continue
        result = train_stage_task(out, stage, last_epoch, config, source, shards, bank)
    meta = {"preset": config.preset, "model": config.model.kind, "best_ap": result.get("best_ap"),
            "model_path": result.get("model")}
    report = train_report_task(out, meta)
    return {"out": out, "model": result.get("model"), "best_ap": result.get("best_ap"),
            "epochs": report["epochs"], "curves": report["curves"]}
