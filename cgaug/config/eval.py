"""The evaluation options (`cgaug eval`, the `cgaug-eval` flow, validation during training)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cgaug.config.base import StrictModel

FprRule = Literal["first", "closest"]
"""Which threshold defines FPR@95 when several reach the recall level (docs/metrics.md)."""


class EvalOptions(StrictModel):
    """Settings of an evaluation run (CLI flags and flow parameters)."""

    fpr_rule: FprRule = "first"
    limit: int | None = Field(None, ge=1)  # first N frames of each dataset (sorted by id)
    batch_size: int = Field(2, ge=1)
    device: str = "auto"  # auto: cuda when available, else cpu
    amp: bool = True  # float16 autocast, CUDA only
    window: tuple[int, int] | None = None  # sliding-window (height, width); None: whole images
    stride: tuple[int, int] | None = None  # window step; default 2/3 of the window
    examples: int = Field(4, ge=0)  # frames shown in the visual grid
    example_width: int = Field(480, ge=16)  # panel width in the grid
    score_precision: Literal["float16", "float32", "float64"] | None = None  # None: the model's own
    acdc_root: str | None = None  # ACDC originals for acdc_poc (default: the acdc_poc folder itself)
    acdc_void: Literal["poc", "multishiftseg"] = "poc"
    ro21_subset: Literal["official", "all"] = "official"
