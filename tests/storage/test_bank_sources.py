"""Bank builders on tiny synthetic sources: ADE20K full release, COCO JSON, a folder of masks; the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cgaug.labels import ade_classes, default_ood_classes
from cgaug.storage.bank import EmptyBankError, ObjectBank
from cgaug.storage.bank_sources import (
    COCO_EXCLUDED,
    COCO_TO_ADE,
    ade_fine_to_150,
    build_from_ade20k,
    build_from_coco,
    build_from_folder,
    polygons_to_mask,
    rle_decode,
    rle_string_to_counts,
)


def _by_id(bank: ObjectBank) -> dict[str, int]:
    return {bank.entry(i).object_id: i for i in range(len(bank))}


def _crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


# ------------------------------------------------------------------------------------------------ RLE

# h=3, w=4, runs [1, 2, 3, 4, 2] in column-major order: 0 | 1 1 | 0 0 0 | 1 1 1 1 | 0 0
HAND_MASK = np.array([[0, 0, 1, 1],
                      [1, 0, 1, 0],
                      [1, 0, 1, 0]], dtype=bool)
HAND_COUNTS = [1, 2, 3, 4, 2]
# Compressed by hand: 1 -> '1', 2 -> '2', 3 -> '3', then differences to the count two back:
# 4 - 2 = 2 -> '2', 2 - 3 = -1 -> 0x1f (sign bit 0x10 set) + 48 = 'O'
HAND_STRING = "1232O"


def test_rle_decoding_matches_hand_computed_masks():
    np.testing.assert_array_equal(rle_decode(HAND_COUNTS, [3, 4]), HAND_MASK)
    assert rle_string_to_counts(HAND_STRING) == HAND_COUNTS
    np.testing.assert_array_equal(rle_decode(HAND_STRING, [3, 4]), HAND_MASK)
    # 40 needs two 5-bit groups: 8 | 0x20 -> 'X', then 1 -> '1'; the third count is not delta-coded: '5'
    assert rle_string_to_counts("5X15") == [5, 40, 5]
    expected = np.zeros((5, 10), dtype=bool)
    expected[:, 1:9] = True
    np.testing.assert_array_equal(rle_decode("5X15", [5, 10]), expected)


def test_rle_decoding_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="sum to 12, expected height\\*width = 20"):
        rle_decode(HAND_COUNTS, [4, 5])
    with pytest.raises(ValueError, match="ends inside a count"):
        rle_string_to_counts("X")  # 0x20 set: another group should follow


def test_rle_decoding_agrees_with_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(7)
    for h, w in ((17, 23), (64, 48)):
        mask = rng.random((h, w)) < 0.3
        mask[:, : w // 3] = rng.random((h, w // 3)) < 0.9  # long runs as well as short ones
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        counts = rle["counts"].decode()
        np.testing.assert_array_equal(rle_decode(counts, rle["size"]), mask)
        uncompressed = mask_utils.frPyObjects({"counts": rle_string_to_counts(counts), "size": [h, w]}, h, w)
        assert uncompressed["counts"].decode() == counts


def test_polygons_rasterise_with_vertices_included():
    # a 3x2 rectangle from (1, 1) to (4, 3): PIL fills the vertex pixels, so columns 1..4 and rows 1..3
    mask = polygons_to_mask([[1, 1, 4, 1, 4, 3, 1, 3]], height=6, width=7)
    expected = np.zeros((6, 7), dtype=bool)
    expected[1:4, 1:5] = True
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match="no polygon with at least 3 points"):
        polygons_to_mask([[1, 1, 2, 2]], height=6, width=7)


def test_polygons_agree_with_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    angles = np.linspace(0, 2 * np.pi, 9)[:-1]
    radii = np.array([20, 12, 22, 15, 18, 10, 21, 14])
    poly = np.ravel(np.stack([40 + radii * np.cos(angles), 30 + radii * np.sin(angles)], 1)).tolist()
    ours = polygons_to_mask([poly], height=60, width=80)
    ref = mask_utils.decode(mask_utils.frPyObjects([poly], 60, 80))[..., 0] > 0
    iou = (ours & ref).sum() / (ours | ref).sum()
    assert iou > 0.9


# ----------------------------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path) -> Path:
    polygon_dog = [[2, 2, 9, 2, 9, 6, 2, 6]]  # columns 2..9, rows 2..6: 8 x 5 = 40 px
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 12},
                   {"id": 2, "file_name": "b.jpg", "height": 3, "width": 4}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"},
                       {"id": 62, "name": "chair"}, {"id": 28, "name": "umbrella"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": polygon_dog},
            {"id": 11, "image_id": 2, "category_id": 62, "iscrowd": 1,
             "segmentation": {"counts": HAND_COUNTS, "size": [3, 4]}},
            {"id": 12, "image_id": 2, "category_id": 62, "iscrowd": 0,
             "segmentation": {"counts": HAND_STRING, "size": [3, 4]}},
            {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": polygon_dog},
            {"id": 14, "image_id": 1, "category_id": 28, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]},
            {"id": 15, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [[0, 0, 1, 0, 1, 1]]},
            {"id": 16, "image_id": 99, "category_id": 18, "iscrowd": 0, "segmentation": polygon_dog},
            {"id": 17, "image_id": 1, "category_id": 18, "iscrowd": 0,
             "segmentation": {"counts": HAND_COUNTS, "size": [3, 4]}},  # RLE size differs from image 1
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_builder_decodes_polygons_and_both_rle_kinds(tmp_path):
    out = str(tmp_path / "coco.parquet")
    counts = build_from_coco(_coco(tmp_path), out, min_area=5)
    assert counts == {"written": 2, "skipped_small": 1, "skipped_crowd": 1, "skipped_no_ade_class": 1,
                      "skipped_bad_segmentation": 1, "skipped_missing_image": 1, "skipped_truncated": 0}
    bank = ObjectBank.open(out)
    ids = _by_id(bank)
    assert set(ids) == {"coco:10:0", "coco:12:0"}

    dog = bank.entry(ids["coco:10:0"])
    # source_id names the image file (where the anomaly mix finds the pixels); object_id keeps the annotation id
    assert (dog.class_name, dog.ade_class, dog.source, dog.source_id) == ("dog", "animal", "coco", "a.jpg")
    assert dog.box == (2, 2, 10, 7)
    assert dog.area == 40
    assert bank.mask(ids["coco:10:0"]).all()

    chair = bank.entry(ids["coco:12:0"])
    assert (chair.class_name, chair.ade_class, chair.source_id) == ("chair", "chair", "b.jpg")
    assert chair.box == (0, 0, 4, 3)
    np.testing.assert_array_equal(bank.mask(ids["coco:12:0"]), HAND_MASK)


def test_coco_builder_options(tmp_path):
    src = _coco(tmp_path)
    ade_map = tmp_path / "ade_map.json"
    ade_map.write_text(json.dumps({"umbrella": "canopy", "chair": None}))
    out = str(tmp_path / "coco.parquet")
    counts = build_from_coco(src, out, classes=["chair", "umbrella", "person"], min_area=5,
                             ade_map=ade_map, include_crowd=True)
    # chair -> null: no ADE class (2 annotations); umbrella -> canopy; person has no default ADE class
    assert counts["written"] == 1
    assert counts["skipped_no_ade_class"] == 3
    bank = ObjectBank.open(out)
    assert bank.entry(0).ade_class == "canopy"
    assert bank.entry(0).class_name == "umbrella"

    counts = build_from_coco(src, out, classes=["chair"], min_area=5, include_crowd=True)
    assert counts["written"] == 2  # the crowd RLE is kept now
    crowd = ObjectBank.open(out)
    np.testing.assert_array_equal(crowd.mask(_by_id(crowd)["coco:11:0"]), HAND_MASK)

    counts = build_from_coco(src, out, classes=["dog"], min_area=5, drop_truncated=True)
    assert counts["written"] == 1  # the dog polygon is inside the image, not truncated


def test_coco_source_id_falls_back_to_the_url_then_the_image_id(tmp_path):
    """LVIS-style images name their file only in coco_url; without either the image id stands in."""
    src = _coco(tmp_path)
    data = json.loads(src.read_text())
    data["images"] = [{"id": 1, "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg",
                       "height": 10, "width": 12},
                      {"id": 2, "height": 3, "width": 4}]
    src.write_text(json.dumps(data))
    out = str(tmp_path / "coco.parquet")
    build_from_coco(src, out, min_area=5)
    bank = ObjectBank.open(out)
    ids = _by_id(bank)
    assert bank.entry(ids["coco:10:0"]).source_id == "000000000001.jpg"
    assert bank.entry(ids["coco:12:0"]).source_id == "2"


def test_coco_builder_errors(tmp_path):
    src = _coco(tmp_path)
    out = str(tmp_path / "coco.parquet")
    with pytest.raises(ValueError, match=r"\['cat'\] are not COCO categories.*available: \['chair', 'dog'"):
        build_from_coco(src, out, classes=["cat"])
    with pytest.raises(EmptyBankError, match=r"no object passed the filters.*'skipped_small': 2"):
        build_from_coco(src, out, classes=["dog"], min_area=1000)
    assert not Path(out).exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=f"{bad}: keys \\['annotations', 'categories'\\] missing"):
        build_from_coco(bad, out)
    bad_map = tmp_path / "map.json"
    bad_map.write_text(json.dumps({"dog": "doggo"}))
    with pytest.raises(ValueError, match="\\['doggo'\\] are not ADE20K-150 class names"):
        build_from_coco(src, out, ade_map=bad_map)


def test_coco_defaults_are_consistent():
    cityscapes_like = {"person", "car", "bicycle", "motorcycle", "bus", "train", "truck", "traffic light"}
    assert cityscapes_like <= COCO_EXCLUDED
    valid = set(ade_classes())
    assert {v for v in COCO_TO_ADE.values() if v is not None} <= valid
    assert COCO_TO_ADE["dog"] == "animal" and COCO_TO_ADE["suitcase"] == "bag"
    assert len(COCO_TO_ADE) + len(COCO_EXCLUDED) == 80  # every COCO category decided exactly once
    assert not set(COCO_TO_ADE) & COCO_EXCLUDED


# --------------------------------------------------------------------------------------------- ADE20K

N_NAMES = 300
BARREL = 299  # index into objectnames; class value 300 needs the R channel: R = 10, G = 44
CAR, DOG = 1, 2


def _objectnames() -> list[str]:
    names = ["-"] + [f"thing{k}, stuff{k}" for k in range(1, N_NAMES)]
    names[CAR] = "car, auto, automobile, machine, motorcar"
    names[DOG] = "dog, domestic dog, Canis familiaris"
    names[BARREL] = "Barrel, cask"
    return names


def _encode_seg(classes: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """The documented _seg.png encoding: class value = R / 10 * 256 + G, instance in B."""
    seg = np.zeros((*classes.shape, 3), dtype=np.uint8)
    seg[..., 0] = (classes // 256) * 10
    seg[..., 1] = classes % 256
    seg[..., 2] = instances
    return seg


def _fake_ade(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "ADE20K_2021_17_01"
    folder = "ADE20K_2021_17_01/images/ADE/training/urban/street"
    (tmp_path / folder).mkdir(parents=True)
    classes = np.zeros((20, 30), dtype=np.int32)
    instances = np.zeros((20, 30), dtype=np.uint8)
    expected = {}

    def put(value: int, b: int, region: tuple[slice, slice]) -> None:
        classes[region] = value
        instances[region] = b

    put(BARREL + 1, 7, (slice(2, 6), slice(3, 9)))  # 24 px
    put(BARREL + 1, 7, (slice(10, 12), slice(3, 5)))  # same instance, disconnected part: 4 px
    put(BARREL + 1, 9, (slice(8, 18), slice(20, 26)))  # 60 px
    put(BARREL + 1, 11, (slice(0, 1), slice(28, 30)))  # 2 px: too small
    put(CAR + 1, 3, (slice(14, 19), slice(2, 12)))  # car: a Cityscapes class, not wanted
    put(DOG + 1, 4, (slice(12, 16), slice(14, 18)))  # dog: only via the class map
    for b in (7, 9):
        expected[f"barrel.{b}"] = (classes == BARREL + 1) & (instances == b)
    expected["dog"] = classes == DOG + 1
    Image.fromarray(_encode_seg(classes, instances)).save(tmp_path / folder / "ADE_train_00000001_seg.png")
    (tmp_path / folder / "ADE_train_00000003_seg.png").write_bytes(b"not a png")

    presence = np.zeros((N_NAMES, 4), dtype=np.int64)
    presence[[BARREL, CAR, DOG], 0] = [3, 1, 1]
    presence[BARREL, 1] = 1  # listed, but its _seg.png is missing
    presence[BARREL, 2] = 1  # listed, but unreadable
    index = {
        "filename": [f"ADE_train_0000000{i}.jpg" for i in range(1, 5)],
        "folder": [folder] * 4,
        "objectnames": _objectnames(),
        "objectPresence": presence,  # image 4 holds nothing wanted: never opened
    }
    root.mkdir(exist_ok=True)
    with open(root / "index_ade20k.pkl", "wb") as f:
        pickle.dump(index, f)
    return root, expected


def test_ade_seg_encoding_round_trips_through_the_decoder():
    from cgaug.storage.bank_sources import decode_ade_seg

    classes = np.array([[0, 1, 255], [256, 300, 3687]], dtype=np.int32)
    instances = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    got_classes, got_instances = decode_ade_seg(_encode_seg(classes, instances))
    np.testing.assert_array_equal(got_classes, classes)
    np.testing.assert_array_equal(got_instances, instances)


def test_ade20k_builder_one_entry_per_instance(tmp_path):
    root, expected = _fake_ade(tmp_path)
    out = str(tmp_path / "ade.parquet")
    counts = build_from_ade20k(root, out, min_area=4)
    assert counts == {"written": 2, "skipped_small": 1, "skipped_truncated": 0, "skipped_missing_seg": 1,
                      "skipped_unreadable_seg": 1}
    bank = ObjectBank.open(out)
    assert bank.classes == ("barrel",)
    source_id = "ADE20K_2021_17_01/images/ADE/training/urban/street/ADE_train_00000001.jpg"
    ids = _by_id(bank)
    assert set(ids) == {f"ade20k:{source_id}:300.7", f"ade20k:{source_id}:300.9"}
    first = bank.entry(ids[f"ade20k:{source_id}:300.7"])
    assert (first.class_name, first.ade_class, first.source, first.source_id) == (
        "barrel", "barrel", "ade20k", source_id)
    assert first.box == (3, 2, 9, 12)
    assert first.area == 28
    np.testing.assert_array_equal(bank.mask(ids[first.object_id]), _crop(expected["barrel.7"]))
    second = bank.entry(ids[f"ade20k:{source_id}:300.9"])
    assert second.box == (20, 8, 26, 18)
    np.testing.assert_array_equal(bank.mask(ids[second.object_id]), _crop(expected["barrel.9"]))


def test_ade20k_class_map_and_class_filter(tmp_path):
    root, expected = _fake_ade(tmp_path)
    class_map = tmp_path / "map.json"
    class_map.write_text(json.dumps({"dog": "animal", "barrel, cask": None}))
    out = str(tmp_path / "ade.parquet")
    counts = build_from_ade20k(root, out, min_area=4, class_map=class_map)
    assert counts["written"] == 1  # the map drops barrels and turns the dog into an animal
    bank = ObjectBank.open(out)
    assert bank.classes == ("animal",)
    assert bank.entry(0).ade_class == "animal"
    np.testing.assert_array_equal(bank.mask(0), _crop(expected["dog"]))

    counts = build_from_ade20k(root, out, classes=["car"], min_area=4)
    assert counts["written"] == 1
    assert ObjectBank.open(out).entry(0).box == (2, 14, 12, 19)


def test_ade20k_builder_errors(tmp_path):
    root, _ = _fake_ade(tmp_path)
    out = str(tmp_path / "ade.parquet")
    with pytest.raises(ValueError, match="\\['unicorn'\\] are not ADE20K-150 class names"):
        build_from_ade20k(root, out, classes=["barrel", "unicorn"])
    with pytest.raises(FileNotFoundError, match=r"index_ade20k\.pkl: not found"):
        build_from_ade20k(tmp_path / "elsewhere", out)
    with pytest.raises(EmptyBankError, match="'skipped_small': 3"):
        build_from_ade20k(root, out, min_area=1000)


def test_fine_names_map_by_first_synonym():
    names = ["-", "car, auto", "Barrel, cask", "dog, domestic dog", "chest of drawers, chest, bureau"]
    assert ade_fine_to_150(names, {}) == [None, "car", "barrel", None, "chest of drawers"]
    mapped = ade_fine_to_150(names, {"dog": "animal", "car, auto": "van", "barrel": None})
    assert mapped == [None, "van", None, "animal", "chest of drawers"]
    assert "barrel" in default_ood_classes() and "car" not in default_ood_classes()


# --------------------------------------------------------------------------------------------- folder


def _fake_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "masks"
    (root / "barrel").mkdir(parents=True)
    (root / "dog").mkdir()
    gray = np.zeros((8, 9), dtype=np.uint8)
    gray[2:5, 1:7] = 200
    Image.fromarray(gray).save(root / "barrel" / "a.png")
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere: only the alpha says where the object is
    rgba[1:3, 2:5, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(root / "dog" / "b.png")
    (root / "barrel" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(root / "barrel" / "empty.png")
    (root / "barrel" / "notes.txt").write_text("ignored")
    return root, {"barrel/a.png": gray > 0, "dog/b.png": rgba[..., 3] > 0}


def test_folder_builder(tmp_path):
    root, expected = _fake_folder(tmp_path)
    class_map = tmp_path / "map.json"
    class_map.write_text(json.dumps({"dog": "animal"}))
    out = str(tmp_path / "folder.parquet")
    counts = build_from_folder(root, out, class_map=class_map)
    assert counts == {"written": 2, "skipped_small": 0, "skipped_empty": 1, "skipped_unreadable": 1}
    bank = ObjectBank.open(out)
    ids = _by_id(bank)
    assert set(ids) == {"folder:barrel/a.png:0", "folder:dog/b.png:0"}
    dog = bank.entry(ids["folder:dog/b.png:0"])
    assert (dog.class_name, dog.ade_class, dog.source_id) == ("dog", "animal", "dog/b.png")
    assert dog.box == (2, 1, 5, 3)
    barrel = bank.entry(ids["folder:barrel/a.png:0"])
    assert (barrel.ade_class, barrel.box, barrel.area) == ("barrel", (1, 2, 7, 5), 18)
    for source_id, mask in expected.items():
        np.testing.assert_array_equal(bank.mask(ids[f"folder:{source_id}:0"]), _crop(mask))


def test_folder_builder_needs_ade_names(tmp_path):
    root, _ = _fake_folder(tmp_path)
    out = str(tmp_path / "folder.parquet")
    with pytest.raises(ValueError, match=f"{root}: class folders \\['dog'\\] are not ADE20K-150 names"):
        build_from_folder(root, out)
    assert build_from_folder(root, out, classes=["barrel"])["written"] == 1
    with pytest.raises(ValueError, match="\\['cat'\\] have no sub-folder; available: \\['barrel', 'dog'\\]"):
        build_from_folder(root, out, classes=["cat"])
    with pytest.raises(NotADirectoryError):
        build_from_folder(tmp_path / "nope", out)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_build_and_stats(tmp_path):
    from cgaug.cli.bank import app

    root, _ = _fake_folder(tmp_path)
    class_map = tmp_path / "map.json"
    class_map.write_text(json.dumps({"dog": "animal"}))
    out = str(tmp_path / "bank.parquet")
    runner = CliRunner()
    result = runner.invoke(app, ["build", str(root), "--from", "folder", "--out", out,
                                 "--class-map", str(class_map), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["written"] == 2
    result = runner.invoke(app, ["stats", out])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["entries"] == 2
    assert stats["classes"] == {"barrel": 1, "dog": 1}
    assert stats["sources"] == {"folder": 2}

    result = runner.invoke(app, ["build", str(root), "--from", "folder", "--out", out, "--no-progress"])
    assert result.exit_code == 1
    assert "not ADE20K-150 names" in result.stderr
