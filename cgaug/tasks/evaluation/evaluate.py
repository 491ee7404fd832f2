"""Inference and metric accumulation for one evaluation dataset.

Evaluation is at the label's full resolution: the model sees the image
(whole, or in sliding windows), its scores are upsampled bilinearly to the
label size and its logits bilinearly before the arg-max; labels are never
resized (docs/metrics.md). Frames are batched while consecutive frames share
their image and label sizes, and AMP (float16 autocast) is used on CUDA only:
CPU autocast is slow and bfloat16 scores would tie far more pixels.

Per frame, the anomaly scores go into an exact streaming `AnomalyAccumulator`
and the predictions into a `ConfusionMatrix`; only a few downscaled examples
are kept for the visual grid, so memory does not grow with the dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.config import EvalOptions
from cgaug.tasks.evaluation.metrics import AnomalyAccumulator, ConfusionMatrix, FprRule

if TYPE_CHECKING:
    import torch

    from cgaug.models.segmenters import Segmenter
    from cgaug.storage.evalsets import EvalDataset, EvalItem

NUM_CLASSES = 19


@dataclass
class Example:
    """A downscaled frame for the visual grid: image, labels, anomaly scores and prediction."""

    sample_id: str
    image: np.ndarray
    score: np.ndarray
    prediction: np.ndarray
    ood: np.ndarray | None
    train_ids: np.ndarray | None


@dataclass
class DatasetEvaluation:
    kind: str
    root: str
    description: str
    images: int = 0
    seconds: float = 0.0
    anomaly: AnomalyAccumulator | None = None
    confusion: ConfusionMatrix | None = None
    examples: list[Example] = field(default_factory=list)

    def anomaly_metrics(self, fpr_rule: FprRule) -> dict[str, float] | None:
        """AUROC / AP / FPR@95 and the threshold at the FPR point; None without OOD labels or pixels."""
        from cgaug.tasks.evaluation.metrics import fpr_at_recall, table_metrics

        if self.anomaly is None:
            return None
        table = self.anomaly.table()
        if table.positives == 0 or table.negatives == 0:
            return None
        metrics = table_metrics(table, fpr_rule)
        metrics["threshold95"] = fpr_at_recall(table, fpr_rule)[1]
        return metrics


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Window starts covering 0..size with the last window flush with the end."""
    if window >= size:
        return [0]
    starts = list(range(0, size - window, stride))
    return [*starts, size - window]


