"""Each benchmark loader on a tiny dataset written in that benchmark's real layout, naming and label values."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from cgaug.storage.evalsets import (
    DATASET_KINDS,
    EvalDataError,
    open_dataset,
    parse_dataset_spec,
    reconstruct,
)
from cgaug.storage.evalsets.anomaly import OBSTACLE_EXCLUDED_PREFIXES

H, W = 12, 16


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def picture(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def binary_label(void: bool = True) -> np.ndarray:
    label = np.zeros((H, W), np.uint8)
    label[4:8, 5:10] = 1
    if void:
        label[0] = 255
    return label


def expected_ood(label: np.ndarray, anomaly_value: int = 1) -> np.ndarray:
    out = np.where(label == anomaly_value, 1, 0).astype(np.uint8)
    out[label == 255] = 255
    return out


def read_all(dataset):
    return [dataset.read(sample) for sample in dataset.samples()]


# ------------------------------------------------------------------------------------------- RoadAnomaly


def test_road_anomaly_preprocessed_release(tmp_path):
    root = tmp_path / "datasets" / "road_anomaly"
    names = ["animals01_Guiyang", "zoo_elephant"]
    for i, name in enumerate(names):
        save(root / "original" / f"{name}.jpg", picture(i), quality=95)
        save(root / "labels" / f"{name}.png", binary_label(void=False))
    for where in (root, root.parent):  # the release folder, or the folder holding road_anomaly/
        dataset = open_dataset("road_anomaly", str(where))
        assert [s.sample_id for s in dataset.samples()] == names
        item = dataset.read(dataset.samples()[0])
        assert item.image.shape == (H, W, 3) and item.train_ids is None
        np.testing.assert_array_equal(item.ood, binary_label(void=False))
    assert "preprocessed" in dataset.describe()


def test_road_anomaly_raw_epfl_release_maps_2_to_anomaly(tmp_path):
    root = tmp_path / "RoadAnomaly_jpg"
    names = ["animals01_Guiyang.jpg", "cow03_Maize.jpg"]
    root.mkdir()
    (root / "frame_list.json").write_text(json.dumps(names))
    raw = binary_label(void=False) * 2  # the EPFL release marks anomalies with 2
    for i, name in enumerate(names):
        stem = name[:-4]
        save(root / "frames" / name, picture(i))
        save(root / "frames" / f"{stem}.labels" / "labels_semantic.png", raw)
    dataset = open_dataset("road_anomaly", str(root))
    assert [s.sample_id for s in dataset.samples()] == ["animals01_Guiyang", "cow03_Maize"]
    for item in read_all(dataset):
        np.testing.assert_array_equal(item.ood, expected_ood(raw, anomaly_value=2))
    assert "raw EPFL" in dataset.describe()


def test_labels_are_read_raw_not_as_luminance(tmp_path):
    """A palette PNG: index 1 drawn in dark grey; .convert('L') would give its luminance (~60), not 1."""
    root = tmp_path / "road_anomaly"
    save(root / "original" / "a.jpg", picture(0))
    label = Image.fromarray(binary_label(void=False), mode="P")
    label.putpalette([0, 0, 0, 60, 60, 60] + [0, 0, 0] * 254)
    (root / "labels").mkdir(parents=True)
    label.save(root / "labels" / "a.png")
    assert np.asarray(Image.open(root / "labels" / "a.png").convert("L")).max() == 60
    item = read_all(open_dataset("road_anomaly", str(root)))[0]
    np.testing.assert_array_equal(item.ood, binary_label(void=False))


def test_raw_values_in_the_preprocessed_layout_are_an_error(tmp_path):
    root = tmp_path / "road_anomaly"
    save(root / "original" / "a.jpg", picture(0))
    save(root / "labels" / "a.png", binary_label(void=False) * 2)  # raw 0/2 values in the 0/1 layout
    dataset = open_dataset("road_anomaly", str(root))
    with pytest.raises(EvalDataError, match=r"a\.png: label values \[2\]"):
        dataset.read(dataset.samples()[0])


def test_missing_label_and_empty_root_are_clear_errors(tmp_path):
    root = tmp_path / "road_anomaly"
    save(root / "original" / "a.jpg", picture(0))
    (root / "labels").mkdir()
    with pytest.raises(EvalDataError, match=r"labels/a\.png: no such file"):
        open_dataset("road_anomaly", str(root)).samples()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"frame_list\.json"):
        open_dataset("road_anomaly", str(tmp_path / "empty")).samples()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        open_dataset("muad", str(tmp_path / "absent"))


# ------------------------------------------------------------------------------------------- SMIYC


def test_smiyc_anomaly_track_reads_the_labelled_validation_frames(tmp_path):
    root = tmp_path / "dataset_AnomalyTrack"
    for i in range(3):
        save(root / "images" / f"validation000{i}.jpg", picture(i))
        save(root / "labels_masks" / f"validation000{i}_labels_semantic.png", binary_label())
        save(root / "labels_masks" / f"validation000{i}_labels_semantic_color.png", picture(9))
    save(root / "images" / "airplane0000.jpg", picture(5))  # a test frame: its labels are hidden
    dataset = open_dataset("smiyc_ra21", str(root))
    assert [s.sample_id for s in dataset.samples()] == ["validation0000", "validation0001", "validation0002"]
    for item in read_all(dataset):
        np.testing.assert_array_equal(item.ood, expected_ood(binary_label()))


def test_smiyc_obstacle_track_official_30_frame_subset(tmp_path):
    root = tmp_path / "dataset_ObstacleTrack"
    label = binary_label()
    label[:, :3] = 255  # off-road
    for n in range(1, 41):
        save(root / "images" / f"validation_{n}.webp", picture(n), lossless=True)
        save(root / "labels_masks" / f"validation_{n}_labels_semantic.png", label)
    save(root / "images" / "curvy-street_000000.webp", picture(0))  # a test frame without labels
    official = open_dataset("smiyc_ro21", str(root))
    ids = [s.sample_id for s in official.samples()]
    excluded = {"validation_19", *(f"validation_{n}" for n in range(21, 30))}
    assert len(ids) == 30 and not excluded & set(ids) and "validation_2" in ids and "validation_40" in ids
    assert set(OBSTACLE_EXCLUDED_PREFIXES) == excluded
    assert len(open_dataset("smiyc_ro21", str(root), ro21_subset="all").samples()) == 40
    item = official.read(official.samples()[0])
    np.testing.assert_array_equal(item.ood, expected_ood(label))
    np.testing.assert_array_equal(item.image, picture(1))  # lossless webp decoded as RGB


def test_smiyc_image_missing_for_a_label_is_an_error(tmp_path):
    root = tmp_path / "dataset_AnomalyTrack"
    save(root / "labels_masks" / "validation0000_labels_semantic.png", binary_label())
    (root / "images").mkdir()
    with pytest.raises(EvalDataError, match=r"images/validation0000\.jpg: no such file"):
        open_dataset("smiyc_ra21", str(root)).samples()


def test_smiyc_root_on_an_fsspec_filesystem():
    fs = fsspec.filesystem("memory")
    base = "/eval-test-smiyc/dataset_AnomalyTrack"
    for name, array in (("images/validation0000.jpg", picture(0)),
                        ("labels_masks/validation0000_labels_semantic.png", binary_label())):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG" if name.endswith("png") else "JPEG")
        fs.pipe(f"{base}/{name}", buffer.getvalue())
    try:
        item = read_all(open_dataset("smiyc_ra21", f"memory://{base}"))[0]
        np.testing.assert_array_equal(item.ood, expected_ood(binary_label()))
    finally:
        fs.rm("/eval-test-smiyc", recursive=True)


# ------------------------------------------------------------------------------------------- Fishyscapes


@pytest.mark.parametrize(("kind", "split", "name"), [
    ("fishyscapes_laf", "LostAndFound", "0000_04_Maurener_Weg_8_000000_000030"),
    ("fishyscapes_static", "Static", "0001"),
])
def test_fishyscapes_preprocessed_layout(tmp_path, kind, split, name):
    root = tmp_path / "fishyscapes"
    save(root / split / "original" / f"{name}.png", picture(3))
    save(root / split / "labels" / f"{name}.png", binary_label())
    for where in (root, root / split):
        dataset = open_dataset(kind, str(where))
        assert [s.sample_id for s in dataset.samples()] == [name]
        item = dataset.read(dataset.samples()[0])
        np.testing.assert_array_equal(item.image, picture(3))
        np.testing.assert_array_equal(item.ood, expected_ood(binary_label()))


# ------------------------------------------------------------------------------------------- ACDC-POC

SEQ, FRAME = "GOPR0475", "GOPR0475_frame_000041"
POC_NAME = f"{FRAME}_rgb_anon_dog_17"


def acdc_label() -> np.ndarray:
    """Label ids: unlabeled 0, ego vehicle 1, road 7, car 26, an inserted dog 114, void 255."""
    label = np.full((H, W), 7, np.uint8)
    label[0] = 0
    label[1] = 1
    label[2:4, :] = 26
    label[6:9, 4:9] = 114
    label[-1] = 255
    return label


def write_acdc_poc(poc: Path, acdc: Path, *, original: np.ndarray, poc_image: np.ndarray) -> None:
    diff = poc_image - original  # uint8 arithmetic, as the release computed it
    path = poc / "rgb_anon_trainvaltest" / "rgb_anon" / "fog" / "val" / SEQ / f"{POC_NAME}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, img=diff)
    save(poc / "gt_trainval" / "gt" / "fog" / "val" / SEQ / f"{POC_NAME}.png", acdc_label())
    save(acdc / "rgb_anon" / "fog" / "val" / SEQ / f"{FRAME}_rgb_anon.png", original)


def wraparound_pair() -> tuple[np.ndarray, np.ndarray]:
    """Originals of 200 and POC pixels of 50: the difference is 106 (mod 256); 106 + 200 clipped is 255."""
    original = np.full((H, W, 3), 200, np.uint8)
    poc_image = picture(4)
    poc_image[:6] = 50
    return original, poc_image


def test_acdc_poc_reconstruction_wraps_around(tmp_path):
    original, poc_image = wraparound_pair()
    write_acdc_poc(tmp_path / "POC_ACDC_VAL", tmp_path / "ACDC", original=original, poc_image=poc_image)
    dataset = open_dataset("acdc_poc", str(tmp_path / "POC_ACDC_VAL"), acdc_root=str(tmp_path / "ACDC"))
    [sample] = dataset.samples()
    assert sample.sample_id == POC_NAME
    item = dataset.read(sample)
    np.testing.assert_array_equal(item.image, poc_image)
    clipped = np.clip((poc_image - original).astype(np.int16) + original, 0, 255).astype(np.uint8)
    assert (clipped[:6] == 255).all() and not np.array_equal(clipped, poc_image)  # clipping would be wrong
    np.testing.assert_array_equal(reconstruct(poc_image - original, original), poc_image)


@pytest.mark.parametrize(("void", "ego_vehicle"), [("poc", 255), ("multishiftseg", 0)])
def test_acdc_poc_labels_under_both_void_conventions(tmp_path, void, ego_vehicle):
    original, poc_image = wraparound_pair()
    write_acdc_poc(tmp_path / "poc", tmp_path / "acdc", original=original, poc_image=poc_image)
    dataset = open_dataset("acdc_poc", str(tmp_path / "poc"), acdc_root=str(tmp_path / "acdc"), acdc_void=void)
    item = read_all(dataset)[0]
    ood = item.ood
    assert (ood[0] == 255).all()  # id 0 is void in both conventions
    assert (ood[1] == ego_vehicle).all()  # ego vehicle: void for POC, in-distribution for the paper's code
    assert (ood[2:4] == 0).all() and (ood[6:9, 4:9] == 1).all() and (ood[-1] == 255).all()
    train = item.train_ids
    assert (train[2:4] == 13).all() and (train[4:6] == 0).all()  # car, road
    assert (train[6:9, 4:9] == 255).all() and (train[:2] == 255).all() and (train[-1] == 255).all()


def test_acdc_poc_originals_next_to_the_poc_files_and_reconstructed_pngs(tmp_path):
    original, poc_image = wraparound_pair()
    root = tmp_path / "acdc_poc"
    write_acdc_poc(root, tmp_path / "unused", original=original, poc_image=poc_image)
    save(root / "rgb_anon_trainvaltest" / "rgb_anon" / "fog" / "val" / SEQ / f"{FRAME}_rgb_anon.png", original)
    dataset = open_dataset("acdc_poc", str(root))  # both archives unpacked into one folder
    np.testing.assert_array_equal(read_all(dataset)[0].image, poc_image)
    png = save(root / "rgb_anon_trainvaltest" / "rgb_anon" / "fog" / "val" / SEQ / f"{POC_NAME}.png", picture(8))
    [sample] = dataset.samples()
    assert sample.image_path == str(png) and sample.base_path is None  # a reconstructed image is used as is
    np.testing.assert_array_equal(dataset.read(sample).image, picture(8))


def test_acdc_poc_missing_original_names_both_places(tmp_path):
    original, poc_image = wraparound_pair()
    write_acdc_poc(tmp_path / "poc", tmp_path / "acdc", original=original, poc_image=poc_image)
    dataset = open_dataset("acdc_poc", str(tmp_path / "poc"), acdc_root=str(tmp_path / "elsewhere"))
    with pytest.raises(EvalDataError, match=r"elsewhere/rgb_anon_trainvaltest/rgb_anon/fog/.* and .*"
                                            r"elsewhere/rgb_anon/fog/val/GOPR0475/GOPR0475_frame_000041_rgb_anon\.png"):
        read_all(dataset)


# ------------------------------------------------------------------------------------------- MUAD, Cityscapes


def test_muad_challenge_subset(tmp_path):
    root = tmp_path / "MUAD_challenge" / "test_sets" / "test_OOD"
    label = np.arange(H * W, dtype=np.uint16).reshape(H, W) % 19
    label = label.astype(np.uint8)
    label[3:5, 3:6] = 19  # bear / deer / cow
    label[8:10, 8:12] = 20  # garbage bag / trash can
    label[0] = 255
    save(root / "leftImg8bit" / "000123_leftImg8bit.png", picture(6))
    save(root / "leftLabel" / "000123_leftLabel.png", label)
    item = read_all(open_dataset("muad", str(root)))[0]
    assert item.sample_id == "000123"
    ood = np.where(label >= 19, 1, 0)
    ood[label == 255] = 255
    np.testing.assert_array_equal(item.ood, ood)
    np.testing.assert_array_equal(item.train_ids, np.where(label >= 19, 255, label))
    save(root / "leftLabel" / "000123_leftLabel.png", np.full((H, W), 21, np.uint8))
    with pytest.raises(EvalDataError, match=r"label values \[21\].*OOD 19 or 20"):
        read_all(open_dataset("muad", str(root)))


def test_cityscapes_val_through_the_existing_reader(tmp_path):
    from cgaug.fixtures import write_fixtures
    from cgaug.storage.cityscapes import to_train_ids

    write_fixtures(tmp_path, images=2, split="val", height=64, width=128)
    dataset = open_dataset("cityscapes", str(tmp_path))
    assert dataset.has_segmentation and not dataset.has_ood
    samples = dataset.samples()
    assert len(samples) == 2
    item = dataset.read(samples[0])
    label_ids = np.asarray(Image.open(samples[0].label_path))
    np.testing.assert_array_equal(item.train_ids, to_train_ids(label_ids))
    assert item.ood is None and item.image.shape == (64, 128, 3)


# ------------------------------------------------------------------------------------------- specs


def test_dataset_specs():
    assert parse_dataset_spec("muad=/data/MUAD=x") == ("muad", "/data/MUAD=x")
    assert len(DATASET_KINDS) == 8
    with pytest.raises(ValueError, match="unknown kind 'lostandfound'"):
        parse_dataset_spec("lostandfound=/data")
    with pytest.raises(ValueError, match="expected KIND=DIR"):
        parse_dataset_spec("/data/road_anomaly")
