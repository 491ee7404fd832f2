"""The training dataset: Cityscapes originals paired with accepted CG-Aug samples from the shards.

Selection reads only `index.parquet` (no blob): rows of the split whose verdict is allowed and
whose quality scores reach the configured floors. A source image with several usable variants
gets one of them per epoch, drawn from (run seed, source id, epoch), so pairing is reproducible
and changes between epochs. Source images without any usable variant are left out (as in the
reference), and a split without any is an error naming the shards root.

Reading streams Parquet row groups: each epoch's pairs are grouped by the row group that holds
their augmented sample, the groups are shuffled (seeded by the epoch) and dealt to the DataLoader
workers round-robin, and each group's blob columns are read once. So a worker holds one row group
(16 samples) at a time, and every byte of a shard is read at most once per epoch.

Anomaly-mix objects come from an `ObjectSource`: `BankObjects` (an object bank whose rows point
at source images: ADE20K, COCO, or a mask folder with images beside the masks) or `GeneratedObjects`
(objects cut from accepted generated images with their OOD masks, beyond the reference).
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import fsspec
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cgaug.records import OOD_TRAIN_ID, VOID_TRAIN_ID, SourceRecord
from cgaug.seeds import derive_seed
from cgaug.storage.bank import ObjectBank
from cgaug.storage.evalsets.base import EvalDataset, EvalItem, EvalSample, read_rgb
from cgaug.storage.fs import Root, open_root
from cgaug.storage.png import decode_png
from cgaug.storage.schema import scores_as_dict
from cgaug.storage.shards import INDEX_NAME, read_manifest, read_sample

if TYPE_CHECKING:
    import torch

    from cgaug.config import TrainDataConfig

_PAIR_BLOBS = ["sample_id", "image_png", "label_png", "noise_mask_png"]
_OBJECT_CACHE = 64


class TrainDataError(ValueError):
    """Training inputs that are missing or inconsistent; the message names the root, split or column."""


@dataclass(frozen=True, slots=True)
class AugmentedRef:
    """Where one usable augmented sample lives: its shard file, row group and row inside the group."""

    sample_id: str
    shard_file: str
    row_group: int
    row: int


def _rng(seed: int, key: str, epoch: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, key, epoch, 0))


# --- selection --------------------------------------------------------------------------------------------


def select_augmented(root: Root, split: str, verdicts: list[str],
                     min_scores: dict[str, float] | None = None) -> dict[str, list[AugmentedRef]]:
    """Usable augmented samples per source id, each list sorted by sample id.

    Raises:
        FileNotFoundError: the root has no manifest (not a finished cgaug output root).
        TrainDataError: no row of `split`, or none that passes the verdict and score filters.
    """
    read_manifest(root)  # a clear error for a root that is not indexed
    index = root.read_parquet(INDEX_NAME, columns=["sample_id", "source_id", "split", "verdict", "scores",
                                                   "shard_file"])
    in_split = index.filter(pc.equal(index.column("split"), split))
    if in_split.num_rows == 0:
        splits = sorted(set(index.column("split").to_pylist()) - {None})
        raise TrainDataError(f"{root.uri(INDEX_NAME)}: no shard samples for split {split!r} (splits present: "
                             f"{splits or 'none'}); generate the split or set data.split")
    rows = [r for r in in_split.to_pylist() if r["verdict"] in verdicts and _scores_pass(r["scores"], min_scores)]
    if not rows:
        found = dict(sorted(_count(in_split.column("verdict").to_pylist()).items()))
        raise TrainDataError(f"{root.uri(INDEX_NAME)}: no sample of split {split!r} has a verdict in {verdicts} "
                             f"and scores reaching {min_scores or {}} (verdicts found: {found}); "
                             "run the quality filter or relax data.verdicts / data.min_scores")
    positions = _row_positions(root, sorted({r["shard_file"] for r in rows}))
    pairs: dict[str, list[AugmentedRef]] = {}
    for r in sorted(rows, key=lambda r: r["sample_id"]):
        group, row = positions[r["shard_file"]][r["sample_id"]]
        pairs.setdefault(r["source_id"], []).append(AugmentedRef(r["sample_id"], r["shard_file"], group, row))
    return pairs


def _scores_pass(scores: Any, floors: dict[str, float] | None) -> bool:
    if not floors:
        return True
    values = scores_as_dict(scores)
    return all(name in values and values[name] is not None and values[name] >= floor for name, floor in floors.items())


def _count(values: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def _row_positions(root: Root, shard_files: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """sample id -> (row group, row in group) for each shard, from the sample_id column only."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for name in shard_files:
        with root.open_input(name) as f:
            parquet = pq.ParquetFile(f)
            found: dict[str, tuple[int, int]] = {}
            for group in range(parquet.num_row_groups):
                ids = parquet.read_row_group(group, columns=["sample_id"]).column(0).to_pylist()
                found.update({sample_id: (group, row) for row, sample_id in enumerate(ids)})
        out[name] = found
    return out


