"""The evaluation report: results files, ROC / PR curve pictures, the visual grid, a markdown summary.

Layout under the report root (any local path or fsspec URI; every file written atomically):

    results.json                 meta + one record per dataset (metrics, counts, per-class IoU, file names)
    results.parquet              the same, one flat row per dataset (per-class IoU as iou_<class> columns)
    datasets/<name>.json         one dataset's record, written as soon as that dataset is done
    curves/<name>.parquet        ROC / PR points (thinned to ~2000) with their thresholds
    curves/<name>_roc.png        ROC curve with the FPR@95 point
    curves/<name>_pr.png         precision-recall curve with the positive rate
    grids/<name>.png             image | ground truth | anomaly map | prediction, a few frames

The grid is the picture for "does the model separate domain shift from
semantic shift": the anomaly map uses one colour scale per dataset (1st..99th
percentile of all labelled pixels), so a frame whose weather lights up the
whole map looks different from one where only the object does, and the
prediction panel marks in white the pixels at or above the FPR@95 threshold.
Curves use the one chart style of `cgaug.tasks.reporting.charts`; the frame grids are drawn with PIL.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from cgaug.labels import CITYSCAPES_LABELS
from cgaug.records import VOID_TRAIN_ID
from cgaug.storage.fs import Root
from cgaug.tasks.evaluation.evaluate import DatasetEvaluation, Example
from cgaug.tasks.evaluation.metrics import FprRule, curve_points
from cgaug.tasks.reporting.markdown import table
from cgaug.tasks.reporting.previews import wrap_text

CLASS_NAMES: tuple[str, ...] = tuple(
    label.name for label in sorted((lb for lb in CITYSCAPES_LABELS if lb.train_id != VOID_TRAIN_ID),
                                   key=lambda lb: lb.train_id))
CURVE_POINTS = 2000
ANOMALY_COLOR = (255, 255, 255)  # white, as OOD is in exported labels
CONTOUR_COLOR = (0, 255, 255)
GRID_TITLES = ("image", "ground truth", "anomaly map", "prediction")
_INFERNO = ((0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
            (250, 193, 39), (252, 255, 164))
_BAND, _TEXT, _PAD = (24, 24, 24), (235, 235, 235), 4


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dataset_record(name: str, evaluation: DatasetEvaluation, fpr_rule: FprRule) -> dict[str, Any]:
    """Everything reported for one dataset, JSON-ready (metrics absent for a dataset are None)."""
    record: dict[str, Any] = {
        "name": name, "kind": evaluation.kind, "root": evaluation.root, "description": evaluation.description,
        "images": evaluation.images, "seconds": round(evaluation.seconds, 3), "fpr_rule": fpr_rule,
        "positives": None, "negatives": None, "distinct_scores": None,
        "auroc": None, "ap": None, "fpr95": None, "threshold95": None,
        "miou": None, "macc": None, "aacc": None, "iou": None, "acc": None,
    }
    if evaluation.anomaly is not None:
        table = evaluation.anomaly.table()
        record.update(positives=table.positives, negatives=table.negatives, distinct_scores=int(table.values.size))
        metrics = evaluation.anomaly_metrics(fpr_rule)
        if metrics is not None:
            record.update({k: _clean(float(v)) for k, v in metrics.items()})
    if evaluation.confusion is not None:
        seg = evaluation.confusion.compute()
        record.update(miou=_clean(seg["miou"]), macc=_clean(seg["macc"]), aacc=_clean(seg["aacc"]),
                      iou={c: _clean(v) for c, v in zip(CLASS_NAMES, seg["iou"], strict=True)},
                      acc={c: _clean(v) for c, v in zip(CLASS_NAMES, seg["acc"], strict=True)})
    return record


def write_dataset_report(root: Root, name: str, evaluation: DatasetEvaluation, fpr_rule: FprRule) -> dict[str, Any]:
    """Write one dataset's curves, grid and record; returns the record with its `files`."""
    record = dataset_record(name, evaluation, fpr_rule)
    files: dict[str, str] = {}
    table = evaluation.anomaly.table() if evaluation.anomaly is not None else None
    if record["auroc"] is not None and table is not None:
        curve = curve_points(table, CURVE_POINTS)
        files["curve_points"] = f"curves/{name}.parquet"
        root.write_parquet_atomic(files["curve_points"], pa.table({k: pa.array(v) for k, v in curve.items()}))
        files["roc"], files["pr"] = f"curves/{name}_roc.png", f"curves/{name}_pr.png"
        root.write_bytes_atomic(files["roc"], render_roc(curve, record))
        root.write_bytes_atomic(files["pr"], render_pr(curve, record))
    if evaluation.examples:
        scale = _score_scale(table, evaluation.examples)
        files["grid"] = f"grids/{name}.png"
        grid = render_grid(evaluation.examples, scale, record["threshold95"], fpr_rule)
        root.write_bytes_atomic(files["grid"], _png(grid))
    record["files"] = files
    root.write_bytes_atomic(f"datasets/{name}.json", json.dumps(record, indent=2).encode())
    return record


