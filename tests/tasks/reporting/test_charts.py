"""The one chart style: every chart is an opaque RGB PNG of the requested size, drawn without pyplot."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cgaug.tasks.reporting.charts import COLORS, STYLE, chart, png


def test_a_chart_is_an_rgb_png_of_the_requested_size_in_the_house_style():
    with chart(4.0, 2.0) as (figure, axes):
        axes.plot([0, 1], [0, 1], color=COLORS["main"])
        data = png(figure)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGB" and image.size == (4 * STYLE["savefig.dpi"], 2 * STYLE["savefig.dpi"])
        pixels = np.asarray(image)
    assert (pixels == 255).all(axis=2).mean() > 0.5  # white background
    main = tuple(int(COLORS["main"][i:i + 2], 16) for i in (1, 3, 5))
    assert (np.abs(pixels.astype(int) - main).sum(axis=2) < 30).any()  # the line is drawn in the house colour


def test_columns_give_a_tuple_of_axes_and_the_style_does_not_leak():
    import matplotlib

    before = matplotlib.rcParams["font.size"]
    with chart(columns=2) as (_, axes):
        assert isinstance(axes, tuple) and len(axes) == 2
        assert matplotlib.rcParams["font.size"] == STYLE["font.size"]
    assert matplotlib.rcParams["font.size"] == before
