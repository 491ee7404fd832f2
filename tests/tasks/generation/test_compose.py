from __future__ import annotations

import numpy as np
import pytest

from cgaug.config import ComposeConfig
from cgaug.labels import CITYSCAPES_BY_NAME, ade_palette, label_id_to_train_id_lut
from cgaug.records import OOD_TRAIN_ID, SampleSkipped
from cgaug.tasks.generation.compose import bank_class_filter, compose, conditioning_map, usable_classes
from tests.tasks.conftest import ListBank, ellipse, street

ROAD = CITYSCAPES_BY_NAME["road"].id


def _palette_colors() -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in c) for c in ade_palette()} | {(0, 0, 0)}


def test_conditioning_map_uses_reference_mapping_and_palette():
    ids = CITYSCAPES_BY_NAME
    label = np.array([[ids["road"].id, ids["sky"].id, ids["parking"].id, ids["rider"].id,
                       ids["ego vehicle"].id, ids["traffic sign"].id]], dtype=np.uint8)
    cond = conditioning_map(label)
    # hand-checked against ade20k_150.json: road 6, sky 2, person 12, signboard 43
    assert cond.tolist() == [[[140, 140, 140], [6, 230, 230], [0, 0, 0], [150, 5, 61], [140, 140, 140],
                              [255, 5, 153]]]


def test_labels_and_map_are_coherent(bank):
    label_ids = street()
    comp, _ = compose(label_ids, bank, ComposeConfig(), np.random.default_rng(0))
    assert comp.ood_mask.any()
    np.testing.assert_array_equal(comp.label == OOD_TRAIN_ID, comp.ood_mask)
    untouched = ~comp.ood_mask
    np.testing.assert_array_equal(comp.label[untouched], label_id_to_train_id_lut()[label_ids][untouched])
    colors = {tuple(c) for c in comp.cond_map.reshape(-1, 3).tolist()}
    assert colors <= _palette_colors()
    assert sum(o.area for o in comp.objects) == comp.ood_mask.sum()


def test_objects_stand_on_road_inside_their_box(bank):
    label_ids = street()
    cfg = ComposeConfig(objects_per_image={3: 1.0})
    for seed in range(20):
        comp, _ = compose(label_ids, bank, cfg, np.random.default_rng(seed))
        for obj in comp.objects:
            x0, y0, x1, y1 = obj.box
            inside = comp.ood_mask[y0:y1, x0:x1]
            assert inside.sum() >= obj.area  # the box holds the whole object
            bottom_cols = np.flatnonzero(inside[-1])
            assert bottom_cols.size > 0
            assert (label_ids[y1 - 1, x0 + bottom_cols] == ROAD).all()


def test_no_overlap_and_count(bank):
    cfg = ComposeConfig(objects_per_image={3: 1.0}, object_size_px=(100, 150))
    comp, failures = compose(street(512, 1024), bank, cfg, np.random.default_rng(3))
    assert len(comp.objects) + failures.get("placement_failed", 0) == 3
    assert sum(o.area for o in comp.objects) == comp.ood_mask.sum()  # disjoint objects


def test_full_road_fraction_keeps_every_pixel_on_road(bank):
    cfg = ComposeConfig(min_road_fraction=1.0, object_size_px=(40, 60), max_placement_tries=200)
    label_ids = street()
    for seed in range(10):
        comp, _ = compose(label_ids, bank, cfg, np.random.default_rng(seed))
        assert (label_ids[comp.ood_mask] == ROAD).all()


def test_scale_follows_reference_clamp_at_label_resolution():
    # a 100-px mask is clamped up to 200 px at 1024 rows -> 50 px at 256 rows
    small = ListBank([("box", "box", np.ones((100, 40), dtype=bool))])
    comp, _ = compose(street(256, 512), small, ComposeConfig(), np.random.default_rng(1))
    (obj,) = comp.objects
    assert obj.scale == pytest.approx(0.5)
    _, y0, _, y1 = obj.box
    assert y1 - y0 == 50