def write_results(root: Root, records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, str]:
    """results.json (nested) and results.parquet (flat, one row per dataset)."""
    root.write_bytes_atomic("results.json", json.dumps({"meta": meta, "datasets": records}, indent=2).encode())
    rows = [flat_row(record) for record in records]
    columns = {key: [row.get(key) for row in rows] for key in _flat_columns(rows)}
    root.write_parquet_atomic("results.parquet", pa.table(columns))
    return {"json": root.uri("results.json"), "parquet": root.uri("results.parquet")}


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if k not in ("iou", "acc", "files")}
    for prefix in ("iou", "acc"):
        for cls in CLASS_NAMES:
            row[f"{prefix}_{cls.replace(' ', '_')}"] = (record.get(prefix) or {}).get(cls)
    return row


def _flat_columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def markdown_summary(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """One table row per dataset, percentages as the field reports them."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    lines = [f"# cgaug-eval: {meta.get('checkpoint')}", "",
             f"FPR@95 rule: `{meta.get('fpr_rule')}`; AUROC, AP, FPR@95, mIoU, mAcc, aAcc in %.", "",
             *table(["dataset", "images", "AUROC", "AP", "FPR@95", "mIoU", "mAcc", "aAcc"],
                    [[r["name"], r["images"], *(pct(r[k]) for k in ("auroc", "ap", "fpr95", "miou", "macc", "aacc"))]
                     for r in records], align="lrrrrrrr")]
    return "\n".join(lines) + "\n"


def artifact_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Metric / value rows for a Prefect table artifact."""
    rows = [{"metric": key, "value": record[key]} for key in
            ("images", "positives", "negatives", "auroc", "ap", "fpr95", "threshold95", "miou", "macc", "aacc")
            if record.get(key) is not None]
    rows += [{"metric": f"IoU {cls}", "value": value} for cls, value in (record.get("iou") or {}).items()]
    return rows


# ---------------------------------------------------------------------------------------------------------
# pictures


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def render_roc(curve: dict[str, np.ndarray], record: dict[str, Any]) -> bytes:
    """The ROC curve with the FPR@95 operating point, as PNG bytes (the house chart style)."""
    from cgaug.tasks.reporting.charts import COLORS, chart, png

    with chart(5.6, 4.6) as (figure, axes):
        axes.axhline(0.95, color=COLORS["neutral"], linestyle="--", linewidth=1)
        axes.plot(curve["fpr"], curve["tpr"], color=COLORS["main"])
        fpr95 = record["fpr95"]
        if fpr95 is not None:
            tpr_at = float(np.interp(fpr95, curve["fpr"], curve["tpr"]))
            axes.plot([fpr95], [min(max(tpr_at, 0.95), 1.0)], "o", color=COLORS["alert"],
                      label=f"FPR@95 {100 * fpr95:.2f}% ({record['fpr_rule']})")
            axes.legend(loc="lower right")
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate",
                 title=f"ROC - {record['name']}  (AUROC {100 * record['auroc']:.2f}%)")
        return png(figure)


def render_pr(curve: dict[str, np.ndarray], record: dict[str, Any]) -> bytes:
    """The precision-recall curve against the positive rate (chance), as PNG bytes."""
    from cgaug.tasks.reporting.charts import COLORS, chart, png

    rate = record["positives"] / (record["positives"] + record["negatives"])
    with chart(5.6, 4.6) as (figure, axes):
        axes.axhline(rate, color=COLORS["neutral"], linestyle="--", linewidth=1,
                     label=f"positive rate {100 * rate:.2f}%")
        axes.plot(curve["tpr"], curve["precision"], color=COLORS["main"])
        axes.legend(loc="upper right")
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
                 title=f"PR - {record['name']}  (AP {100 * record['ap']:.2f}%)")
        return png(figure)


