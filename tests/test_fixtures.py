"""The synthetic Cityscapes-format fixtures, checked against cityscapesscripts' label table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from cityscapesscripts.helpers import labels as cs
from PIL import Image
from typer.testing import CliRunner

from cgaug.cli.fixtures import fixtures_command
from cgaug.fixtures import MASK_CLASSES, write_fixture_dataset, write_fixture_masks, write_fixtures
from cgaug.labels import ade_classes, default_ood_classes
from cgaug.storage.cityscapes import list_sources, read_pair

H, W = 128, 256
GT_KINDS = ("labelIds", "labelTrainIds", "color", "instanceIds")


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("fixtures")
    return root, write_fixtures(root, images=6, split="val", seed=11, height=H, width=W)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _gt(root: Path, split: str, stem: str, kind: str) -> np.ndarray:
    city = stem.split("_")[0]
    return np.asarray(Image.open(root / "gtFine" / split / city / f"{stem}_gtFine_{kind}.png"))


def test_exact_cityscapes_layout_and_nothing_else(fixture_root):
    root, ids = fixture_root
    assert len(ids) == 6 and ids == sorted(ids)
    expected = set()
    for stem in ids:
        city, seq, frame = stem.split("_")
        assert city in {"aachen", "bochum", "bremen", "cologne", "darmstadt"}
        assert len(seq) == 6 and frame == "000019"
        expected.add(f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png")
        expected |= {f"gtFine/val/{city}/{stem}_gtFine_{kind}.png" for kind in GT_KINDS}
    assert set(_files(root)) == expected  # no temporary files left behind either
    assert len({stem.split("_")[0] for stem in ids}) >= 3


def test_file_formats(fixture_root):
    root, ids = fixture_root
    stem = ids[0]
    city = stem.split("_")[0]
    modes = {kind: Image.open(root / f"gtFine/val/{city}/{stem}_gtFine_{kind}.png").mode for kind in GT_KINDS}
    assert modes == {"labelIds": "L", "labelTrainIds": "L", "color": "RGB", "instanceIds": "I;16"}
    image = Image.open(root / f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png")
    assert image.mode == "RGB" and image.size == (W, H)


@pytest.mark.parametrize("name", ["road", "sky", "car", "person", "sidewalk", "building"])
def test_every_scene_has_the_street_classes(fixture_root, name):
    root, ids = fixture_root
    label_id = cs.name2label[name].id
    for stem in ids:
        assert (_gt(root, "val", stem, "labelIds") == label_id).any(), f"{stem} has no {name}"


def test_scenes_cover_the_other_street_classes_somewhere(fixture_root):
    root, ids = fixture_root
    present = set()
    for stem in ids:
        present |= {cs.id2label[int(i)].name for i in np.unique(_gt(root, "val", stem, "labelIds"))}
    assert {"vegetation", "terrain", "pole", "traffic sign", "traffic light"} <= present


def test_street_geometry_sky_on_top_road_at_the_bottom(fixture_root):
    root, ids = fixture_root
    for stem in ids:
        labels = _gt(root, "val", stem, "labelIds")
        sky_rows = np.flatnonzero((labels == cs.name2label["sky"].id).any(axis=1))
        road_rows = np.flatnonzero((labels == cs.name2label["road"].id).any(axis=1))
        assert sky_rows.min() == 0 and sky_rows.max() < H * 0.6
        assert road_rows.min() > H * 0.3 and road_rows.max() >= H * 0.8
        # perspective: the road widens towards the bottom
        road = labels == cs.name2label["road"].id
        widths = road.sum(axis=1)
        top, low = road_rows.min(), int(H * 0.8)
        assert widths[low] > 3 * max(widths[top], 1)


def test_train_ids_and_colours_match_cityscapesscripts(fixture_root):
    root, ids = fixture_root
    train_lut = np.zeros(256, np.uint8)
    color_lut = np.zeros((256, 3), np.uint8)
    for label in cs.labels:
        if label.id >= 0:
            train_lut[label.id] = label.trainId
            color_lut[label.id] = label.color
    for stem in ids:
        label_ids = _gt(root, "val", stem, "labelIds")
        np.testing.assert_array_equal(_gt(root, "val", stem, "labelTrainIds"), train_lut[label_ids])
        np.testing.assert_array_equal(_gt(root, "val", stem, "color"), color_lut[label_ids])


def test_instance_ids_decode_as_cityscapes_does(fixture_root):
    root, ids = fixture_root
    first_cars = set()
    for stem in ids:
        label_ids = _gt(root, "val", stem, "labelIds").astype(np.int64)
        instances = _gt(root, "val", stem, "instanceIds").astype(np.int64)
        objects = instances >= 1000
        np.testing.assert_array_equal(np.where(objects, instances // 1000, instances), label_ids)
        decoded_classes = {cs.id2label[int(i)].name for i in np.unique(instances[objects] // 1000)}
        assert {"car", "person"} <= decoded_classes
        assert all(cs.id2label[int(i)].hasInstances for i in np.unique(label_ids[objects]))
        # stuff classes and instance classes never mix: every car pixel belongs to a numbered car
        assert (instances[label_ids == cs.name2label["car"].id] >= 1000).all()
        first_cars.add(int(instances[label_ids == cs.name2label["car"].id].min()))
    assert 26000 in first_cars  # numbered from 0 as in Cityscapes (a first car may be hidden by later ones)


def test_reader_reads_what_the_writer_wrote(fixture_root):
    root, ids = fixture_root
    records = list_sources(str(root), "val")
    assert [r.source_id for r in records] == ids
    image, label_ids = read_pair(records[-1])
    np.testing.assert_array_equal(label_ids, _gt(root, "val", ids[-1], "labelIds"))
    assert image.std() > 10  # a rendering, not a flat colour


def test_rendering_follows_the_labels(fixture_root):
    """Sky is bluer than road; each class has its own colour, so a segmenter has something to learn."""
    root, _ = fixture_root
    image, label_ids = read_pair(list_sources(str(root), "val")[0])
    image = image.astype(np.float64)
    sky = image[label_ids == cs.name2label["sky"].id].mean(axis=0)
    road = image[label_ids == cs.name2label["road"].id].mean(axis=0)
    assert sky[2] - sky[0] > 20 and abs(road[2] - road[0]) < 20
    assert np.abs(sky - road).sum() > 60


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    write_fixtures(tmp_path / "a", images=2, seed=4, height=H, width=W)
    write_fixtures(tmp_path / "b", images=2, seed=4, height=H, width=W)
    write_fixtures(tmp_path / "c", images=2, seed=5, height=H, width=W)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a)


def test_an_image_does_not_depend_on_how_many_are_written(tmp_path):
    write_fixtures(tmp_path / "few", images=1, seed=4, height=H, width=W)
    write_fixtures(tmp_path / "many", images=3, seed=4, height=H, width=W)
    few, many = _files(tmp_path / "few"), _files(tmp_path / "many")
    assert few == {name: many[name] for name in few}


def test_bad_arguments_are_refused_with_the_value():
    with pytest.raises(ValueError, match="found 0"):
        write_fixtures("unused", images=0)
    with pytest.raises(ValueError, match="32x512"):
        write_fixtures("unused", images=1, height=32)
    with pytest.raises(ValueError, match="'a/b'"):
        write_fixtures("unused", images=1, split="a/b")


def test_full_cityscapes_size_works(tmp_path):
    write_fixtures(tmp_path, images=1, height=1024, width=2048)
    image, label_ids = read_pair(list_sources(str(tmp_path), "train")[0])
    assert image.shape == (1024, 2048, 3) and label_ids.shape == (1024, 2048)
    assert (label_ids == cs.name2label["road"].id).mean() > 0.1


# ------------------------------------------------------------------------------------------ masks


def test_masks_layout_classes_and_counts(tmp_path):
    counts = write_fixture_masks(tmp_path, seed=2, per_class=4)
    assert counts == dict.fromkeys(MASK_CLASSES, 4)
    assert set(MASK_CLASSES) <= set(ade_classes()) and set(MASK_CLASSES) <= set(default_ood_classes())
    expected = {f"{name}/{name}_{i:03d}.png" for name in MASK_CLASSES for i in range(4)}
    assert set(_files(tmp_path)) == expected


def test_masks_are_binary_varied_silhouettes(tmp_path):
    write_fixture_masks(tmp_path, seed=2, per_class=5)
    sizes = set()
    for path in sorted(tmp_path.rglob("*.png")):
        image = Image.open(path)
        assert image.mode == "L"
        mask = np.asarray(image)
        assert set(np.unique(mask).tolist()) == {0, 255}, path
        assert 60 <= max(mask.shape) <= 300, (path, mask.shape)
        fill = (mask > 0).mean()
        assert 0.3 < fill < 0.999 or path.parent.name == "box", (path, fill)  # a silhouette, not a rectangle
        sizes.add(mask.shape)
    assert len(sizes) > 15


def test_animal_has_legs_apart(tmp_path):
    """The bottom rows of an animal mask are separate legs, not a solid body."""
    write_fixture_masks(tmp_path, seed=0, per_class=3)
    for path in sorted((tmp_path / "animal").glob("*.png")):
        bottom = np.asarray(Image.open(path))[-1] > 0
        runs = np.count_nonzero(np.diff(bottom.astype(np.int8)) == 1) + int(bottom[0])
        assert runs >= 2, path


def test_masks_are_deterministic(tmp_path):
    write_fixture_masks(tmp_path / "a", seed=7)
    write_fixture_masks(tmp_path / "b", seed=7)
    write_fixture_masks(tmp_path / "c", seed=8)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b and a != c


# ------------------------------------------------------------------------------------------ CLI


def test_cli_writes_dataset_and_masks(tmp_path):
    app = typer.Typer()
    app.command("fixtures")(fixtures_command)
    dest = tmp_path / "data"
    result = CliRunner().invoke(app, [str(dest), "--images", "2", "--seed", "1", "--height", "64",
                                      "--width", "128", "--split", "val"])
    assert result.exit_code == 0, result.output
    assert [r.source_id for r in list_sources(str(dest), "val")] == ["aachen_000000_000019",
                                                                     "bochum_000000_000019"]
    assert len(list((dest / "bank_masks").rglob("*.png"))) == 3 * len(MASK_CLASSES)
    assert len(list((dest / "bank_images").rglob("*.png"))) == 3 * len(MASK_CLASSES)
    assert (dest / "bank.parquet").is_file()
    assert "bank_masks" in result.output and "animal" in result.output and "bank.parquet" in result.output


def test_fixture_bank_has_pixels_the_anomaly_mix_finds_without_settings(tmp_path):
    from cgaug.storage.bank import ObjectBank
    from cgaug.tasks.training.dataset import BankObjects

    _, counts = write_fixture_dataset(tmp_path, images=1, seed=3, height=64, width=128)
    bank = ObjectBank.open(str(tmp_path / "bank.parquet"))
    assert len(bank) == sum(counts.values()) == 3 * len(MASK_CLASSES)
    objects = BankObjects(str(tmp_path / "bank.parquet"), None)  # finds bank_images/ beside the bank
    for i in range(len(bank)):
        rgb, mask = objects.get(i)
        assert rgb.shape[:2] == mask.shape and mask.any()
        inside = rgb[mask].astype(float)
        assert inside.std(axis=0).max() > 2.0  # textured, not one flat colour
        assert np.abs(inside.mean(axis=0) - 128).max() > 10  # and not the grey background


def test_object_pixels_leave_the_masks_unchanged(tmp_path):
    write_fixture_masks(tmp_path / "plain", seed=5)
    write_fixture_masks(tmp_path / "with", seed=5, images=tmp_path / "pixels")
    assert _files(tmp_path / "plain") == _files(tmp_path / "with")
    for mask_file in (tmp_path / "with").rglob("*.png"):
        pixels = np.asarray(Image.open(tmp_path / "pixels" / mask_file.relative_to(tmp_path / "with")))
        mask = np.asarray(Image.open(mask_file)) > 0
        assert pixels.shape == (*mask.shape, 3)
        assert (pixels[~mask] == 128).all()


def test_cli_refuses_zero_images(tmp_path):
    app = typer.Typer()
    app.command("fixtures")(fixtures_command)
    result = CliRunner().invoke(app, [str(tmp_path), "--images", "0"])
    assert result.exit_code != 0
    assert not (tmp_path / "leftImg8bit").exists()


def test_source_photos_are_the_painters_clear_day(fixture_root):
    """An original and a painted variant come from one world: same class colours by day, darker at night."""
    from cgaug.fixtures import SOURCE_PROMPT
    from cgaug.labels import label_id_to_ade_color_lut
    from cgaug.models.painter import paint

    root, _ = fixture_root
    image, label_ids = read_pair(list_sources(str(root), "val")[1])
    cond = label_id_to_ade_color_lut()[label_ids]
    night = SOURCE_PROMPT.replace("dash cam.", "dash cam in Paris in a clear night.")
    repaint, dark = paint(cond, SOURCE_PROMPT, 99), paint(cond, night, 99)
    for name in ("road", "sky", "building"):
        where = label_ids == cs.name2label[name].id
        original, again = image[where].mean(axis=0), repaint[where].mean(axis=0)
        assert np.abs(original - again).max() < 25, name
    assert dark.mean() < image.mean() - 40
