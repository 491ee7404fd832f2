"""Pairing originals with accepted shard samples, and the examples the training loader yields."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def _coco_source(tmp_path) -> tuple[Path, Path, dict]:
    """Two COCO images (one grey, as some COCO images are), their instance annotations, and the JSON."""
    from PIL import Image

    rng = np.random.default_rng(1)
    images = tmp_path / "coco" / "train2017"
    images.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(images / "000000000001.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 50), dtype=np.uint8)).save(images / "000000000002.jpg")
    data = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 40, "width": 60},
                   {"id": 2, "file_name": "000000000002.jpg", "height": 30, "width": 50}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 18, "iscrowd": 0,
             "segmentation": [[10, 5, 40, 5, 40, 30, 10, 30]]},
            {"id": 9, "image_id": 2, "category_id": 62, "iscrowd": 0,
             "segmentation": [[20, 3, 45, 20, 5, 25]]},
        ],
    }
    annotations = tmp_path / "coco" / "instances_train2017.json"
    annotations.write_text(json.dumps(data))
    return annotations, images, data


def test_coco_bank_objects_cut_pixels_from_the_image_files(tmp_path):
    from PIL import Image

    from cgaug.storage.bank import ObjectBank
    from cgaug.storage.bank_sources import build_from_coco, coco_segmentation_mask
    from cgaug.tasks.training.augment import paste_object

    annotations, images, data = _coco_source(tmp_path)
    bank_path = str(tmp_path / "coco.parquet")
    assert build_from_coco(annotations, bank_path, min_area=10)["written"] == 2
    bank = ObjectBank.open(bank_path)
    objects = BankObjects(bank_path, str(images))
    files = {im["id"]: im["file_name"] for im in data["images"]}
    by_id = {f"coco:{ann['id']}:0": ann for ann in data["annotations"]}
    for i in range(len(bank)):
        entry = bank.entry(i)
        ann = by_id[entry.object_id]
        photo = np.asarray(Image.open(images / files[ann["image_id"]]).convert("RGB"))
        x0, y0, x1, y1 = entry.box
        rgb, mask = objects.get(i)
        np.testing.assert_array_equal(rgb, photo[y0:y1, x0:x1])
        full = coco_segmentation_mask(ann["segmentation"], photo.shape[0], photo.shape[1])
        np.testing.assert_array_equal(mask, full[y0:y1, x0:x1])
    # pasted at scale 1, the object's own pixels land where the label says 254
    rgb, mask = objects.get(0)
    canvas = np.zeros((64, 128, 3), np.uint8)
    label = np.zeros((64, 128), np.uint8)
    assert paste_object(canvas, label, rgb, mask, 1.0, np.random.default_rng(0)) == int(mask.sum())
    rows, cols = np.nonzero(label == 254)
    top = rows.min() - np.flatnonzero(mask.any(axis=1))[0]
    left = cols.min() - np.flatnonzero(mask.any(axis=0))[0]
    np.testing.assert_array_equal(label[top:top + mask.shape[0], left:left + mask.shape[1]] == 254, mask)
    np.testing.assert_array_equal(canvas[top:top + mask.shape[0], left:left + mask.shape[1]][mask], rgb[mask])


def test_old_coco_banks_are_refused_with_the_fix_and_other_sources_accepted(tmp_path):
    from cgaug.storage.bank import BankItem, write_bank

    square = np.ones((4, 4), dtype=bool)
    old = str(tmp_path / "old.parquet")
    write_bank([BankItem("coco:10:0", "dog", "animal", "coco", "10", square)], old, "coco")
    with pytest.raises(TrainDataError, match=r"'10', not an image file.*rebuild it.*--from coco.*bank_images"):
        BankObjects(old, str(tmp_path))
    mixed = str(tmp_path / "mixed.parquet")
    write_bank([BankItem("ade20k:a:1.1", "box", "box", "ade20k", "ADE/images/a.jpg", square),
                BankItem("folder:box/m.png:0", "box", "box", "folder", "box/m.png", square),
                BankItem("coco:11:0", "dog", "animal", "coco", "000000000001.jpg", square)], mixed, "mixed")
    assert len(BankObjects(mixed, str(tmp_path))) == 3


def test_held_out_shards_validate_with_ood_as_positives(shards):
    ds = open_validation(f"shards={shards}@train")
    item = ds.read(ds.samples()[0])
    assert set(np.unique(item.ood)) <= {0, 1, 255} and (item.ood == 1).any()
    assert 254 not in np.unique(item.train_ids)