def test_perspective_objects_grow_towards_the_bottom():
    cfg = ComposeConfig(perspective=True, object_size_mode="clamp", margin_px=0, margin_min_px=0)
    big = ListBank([("box", "box", np.ones((300, 300), dtype=bool))])
    rows, sizes = [], []
    for seed in range(40):
        comp, _ = compose(street(512, 1024), big, cfg, np.random.default_rng(seed))
        (obj,) = comp.objects
        rows.append(obj.box[3])
        sizes.append(obj.scale)
    assert np.corrcoef(rows, sizes)[0, 1] > 0.9


def test_no_road_is_skipped_with_reason(bank):
    no_road = np.full((64, 128), CITYSCAPES_BY_NAME["building"].id, dtype=np.uint8)
    with pytest.raises(SampleSkipped) as info:
        compose(no_road, bank, ComposeConfig(), np.random.default_rng(0))
    assert info.value.reason == "no_road"


def test_zero_objects_keeps_label(bank):
    comp, _ = compose(street(), bank, ComposeConfig(objects_per_image={0: 1.0}), np.random.default_rng(0))
    assert comp.objects == () and not comp.ood_mask.any()


def test_same_seed_same_composition(bank):
    a, _ = compose(street(), bank, ComposeConfig(), np.random.default_rng(42))
    b, _ = compose(street(), bank, ComposeConfig(), np.random.default_rng(42))
    np.testing.assert_array_equal(a.cond_map, b.cond_map)
    assert a.objects == b.objects


def test_class_balanced_sampling(bank):
    counts: dict[str, int] = {}
    for seed in range(300):
        comp, _ = compose(street(), bank, ComposeConfig(object_size_px=(20, 40)), np.random.default_rng(seed))
        for obj in comp.objects:
            counts[obj.class_name] = counts.get(obj.class_name, 0) + 1
    # 2 of 4 masks are dogs, but classes are drawn uniformly: ~100 each
    assert set(counts) == {"dog", "box", "barrel"}
    assert all(70 < n < 130 for n in counts.values()), counts


def test_rejects_classes_painted_like_cityscapes():
    clash = ListBank([("van", "car", ellipse(20, 40))])
    with pytest.raises(ValueError, match="share a colour"):
        usable_classes(clash, ComposeConfig())
    with pytest.raises(ValueError, match="lacks"):
        usable_classes(clash, ComposeConfig(ood_classes=["unicorn"]))


def test_named_ood_class_lists_keep_the_bank_classes_on_them():
    # "box" and "shelf" are on both reference lists, "bed" only on the training list, "mountain" on neither
    # (but unmapped); "dog" is no ADE20K-150 class at all.
    bank = ListBank([(name, "box" if name == "dog" else name, ellipse(20, 40))
                     for name in ("shelf", "mountain", "box", "bed", "dog")])
    assert usable_classes(bank, ComposeConfig()) == ("bed", "box", "dog", "mountain", "shelf")
    assert usable_classes(bank, ComposeConfig(ood_classes="train")) == ("bed", "box", "shelf")
    assert usable_classes(bank, ComposeConfig(ood_classes="validation")) == ("box", "shelf")
    assert usable_classes(bank, ComposeConfig(ood_classes="unmapped")) == ("bed", "box", "mountain", "shelf")
    assert bank_class_filter(ComposeConfig(ood_classes="train")) is None  # applied above, not when opening
    assert bank_class_filter(ComposeConfig(ood_classes=["box"])) == ("box",)
    with pytest.raises(ValueError, match="no class of the 'validation'"):
        usable_classes(ListBank([("bed", "bed", ellipse(20, 40))]), ComposeConfig(ood_classes="validation"))
    with pytest.raises(ValueError, match="ood_classes"):
        ComposeConfig(ood_classes="furniture")
