"""The quality filter's models: SAM, a Cityscapes segmenter (with a free-energy anomaly score) and CLIP.

- SAM: transformers `SamModel` + `SamProcessor` (default `facebook/sam-vit-huge`, the reference's).
  The image encoder runs batched; the prompt encoder and mask decoder, which are cheap, run per image
  with all of that image's object boxes.
- Segmenter: any transformers `AutoModelForSemanticSegmentation` checkpoint with per-pixel logits
  (default `nvidia/segformer-b5-finetuned-cityscapes-1024-1024`) or a segmentation-models-pytorch
  directory (`smp.from_pretrained`, e.g. a cgaug-trained DeepLabV3+). Its argmax, mapped to Cityscapes
  train ids through the checkpoint's label names, feeds the consistency gate; its free energy
  ``-logsumexp(logits)`` (higher = more anomalous, Liu et al. 2020) feeds the anomaly gate. Those
  energies are in the model's own logit units, not Mask2Anomaly's: calibrate the threshold.
- CLIP: open_clip, by architecture name + pretrained tag or file, or a local directory in open_clip's
  hub layout (``open_clip_config.json`` + weights).

Every model loads by hub id or local path through the libraries' own `from_pretrained` /
`create_model` code; a hub id missing offline is a `ModelNotFound` naming the config key. ``tiny``
builds small random-weight models once into the user cache (next to the tiny generator) and loads
them through the same code, so tests exercise the production path. Weights load once per process.
Pre- and post-processing run on the model's device (the processors accept device tensors), in
bf16 on CUDA by default.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cgaug.config import FilterConfig
from cgaug.labels import CITYSCAPES_LABELS, NUM_TRAIN_CLASSES
from cgaug.models.device import pick_device, pick_dtype_name, torch_dtype
from cgaug.models.generator import ModelNotFound
from cgaug.tasks.generation.filter import Box, FilterModels, PixelOutput

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_FILTERS_RECIPE = 1  # bump when a tiny architecture or its initialisation changes
RECIPE_FILE = "cgaug_tiny.json"
TINY_KINDS = ("sam", "segmenter", "clip")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "org/name"; anything else is a path
CITYSCAPES_TRAIN_NAMES: tuple[str, ...] = tuple(
    label.name for label in sorted(CITYSCAPES_LABELS, key=lambda label: label.train_id)
    if 0 <= label.train_id < NUM_TRAIN_CLASSES)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_lock = threading.Lock()
_weights: dict[tuple, Any] = {}


# ------------------------------------------------------------------------------------------- tiny models


def tiny_filters_dir() -> Path:
    from cgaug.models.tiny import tiny_model_dir

    return tiny_model_dir().parent / "tiny-filters"


def ensure_tiny_filter(kind: str) -> Path:
    """The tiny `kind` model (sam, segmenter, clip) in the user cache, built on first use (race-safe)."""
    return build_tiny_filter(kind, tiny_filters_dir() / kind)


def build_tiny_filter(kind: str, dest: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight filter model to `dest` atomically (nothing to do if it is there).

    Raises:
        ValueError: unknown kind.
        FileExistsError: `dest` holds something else.
    """
    builders = {"sam": _save_tiny_sam, "segmenter": _save_tiny_segmenter, "clip": _save_tiny_clip}
    if kind not in builders:
        raise ValueError(f"tiny filter model kind: expected one of {TINY_KINDS}, found {kind!r}")
    dest = Path(dest).expanduser()
    if (dest / RECIPE_FILE).is_file():
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest}: expected a tiny {kind} model ({RECIPE_FILE}) or a missing/empty "
                              "directory, found other content; remove it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tmp.chmod(0o755)
        from cgaug.models.tiny import quiet_progress_bars

        with quiet_progress_bars():
            builders[kind](tmp, seed)
        (tmp / RECIPE_FILE).write_text(json.dumps({"recipe_version": TINY_FILTERS_RECIPE, "kind": kind,
                                                   "seed": seed}))
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / RECIPE_FILE).is_file():  # a concurrent builder won the race: keep its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _seeded_module(seed: int, build: Callable[[], Any]) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_sam_config() -> Any:
    """SAM at ~0.1 M parameters. `initializer_range=0.02`: the default 1e-10 makes denormals (slow on CPUs)."""
    from transformers import SamConfig

    return SamConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 128,
                       "window_size": 4, "global_attn_indexes": [1], "output_channels": 32, "mlp_dim": 64,
                       "num_pos_feats": 16, "initializer_range": 0.02},
        prompt_encoder_config={"hidden_size": 32, "image_size": 128, "patch_size": 16},
        mask_decoder_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64,
                             "iou_head_hidden_dim": 32},
    )


