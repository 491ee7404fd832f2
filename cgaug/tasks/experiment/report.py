"""The experiment's table (Markdown + JSON), the claim check, and a figure in the style of the paper's Figure 3.

`summarise` turns per-seed metrics (computed from the saved predictions) into mean and standard
deviation per method; `claim` states whether C beats A and B on AP and FPR@95 on the shifted test
set while keeping mIoU within one point of A; `figure` shows shifted frames with their ground truth,
A's energy and C's u.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cgaug.records import VOID_TRAIN_ID
from cgaug.storage.export import color_label
from cgaug.tasks.evaluation.report import colormap
from cgaug.tasks.experiment.protocol import METHOD_NAMES, METHODS

ANOMALY_KEYS = ("auroc", "ap", "fpr95_first", "fpr95_closest")
SEGMENTATION_KEYS = ("miou", "macc")
MIOU_TOLERANCE = 1.0  # percentage points


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "values": [float(v) for v in array]}


def summarise(metrics: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """{method: {set: {metric: {mean, std, values}}, domains...}} from {method: {seed: {set: metrics}}}."""
    out: dict[str, Any] = {}
    for method, seeds in metrics.items():
        sets = sorted({name for per_seed in seeds.values() for name in per_seed})
        out[method] = {}
        for name in sets:
            records = [seeds[seed][name] for seed in sorted(seeds)]
            keys = [k for k in (*ANOMALY_KEYS, *SEGMENTATION_KEYS) if k in records[0]]
            summary: dict[str, Any] = {key: _stats([r[key] for r in records]) for key in keys}
            domains = sorted(records[0]["domains"])
            summary["domains"] = {d: {key: _stats([r["domains"][d][key] for r in records])
                                      for key in SEGMENTATION_KEYS} | {"frames": records[0]["domains"][d]["frames"]}
                                  for d in domains}
            out[method][name] = summary
    return out


def claim(summary: dict[str, Any]) -> dict[str, Any]:
    """The claim under test, checked on the means: C beats A and B on AP and both FPR@95 rules on the
    shifted set, and C's mIoU stays within `MIOU_TOLERANCE` points of A's (shifted and clear sets)."""
    def mean(method: str, name: str, key: str) -> float:
        return summary[method][name][key]["mean"]

    checks = {
        "ap": all(mean("C", "shifted", "ap") > mean(m, "shifted", "ap") for m in ("A", "B")),
        "fpr95_first": all(mean("C", "shifted", "fpr95_first") < mean(m, "shifted", "fpr95_first") for m in ("A", "B")),
        "fpr95_closest": all(mean("C", "shifted", "fpr95_closest") < mean(m, "shifted", "fpr95_closest")
                             for m in ("A", "B")),
    }
    for name in ("shifted", "clear"):
        checks[f"miou_{name}"] = 100 * (mean("A", name, "miou") - mean("C", name, "miou")) <= MIOU_TOLERANCE
    return {"holds": all(checks.values()), "checks": checks}


def _pm(stat: dict[str, float], percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    if math.isnan(stat["mean"]):
        return "n/a"
    return f"{scale * stat['mean']:.1f} ± {scale * stat['std']:.1f}"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The table for the README: anomaly metrics on the shifted set, mIoU / mAcc per set, per-domain mIoU."""
    verdict = claim(summary)
    lines = [
        "# cgaug experiment mini",
        "",
        f"{meta.get('protocol_text', '')}. Machine: {meta.get('machine', '?')}; date: {meta.get('date', '?')}; "
        f"wall {meta.get('wall_s', 0):.0f} s, CPU {meta.get('cpu_s', 0):.0f} s.",
        "Every image is painted by the procedural painter (a stand-in for the diffusion model); the test objects "
        f"are ADE20K classes never pasted in training ({', '.join(meta.get('test_classes', []))}).",
        "Mean ± standard deviation over seeds " + ", ".join(str(s) for s in meta.get("seeds", [])) + " (in %). "
        "Anomaly metrics on the shifted test set (every weather / time / place, unseen objects); mIoU / mAcc of "
        "the 19 classes on the shifted and the clear-day test sets.",
        "",
        "| method | AUROC ↑ | AP ↑ | FPR@95 first ↓ | FPR@95 closest ↓ | mIoU shifted ↑ | mIoU clear ↑ "
        "| mAcc shifted ↑ | mAcc clear ↑ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        if method not in summary:
            continue
        shifted, clear = summary[method]["shifted"], summary[method]["clear"]
        cells = [_pm(shifted[k]) for k in ANOMALY_KEYS]
        cells += [_pm(shifted["miou"]), _pm(clear["miou"]), _pm(shifted["macc"]), _pm(clear["macc"])]
        lines.append(f"| {method}: {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    lines.append("")
    clear_anomaly = ["| method | AUROC (clear) | AP (clear) | FPR@95 first (clear) |", "|---|---|---|---|"]
    for method in METHODS:
        if method in summary and "ap" in summary[method]["clear"]:
            clear = summary[method]["clear"]
            clear_anomaly.append(f"| {method} | {_pm(clear['auroc'])} | {_pm(clear['ap'])} | "
                                 f"{_pm(clear['fpr95_first'])} |")
    lines += ["Clear-day test set (the originals' domain, the same unseen objects):", "", *clear_anomaly, ""]
    domains = sorted(summary["A"]["shifted"]["domains"]) if "A" in summary else []
    if domains:
        lines += ["mIoU per domain of the shifted test set (frames):", "",
                  "| domain | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
        for domain in domains:
            frames = summary["A"]["shifted"]["domains"][domain]["frames"]
            cells = [_pm(summary[m]["shifted"]["domains"][domain]["miou"]) for m in METHODS if m in summary]
            lines.append(f"| {domain} ({frames}) | " + " | ".join(cells) + " |")
        lines.append("")
    checks = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in verdict["checks"].items())
    lines += [f"**Claim** (C beats A and B on AP and FPR@95 on the shifted set, mIoU within "
              f"{MIOU_TOLERANCE:g} point of A): {'holds' if verdict['holds'] else 'does not hold'} ({checks}).", ""]
    return "\n".join(lines)


def _panel_title(panel: Image.Image, title: str) -> Image.Image:
    font = ImageFont.load_default()
    band = 14
    out = Image.new("RGB", (panel.width, panel.height + band), (255, 255, 255))
    out.paste(panel, (0, band))
    ImageDraw.Draw(out).text((3, 1), title, fill=(0, 0, 0), font=font)
    return out


def ground_truth(train_ids: np.ndarray, ood: np.ndarray) -> np.ndarray:
    """Train-id colours, void black, the OOD objects white (the paper's figure)."""
    out = color_label(np.where(train_ids == VOID_TRAIN_ID, VOID_TRAIN_ID, train_ids).astype(np.uint8))
    out[ood == 1] = 255
    return out


def figure(images: np.ndarray, train_ids: np.ndarray, ood: np.ndarray, columns: dict[str, np.ndarray],
           titles: list[str]) -> Image.Image:
    """Rows of frames: image, ground truth, then one heat map per entry of `columns` (scores, each column
    scaled to its own 1st-99th percentile over the frames shown, bright = anomalous)."""
    rows = []
    scales = {name: (float(np.quantile(s.astype(np.float32), 0.01)), float(np.quantile(s.astype(np.float32), 0.99)))
              for name, s in columns.items()}
    for i in range(images.shape[0]):
        panels = [Image.fromarray(images[i]), Image.fromarray(ground_truth(train_ids[i], ood[i]))]
        panels += [Image.fromarray(colormap(s[i].astype(np.float32), *scales[name])) for name, s in columns.items()]
        names = ["image: " + titles[i], "ground truth", *columns]
        rows.append([_panel_title(p, n) for p, n in zip(panels, names, strict=True)])
    width, height = rows[0][0].width, rows[0][0].height
    gap = 4
    canvas = Image.new("RGB", (len(rows[0]) * (width + gap) - gap, len(rows) * (height + gap) - gap), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            canvas.paste(panel, (c * (width + gap), r * (height + gap)))
    return canvas