def _sliding_predict(segmenter: Segmenter, x: torch.Tensor, window: tuple[int, int],
                     stride: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Averaged logits and scores over overlapping windows (integer predictions: the last window wins)."""
    import torch
    import torch.nn.functional as F

    batch, _, height, width = x.shape
    wh, ww = min(window[0], height), min(window[1], width)
    sh, sw = stride or (max(1, 2 * wh // 3), max(1, 2 * ww // 3))
    out_sum: torch.Tensor | None = None
    score_sum = torch.zeros(batch, height, width, device=x.device)
    count = torch.zeros(1, height, width, device=x.device)
    for top in window_positions(height, wh, sh):
        for left in window_positions(width, ww, sw):
            out, score = segmenter.predict(x[..., top:top + wh, left:left + ww])
            score = F.interpolate(score.float()[:, None], size=(wh, ww), mode="bilinear", align_corners=False)[:, 0]
            if out.is_floating_point():
                out = F.interpolate(out.float(), size=(wh, ww), mode="bilinear", align_corners=False)
            else:
                out = F.interpolate(out[:, None].float(), size=(wh, ww), mode="nearest")[:, 0].long()
            if out_sum is None:  # float32 sums whatever autocast made of the window outputs
                floating = out.is_floating_point()
                shape = (batch, out.shape[1], height, width) if floating else (batch, height, width)
                out_sum = torch.zeros(shape, device=x.device, dtype=torch.float32 if floating else torch.long)
            region = (slice(None), slice(top, top + wh), slice(left, left + ww))
            if out.is_floating_point():
                out_sum[(slice(None), *region)] += out
            else:
                out_sum[region] = out
            score_sum[region] += score.float()
            count[:, top:top + wh, left:left + ww] += 1
    assert out_sum is not None
    if out_sum.is_floating_point():
        out_sum = out_sum / count[:, None]
    return out_sum, score_sum / count


def predict_batch(segmenter: Segmenter, images: np.ndarray, label_size: tuple[int, int],
                  options: EvalOptions) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly scores (B, h, w) float32 and train-id predictions (B, h, w) uint8 at `label_size`.

    Args:
        images: (B, H, W, 3) uint8 RGB frames of one size.
        label_size: (h, w) of the labels; outputs are upsampled to it.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    device = segmenter.device
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" and options.amp \
        else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        if options.window is not None:
            out, score = _sliding_predict(segmenter, x, options.window, options.stride)
        else:
            out, score = segmenter.predict(x)
    scores, predictions = [], []
    with torch.inference_mode():
        for i in range(x.shape[0]):  # one frame at a time: full-size logits are C x h x w floats each
            s = F.interpolate(score[i:i + 1, None].float(), size=label_size, mode="bilinear", align_corners=False)
            scores.append(s[0, 0].cpu().numpy())
            if out.is_floating_point() and out.ndim == 4:
                logits = F.interpolate(out[i:i + 1].float(), size=label_size, mode="bilinear", align_corners=False)
                pred = logits.argmax(dim=1)[0]
            else:
                pred = F.interpolate(out[i:i + 1, None].float(), size=label_size, mode="nearest")[0, 0]
            predictions.append(pred.clamp_(0, 255).to(torch.uint8).cpu().numpy())
    return np.stack(scores), np.stack(predictions)


def _label_size(item: EvalItem) -> tuple[int, int]:
    label = item.ood if item.ood is not None else item.train_ids
    return tuple(label.shape[:2]) if label is not None else tuple(item.image.shape[:2])  # type: ignore[return-value]


def _downscale(array: np.ndarray, width: int, *, nearest: bool) -> np.ndarray:
    from PIL import Image

    height = max(1, round(array.shape[0] * width / array.shape[1]))
    if array.shape[1] <= width:
        return array.copy()
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((width, height), resample))  # float32 maps: mode F


def _example(item: EvalItem, score: np.ndarray, prediction: np.ndarray, width: int) -> Example:
    label_width = min(width, score.shape[1])
    return Example(
        sample_id=item.sample_id,
        image=_downscale(np.asarray(_resize_image(item.image, score.shape)), label_width, nearest=False),
        score=_downscale(score.astype(np.float32), label_width, nearest=False),
        prediction=_downscale(prediction, label_width, nearest=True),
        ood=None if item.ood is None else _downscale(item.ood, label_width, nearest=True),
        train_ids=None if item.train_ids is None else _downscale(item.train_ids, label_width, nearest=True),
    )


def _resize_image(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The image at the label size (only differs when a dataset ships labels at another resolution)."""
    from PIL import Image

    if image.shape[:2] == tuple(shape[:2]):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def evaluate_dataset(segmenter: Segmenter, dataset: EvalDataset, options: EvalOptions,
                     progress: Callable[[int, int], Any] | None = None) -> DatasetEvaluation:
    """Run `segmenter` over `dataset` and accumulate its metrics (see the module docstring)."""
    samples = dataset.samples()[: options.limit]
    result = DatasetEvaluation(dataset.kind, dataset.root, dataset.describe())
    if dataset.has_ood:
        result.anomaly = AnomalyAccumulator(options.score_precision)
    if dataset.has_segmentation:
        result.confusion = ConfusionMatrix(NUM_CLASSES)
    start = time.perf_counter()
    batch: list[EvalItem] = []

    def flush() -> None:
        if not batch:
            return
        scores, predictions = predict_batch(segmenter, np.stack([b.image for b in batch]), _label_size(batch[0]),
                                            options)
        for item, score, prediction in zip(batch, scores, predictions, strict=True):
            _accumulate(result, item, score, prediction, options)
        result.images += len(batch)
        batch.clear()
        if progress is not None:
            progress(result.images, len(samples))

    for sample in samples:
        item = dataset.read(sample)
        if batch and (len(batch) >= options.batch_size or item.image.shape != batch[0].image.shape
                      or _label_size(item) != _label_size(batch[0])):
            flush()
        batch.append(item)
    flush()
    result.seconds = time.perf_counter() - start
    return result


def _accumulate(result: DatasetEvaluation, item: EvalItem, score: np.ndarray, prediction: np.ndarray,
                options: EvalOptions) -> None:
    if result.anomaly is not None and item.ood is not None:
        result.anomaly.update(score, item.ood)
    if result.confusion is not None and item.train_ids is not None:
        result.confusion.update(prediction, item.train_ids)
    if len(result.examples) < options.examples:
        result.examples.append(_example(item, score, prediction, options.example_width))