def _save_tiny_sam(dest: Path, seed: int) -> None:
    from transformers import SamImageProcessor, SamModel, SamProcessor

    model = _seeded_module(seed, lambda: SamModel(tiny_sam_config()))
    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": 128}, pad_size={"height": 128, "width": 128}, mask_size={"longest_edge": 32},
        mask_pad_size={"height": 32, "width": 32}))
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


def tiny_segmenter_config() -> Any:
    """SegFormer at ~30 k parameters, labelled with the 19 Cityscapes train classes."""
    from transformers import SegformerConfig

    return SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[4, 2], hidden_sizes=[16, 32], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
        num_labels=NUM_TRAIN_CLASSES, id2label=dict(enumerate(CITYSCAPES_TRAIN_NAMES)),
        label2id={name: i for i, name in enumerate(CITYSCAPES_TRAIN_NAMES)},
    )


def _save_tiny_segmenter(dest: Path, seed: int) -> None:
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    model = _seeded_module(seed, lambda: SegformerForSemanticSegmentation(tiny_segmenter_config()))
    model.save_pretrained(dest)
    SegformerImageProcessor(size={"height": 128, "width": 256}, do_reduce_labels=False).save_pretrained(dest)


TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _save_tiny_clip(dest: Path, seed: int) -> None:
    """open_clip's hub layout: `open_clip_config.json` + `open_clip_model.safetensors` (the real CLIP BPE)."""
    import open_clip
    from safetensors.torch import save_file

    model = _seeded_module(seed, lambda: open_clip.CLIP(**TINY_CLIP_CONFIG))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / "open_clip_model.safetensors"))
    (dest / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}))


# ------------------------------------------------------------------------------------------- device


def filter_device(cfg: FilterConfig) -> str:
    return pick_device(cfg.device, "filters.device")


def filter_dtype(cfg: FilterConfig, device: str) -> torch.dtype:
    """`auto` is bf16 on CUDA, fp32 elsewhere (see `cgaug.models.device`)."""
    return torch_dtype(pick_dtype_name(cfg.dtype, device))


def _to_chw(image: np.ndarray, device: str) -> torch.Tensor:
    import torch

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"filter models: expected (H, W, 3) uint8 images, found {image.shape} {image.dtype}")
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).to(device).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------- SAM


def scale_boxes(boxes: Sequence[Box], original: tuple[int, int], resized: tuple[int, int]) -> list[list[float]]:
    """Boxes in original pixels -> the resized image SAM sees (what SamProcessor does to `input_boxes`)."""
    sy, sx = resized[0] / original[0], resized[1] / original[1]
    return [[x0 * sx, y0 * sy, x1 * sx, y1 * sy] for x0, y0, x1, y1 in boxes]


class SamMasker:
    """`ObjectMasker` over a transformers SAM: one mask per box, at the image's size."""

    def __init__(self, model: Any, processor: Any, device: str = "cpu", dtype: torch.dtype | None = None,
                 batch_size: int = 8) -> None:
        self.model, self.processor, self.device, self.batch_size = model, processor, device, batch_size
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype

    def masks(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]) -> list[list[np.ndarray]]:
        import torch

        found: list[list[np.ndarray]] = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                stop = start + self.batch_size
                found += self._chunk(images[start:stop], boxes[start:stop])
        return found

    def _chunk(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]]) -> list[list[np.ndarray]]:
        import torch

        processor = self.processor.image_processor
        inputs = processor(images=[_to_chw(image, self.device) for image in images], return_tensors="pt",
                           device=self.device)
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device, self.dtype))
        found = []
        for i, image_boxes in enumerate(boxes):
            if not image_boxes:
                found.append([])
                continue
            original, resized = inputs["original_sizes"][i:i + 1], inputs["reshaped_input_sizes"][i:i + 1]
            scaled = scale_boxes(image_boxes, tuple(original[0].tolist()), tuple(resized[0].tolist()))
            prompt = torch.tensor([scaled], device=self.device, dtype=self.dtype)
            pred = self.model(image_embeddings=embeddings[i:i + 1], input_boxes=prompt,
                              multimask_output=False).pred_masks
            masks = processor.post_process_masks(pred.float(), original, resized)[0]  # (boxes, 1, H, W) bool
            found.append([mask[0].cpu().numpy() for mask in masks])
        return found