def colormap(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W, 3) uint8 inferno-like colours of `values` scaled from [lo, hi] to [0, 1] (clipped)."""
    anchors = np.asarray(_INFERNO, dtype=np.float64)
    grid = np.linspace(0, 1, len(anchors))
    lut = np.stack([np.interp(np.linspace(0, 1, 256), grid, anchors[:, c]) for c in range(3)], axis=1)
    span = hi - lo if hi > lo else 1.0
    with np.errstate(invalid="ignore"):
        t = np.clip((values.astype(np.float64) - lo) / span, 0, 1)
    index = np.nan_to_num(t * 255, nan=0).astype(np.int64)
    return lut.round().astype(np.uint8)[index]


def _score_scale(table: Any, examples: list[Example]) -> tuple[float, float]:
    if table is not None and table.values.size and table.positives + table.negatives:
        lo, hi = table.quantile(0.01), table.quantile(0.99)
        if hi > lo:
            return float(lo), float(hi)
    values = np.concatenate([e.score.ravel() for e in examples])
    return float(np.nanmin(values)), float(np.nanmax(values))


def _ground_truth_panel(example: Example) -> np.ndarray:
    from cgaug.storage.export import color_label

    if example.train_ids is not None:
        panel = color_label(example.train_ids)
    else:  # no train ids: the dimmed image shows where the in-distribution pixels are
        panel = (example.image.astype(np.uint16) // 2).astype(np.uint8)
    if example.ood is not None:
        panel = panel.copy()
        panel[example.ood == 255] = 0
        panel[example.ood == 1] = ANOMALY_COLOR
    return panel


def _anomaly_panel(example: Example, scale: tuple[float, float]) -> np.ndarray:
    from cgaug.tasks.reporting.previews import mask_contour

    panel = colormap(example.score, *scale)
    if example.ood is not None:
        panel[mask_contour(example.ood == 1, 2)] = CONTOUR_COLOR
    return panel


def _prediction_panel(example: Example, threshold: float | None) -> np.ndarray:
    from cgaug.storage.export import color_label

    panel = color_label(example.prediction)
    if threshold is not None:
        panel = panel.copy()
        panel[example.score >= threshold] = ANOMALY_COLOR
    return panel




def render_grid(examples: list[Example], scale: tuple[float, float], threshold: float | None,
                fpr_rule: str = "first") -> Image.Image:
    """Rows of image | ground truth | anomaly map | prediction, with titles and a legend."""
    font = _font()
    rows = [np.concatenate([e.image, _ground_truth_panel(e), _anomaly_panel(e, scale),
                            _prediction_panel(e, threshold)], axis=1) for e in examples]
    width = max(row.shape[1] for row in rows)
    line = 14
    legend = [f"ground truth: white = anomaly, black = void. anomaly map: score {scale[0]:.4g} (dark) to "
              f"{scale[1]:.4g} (bright), cyan = anomaly outline.",
              "prediction: train-id colours" + (f", white = score >= {threshold:.4g} (the FPR@95 threshold, rule "
                                                f"{fpr_rule})." if threshold is not None else ".")]
    legend = [piece for text in legend for piece in wrap_text(text, font, width - 2 * _PAD)]
    header = _PAD * 2 + line * (1 + len(legend))
    height = header + sum(row.shape[0] + line + _PAD for row in rows)
    canvas = Image.new("RGB", (width, height), _BAND)
    draw = ImageDraw.Draw(canvas)
    panel_width = rows[0].shape[1] // 4
    for i, title in enumerate(GRID_TITLES):
        draw.text((i * panel_width + _PAD, _PAD), title, fill=_TEXT, font=font)
    for i, text in enumerate(legend):
        draw.text((_PAD, _PAD + line * (i + 1)), text, fill=_TEXT, font=font)
    y = header
    for example, row in zip(examples, rows, strict=True):
        canvas.paste(Image.fromarray(row), (0, y))
        y += row.shape[0]
        draw.text((_PAD, y + 1), example.sample_id, fill=_TEXT, font=font)
        y += line + _PAD
    return canvas
