"""What a training run shows: the per-epoch metrics table and a PNG of the loss curves. No Prefect.

The PNG is small (a few tens of kB) so that the `cgaug-train` flow can inline it in a markdown
artifact as a ``data:image/png;base64`` URI, which the Prefect UI renders without a file server.
"""

from __future__ import annotations

import math
from typing import Any

from cgaug.tasks.reporting.markdown import data_uri, table

CURVES = ("loss", "unc", "unc_out_in", "unc_out_aug", "unc_pair", "ce", "ce_sel")
TABLE_KEYS = ("epoch", "stage", "steps", "loss", "unc", "ce", "ce_sel", "selection_rate", "images_per_s")
_FIGSIZE = (7.0, 3.2)  # inches: 700x320 px at the house 100 dpi


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    return value


def metrics_table(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch: the main loss terms, selection rate, speed and every validation metric."""
    val_keys = sorted({key for record in history for key in record if key.startswith("val/")})
    return [{key: _rounded(record.get(key)) for key in (*TABLE_KEYS, *val_keys)} for record in history]


def loss_curves_png(history: list[dict[str, Any]]) -> bytes:
    """Loss terms per epoch (left, log scale) and validation AP (right) as PNG bytes."""
    from cgaug.tasks.reporting.charts import COLORS, SERIES, chart, png

    epochs = [record["epoch"] for record in history]
    with chart(*_FIGSIZE, columns=2) as (figure, (left, right)):
        for key, color in zip(CURVES, SERIES * 4, strict=False):
            values = [record.get(key, math.nan) for record in history]
            if any(v and v > 0 for v in values if not math.isnan(v)):
                left.plot(epochs, values, marker="o", color=color, label=key)
        left.set_yscale("symlog", linthresh=1e-3)
        left.set_xlabel("epoch")
        left.set_title("loss terms")
        left.legend(fontsize=6)
        stage2 = next((r["epoch"] for r in history if r.get("stage") == 2), None)
        for axis in (left, right):
            if stage2 is not None:
                axis.axvline(stage2 - 0.5, color=COLORS["neutral"], linestyle="--", linewidth=0.8)
        aps = [record.get("val/ap", math.nan) for record in history]
        right.plot(epochs, aps, marker="o", color=COLORS["alert"], label="val AP")
        right.plot(epochs, [r.get("selection_rate", math.nan) for r in history], marker=".",
                   color=COLORS["good"], label="selection rate")
        right.set_xlabel("epoch")
        right.set_title("validation AP, CE_sel selection")
        right.legend(fontsize=6)
        return png(figure)


def markdown_report(history: list[dict[str, Any]], png: bytes, meta: dict[str, Any]) -> str:
    """Summary lines, the curves inline as a data URI, and the metrics table."""
    rows = metrics_table(history)
    lines = [f"# cgaug-train: {meta.get('out', '')}", "",
             f"- preset: `{meta.get('preset')}`, model: `{meta.get('model')}`, epochs: {len(history)}",
             f"- best validation AP: {meta.get('best_ap')}", f"- final model: `{meta.get('model_path')}`", "",
             f"![loss curves]({data_uri(png, 'image/png')})", ""]
    if rows:
        keys = list(rows[0])
        lines += table(keys, [[row[k] for k in keys] for row in rows])
    return "\n".join(lines) + "\n"
