"""The pixel model of the consistency and anomaly gates: any registry segmenter, per numpy image.

`filters.segmenter_model` and `filters.anomaly_model` name a checkpoint the one segmenter loader
reads (`cgaug.models.segmenters.load_segmenter`): a transformers checkpoint with per-pixel logits
(default `nvidia/segformer-b5-finetuned-cityscapes-1024-1024`), an smp directory or file, or a
`cgaug train` export (``RUN_DIR/model.pt``). `PixelSegmenter` adapts it to the filter's `PixelModel`:
per image, the arg-max of the logits mapped to Cityscapes train ids through the checkpoint's label
names (consistency gate), and the anomaly score at the image's size (anomaly gate): the free energy
``-logsumexp(logits)`` (higher = more anomalous, Liu et al. 2020) of the upsampled logits, or a
trained model's own u(x). Those scores are in the model's own units, not Mask2Anomaly's: calibrate
the threshold. ``tiny`` here is a small random-weight SegFormer labelled with the Cityscapes classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.labels import NUM_TRAIN_CLASSES
from cgaug.models.filters.base import PixelOutput, to_chw
from cgaug.models.filters.tiny import build_tiny
from cgaug.models.hub import TINY, cached
from cgaug.models.segmenters import CITYSCAPES_TRAIN_NAMES, BaseSegmenter, cityscapes_class_map, load_segmenter
from cgaug.models.tiny import seeded

if TYPE_CHECKING:
    import torch


class PixelSegmenter:
    """`PixelModel` over a registry segmenter: Cityscapes train ids and anomaly scores at each image's size.

    Images run in chunks of `batch_size`, split further into runs of one size (a batch is one tensor).
    """

    def __init__(self, segmenter: BaseSegmenter, class_map: np.ndarray | None, batch_size: int = 8,
                 short_side: int | None = None) -> None:
        self.segmenter, self.class_map = segmenter, class_map
        self.batch_size, self.short_side = batch_size, short_side

    def predict(self, images: Sequence[np.ndarray]) -> list[PixelOutput]:
        out: list[PixelOutput] = []
        for start in range(0, len(images), self.batch_size):
            for group in _same_size_runs(images[start:start + self.batch_size]):
                out += self._chunk(group)
        return out

    def logits(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Raw logits (N, classes, h, w) at the model's output size; images of one size."""
        return self.segmenter.predict(self._batch(images), short_side=self.short_side)[0]

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        import torch

        return torch.stack([to_chw(image, self.segmenter.device) for image in images]).float().div_(255.0)

    def _chunk(self, images: Sequence[np.ndarray]) -> list[PixelOutput]:
        logits, score = self.segmenter.predict(self._batch(images), size=images[0].shape[:2],
                                               short_side=self.short_side)
        anomaly = score.float().cpu().numpy().astype(np.float32)
        classes = logits.argmax(dim=1).cpu().numpy() if self.class_map is not None else None
        return [PixelOutput(self.class_map[classes[i]] if classes is not None else None, anomaly[i])
                for i in range(len(images))]


def _same_size_runs(images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    runs: list[list[np.ndarray]] = []
    for image in images:
        if runs and runs[-1][0].shape == image.shape:
            runs[-1].append(image)
        else:
            runs.append([image])
    return runs


def load_pixel_model(name: str, field: str, *, cityscapes: bool, device: str, dtype: torch.dtype,
                     local_files_only: bool = False, batch_size: int = 8,
                     short_side: int | None = None) -> PixelSegmenter:
    """The pixel model of config key `field` (e.g. ``filters.segmenter_model``), weights loaded once per process.

    Args:
        cityscapes: predict Cityscapes train ids (the consistency gate needs them).

    Raises:
        ModelNotFound: the model is neither a file, a directory nor in the Hugging Face cache.
        ValueError: `cityscapes` and the model's classes are not the 19 Cityscapes train classes.
    """
    ref = str(ensure_tiny_segmenter()) if name == TINY else name
    segmenter = cached(("segmenter", ref, local_files_only, device, dtype), lambda: load_segmenter(
        ref, device, dtype=dtype, field=field, local_files_only=local_files_only))
    class_map = cityscapes_class_map(segmenter.id2label, field) if cityscapes else None
    return PixelSegmenter(segmenter, class_map, batch_size=batch_size, short_side=short_side)


def tiny_segmenter_config() -> Any:
    """SegFormer at ~30 k parameters, labelled with the 19 Cityscapes train classes."""
    from transformers import SegformerConfig

    return SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[16, 32], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
        num_labels=NUM_TRAIN_CLASSES, id2label=dict(enumerate(CITYSCAPES_TRAIN_NAMES)),
        label2id={name: i for i, name in enumerate(CITYSCAPES_TRAIN_NAMES)},
    )


def save_tiny_segmenter(dest: Path, seed: int) -> None:
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    model = seeded(seed, lambda: SegformerForSemanticSegmentation(tiny_segmenter_config()).eval())
    model.save_pretrained(dest)
    SegformerImageProcessor(size={"height": 128, "width": 256}, do_reduce_labels=False).save_pretrained(dest)


def ensure_tiny_segmenter() -> Path:
    """The tiny SegFormer in the user cache, built on first use."""
    return build_tiny("segmenter", save_tiny_segmenter)