def choose_variant(refs: list[AugmentedRef], seed: int, source_id: str, epoch: int) -> AugmentedRef:
    """The variant a source image uses in `epoch` (uniform over its usable variants, reproducible)."""
    return refs[int(_rng(seed, f"variant:{source_id}", epoch).integers(len(refs)))]


# --- anomaly-mix objects ----------------------------------------------------------------------------------


class ObjectSource(Protocol):
    """Objects with pixels for the anomaly mix: (pixels (h, w, 3) uint8, mask (h, w) bool)."""

    def __len__(self) -> int: ...

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


class _Cached:
    """A small per-process LRU of decoded objects (workers each hold their own)."""

    def __init__(self) -> None:
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(index)
        if hit is None:
            hit = self._load(index)
            self._cache[index] = hit
            if len(self._cache) > _OBJECT_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return hit

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class BankObjects(_Cached):
    """Objects of an object bank with their pixels, cut from the source images at the bank's boxes.

    The image of an entry is ``{images}/{source_id}``, with the mask's file suffix swapped for
    .jpg/.png when that file is absent: ADE20K source ids are the image files under the release
    folder's parent; COCO's are the image file names, so `images` is the folder holding them
    (``COCO/train2017``), as the reference's PEBAL-style anomaly mix pastes COCO objects; a mask
    folder's are ``class/mask.png``, with the image beside it in a parallel folder. COCO banks built
    before source ids named the image file (they hold annotation ids) are refused with the fix: rebuild.
    Without `images`, a ``bank_images/`` folder beside the bank file is used when it exists (the layout
    `cgaug fixtures` writes), so the common case needs no setting.
    """

    SUFFIXES = (".jpg", ".jpeg", ".png")
    BESIDE = "bank_images"

    def __init__(self, bank_path: str, images: str | None):
        super().__init__()
        self.bank = ObjectBank.open(bank_path)
        if images is None:
            beside = f"{posixpath.dirname(bank_path.rstrip('/')) or '.'}/{self.BESIDE}"
            fs, _ = fsspec.core.url_to_fs(beside)
            if fs.isdir(beside):
                images = beside
        if images is None:
            raise TrainDataError(f"data.bank_images is not set and {bank_path} has no {self.BESIDE}/ folder beside "
                                 f"it: the anomaly mix needs the source images of the objects in {bank_path} (masks "
                                 "alone have no pixels); set data.bank_images, or use data.anomaly_source=generated")
        _check_coco_entries(self.bank, bank_path)
        self.images = images.rstrip("/")

    def __len__(self) -> int:
        return len(self.bank)

    def image_path(self, index: int) -> str:
        source_id = self.bank.entry(index).source_id
        path = f"{self.images}/{source_id}"
        stem = posixpath.splitext(path)[0]
        fs, _ = fsspec.core.url_to_fs(path)
        for candidate in (path, *(stem + suffix for suffix in self.SUFFIXES)):
            if fs.exists(candidate):
                return candidate
        raise TrainDataError(f"object {self.bank.entry(index).object_id!r}: no image at {path} (nor with a "
                             f"{'/'.join(self.SUFFIXES)} suffix) under data.bank_images={self.images}")

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        entry = self.bank.entry(index)
        image = read_rgb(self.image_path(index), "object source image")
        x0, y0, x1, y1 = entry.box
        mask = np.asarray(self.bank.mask(index))
        crop = image[y0:y1, x0:x1]
        if crop.shape[:2] != mask.shape:
            raise TrainDataError(f"object {entry.object_id!r}: box {entry.box} does not fit its image "
                                 f"{image.shape[1]}x{image.shape[0]} (mask {mask.shape})")
        return np.ascontiguousarray(crop), mask


