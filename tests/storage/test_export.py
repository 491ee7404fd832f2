"""Cityscapes-layout export and the sample preview picture."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cgaug.records import OOD_TRAIN_ID
from cgaug.storage.export import OOD_COLOR, color_label, export_cityscapes
from cgaug.storage.fs import open_root
from cgaug.storage.png import decode_png
from cgaug.storage.shards import read_sample, write_index, write_shard
from cgaug.tasks.reporting.previews import CONTOUR_COLOR, OVERLAY_ALPHA, mask_contour, render_sample
from tests.storage.test_shards import H, W, build_dataset, dataset_rows, make_arrays, make_row

EXPORTED = {  # sample id -> (split, city, stem) of the rows the default verdicts export
    "s000": ("train", "aachen", "aachen_000000_000019_000"),
    "s001": ("train", "aachen", "aachen_000000_000019_001"),
    "s003": ("train", "bonn", "bonn_000001_000002_000"),
}


def all_files(directory) -> list[str]:
    return sorted(os.path.relpath(os.path.join(folder, name), directory)
                  for folder, _, names in os.walk(directory) for name in names)


@pytest.fixture
def dataset(tmp_path):
    root = open_root(tmp_path / "out")
    return root, build_dataset(root)


def test_export_writes_the_cityscapes_layout_for_kept_rows_only(dataset, tmp_path):
    root, _ = dataset
    dest = tmp_path / "cityscapes"
    assert export_cityscapes(root, dest) == 3
    expected = ["cgaug_export.json"]
    for split, city, stem in EXPORTED.values():
        expected += [f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                     f"gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png",
                     f"gtFine/{split}/{city}/{stem}_gtFine_color.png"]
    assert all_files(dest) == sorted(expected)  # no skipped or rejected rows, no temporary files


def test_exported_files_are_the_stored_images_and_labels(dataset, tmp_path):
    root, rows = dataset
    export_cityscapes(root, tmp_path / "cs")
    by_id = {row["sample_id"]: row for shard_rows in rows.values() for row in shard_rows}
    for sample_id, (split, city, stem) in EXPORTED.items():
        label_file = tmp_path / "cs" / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        image_file = tmp_path / "cs" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        assert label_file.read_bytes() == by_id[sample_id]["label_png"]
        with Image.open(label_file) as label:
            assert label.mode == "L"
            assert np.array_equal(np.asarray(label), read_sample(root, sample_id)["label"])
        box = (0, 0, 2, 3) if sample_id == "s001" else (2, 3, 5, 7)
        with Image.open(image_file) as image:
            assert np.array_equal(np.asarray(image), make_arrays(sample_id, ood_box=box)["image"])


def test_label_keeps_ood_254(dataset, tmp_path):
    root, _ = dataset
    export_cityscapes(root, tmp_path / "cs")
    folder = tmp_path / "cs" / "gtFine" / "train" / "aachen"
    label = np.asarray(Image.open(folder / "aachen_000000_000019_000_gtFine_labelTrainIds.png"))
    assert (label[2:5, 3:7] == OOD_TRAIN_ID).all()
    assert set(np.unique(label)) <= {0, 1, 2, 8, 10, 13, 254, 255}


def test_color_picture_uses_official_colours_white_ood_and_black_void(dataset, tmp_path):
    root, _ = dataset
    export_cityscapes(root, tmp_path / "cs")
    base = tmp_path / "cs/gtFine/train/aachen/aachen_000000_000019_000"
    label = np.asarray(Image.open(f"{base}_gtFine_labelTrainIds.png"))
    color = np.asarray(Image.open(f"{base}_gtFine_color.png").convert("RGB"))
    try:  # the official table if the dev extra is installed, else its values copied by hand
        from cityscapesscripts.helpers.labels import trainId2label
        official = {t: trainId2label[t].color for t in (0, 1, 2, 8, 10, 13)}
    except ImportError:
        official = {0: (128, 64, 128), 1: (244, 35, 232), 2: (70, 70, 70), 8: (107, 142, 35),
                    10: (70, 130, 180), 13: (0, 0, 142)}
    official |= {OOD_TRAIN_ID: (255, 255, 255), 255: (0, 0, 0)}
    for train_id, rgb in official.items():
        assert (color[label == train_id] == rgb).all(), train_id
    assert OOD_COLOR == (255, 255, 255)


def test_stems_keep_the_cityscapes_prefix_and_pair_by_suffix(dataset, tmp_path):
    """What torchvision and mmseg do: strip `_leftImg8bit.png`, append the gtFine suffix."""
    root, _ = dataset
    export_cityscapes(root, tmp_path / "cs")
    images = sorted((tmp_path / "cs" / "leftImg8bit").rglob("*_leftImg8bit.png"))
    assert len(images) == 3
    for image in images:
        assert re.fullmatch(r"[a-z]+_\d{6}_\d{6}_\d{3}_leftImg8bit\.png", image.name)
        stem = image.name.removesuffix("_leftImg8bit.png")
        label = tmp_path / "cs" / "gtFine" / image.parent.relative_to(tmp_path / "cs" / "leftImg8bit") / (
            f"{stem}_gtFine_labelTrainIds.png")
        assert label.is_file()


def test_export_record_maps_stems_to_sample_ids(dataset, tmp_path):
    root, _ = dataset
    export_cityscapes(root, tmp_path / "cs")
    record = json.loads((tmp_path / "cs" / "cgaug_export.json").read_text())
    assert {s["stem"]: s["sample_id"] for s in record["samples"]} == {
        stem: sample_id for sample_id, (_, _, stem) in EXPORTED.items()}
    assert record["config_fingerprint"] == "f00d" and record["ood_train_id"] == 254


def test_export_chosen_verdicts(dataset, tmp_path):
    root, _ = dataset
    assert export_cityscapes(root, tmp_path / "acc", verdicts=("accepted",)) == 1
    assert (tmp_path / "acc/leftImg8bit/train/bonn/bonn_000001_000002_000_leftImg8bit.png").is_file()
    with pytest.raises(ValueError, match="cannot be exported: skipped rows carry no images"):
        export_cityscapes(root, tmp_path / "skip", verdicts=("unfiltered", "skipped"))
    with pytest.raises(ValueError, match=r"sample 's004' \(verdict 'rejected'\) has no \['image_png', "
                                         r"'label_png'\]"):
        export_cityscapes(root, tmp_path / "rej", verdicts=("rejected",))


def test_two_rows_with_one_stem_are_refused(tmp_path):
    root = open_root(tmp_path / "out")
    write_shard(root, 0, [make_row("a", 0, variant=4), make_row("b", 0, variant=4)])
    write_index(root, {})
    with pytest.raises(ValueError, match=r"samples 'a' and 'b' both export as 'aachen_000000_000019_004'"):
        export_cityscapes(root, tmp_path / "cs")


def test_export_from_and_to_memory(tmp_path):
    import uuid

    import fsspec

    name = uuid.uuid4().hex
    try:
        source = open_root(f"memory://src-{name}")
        build_dataset(source)
        assert export_cityscapes(f"memory://src-{name}", f"memory://dst-{name}") == 3
        dest = open_root(f"memory://dst-{name}")
        stored = dest.read_bytes("gtFine/train/bonn/bonn_000001_000002_000_gtFine_labelTrainIds.png")
        assert stored == dataset_rows()[1][0]["label_png"]
        assert not [p for p in dest.fs.find(dest.path) if ".tmp-" in p]
    finally:
        fs = fsspec.filesystem("memory")
        for prefix in (f"/src-{name}", f"/dst-{name}"):
            if fs.exists(prefix):
                fs.rm(prefix, recursive=True)


def test_export_without_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        export_cityscapes(tmp_path / "empty", tmp_path / "cs")
    assert not (tmp_path / "empty").exists()


def test_cli_export_cityscapes(dataset, tmp_path):
    from cgaug.cli.shards import export_app

    root, _ = dataset
    result = CliRunner().invoke(export_app, ["cityscapes", root.uri(), str(tmp_path / "cs"),
                                             "--verdicts", "unfiltered"])
    assert result.exit_code == 0, result.output
    assert "exported 2 samples" in result.output
    assert len(list((tmp_path / "cs" / "leftImg8bit").rglob("*.png"))) == 2


# --- preview --------------------------------------------------------------------------------------------


def test_mask_contour_is_the_inner_two_pixel_border():
    mask = np.zeros((12, 12), dtype=bool)
    mask[2:8, 3:9] = True  # 6x6
    contour = mask_contour(mask, 2)
    interior = np.zeros_like(mask)
    interior[4:6, 5:7] = True  # what is left after peeling two pixels off each side
    assert np.array_equal(contour, mask & ~interior)
    edge = np.ones((4, 4), dtype=bool)  # a mask filling the picture: the picture edge is its border
    assert mask_contour(edge, 1).sum() == 12


def test_render_sample_panels_are_the_arrays_and_overlay_is_hand_computable(dataset):
    root, _ = dataset
    sample = read_sample(root, "s000")
    picture = render_sample(sample)
    assert picture.mode == "RGB" and picture.width == 3 * W and picture.height > H
    pixels = np.asarray(picture)
    assert np.array_equal(pixels[:H, :W], sample["image"])
    assert np.array_equal(pixels[:H, W:2 * W], sample["cond"])
    overlay = pixels[:H, 2 * W:].astype(int)
    contour = mask_contour(sample["ood_mask"], 2)
    assert contour.sum() == 12  # the 3x4 OOD box is all border at width 2
    assert (overlay[contour] == CONTOUR_COLOR).all()
    label, image = sample["label"], sample["image"].astype(int)
    void = label == 255
    assert np.array_equal(overlay[void], image[void])
    road = (label == 0) & ~contour
    assert road.any()
    expected = np.rint((1 - OVERLAY_ALPHA) * image[road] + OVERLAY_ALPHA * np.array([128, 64, 128]))
    assert np.array_equal(overlay[road], expected)
    assert not np.array_equal(pixels[H:], np.full_like(pixels[H:], pixels[-1, -1]))  # captions were drawn


def test_render_sample_downscales_panels(dataset):
    root, _ = dataset
    sample = read_sample(root, "s001")
    picture = render_sample(sample, panel_width=6)
    assert picture.width == 18
    assert picture.height > H // 2


def test_render_skipped_sample_is_refused(dataset):
    root, _ = dataset
    with pytest.raises(ValueError, match=r"sample 's002' \(verdict 'skipped'\) has no image"):
        render_sample(read_sample(root, "s002"))


def test_color_label_does_not_change_the_shared_lut():
    from cgaug.labels import train_id_color_lut

    color_label(np.array([[OOD_TRAIN_ID]], dtype=np.uint8))
    assert tuple(train_id_color_lut()[OOD_TRAIN_ID]) == (0, 0, 0)


def test_show_png_round_trips(dataset):
    root, _ = dataset
    buffer = io.BytesIO()
    render_sample(read_sample(root, "s003")).save(buffer, format="PNG")
    assert decode_png(buffer.getvalue()).shape[1] == 3 * W


def test_preview_picks_a_rejected_sample_first_then_kept_ones():
    from cgaug.tasks.reporting.previews import pick_preview_rows

    assert pick_preview_rows(["accepted", "rejected", "skipped", "unfiltered", "rejected"], 3) == [1, 0, 3]
    assert pick_preview_rows(["skipped", "skipped"], 3) == []
    assert pick_preview_rows(["accepted"] * 5, 2) == [0, 1]


def test_read_shard_rows_decodes_only_the_wanted_rows(dataset):
    from cgaug.storage.shards import read_shard_rows

    root, _ = dataset
    verdicts, rows = read_shard_rows(root, 1, [0, 1])
    assert verdicts == ["accepted", "rejected", "skipped"]
    assert [r["sample_id"] for r in rows] == ["s003", "s004"]
    expected = read_sample(root, "s003")
    assert np.array_equal(rows[0]["image"], expected["image"]) and rows[1]["image"] is None


def test_shard_preview_markdown_inlines_rendered_samples(dataset):
    import base64

    from cgaug.storage.shards import read_shard_rows
    from cgaug.tasks.reporting.previews import PREVIEW_PANEL_WIDTH, shard_preview_markdown

    root, _ = dataset
    _, rows = read_shard_rows(root, 1, [1, 0])  # the rejected row has no images: left out, not an error
    text = shard_preview_markdown(rows, "shard-00001: samples")
    uris = re.findall(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", text)
    assert text.startswith("### shard-00001: samples") and "**s003** — accepted" in text and len(uris) == 1
    picture = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert picture.format == "JPEG" and picture.width == 3 * PREVIEW_PANEL_WIDTH
    assert "no sample with images" in shard_preview_markdown(rows[:1], "x")