def load_sam(name: str, local_files_only: bool = False) -> tuple[Any, Any]:
    """(SamModel, SamProcessor) by hub id, local directory or ``tiny``."""
    from transformers import SamModel, SamProcessor

    ref, is_local = _resolve(name, "sam_model", "sam", "config.json")
    return _pretrained("sam_model", name, is_local, lambda: (
        SamModel.from_pretrained(ref, local_files_only=local_files_only or is_local).eval(),
        SamProcessor.from_pretrained(ref, local_files_only=local_files_only or is_local)))


# ------------------------------------------------------------------------------------------- segmenter


def cityscapes_class_map(id2label: dict[int, str], field: str) -> np.ndarray:
    """Model class index -> Cityscapes train id, by label name (``traffic_light`` = ``traffic light``).

    A 19-class model whose labels carry no Cityscapes names (``LABEL_0`` ...) is taken to be in
    train-id order, the convention of Cityscapes checkpoints.

    Raises:
        ValueError: neither.
    """
    names = [str(id2label[i]).lower().replace("_", " ").replace("-", " ").strip() for i in range(len(id2label))]
    by_name = {name: i for i, name in enumerate(CITYSCAPES_TRAIN_NAMES)}
    if set(names) == set(by_name) and len(names) == NUM_TRAIN_CLASSES:
        return np.asarray([by_name[name] for name in names], dtype=np.uint8)
    if len(names) == NUM_TRAIN_CLASSES and not set(names) & set(by_name):
        return np.arange(NUM_TRAIN_CLASSES, dtype=np.uint8)
    raise ValueError(f"filters.{field}: expected a segmenter of the {NUM_TRAIN_CLASSES} Cityscapes train "
                     f"classes ({', '.join(CITYSCAPES_TRAIN_NAMES)}), found {len(names)} labels {names[:25]}")


def input_size(height: int, width: int, short_side: int | None, multiple: int = 32) -> tuple[int, int]:
    """The segmenter's input size: short side `short_side` (None: the image's), aspect kept, multiples of 32."""
    scale = 1.0 if short_side is None else short_side / min(height, width)
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


