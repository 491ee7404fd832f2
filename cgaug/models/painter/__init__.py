"""The painter: a procedural street-scene renderer that STANDS IN for the diffusion generator.

It is not a diffusion model and learns nothing. It exists so that the method's
effect can be measured without downloaded weights, on a CPU: instead of the
noise of random-weight diffusion models, it paints a recognisable street scene
from the ADE20K-coloured conditioning map (asphalt with lane marks, facades
with windows, foliage, cars, people, sky), honours the prompt's weather, time
of day and place as covariate shift (fog, rain, snow, overcast, night with
street lamps; a colour style per city), and gives every pasted
out-of-distribution class a look of its own (colours and pattern fixed per ADE
class), so an unknown object is visible and differs from the road around it.

Pure numpy, deterministic per (conditioning map, prompt, seed): independent of
the batch and of torch or thread settings. The settings it reports for a shard
row say it is a stand-in (`PainterBackend.settings`, `painter_info`).
"""

from cgaug.models.painter.backend import (
    PAINTER_VERSION,
    STAND_IN,
    PainterBackend,
    paint,
    paint_batch,
    painter_info,
)
from cgaug.models.painter.prompt import parse_prompt, place_style

__all__ = ["PAINTER_VERSION", "STAND_IN", "PainterBackend", "paint", "paint_batch", "painter_info", "parse_prompt",
           "place_style"]
