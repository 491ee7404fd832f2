"""Pairing originals with accepted shard samples, and the examples the training loader yields."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cgaug.config import TrainDataConfig
from cgaug.storage.fs import open_root
from cgaug.tasks.training.dataset import (
    BankObjects,
    PairDataset,
    TrainDataError,
    choose_variant,
    open_validation,
    select_augmented,
)
from tests.train_helpers import fake_shards


@pytest.fixture(scope="module")
def shards(dataset, tmp_path_factory):
    return fake_shards(dataset, tmp_path_factory)


def data_cfg(**kw) -> TrainDataConfig:
    return TrainDataConfig(**({"crop_size": (64, 128), "anomaly_source": "generated", "num_workers": 0} | kw))


def test_selection_groups_variants_by_source_and_applies_score_floors(shards):
    root = open_root(str(shards), create=False)
    refs = select_augmented(root, "train", ["accepted"])
    assert len(refs) == 6 and all(len(v) == 2 for v in refs.values())
    floor = select_augmented(root, "train", ["accepted"], {"sam_iou": 0.55})  # variant 0 scores 0.5
    assert all([r.sample_id.endswith("__v001") for r in v] == [True] for v in floor.values())


def test_missing_split_or_verdict_is_a_clear_error(shards, tmp_path):
    root = open_root(str(shards), create=False)
    with pytest.raises(TrainDataError, match=r"no shard samples for split 'val'.*splits present: \['train'\]"):
        select_augmented(root, "val", ["accepted"])
    with pytest.raises(TrainDataError, match=r"verdict in \['unfiltered'\].*accepted"):
        select_augmented(root, "train", ["unfiltered"])
    with pytest.raises(FileNotFoundError, match="no manifest"):
        select_augmented(open_root(str(tmp_path)), "train", ["accepted"])


def test_variant_choice_is_reproducible_and_changes_with_the_epoch(shards):
    refs = select_augmented(open_root(str(shards), create=False), "train", ["accepted"])
    source, options = sorted(refs.items())[0]
    picks = [choose_variant(options, 0, source, epoch).sample_id for epoch in range(12)]
    assert picks == [choose_variant(options, 0, source, epoch).sample_id for epoch in range(12)]
    assert len(set(picks)) == 2


def test_examples_pair_the_same_source_with_ood_pasted_and_are_reproducible(dataset, shards):
    ds = PairDataset(str(dataset), str(shards), data_cfg(), seed=0)
    ds.set_epoch(3)
    first = list(ds)
    assert len(first) == 6 and {e["source_id"] for e in first} == {rec.source_id for rec, _ in ds.pairs}
    for example in first:
        assert example["sample_id"].startswith(example["source_id"])
        assert example["image"].shape == example["aug_image"].shape == (3, 64, 128)
        assert example["label"].shape == example["aug_label"].shape == example["noise"].shape == (64, 128)
        assert 0.0 <= example["mixup"] <= 0.3
        assert (example["label"] == 254).any()  # the anomaly mix pasted an object
    again = list(ds)
    assert all(a["sample_id"] == b["sample_id"] and bool((a["image"] == b["image"]).all())
               for a, b in zip(first, again, strict=True))


def test_a_source_without_images_is_refused(dataset_copy, shards):
    shutil.rmtree(dataset_copy / "leftImg8bit" / "train")
    shutil.rmtree(dataset_copy / "gtFine" / "train")
    (dataset_copy / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no Cityscapes split 'train'"):
        PairDataset(str(dataset_copy), str(shards), data_cfg(), seed=0)


def test_bank_objects_cut_pixels_at_the_bank_box(dataset, tmp_path):
    from PIL import Image

    from cgaug.storage.bank import ObjectBank

    bank = ObjectBank.open(str(dataset / "bank.parquet"))
    images = tmp_path / "images"
    entry = bank.entry(0)
    x0, y0, x1, y1 = entry.box
    photo = np.random.default_rng(0).integers(0, 255, (y1 + 5, x1 + 5, 3), dtype=np.uint8)
    (images / entry.source_id).parent.mkdir(parents=True)
    Image.fromarray(photo).save((images / entry.source_id).with_suffix(".jpg").with_suffix(".png"))
    objects = BankObjects(str(dataset / "bank.parquet"), str(images))
    rgb, mask = objects.get(0)
    assert np.array_equal(rgb, photo[y0:y1, x0:x1]) and np.array_equal(mask, bank.mask(0))
    with pytest.raises(TrainDataError, match="no image at"):
        objects.get(1)
    with pytest.raises(TrainDataError, match=r"data\.bank_images is not set"):
        BankObjects(str(dataset / "bank.parquet"), None)


def test_held_out_shards_validate_with_ood_as_positives(shards):
    ds = open_validation(f"shards={shards}@train")
    item = ds.read(ds.samples()[0])
    assert set(np.unique(item.ood)) <= {0, 1, 255} and (item.ood == 1).any()
    assert 254 not in np.unique(item.train_ids)
