"""A one-picture summary of a sample, for eyeballing shards (CLI `show`, Prefect artifacts).

Layout: three panels side by side — the generated image, the conditioning
map, and the train-id colours blended over the image with the OOD mask
outlined — above a caption band with the panel titles, the sample's verdict,
prompt attributes, pasted classes and prompt. The panels are left untouched
by text, so a panel is exactly the stored array (before any downscaling).
Only PIL and numpy: it must run on a CPU-only machine without extras.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID
from cgaug.storage.export import color_label

OVERLAY_ALPHA = 0.5
CONTOUR_COLOR = (0, 255, 255)  # cyan: far from every Cityscapes colour and from the white OOD fill
CONTOUR_WIDTH = 2  # pixels in the rendered picture
PANEL_TITLES = ("generated image", "conditioning map", "train ids + OOD outline")
_PAD = 4
_BAND_COLOR = (24, 24, 24)
_TEXT_COLOR = (235, 235, 235)


def render_sample(sample: dict[str, Any], *, panel_width: int | None = None) -> Image.Image:
    """The preview picture of a decoded sample (`cgaug.storage.shards.read_sample`).

    Args:
        sample: a decoded row with image, cond, label and ood_mask arrays.
        panel_width: downscale each panel to this width (keeps the aspect); None keeps full size.

    Returns:
        An RGB image 3 panels wide, with a caption band below the panels.

    Raises:
        ValueError: the sample has no image (a skipped sample) or its arrays disagree in size.
    """
    image, cond, label = sample.get("image"), sample.get("cond"), sample.get("label")
    if image is None or cond is None or label is None:
        raise ValueError(f"sample {sample.get('sample_id')!r} (verdict {sample.get('verdict')!r}) has no "
                         "image, conditioning map or label to show")
    height, width = image.shape[:2]
    for name, array in (("cond", cond), ("label", label)):
        if array.shape[:2] != (height, width):
            raise ValueError(f"sample {sample.get('sample_id')!r}: {name} is {array.shape[:2]}, "
                             f"the image is {(height, width)}")
    ood = sample.get("ood_mask")
    ood = label == OOD_TRAIN_ID if ood is None else ood
    scale = 1.0 if panel_width is None else panel_width / width
    contour_width = max(CONTOUR_WIDTH, round(CONTOUR_WIDTH / scale))  # stays visible after downscaling
    strip = np.concatenate([image, cond, label_overlay(image, label, ood, contour_width)], axis=1)
    panels = Image.fromarray(strip)
    if panel_width is not None:
        panels = panels.resize((3 * panel_width, max(1, round(height * scale))), Image.Resampling.BOX)
    return _add_captions(panels, caption_lines(sample))


def label_overlay(image: np.ndarray, label: np.ndarray, ood_mask: np.ndarray,
                  contour_width: int = CONTOUR_WIDTH) -> np.ndarray:
    """Train-id colours blended over the image (void left as is), the OOD mask's inner border in cyan."""
    colors = color_label(label).astype(np.float32)
    blended = (1 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * colors
    out = np.where((label == VOID_TRAIN_ID)[..., None], image, np.rint(blended).astype(np.uint8))
    out[mask_contour(ood_mask, contour_width)] = CONTOUR_COLOR
    return out


def mask_contour(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of `mask` within `width` 4-connected steps of its outside (the image edge is outside)."""
    inner = mask.astype(bool)
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                 & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask.astype(bool) & ~inner


def caption_lines(sample: dict[str, Any]) -> list[str]:
    """The text under the panels: identity and verdict, prompt attributes, pasted classes, prompt."""
    reasons = ", ".join(sample.get("reasons") or []) or "-"
    objects = sample.get("objects") or []
    pasted = ", ".join(f"{o['class_name']} ({o['ade_class']}, {o['area']} px)" for o in objects) or "-"
    return [
        f"{sample.get('sample_id')}  source {sample.get('source_id')}  variant {sample.get('variant')}  "
        f"seed {sample.get('seed')}  verdict {sample.get('verdict')}  reasons {reasons}",
        f"weather {sample.get('weather') or '-'}  time {sample.get('time_of_day') or '-'}  "
        f"place {sample.get('place') or '-'}  OOD area {sample.get('ood_area')} px",
        f"pasted: {pasted}",
        f"prompt: {sample.get('prompt') or '-'}",
    ]


def _add_captions(panels: Image.Image, lines: list[str]) -> Image.Image:
    font = ImageFont.load_default()
    line_height = _line_height(font)
    wrapped = [piece for line in lines for piece in wrap_text(line, font, panels.width - 2 * _PAD)]
    band = 2 * _PAD + line_height * (1 + len(wrapped))
    canvas = Image.new("RGB", (panels.width, panels.height + band), _BAND_COLOR)
    canvas.paste(panels, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = panels.height + _PAD
    for position, title in enumerate(PANEL_TITLES):
        draw.text((position * panels.width // 3 + _PAD, y), title, fill=_TEXT_COLOR, font=font)
    for line in wrapped:
        y += line_height
        draw.text((_PAD, y), line, fill=_TEXT_COLOR, font=font)
    return canvas


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    top, bottom = font.getbbox("Ag")[1::2]
    return int(bottom - min(top, 0)) + 3


def wrap_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (a word longer than a line gets a line of its own)."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current]


PREVIEW_SAMPLES = 3  # per shard: enough to judge at a glance, small enough for an artifact
PREVIEW_PANEL_WIDTH = 240
PREVIEW_JPEG_QUALITY = 80


def jpeg_data_uri(picture: Image.Image, quality: int = PREVIEW_JPEG_QUALITY) -> str:
    """The picture as an inline JPEG for a markdown artifact (far smaller than PNG for photos)."""
    import io

    from cgaug.tasks.reporting.markdown import data_uri

    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return data_uri(buffer.getvalue(), "image/jpeg")


def pick_preview_rows(verdicts: list[str], limit: int = PREVIEW_SAMPLES) -> list[int]:
    """Row positions to show: a rejected sample first (what the filter catches), then kept ones, in order."""
    rejected = [i for i, v in enumerate(verdicts) if v == "rejected"]
    kept = [i for i, v in enumerate(verdicts) if v in ("accepted", "unfiltered")]
    return (rejected[:1] + kept)[:limit] if limit > 0 else []


def stand_in_note(rows: list[dict[str, Any]]) -> str | None:
    """What a reader must know about painted samples: the painter stands in for diffusion; the verdicts of
    random-weight filter models (`filters: tiny`, the demo's) test the machinery, not the images."""
    if not any(str(r.get("generator_model") or "").startswith("painter") for r in rows):
        return None
    note = ("Painted by the procedural painter, a stand-in for the diffusion model (cgaug.models.painter): "
            "scenes follow their label maps; weather, time and place come from the prompt.")
    if any(r.get("verdict") in ("accepted", "rejected") for r in rows):
        note += (" Filter verdicts come from this run's filter models; with `filters: tiny` (random weights, "
                 "the demo's) they exercise the machinery only and say nothing about image quality.")
    return note


def shard_preview_markdown(rows: list[dict[str, Any]], title: str, limit: int = PREVIEW_SAMPLES) -> str:
    """Markdown with up to `limit` rendered samples of a shard (decoded rows), each as an inline picture."""
    picked = [rows[i] for i in pick_preview_rows([r.get("verdict") for r in rows], limit)]
    parts = [f"### {title}", ""]
    note = stand_in_note(rows)
    if note:
        parts += [f"_{note}_", ""]
    for sample in picked:
        try:
            picture = render_sample(sample, panel_width=PREVIEW_PANEL_WIDTH)
        except ValueError:
            continue  # a rejected row stored without images
        parts += [f"**{sample['sample_id']}** — {sample.get('verdict')}", "",
                  f"![{sample['sample_id']}]({jpeg_data_uri(picture)})", ""]
    if not any(line.startswith("**") for line in parts):
        parts.append("(no sample with images in this shard)")
    return "\n".join(parts)
