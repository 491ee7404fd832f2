"""Test frames, saved predictions, and the metrics computed from the saved predictions only.

A method's predictions on a test set are saved once (``predictions/{method}-seed{seed}-{set}.npz``:
float16 anomaly scores, uint8 train-id predictions) and every number of the table is computed from
those files with `cgaug.tasks.evaluation.metrics`, so the table can be recomputed and checked
without running a model again. float16 scores keep the files small; the metrics are exact for
the stored values (the accumulator holds float16 scores exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from cgaug.config import EvalOptions
from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID
from cgaug.storage.fs import open_root
from cgaug.storage.layout import INDEX_NAME
from cgaug.storage.png import decode_png
from cgaug.tasks.evaluation.metrics import ConfusionMatrix, anomaly_metrics

CLEAR_DOMAIN = "clear day (originals' style)"
FPR_RULES = ("first", "closest")


@dataclass(frozen=True)
class TestSet:
    """The frames of one test set, in sample-id order: images, OOD labels (0/1/255), train ids, domains."""

    name: str
    sample_ids: list[str]
    images: np.ndarray  # (N, H, W, 3) uint8
    ood: np.ndarray  # (N, H, W) uint8: 1 pasted unseen object, 0 in-distribution, 255 void
    train_ids: np.ndarray  # (N, H, W) uint8: the 19 classes, 255 void and on the objects
    domains: list[str]


def domain_of(row: dict[str, Any]) -> str:
    """'foggy night', ...; frames of the plain prompt are the originals' clear day."""
    if not row.get("weather"):
        return CLEAR_DOMAIN
    return f"{row['weather']} {row['time_of_day']}"


def load_test_set(out: str, name: str) -> TestSet:
    """Every generated frame of a test output root (one painted variant per test scene)."""
    root = open_root(out, create=False)
    index = root.read_parquet(INDEX_NAME, columns=["sample_id", "shard_file", "verdict"]).to_pylist()
    rows: dict[str, dict[str, Any]] = {}
    columns = ["sample_id", "image_png", "label_png", "weather", "time_of_day"]
    for shard in sorted({r["shard_file"] for r in index if r["verdict"] in ("accepted", "unfiltered")}):
        with root.open_input(shard) as f:
            for row in pq.read_table(f, columns=columns).to_pylist():
                if row["image_png"] is not None:
                    rows[row["sample_id"]] = row
    if not rows:
        raise ValueError(f"{out}: no generated frame to test on")
    ids = sorted(rows)
    labels = np.stack([decode_png(rows[i]["label_png"]) for i in ids])
    ood = np.where(labels == OOD_TRAIN_ID, 1, np.where(labels == VOID_TRAIN_ID, VOID_TRAIN_ID, 0)).astype(np.uint8)
    train_ids = np.where(labels == OOD_TRAIN_ID, VOID_TRAIN_ID, labels).astype(np.uint8)
    return TestSet(name, ids, np.stack([decode_png(rows[i]["image_png"]) for i in ids]), ood, train_ids,
                   [domain_of(rows[i]) for i in ids])


def predict(checkpoint: str, test: TestSet, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(scores float16, predictions uint8), each (N, H, W), of a checkpoint on a test set.

    A closed-world smp export scores by the energy of its logits; a training export by its u(x)
    (`cgaug.models.segmenters.load_segmenter` decides from the checkpoint).
    """
    from cgaug.models.segmenters import load_segmenter
    from cgaug.tasks.evaluation.evaluate import predict_batch

    segmenter = load_segmenter(checkpoint, "cpu")
    options = EvalOptions(device="cpu", amp=False)
    size = test.images.shape[1:3]
    scores, predictions = [], []
    for start in range(0, len(test.sample_ids), batch_size):
        s, p = predict_batch(segmenter, test.images[start:start + batch_size], size, options)
        scores.append(s.astype(np.float16))
        predictions.append(p)
    return np.concatenate(scores), np.concatenate(predictions)


def save_predictions(path: Path, scores: np.ndarray, predictions: np.ndarray, sample_ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, scores=scores, predictions=predictions, sample_ids=np.asarray(sample_ids))
    partial.replace(path)


def load_predictions(path: Path, test: TestSet) -> tuple[np.ndarray, np.ndarray]:
    """(scores, predictions) saved for `test`; refuses a file made for other frames."""
    with np.load(path) as data:
        if list(data["sample_ids"]) != test.sample_ids:
            raise ValueError(f"{path}: predictions of other frames than the {test.name} test set's")
        return data["scores"], data["predictions"]


def set_metrics(test: TestSet, scores: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """AUROC, AP, FPR@95 (both rules) over the set; mIoU / mAcc of the 19 classes over the set and per domain."""
    out: dict[str, Any] = {}
    if (test.ood == 1).any():
        for rule in FPR_RULES:
            metrics = anomaly_metrics(scores, test.ood, rule)
            out.update(auroc=metrics["auroc"], ap=metrics["ap"])
            out[f"fpr95_{rule}"] = metrics["fpr95"]
    out.update(_segmentation(predictions, test.train_ids))
    domains: dict[str, Any] = {}
    for domain in sorted(set(test.domains)):
        where = np.asarray([d == domain for d in test.domains])
        domains[domain] = {"frames": int(where.sum()), **_segmentation(predictions[where], test.train_ids[where])}
    out["domains"] = domains
    return out


def _segmentation(predictions: np.ndarray, train_ids: np.ndarray) -> dict[str, float]:
    confusion = ConfusionMatrix(19)
    confusion.update(predictions, train_ids)
    result = confusion.compute()
    return {"miou": float(result["miou"]), "macc": float(result["macc"])}