def _check_coco_entries(bank: ObjectBank, bank_path: str) -> None:
    """Refuse COCO entries whose source id is no image file name: their pixels cannot be found.

    Banks built before COCO rows recorded the image file hold the annotation id there (``"1234"``);
    annotations without ``file_name`` or ``coco_url`` leave the image id. Neither has a file suffix.
    """
    for i in range(len(bank)):
        entry = bank.entry(i)
        if entry.source == "coco" and not posixpath.splitext(entry.source_id)[1]:
            raise TrainDataError(
                f"{bank_path}: COCO object {entry.object_id!r} records source id {entry.source_id!r}, not an "
                "image file, so its pixels cannot be found (the bank was built before COCO rows recorded their "
                "image, or from annotations without file_name); rebuild it with `cgaug bank build "
                "instances_train2017.json --from coco --out BANK` and set data.bank_images to the images folder "
                "(e.g. COCO/train2017)")


class GeneratedObjects(_Cached):
    """Objects cut from generated images (verdicts given) with their OOD masks (SAM masks when accepted)."""

    def __init__(self, root: Root, verdicts: list[str], split: str):
        super().__init__()
        index = root.read_parquet(INDEX_NAME, columns=["sample_id", "split", "verdict", "objects"])
        self.root = root
        self.items: list[tuple[str, tuple[int, int, int, int]]] = []
        for row in index.to_pylist():
            if row["split"] == split and row["verdict"] in verdicts:
                self.items += [(row["sample_id"], (o["x0"], o["y0"], o["x1"], o["y1"])) for o in row["objects"] or []]
        if not self.items:
            raise TrainDataError(f"{root.uri(INDEX_NAME)}: no pasted object in samples of split {split!r} with "
                                 f"a verdict in {verdicts}; data.anomaly_source=generated has nothing to cut")

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample_id, (x0, y0, x1, y1) = self.items[index]
        sample = read_sample(self.root, sample_id)
        mask = sample["ood_mask"][y0:y1, x0:x1]
        if not mask.any():  # the filter removed this object's pixels: fall back to the whole OOD region
            mask = sample["ood_mask"]
            y0, x0 = 0, 0
        rgb = sample["image"][y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        return np.ascontiguousarray(rgb), np.ascontiguousarray(mask)


# --- the dataset ------------------------------------------------------------------------------------------


def _to_tensor_image(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    import torch

    # decoded images can be read-only views of a buffer; `.float()` copies anyway, so going through an
    # owned uint8 array costs one small copy and no write-through risk (torch warns about the view)
    x = torch.from_numpy(image if image.flags.writeable else image.copy()).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _resize_to(aug: np.ndarray, label: np.ndarray, noise: np.ndarray | None,
               shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Generated samples stored at another size than the original: bilinear image, nearest labels."""
    from PIL import Image

    if label.shape == shape:
        return aug, label, noise
    size = (shape[1], shape[0])
    aug = np.asarray(Image.fromarray(aug).resize(size, Image.Resampling.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(size, Image.Resampling.NEAREST))
    if noise is not None:
        noise = np.asarray(Image.fromarray(noise.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)) > 0
    return aug, label, noise


class PairDataset:
    """An iterable (torch IterableDataset protocol) of paired examples; call `set_epoch` before iterating.

    Each example is a dict: image, aug_image (3, h, w) float normalised; label, aug_label (h, w) int64;
    noise (h, w) bool; source_id, sample_id (str); mixup (float).
    """

    def __init__(self, source: str, shards: str | None, cfg: TrainDataConfig, seed: int, bank: str | None = None):
        from cgaug.storage.cityscapes import list_sources

        self.cfg = cfg
        self.seed = seed
        self.shards_uri = shards
        self.epoch = 0
        sources = {rec.source_id: rec for rec in list_sources(source, cfg.split)}
        self.objects: ObjectSource | None = None
        if cfg.augmented == "originals":  # every original paired with itself: no generated image at all
            if cfg.anomaly_mix and cfg.anomaly_source == "generated":
                raise TrainDataError("data.anomaly_source 'generated' cuts objects from generated images, but "
                                     "data.augmented is 'originals' (none are used); use anomaly_source 'bank'")
            self.pairs: list[tuple[SourceRecord, list[AugmentedRef]]] = [(sources[s], []) for s in sorted(sources)]
            if cfg.anomaly_mix:
                self.objects = BankObjects(cfg.bank or bank or f"{source.rstrip('/')}/bank.parquet", cfg.bank_images)
            return
        if shards is None:
            raise TrainDataError("data.augmented is 'shards' but no shards root was given")
        root = open_root(shards, create=False)
        refs = select_augmented(root, cfg.split, list(cfg.verdicts), dict(cfg.min_scores))
        missing = sorted(set(refs) - set(sources))
        if missing:
            raise TrainDataError(f"{shards}: augmented samples of source images {missing[:5]} that {source} "
                                 f"(split {cfg.split!r}) lacks; are --source and --shards from one dataset?")
        self.pairs = [(sources[s], refs[s]) for s in sorted(refs)]
        if cfg.anomaly_mix:
            if cfg.anomaly_source == "generated":
                self.objects = GeneratedObjects(root, list(cfg.verdicts), cfg.split)
            else:
                bank_path = cfg.bank or bank or f"{source.rstrip('/')}/bank.parquet"
                self.objects = BankObjects(bank_path, cfg.bank_images)

    def __len__(self) -> int:
        return len(self.pairs)

    def batches_per_epoch(self, batch_size: int, workers: int) -> int:
        """Full batches an epoch yields (each worker drops its own last partial batch)."""
        if workers <= 1:
            return len(self.pairs) // batch_size
        return sum(sum(len(rows) for rows in groups) // batch_size for groups in self._worker_groups(workers))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_plan(self) -> list[list[tuple[int, AugmentedRef | None]]]:
        """This epoch's row groups in reading order, each a list of (pair index, chosen variant).

        With `augmented: originals`, one group of every original (variant None), shuffled per epoch.
        """
        if self.cfg.augmented == "originals":
            order = _rng(self.seed, "order", self.epoch).permutation(len(self.pairs))
            return [[(int(i), None) for i in order]]
        groups: dict[tuple[str, int], list[tuple[int, AugmentedRef]]] = {}
        for i, (rec, refs) in enumerate(self.pairs):
            ref = choose_variant(refs, self.seed, rec.source_id, self.epoch)
            groups.setdefault((ref.shard_file, ref.row_group), []).append((i, ref))
        rng = _rng(self.seed, "order", self.epoch)
        keys = sorted(groups)
        ordered = [groups[keys[k]] for k in rng.permutation(len(keys))]
        return [[items[j] for j in rng.permutation(len(items))] for items in ordered]

    def _worker_groups(self, workers: int) -> list[list[list[tuple[int, AugmentedRef | None]]]]:
        plan = self.epoch_plan()
        if self.cfg.augmented == "originals":  # one group: deal its items, not the group
            return [[plan[0][w::workers]] for w in range(workers)]
        return [plan[w::workers] for w in range(workers)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self.cfg.augmented == "originals":
            for group in self._worker_groups(workers)[worker]:
                yield from (self.example(index, None) for index, _ in group)
            return
        root = open_root(self.shards_uri, create=False)
        for group in self._worker_groups(workers)[worker]:
            yield from self._read_group(root, group)

    def _read_group(self, root: Root, group: list[tuple[int, AugmentedRef]]) -> Iterator[dict[str, Any]]:
        shard_file, row_group = group[0][1].shard_file, group[0][1].row_group
        with root.open_input(shard_file) as f:
            table = pq.ParquetFile(f).read_row_group(row_group, columns=_PAIR_BLOBS)
        ids = table.column("sample_id").to_pylist()
        for index, ref in group:
            if ids[ref.row] != ref.sample_id:
                raise TrainDataError(f"{root.uri(shard_file)}: row group {row_group} row {ref.row} holds "
                                     f"{ids[ref.row]!r}, expected {ref.sample_id!r}; the shard changed since "
                                     "the dataset was opened")
            row = table.slice(ref.row, 1).to_pylist()[0]
            yield self.example(index, row)

    def example(self, index: int, row: dict[str, Any] | None) -> dict[str, Any]:
        """One training example from a pair index and its augmented row (PNG blobs; None: the original itself)."""
        from cgaug.storage.cityscapes import read_pair, to_train_ids
        from cgaug.tasks.training.augment import make_pair

        cfg = self.cfg
        rec = self.pairs[index][0]
        image, label_ids = read_pair(rec)
        label = to_train_ids(label_ids)
        if row is None:
            row = {"sample_id": rec.source_id}
            aug, aug_label, noise = image, label, None
        elif row["image_png"] is None or row["label_png"] is None:
            raise TrainDataError(f"{self.shards_uri}: sample {row['sample_id']!r} has no image or label blob")
        else:
            noise = decode_png(row["noise_mask_png"], mask=True) if row["noise_mask_png"] is not None else None
            aug, aug_label, noise = _resize_to(decode_png(row["image_png"]), decode_png(row["label_png"]), noise,
                                               label.shape)
        rng = _rng(self.seed, f"pair:{rec.source_id}", self.epoch)
        obj = None
        if self.objects is not None and rng.random() < cfg.anomaly_probability:
            obj = self.objects.get(int(rng.integers(len(self.objects))))
        pair = make_pair(image, label, aug, aug_label, noise, crop=tuple(cfg.crop_size),
                         flip_probability=cfg.flip_probability, mixup_max=cfg.mixup_max if cfg.mixup else None,
                         obj=obj, scales=list(cfg.anomaly_scales), rng=rng, void_noise=cfg.use_noise_mask,
                         augmentations=cfg.augmentations, augment_probability=cfg.augment_probability)
        import torch

        return {
            "image": _to_tensor_image(pair.image, cfg.mean, cfg.std),
            "label": torch.from_numpy(pair.label.astype(np.int64)),
            "aug_image": _to_tensor_image(pair.aug_image, cfg.mean, cfg.std),
            "aug_label": torch.from_numpy(pair.aug_label.astype(np.int64)),
            "noise": torch.from_numpy(pair.noise),
            "source_id": rec.source_id, "sample_id": row["sample_id"], "mixup": pair.mixup_weight,
        }


def make_loader(dataset: PairDataset, batch_size: int, workers: int, prefetch_factor: int = 2,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` (an IterableDataset), dropping each worker's last partial batch."""
    import torch.utils.data

    class _Iterable(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[dict[str, Any]]:
            return iter(dataset)

    options: dict[str, Any] = {"prefetch_factor": prefetch_factor, "persistent_workers": False} if workers else {}
    return torch.utils.data.DataLoader(_Iterable(), batch_size=batch_size, num_workers=workers, drop_last=True,
                                       pin_memory=pin_memory, **options)


# --- validation on held-out shards -------------------------------------------------------------------------


class ShardEvalDataset(EvalDataset):
    """Generated samples of one split as an evaluation set: OOD = label 254, train ids elsewhere."""

    kind = "cgaug_shards"
    has_ood = True
    has_segmentation = True

    def __init__(self, root: str, split: str = "val", verdicts: tuple[str, ...] = ("accepted", "unfiltered")):
        super().__init__(root)
        self.split = split
        self.verdicts = verdicts
        self._root = open_root(root, create=False)

    def samples(self) -> list[EvalSample]:
        index = self._root.read_parquet(INDEX_NAME, columns=["sample_id", "split", "verdict", "shard_file"])
        rows = [r for r in index.to_pylist() if r["split"] == self.split and r["verdict"] in self.verdicts]
        if not rows:
            raise TrainDataError(f"{self._root.uri(INDEX_NAME)}: no sample of split {self.split!r} with a verdict "
                                 f"in {list(self.verdicts)} to validate on")
        return [EvalSample(r["sample_id"], r["shard_file"], r["shard_file"]) for r in sorted(rows, key=lambda r:
                                                                                              r["sample_id"])]

    def read(self, sample: EvalSample) -> EvalItem:
        row = read_sample(self._root, sample.sample_id)
        label = row["label"]
        ood = np.where(label == OOD_TRAIN_ID, 1, np.where(label == VOID_TRAIN_ID, VOID_TRAIN_ID, 0)).astype(np.uint8)
        train_ids = np.where(label == OOD_TRAIN_ID, VOID_TRAIN_ID, label).astype(np.uint8)
        return EvalItem(sample.sample_id, row["image"], ood, train_ids)

    def describe(self) -> str:
        return f"generated samples of split {self.split!r} at {self.root}"


def open_validation(spec: str) -> EvalDataset:
    """`KIND=DIR` (an evaluation benchmark) or `shards=OUT[@SPLIT]` (held-out generated samples, default val)."""
    from cgaug.storage.evalsets import open_dataset, parse_dataset_spec

    kind, _, rest = spec.partition("=")
    if kind.strip() == "shards":
        root, _, split = rest.strip().partition("@")
        return ShardEvalDataset(root, split or "val")
    kind, root = parse_dataset_spec(spec)
    return open_dataset(kind, root)
