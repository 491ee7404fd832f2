"""Every chart cgaug draws, in one style: calibration histograms, training curves, ROC and PR curves.

One look across the CLI's PNG files and the Prefect UI's inline images (same fonts, sizes, colours,
grid), drawn with matplotlib's object API on the Agg canvas: no pyplot global state, so charts can
be drawn from worker threads and flow runs. matplotlib is a runtime dependency of the `gen` extra.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STYLE: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7,
    "axes.grid": True, "grid.color": "#e0e0e0", "grid.linewidth": 0.8,
    "axes.spines.top": False, "axes.spines.right": False,
    "lines.linewidth": 1.6, "lines.markersize": 4,
    "figure.dpi": 100, "savefig.dpi": 100,
}

COLORS = {
    "main": "#4c72b0",  # the measured thing: a histogram, a curve, the model's score
    "alert": "#c44e52",  # the current setting, the operating point (FPR@95)
    "good": "#55a868",  # the suggestion, the target
    "neutral": "#8c8c8c",  # references: chance level, 95 % TPR, stage boundaries
    "extra": "#dd8452",  # a second series
}
SERIES = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


@contextmanager
def chart(width: float = 6.0, height: float = 3.4, columns: int = 1) -> Iterator[tuple[Any, Any]]:
    """(figure, axes) in the house style; axes is a tuple when `columns` > 1."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        from matplotlib.figure import Figure

        figure = Figure(figsize=(width, height))
        axes = figure.subplots(1, columns)
        yield figure, (tuple(axes) if columns > 1 else axes)


def png(figure: Any) -> bytes:
    """The figure as RGB PNG bytes (opaque white background: no alpha channel), laid out tightly."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    figure.tight_layout()
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
