"""The Cityscapes reader, against the fixture writer and against cityscapesscripts' label table."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs
from PIL import Image

from cgaug.fixtures import write_fixtures
from cgaug.labels import CITYSCAPES_LABELS
from cgaug.records import SampleSkipped, SourceRecord
from cgaug.storage.cityscapes import list_sources, read_image, read_label_ids, read_pair, to_train_ids

H, W = 96, 192


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("cityscapes")
    return root, write_fixtures(root, images=7, seed=3, height=H, width=W)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(root: Path, stem: str, image: np.ndarray | bytes | None, label: np.ndarray | bytes | None,
            split: str = "train") -> None:
    """Write one sample by hand, each part as an array, raw bytes, or absent."""
    city = stem.split("_")[0]
    for top, suffix, content in (("leftImg8bit", "_leftImg8bit.png", image),
                                 ("gtFine", "_gtFine_labelIds.png", label)):
        if content is None:
            continue
        path = root / top / split / city / f"{stem}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else _png(content))


def _one(root: Path, stem: str) -> SourceRecord:
    return next(rec for rec in list_sources(str(root), "train") if rec.source_id == stem)


def _reason(call, rec: SourceRecord) -> SampleSkipped:
    with pytest.raises(SampleSkipped) as info:
        call(rec)
    return info.value


GOOD_IMAGE = np.full((8, 12, 3), 90, np.uint8)
GOOD_LABEL = np.full((8, 12), 7, np.uint8)


# ------------------------------------------------------------------------------------------ listing


def test_list_sources_finds_every_written_sample_sorted_with_paths(dataset):
    root, ids = dataset
    records = list_sources(str(root), "train")
    assert [r.source_id for r in records] == sorted(ids)
    assert len({r.city for r in records}) >= 3
    for rec in records:
        assert rec.split == "train"
        assert rec.source_id.startswith(rec.city + "_")
        stem = rec.source_id
        assert Path(rec.image_path) == root / "leftImg8bit/train" / rec.city / f"{stem}_leftImg8bit.png"
        assert Path(rec.label_path) == root / "gtFine/train" / rec.city / f"{stem}_gtFine_labelIds.png"


def test_read_pair_returns_rgb_image_and_label_ids_of_the_files(dataset):
    root, _ = dataset
    rec = list_sources(str(root), "train")[0]
    image, label_ids = read_pair(rec)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert label_ids.shape == (H, W) and label_ids.dtype == np.uint8
    np.testing.assert_array_equal(image, np.asarray(Image.open(rec.image_path)))
    np.testing.assert_array_equal(label_ids, np.asarray(Image.open(rec.label_path)))


def test_stem_with_one_file_is_listed_with_the_partner_path_and_skipped_with_a_reason(tmp_path):
    _sample(tmp_path, "aachen_000000_000019", GOOD_IMAGE, GOOD_LABEL)
    _sample(tmp_path, "aachen_000001_000019", GOOD_IMAGE, None)
    _sample(tmp_path, "bremen_000002_000019", None, GOOD_LABEL)
    records = list_sources(str(tmp_path), "train")
    assert [r.source_id for r in records] == ["aachen_000000_000019", "aachen_000001_000019",
                                               "bremen_000002_000019"]
    no_label, no_image = records[1], records[2]
    assert no_label.label_path.endswith("gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png")
    assert no_image.image_path.endswith("leftImg8bit/train/bremen/bremen_000002_000019_leftImg8bit.png")
    skipped = _reason(read_pair, no_label)
    assert skipped.reason == "missing_label" and no_label.label_path in skipped.detail
    skipped = _reason(read_pair, no_image)
    assert skipped.reason == "missing_image" and no_image.image_path in skipped.detail


def test_files_not_named_the_cityscapes_way_are_ignored(tmp_path):
    _sample(tmp_path, "aachen_000000_000019", GOOD_IMAGE, GOOD_LABEL)
    city = tmp_path / "leftImg8bit/train/aachen"
    (city / "aachen_000000_000019_leftImg8bit.jpg").write_bytes(b"x")
    (city / "aachen_00000_000019_leftImg8bit.png").write_bytes(b"x")  # 5-digit sequence
    (city / "bochum_000000_000019_leftImg8bit.png").write_bytes(b"x")  # city differs from its folder
    (city / "notes.txt").write_text("x")
    (tmp_path / "gtFine/train/aachen/aachen_000003_000019_gtFine_color.png").write_bytes(b"x")
    assert [r.source_id for r in list_sources(str(tmp_path), "train")] == ["aachen_000000_000019"]


def test_missing_split_names_root_split_and_layout(tmp_path):
    _sample(tmp_path, "aachen_000000_000019", GOOD_IMAGE, GOOD_LABEL)
    with pytest.raises(FileNotFoundError) as info:
        list_sources(str(tmp_path), "val")
    message = str(info.value)
    assert str(tmp_path) in message and "'val'" in message
    assert "leftImg8bit/val/<city>" in message and "_gtFine_labelIds.png" in message
    assert "train" in message  # the split that does exist


def test_split_without_samples_names_what_was_looked_for(tmp_path):
    (tmp_path / "leftImg8bit/train/aachen").mkdir(parents=True)
    (tmp_path / "leftImg8bit/train/aachen/readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"holds no samples.*_leftImg8bit\.png"):
        list_sources(str(tmp_path), "train")


def test_memory_root_lists_and_reads_the_same_as_local(tmp_path):
    uri = f"memory://cityscapes-{uuid.uuid4().hex}"
    try:
        ids = write_fixtures(uri, images=3, seed=5, height=H, width=W)
        write_fixtures(tmp_path, images=3, seed=5, height=H, width=W)
        remote, local = list_sources(uri, "train"), list_sources(str(tmp_path), "train")
        assert [r.source_id for r in remote] == sorted(ids) == [r.source_id for r in local]
        assert remote[0].image_path.startswith(uri + "/leftImg8bit/train/")
        for a, b in zip(remote, local, strict=True):
            for x, y in zip(read_pair(a), read_pair(b), strict=True):
                np.testing.assert_array_equal(x, y)
    finally:
        fs, path = fsspec.core.url_to_fs(uri)
        fs.rm(path, recursive=True)


# ------------------------------------------------------------------------------------------ decoding


def test_grey_and_rgba_images_are_converted_to_rgb(tmp_path):
    grey = np.arange(96, dtype=np.uint8).reshape(8, 12)
    rgba = np.dstack([np.full((8, 12), c, np.uint8) for c in (10, 20, 30, 40)])
    _sample(tmp_path, "aachen_000000_000019", grey, GOOD_LABEL)
    _sample(tmp_path, "aachen_000001_000019", rgba, GOOD_LABEL)
    got_grey = read_image(_one(tmp_path, "aachen_000000_000019"))
    got_rgba = read_image(_one(tmp_path, "aachen_000001_000019"))
    np.testing.assert_array_equal(got_grey, np.dstack([grey, grey, grey]))
    np.testing.assert_array_equal(got_rgba, rgba[..., :3])


def test_sixteen_bit_labels_with_valid_ids_are_read_as_uint8(tmp_path):
    ids = np.array([[0, 7, 26], [24, 33, 23]], np.uint16)
    _sample(tmp_path, "aachen_000000_000019", np.zeros((2, 3, 3), np.uint8), ids)
    label = read_label_ids(_one(tmp_path, "aachen_000000_000019"))
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, ids)


# ------------------------------------------------------------------------------------------ bad input


def test_truncated_image_png_is_unreadable_image(tmp_path):
    data = _png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    _sample(tmp_path, "aachen_000000_000019", data[: len(data) * 2 // 3], np.full((64, 64), 7, np.uint8))
    rec = _one(tmp_path, "aachen_000000_000019")
    skipped = _reason(read_image, rec)
    assert skipped.reason == "unreadable_image" and rec.image_path in skipped.detail


def test_image_cut_just_before_its_end_marker_is_still_unreadable(tmp_path):
    """All pixel data present, only the end chunk missing: a lazy decoder would accept this."""
    data = _png(np.full((16, 16, 3), 50, np.uint8))
    _sample(tmp_path, "aachen_000000_000019", data[:-12], np.full((16, 16), 7, np.uint8))
    assert _reason(read_image, _one(tmp_path, "aachen_000000_000019")).reason == "unreadable_image"


def test_truncated_label_png_is_unreadable_label(tmp_path):
    label = np.random.default_rng(1).choice([7, 8, 11, 23, 26], (64, 64)).astype(np.uint8)
    data = _png(label)
    _sample(tmp_path, "aachen_000000_000019", np.zeros((64, 64, 3), np.uint8), data[: len(data) // 2])
    rec = _one(tmp_path, "aachen_000000_000019")
    skipped = _reason(read_pair, rec)
    assert skipped.reason == "unreadable_label" and rec.label_path in skipped.detail


def test_label_with_unknown_id_lists_it(tmp_path):
    label = GOOD_LABEL.copy()
    label[0, :3] = 200
    _sample(tmp_path, "aachen_000000_000019", GOOD_IMAGE, label)
    rec = _one(tmp_path, "aachen_000000_000019")
    skipped = _reason(read_label_ids, rec)
    assert skipped.reason == "unknown_label_id"
    assert "[200]" in skipped.detail and "3 pixels" in skipped.detail and rec.label_path in skipped.detail


def test_colour_label_is_bad_label_format(tmp_path):
    _sample(tmp_path, "aachen_000000_000019", GOOD_IMAGE, np.zeros((8, 12, 3), np.uint8))
    skipped = _reason(read_label_ids, _one(tmp_path, "aachen_000000_000019"))
    assert skipped.reason == "bad_label_format"
    assert "RGB" in skipped.detail and "single-channel" in skipped.detail


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    _sample(tmp_path, "aachen_000000_000019", GOOD_IMAGE, np.full((8, 10), 7, np.uint8))
    rec = _one(tmp_path, "aachen_000000_000019")
    skipped = _reason(read_pair, rec)
    assert skipped.reason == "size_mismatch"
    assert "12x8" in skipped.detail and "10x8" in skipped.detail
    assert rec.image_path in skipped.detail and rec.label_path in skipped.detail


def test_a_bad_sample_does_not_hide_the_good_ones(tmp_path):
    _sample(tmp_path, "aachen_000000_000019", GOOD_IMAGE, GOOD_LABEL)
    _sample(tmp_path, "aachen_000001_000019", b"not a png", GOOD_LABEL)
    outcomes = {}
    for rec in list_sources(str(tmp_path), "train"):
        try:
            read_pair(rec)
            outcomes[rec.source_id] = "ok"
        except SampleSkipped as skipped:
            outcomes[rec.source_id] = skipped.reason
    assert outcomes == {"aachen_000000_000019": "ok", "aachen_000001_000019": "unreadable_image"}


# ------------------------------------------------------------------------------------------ label table


def _reference_labels() -> list[cs.Label]:
    return [label for label in cs.labels if label.id >= 0]


def test_to_train_ids_matches_cityscapesscripts_for_every_id():
    reference = _reference_labels()
    ids = np.array([[label.id for label in reference]], np.uint8)
    expected = np.array([[label.trainId for label in reference]], np.uint8)
    got = to_train_ids(ids)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_to_train_ids_on_a_fixture_label_matches_cityscapesscripts(dataset):
    root, _ = dataset
    label_ids = read_label_ids(list_sources(str(root), "train")[0])
    expected = np.vectorize(lambda i: cs.id2label[int(i)].trainId)(label_ids).astype(np.uint8)
    np.testing.assert_array_equal(to_train_ids(label_ids), expected)


def test_to_train_ids_rejects_ids_outside_the_table():
    with pytest.raises(ValueError, match=r"\[200\]"):
        to_train_ids(np.array([[7, 200]], np.uint8))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        to_train_ids(np.array([[7, 300]], np.int32))


def test_label_table_matches_cityscapesscripts_exactly():
    ours = {label.id: (label.name, label.id, label.train_id, label.color) for label in CITYSCAPES_LABELS}
    theirs = {label.id: (label.name, label.id, label.trainId, label.color) for label in _reference_labels()}
    assert ours == theirs
