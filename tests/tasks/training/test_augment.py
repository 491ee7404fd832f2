"""Pair augmentation: mixup weight, one crop and flip for both images, the pasted object's label."""

from __future__ import annotations

import numpy as np

from cgaug.tasks.training.augment import make_pair, mixup, paste_object


def test_mixup_blends_the_original_into_the_augmented_image():
    original = np.full((2, 2, 3), 200, np.uint8)
    augmented = np.full((2, 2, 3), 100, np.uint8)
    assert mixup(original, augmented, 0.3)[0, 0, 0] == 130  # 0.3 * 200 + 0.7 * 100


def test_the_same_crop_and_flip_apply_to_both_images_and_labels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (40, 60), dtype=np.uint8)
    pair = make_pair(image, label, image.copy(), label.copy(), None, crop=(16, 24), flip_probability=1.0,
                     mixup_max=None, obj=None, scales=[1.0], rng=np.random.default_rng(1))
    assert np.array_equal(pair.image, pair.aug_image) and np.array_equal(pair.label, pair.aug_label)
    # find the window: the crop is a flipped sub-block of the original
    found = [(y, x) for y in range(25) for x in range(37)
             if np.array_equal(label[y:y + 16, x:x + 24][:, ::-1], pair.label)]
    assert len(found) == 1 and pair.mixup_weight == 0.0 and not pair.noise.any()


def test_mixup_weight_is_capped_and_a_small_image_is_padded_with_void():
    image = np.zeros((10, 10, 3), np.uint8)
    label = np.zeros((10, 10), np.uint8)
    weights = [make_pair(image, label, image, label, None, crop=(12, 12), flip_probability=0.0, mixup_max=0.3,
                         obj=None, scales=[1.0], rng=np.random.default_rng(s)) for s in range(20)]
    assert all(0.0 <= p.mixup_weight <= 0.3 for p in weights) and any(p.mixup_weight == 0.3 for p in weights)
    assert (weights[0].label[10:] == 255).all() and (weights[0].aug_label[:, 10:] == 255).all()


def test_pasted_object_writes_its_pixels_and_label_254():
    image = np.zeros((20, 20, 3), np.uint8)
    label = np.zeros((20, 20), np.uint8)
    rgb = np.full((4, 4, 3), 77, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    pixels = paste_object(image, label, rgb, mask, 1.0, np.random.default_rng(0))
    assert pixels == 4 and (label == 254).sum() == 4
    assert (image[label == 254] == 77).all() and (image[label != 254] == 0).all()


def test_anomaly_mix_works_on_read_only_inputs_and_leaves_them_alone():
    # Decoded PNGs (np.asarray of a PIL image) are read-only; a full-size crop is a view of them.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    label = np.zeros((16, 24), np.uint8)
    for array in (image, label):
        array.setflags(write=False)
    before = image.copy(), label.copy()
    obj = (np.full((6, 6, 3), 200, np.uint8), np.ones((6, 6), bool))
    pair = make_pair(image, label, image, label, None, crop=(16, 24), flip_probability=0.0, mixup_max=None,
                     obj=obj, scales=[1.0], rng=np.random.default_rng(1))
    assert pair.pasted_pixels == 36 and (pair.label == 254).sum() == 36
    assert (pair.image[pair.label == 254] == 200).all()
    assert np.array_equal(image, before[0]) and np.array_equal(label, before[1])
