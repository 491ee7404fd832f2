"""The `cgaug-eval` flow: one task per dataset (inference, metrics, curves, grid), then the report.

Tasks pass checkpoint paths, dataset kinds and roots, and small JSON records,
never arrays. The segmenter is loaded once per worker process and reused by
every dataset task it runs. Each dataset task publishes a Prefect table
artifact with its metrics; the report task writes results.json / .parquet and
a markdown summary artifact.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cgaug.config import EvalOptions


def dataset_names(specs: list[tuple[str, str]]) -> list[str]:
    """Report names: the kind, suffixed -2, -3... when a kind is evaluated more than once."""
    names, seen = [], {}
    for kind, _ in specs:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(kind if seen[kind] == 1 else f"{kind}-{seen[kind]}")
    return names


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "eval-" + re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


@cache
def _segmenter(checkpoint: str, device: str):
    from cgaug.models.device import torch_device
    from cgaug.models.segmenters import load_segmenter

    return load_segmenter(checkpoint, device=torch_device(device))


def evaluate_one(checkpoint: str, kind: str, root: str, name: str, out: str, options: EvalOptions) -> dict[str, Any]:
    """Evaluate one dataset and write its part of the report; returns its record (no arrays)."""
    from cgaug.storage.evalsets import open_dataset
    from cgaug.storage.fs import open_root
    from cgaug.tasks.evaluation.evaluate import evaluate_dataset
    from cgaug.tasks.evaluation.report import write_dataset_report

    dataset = open_dataset(kind, root, acdc_root=options.acdc_root, acdc_void=options.acdc_void,
                           ro21_subset=options.ro21_subset)
    evaluation = evaluate_dataset(_segmenter(checkpoint, options.device), dataset, options)
    return write_dataset_report(open_root(out), name, evaluation, options.fpr_rule)


@task(name="evaluate-dataset", task_run_name="eval-{name}")
def evaluate_dataset_task(checkpoint: str, kind: str, root: str, name: str, out: str,
                          options: EvalOptions) -> dict[str, Any]:
    from cgaug.tasks.evaluation.report import artifact_table

    record = evaluate_one(checkpoint, kind, root, name, out, options)
    create_table_artifact(artifact_table(record), key=artifact_key(name),
                          description=f"cgaug-eval metrics of {record['description']}")
    get_run_logger().info("%s: %d images, AUROC %s AP %s FPR@95 %s mIoU %s", name, record["images"],
                          record["auroc"], record["ap"], record["fpr95"], record["miou"])
    return record


@task(name="eval-report")
def report_task(out: str, records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, str]:
    from cgaug.storage.fs import open_root
    from cgaug.tasks.evaluation.report import markdown_summary, write_results

    files = write_results(open_root(out), records, meta)
    create_markdown_artifact(markdown_summary(records, meta), key="eval-summary",
                             description=f"cgaug-eval of {meta['checkpoint']}")
    return files


@flow(name="cgaug-eval")
def evaluate_flow(checkpoint: str, datasets: list[str], out: str, options: EvalOptions | None = None) -> dict[str, Any]:
    """Evaluate `checkpoint` on every `KIND=DIR` dataset and write the report to `out`.

    Args:
        checkpoint: "tiny", a save_pretrained directory or a .pt/.pth file (`cgaug.models.segmenters`).
        datasets: `KIND=DIR` strings, KIND one of `cgaug.storage.evalsets.DATASET_KINDS`.
        out: report root (local path or fsspec URI).
        options: FPR rule, limit, batching, device, sliding window, dataset options.

    Returns:
        {"out", "results": {json, parquet}, "datasets": [records]}.
    """
    from cgaug.storage.evalsets import parse_dataset_spec

    options = options or EvalOptions()
    specs = [parse_dataset_spec(spec) for spec in datasets]
    if not specs:
        raise ValueError("no dataset to evaluate; pass at least one KIND=DIR")
    meta = {"checkpoint": checkpoint, "fpr_rule": options.fpr_rule, "options": options.model_dump(mode="json"),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    records = [evaluate_dataset_task(checkpoint, kind, root, name, out, options)
               for (kind, root), name in zip(specs, dataset_names(specs), strict=True)]
    files = report_task(out, records, meta)
    return {"out": out, "results": files, "datasets": records}
