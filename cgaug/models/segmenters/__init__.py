"""Segmenters: one interface (`Segmenter`), one loader for every checkpoint (`load_segmenter`).

Modules, each importing only those above it in this list:
- `base`: the interface, the energy score, normalisation constants, errors, Cityscapes class maps;
- `smp`: segmentation-models-pytorch models and the tiny test segmenter;
- `hf`: transformers semantic segmentation (SegFormer...) with its processor and label names;
- `uncertainty`: the training models with the learnable uncertainty function u(x);
- `loader`: `load_segmenter`, dispatching a checkpoint to its kind;
- `training`: `build_train_model`, the model two-stage training starts from.

The same loaded object serves evaluation, the quality filter (through
`cgaug.models.filters.pixel`) and training initialisation. Importing this package does not
import torch; `uncertainty` and `training` do.
"""

from cgaug.models.segmenters.base import (
    CITYSCAPES_TRAIN_NAMES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BaseSegmenter,
    CheckpointError,
    CheckpointNotFound,
    Segmenter,
    cityscapes_class_map,
    energy_score,
)
from cgaug.models.segmenters.loader import KINDS, checkpoint_kind, load_segmenter
from cgaug.models.segmenters.smp import TINY_CONFIG, SmpSegmenter, build_tiny_segmenter

__all__ = [
    "CITYSCAPES_TRAIN_NAMES", "IMAGENET_MEAN", "IMAGENET_STD", "KINDS", "TINY_CONFIG", "BaseSegmenter",
    "CheckpointError", "CheckpointNotFound", "Segmenter", "SmpSegmenter", "build_tiny_segmenter",
    "checkpoint_kind", "cityscapes_class_map", "energy_score", "load_segmenter",
]