class Segmenter:
    """`PixelModel` over per-pixel-logit segmenters: train ids and free energy at the image's size."""

    def __init__(self, model: Any, processor: Any | None, class_map: np.ndarray | None, device: str = "cpu",
                 dtype: torch.dtype | None = None, batch_size: int = 8, short_side: int | None = None) -> None:
        self.model, self.processor, self.class_map = model, processor, class_map
        self.device, self.batch_size, self.short_side = device, batch_size, short_side
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype

    def predict(self, images: Sequence[np.ndarray]) -> list[PixelOutput]:
        import torch

        out: list[PixelOutput] = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                for group in _same_size_runs(images[start:start + self.batch_size]):
                    out += self._chunk(group)
        return out

    def logits(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Raw logits (N, classes, h, w) at the model's output size; images of one size."""
        import torch.nn.functional as F

        height, width = images[0].shape[:2]
        tensors = [_to_chw(image, self.device) for image in images]
        if self.processor is not None:
            size = {} if self.short_side is None else {"size": dict(zip(
                ("height", "width"), input_size(height, width, self.short_side), strict=True))}
            pixels = self.processor(images=tensors, return_tensors="pt", device=self.device, **size)["pixel_values"]
            return self.model(pixel_values=pixels.to(self.device, self.dtype)).logits
        import torch

        gen_h, gen_w = input_size(height, width, self.short_side)
        batch = torch.stack(tensors).float().div_(255.0)
        batch = F.interpolate(batch, size=(gen_h, gen_w), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return self.model(((batch - mean) / std).to(self.dtype))

    def _chunk(self, images: Sequence[np.ndarray]) -> list[PixelOutput]:
        import torch
        import torch.nn.functional as F

        height, width = images[0].shape[:2]
        logits = F.interpolate(self.logits(images).float(), size=(height, width), mode="bilinear",
                               align_corners=False)
        energy = (-torch.logsumexp(logits, dim=1)).cpu().numpy().astype(np.float32)
        classes = logits.argmax(dim=1).cpu().numpy() if self.class_map is not None else None
        return [PixelOutput(self.class_map[classes[i]] if classes is not None else None, energy[i])
                for i in range(len(images))]


def _same_size_runs(images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    runs: list[list[np.ndarray]] = []
    for image in images:
        if runs and runs[-1][0].shape == image.shape:
            runs[-1].append(image)
        else:
            runs.append([image])
    return runs


def load_segmenter(name: str, field: str, local_files_only: bool = False,
                   cityscapes: bool = True) -> tuple[Any, Any | None, np.ndarray | None]:
    """(model, processor or None, class map or None) by hub id, local directory or ``tiny``.

    A local directory whose config.json names an smp class (``_model_class``) loads with
    `segmentation_models_pytorch.from_pretrained`; anything else with transformers.
    """
    ref, is_local = _resolve(name, field, "segmenter", "config.json")
    if is_local and "_model_class" in json.loads((Path(ref) / "config.json").read_text()):
        import segmentation_models_pytorch as smp

        model = smp.from_pretrained(ref).eval()
        classes = json.loads((Path(ref) / "config.json").read_text()).get("classes")
        class_map = cityscapes_class_map({i: f"class{i}" for i in range(classes or 0)}, field) if cityscapes \
            else None
        return model, None, class_map
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    local = local_files_only or is_local
    model, processor = _pretrained(field, name, is_local, lambda: (
        AutoModelForSemanticSegmentation.from_pretrained(ref, local_files_only=local).eval(),
        AutoImageProcessor.from_pretrained(ref, local_files_only=local)))
    class_map = cityscapes_class_map(model.config.id2label, field) if cityscapes else None
    return model, processor, class_map


# ------------------------------------------------------------------------------------------- CLIP


class ClipScorer:
    """`ClipModel` over open_clip: whole-image/prompt cosine and per-object zero-shot margins."""

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu", dtype: torch.dtype | None = None,
                 batch_size: int = 32, template: str = "a photo of a {}.", context: float = 1.25) -> None:
        self.model, self.tokenizer, self.device, self.batch_size = model, tokenizer, device, batch_size
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype
        self.template, self.context = template, context
        pre = model.visual.preprocess_cfg
        size = pre["size"]
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean, self.std = pre["mean"], pre["std"]
        self._texts: dict[str, Any] = {}

    def image_text(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> list[float]:
        import torch

        with torch.inference_mode():
            features = self._encode_images([self._whole(_to_chw(image, self.device)) for image in images])
            return (features * self._encode_texts(texts)).sum(-1).float().cpu().tolist()

    def object_margins(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[Box]],
                       names: Sequence[Sequence[str]]) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            crops = []
            for image, image_boxes in zip(images, boxes, strict=True):
                chw = _to_chw(image, self.device)
                crops += [self._crop(chw, box) for box in image_boxes]
            if not crops:
                return [[] for _ in images]
            features = self._encode_images(crops)
            flat_names = [name for image_names in names for name in image_names]
            own = (features * self._encode_texts([self.template.format(n) for n in flat_names])).sum(-1)
            cityscapes = self._encode_texts([self.template.format(n) for n in CITYSCAPES_TRAIN_NAMES])
            margins = (own - (features @ cityscapes.T).max(dim=-1).values).float().cpu().tolist()
        out, start = [], 0
        for image_boxes in boxes:
            out.append(margins[start:start + len(image_boxes)])
            start += len(image_boxes)
        return out

    def crop_window(self, height: int, width: int, box: Box) -> tuple[int, int, int, int]:
        """A square around the box, `context` times its longest side, shifted inside the image."""
        x0, y0, x1, y1 = box
        side = min(max(x1 - x0, y1 - y0) * self.context, height, width)
        side = max(round(side), 1)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = int(np.clip(round(cx - side / 2), 0, width - side))
        top = int(np.clip(round(cy - side / 2), 0, height - side))
        return left, top, left + side, top + side

    def _crop(self, chw: torch.Tensor, box: Box) -> torch.Tensor:
        left, top, right, bottom = self.crop_window(chw.shape[1], chw.shape[2], box)
        return self._resize(chw[:, top:bottom, left:right], self.size)

    def _whole(self, chw: torch.Tensor) -> torch.Tensor:
        """open_clip's own transform: shortest side to the model size, then a centre crop."""
        height, width = chw.shape[1:]
        scale = max(self.size[0] / height, self.size[1] / width)
        resized = self._resize(chw, (max(self.size[0], round(height * scale)), max(self.size[1], round(width * scale))))
        top = (resized.shape[1] - self.size[0]) // 2
        left = (resized.shape[2] - self.size[1]) // 2
        return resized[:, top:top + self.size[0], left:left + self.size[1]]

    @staticmethod
    def _resize(chw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        import torch.nn.functional as F

        batch = chw[None].float().div(255.0)
        return F.interpolate(batch, size=size, mode="bicubic", align_corners=False, antialias=True)[0].clamp_(0, 1)

    def _encode_images(self, crops: list[torch.Tensor]) -> torch.Tensor:
        import torch

        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        features = []
        for start in range(0, len(crops), self.batch_size):
            batch = (torch.stack(crops[start:start + self.batch_size]) - mean) / std
            features.append(self.model.encode_image(batch.to(self.dtype), normalize=True).float())
        return torch.cat(features)

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features, cached per string (class prompts repeat in every batch)."""
        import torch

        missing = sorted(set(texts) - self._texts.keys())
        if missing:
            tokens = self.tokenizer(missing).to(self.device)
            encoded = self.model.encode_text(tokens, normalize=True).float()
            self._texts.update(zip(missing, encoded, strict=True))
        return torch.stack([self._texts[text] for text in texts])


def load_clip(name: str, pretrained: str | None, device: str = "cpu") -> tuple[Any, Any]:
    """(open_clip model, tokenizer) by architecture name + pretrained tag/file, local directory, or ``tiny``."""
    import open_clip

    if name == TINY:
        model_name, pretrained = f"local-dir:{ensure_tiny_filter('clip')}", None
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        if not (path / "open_clip_config.json").is_file():
            raise ModelNotFound(_missing("clip_model", name, f"{path} holds no open_clip_config.json, so it is not "
                                                             "an open_clip model directory"))
        model_name = f"local-dir:{path}"
    elif name in open_clip.list_models():
        model_name = name
    else:
        raise ModelNotFound(_missing("clip_model", name, "neither an open_clip architecture "
                                                         "(open_clip.list_models()) nor a local directory"))
    if pretrained is not None and not _HUB_ID.match(pretrained) and not Path(pretrained).expanduser().is_file():
        raise ModelNotFound(_missing("clip_pretrained", pretrained, "no such file"))
    if pretrained is None and not model_name.startswith("local-dir:"):
        log.warning("filters.clip_pretrained is None: %s has random weights", name)
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelNotFound(_missing("clip_pretrained", f"{name} / {pretrained}",
                                     f"open_clip could not load it ({' '.join(str(exc).split())})")) from exc
    return model.eval(), open_clip.get_tokenizer(model_name)


# ------------------------------------------------------------------------------------------- loading


def load_filter_models(cfg: FilterConfig) -> FilterModels:
    """The models of the enabled gates, their weights loaded once per process.

    Raises:
        ModelNotFound: a model is neither a local directory nor in the Hugging Face cache.
    """
    if cfg.mode == "none":
        return FilterModels()
    device = filter_device(cfg)
    dtype = filter_dtype(cfg, device)
    common = {"device": device, "dtype": dtype, "batch_size": cfg.batch_size}
    masker = segmenter = anomaly = clip = None
    if cfg.object_gate:
        model, processor = _cached(("sam", cfg.sam_model, cfg.local_files_only, device, dtype),
                                   lambda: _placed(load_sam(cfg.sam_model, cfg.local_files_only), device, dtype))
        masker = SamMasker(model, processor, **common)
    if cfg.consistency_gate or (cfg.anomaly_gate and cfg.anomaly_model is None):
        segmenter = Segmenter(*_segmenter_weights(cfg.segmenter_model, "segmenter_model", True, cfg, device, dtype),
                              short_side=cfg.segmenter_short_side, **common)
    if cfg.anomaly_gate and cfg.anomaly_model is not None:
        anomaly = Segmenter(*_segmenter_weights(cfg.anomaly_model, "anomaly_model", False, cfg, device, dtype),
                            short_side=cfg.segmenter_short_side, **common)
    if cfg.clip_text_gate or cfg.clip_object_gate:
        model, tokenizer = _cached(("clip", cfg.clip_model, cfg.clip_pretrained, device, dtype),
                                   lambda: _placed(load_clip(cfg.clip_model, cfg.clip_pretrained), device, dtype))
        clip = ClipScorer(model, tokenizer, template=cfg.clip_class_template, context=cfg.clip_crop_context,
                          **common)
    return FilterModels(masker=masker, segmenter=segmenter, anomaly=anomaly, clip=clip)


def clear_filter_cache() -> None:
    """Forget every loaded filter model (tests; freeing GPU memory)."""
    with _lock:
        _weights.clear()


def _segmenter_weights(name: str, field: str, cityscapes: bool, cfg: FilterConfig, device: str,
                       dtype: torch.dtype) -> tuple[Any, Any, Any]:
    def load() -> tuple[Any, Any, Any]:
        model, processor, class_map = load_segmenter(name, field, cfg.local_files_only, cityscapes)
        return model.to(device=device, dtype=dtype), processor, class_map

    return _cached(("segmenter", name, cityscapes, cfg.local_files_only, device, dtype), load)


def _placed(pair: tuple[Any, Any], device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    model, other = pair
    return model.to(device=device, dtype=dtype), other


def _cached(key: tuple, load: Callable[[], Any]) -> Any:
    with _lock:
        if key not in _weights:
            from cgaug.models.tiny import quiet_progress_bars

            with quiet_progress_bars():
                _weights[key] = load()
        return _weights[key]


def _resolve(name: str, field: str, kind: str, marker: str) -> tuple[str, bool]:
    """(reference to load, is it local): ``tiny`` -> the built tiny model; a directory; or a hub id."""
    if name == TINY:
        return str(ensure_tiny_filter(kind)), True
    path = Path(name).expanduser()
    if path.exists():
        if not (path / marker).is_file():
            raise ModelNotFound(_missing(field, name, f"{path} exists but holds no {marker}, so it is not a "
                                                      "saved model directory"))
        return str(path), True
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise ModelNotFound(_missing(field, name, f"no such directory: {path}"))
    return name, False


def _pretrained(field: str, name: str, is_local: bool, load: Callable[[], Any]) -> Any:
    from cgaug.models.tiny import quiet_progress_bars

    with quiet_progress_bars():
        if is_local:
            return load()
        try:
            return load()
        except OSError as exc:  # hub misses: LocalEntryNotFoundError, "does not appear to have a file named ..."
            raise ModelNotFound(_missing(field, name, "not in the Hugging Face cache and not downloadable "
                                                      f"({' '.join(str(exc).split())})")) from exc


def _missing(field: str, name: str, reason: str) -> str:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    offline = " HF_HUB_OFFLINE is set, so nothing is downloaded." if os.environ.get("HF_HUB_OFFLINE") else ""
    return (f"filters.{field} {name!r} was not found: {reason}.{offline} To provide it, download it into the "
            f"Hugging Face cache (HF_HOME, here {hf_home}) on a machine with network access and copy the cache "
            f"over, or set filters.{field} to a local directory saved with save_pretrained. "
            "(`--filters tiny` needs no download; `--filters none` turns filtering off.)")


__all__ = [
    "ClipScorer", "SamMasker", "Segmenter", "build_tiny_filter", "cityscapes_class_map", "clear_filter_cache",
    "ensure_tiny_filter", "filter_device", "filter_dtype", "load_clip", "load_filter_models", "load_sam",
    "load_segmenter", "scale_boxes", "tiny_filters_dir",
]
