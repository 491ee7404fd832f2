"""Inference at label resolution, batching, sliding windows, and the report files, with transparent fake models."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from cgaug.config import EvalOptions  # noqa: E402
from cgaug.storage.evalsets import EvalDataset, EvalItem, EvalSample  # noqa: E402
from cgaug.storage.fs import open_root  # noqa: E402
from cgaug.tasks.evaluation.evaluate import (  # noqa: E402
    evaluate_dataset,
    predict_batch,
    window_positions,
)
from cgaug.tasks.evaluation.metrics import anomaly_metrics, segmentation_metrics  # noqa: E402
from cgaug.tasks.evaluation.report import markdown_summary, write_dataset_report, write_results  # noqa: E402


class PixelSegmenter:
    """Per-pixel logits (a fixed linear map of RGB) at 1/`stride` resolution; the anomaly score is the red channel.

    Being pointwise, its whole-image and sliding-window outputs agree, and its scores are easy to predict.
    """

    num_classes = 19
    device = torch.device("cpu")

    def __init__(self, stride: int = 1):
        self.stride = stride
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(19, 3, generator=generator)

    def predict(self, images):
        x = images[..., :: self.stride, :: self.stride]
        logits = torch.einsum("cr,brhw->bchw", self.weight, x)
        return logits, x[:, 0] * 10


class IdSegmenter(PixelSegmenter):
    """Returns train ids (green channel // 16) instead of logits."""

    def predict(self, images):
        x = images[..., :: self.stride, :: self.stride]
        return (x[:, 1] * 255).long() // 16, x[:, 0]


class ArrayDataset(EvalDataset):
    kind = "muad"
    has_segmentation = True

    def __init__(self, root, items: list[EvalItem]):
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(str(root))
        self.items = {item.sample_id: item for item in items}

    def samples(self):
        return [EvalSample(sid, f"{sid}.png", f"{sid}_label.png") for sid in sorted(self.items)]

    def read(self, sample):
        return self.items[sample.sample_id]


def make_items(sizes: list[tuple[int, int]], label_scale: int = 1, seed: int = 0) -> list[EvalItem]:
    """Dark frames with a bright-red object labelled OOD; labels at `label_scale` x the image size."""
    rng = np.random.default_rng(seed)
    items = []
    for i, (height, width) in enumerate(sizes):
        image = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
        lh, lw = height * label_scale, width * label_scale
        ood = np.zeros((lh, lw), np.uint8)
        ood[lh // 4: lh // 2, lw // 4: lw // 2] = 1
        ood[0] = 255
        small = np.asarray(Image.fromarray(ood).resize((width, height), Image.Resampling.NEAREST))
        image[small == 1, 0] = 250
        train = rng.integers(0, 19, (lh, lw)).astype(np.uint8)
        train[ood == 1] = 255
        items.append(EvalItem(f"frame{i:02d}", image, ood, train))
    return items


def reference_metrics(segmenter, items, label_scale=1):
    """The metrics computed by hand: one image at a time, torch upsampling written out here."""
    scores, labels, preds, targets = [], [], [], []
    for item in items:
        x = torch.from_numpy(item.image).permute(2, 0, 1)[None].float() / 255
        logits, score = segmenter.predict(x)
        size = item.ood.shape
        score = torch.nn.functional.interpolate(score[:, None], size=size, mode="bilinear", align_corners=False)
        logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        scores.append(score[0, 0].numpy().ravel())
        labels.append(item.ood.ravel())
        preds.append(logits.argmax(1)[0].numpy().ravel())
        targets.append(item.train_ids.ravel())
    return (anomaly_metrics(np.concatenate(scores), np.concatenate(labels)),
            segmentation_metrics(np.concatenate(preds), np.concatenate(targets)))


@pytest.mark.parametrize("label_scale", [1, 2])
def test_metrics_are_computed_at_label_resolution(tmp_path, label_scale):
    items = make_items([(24, 32), (24, 32), (16, 40)], label_scale=label_scale)
    segmenter = PixelSegmenter(stride=2)  # outputs at half the image size
    result = evaluate_dataset(segmenter, ArrayDataset(tmp_path, items), EvalOptions(batch_size=2, examples=2))
    anomaly, seg = reference_metrics(segmenter, items)
    assert result.images == 3 and len(result.examples) == 2
    assert result.anomaly_metrics("first") | {"threshold95": 0} == anomaly | {"threshold95": 0}
    ours = result.confusion.compute()
    assert ours["miou"] == pytest.approx(seg["miou"], abs=1e-12)
    assert result.anomaly.table().positives + result.anomaly.table().negatives == sum(
        int((i.ood != 255).sum()) for i in items)


def test_batching_does_not_change_results(tmp_path):
    items = make_items([(24, 32), (24, 32), (24, 32), (16, 40), (24, 32)])
    segmenter = PixelSegmenter(stride=2)
    runs = [evaluate_dataset(segmenter, ArrayDataset(tmp_path, items), EvalOptions(batch_size=b, examples=0))
            for b in (1, 3)]
    assert runs[0].anomaly_metrics("closest") == runs[1].anomaly_metrics("closest")
    assert np.array_equal(runs[0].confusion.matrix, runs[1].confusion.matrix)


def test_limit_takes_the_first_frames(tmp_path):
    items = make_items([(24, 32)] * 4)
    result = evaluate_dataset(PixelSegmenter(), ArrayDataset(tmp_path, items), EvalOptions(limit=2, examples=5))
    assert result.images == 2 and [e.sample_id for e in result.examples] == ["frame00", "frame01"]


def test_sliding_window_equals_whole_image_for_a_pointwise_model(tmp_path):
    items = make_items([(40, 56)])
    images = np.stack([items[0].image])
    whole = predict_batch(PixelSegmenter(), images, (40, 56), EvalOptions())
    windowed = predict_batch(PixelSegmenter(), images, (40, 56), EvalOptions(window=(16, 24), stride=(10, 15)))
    np.testing.assert_allclose(windowed[0], whole[0], atol=1e-5)
    assert (windowed[1] == whole[1]).mean() > 0.999  # arg-max ties may flip on float rounding


def test_integer_predictions_are_upsampled_nearest(tmp_path):
    items = make_items([(24, 32)], label_scale=2)
    scores, predictions = predict_batch(IdSegmenter(), np.stack([items[0].image]), (48, 64), EvalOptions())
    expected = np.repeat(np.repeat(items[0].image[..., 1] // 16, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(predictions[0], expected)
    assert scores.shape == (1, 48, 64)


def test_window_positions_cover_the_image():
    assert window_positions(100, 40, 30) == [0, 30, 60]
    assert window_positions(30, 40, 30) == [0]
    assert window_positions(70, 40, 30) == [0, 30]


def test_amp_is_not_used_on_cpu(tmp_path):
    items = make_items([(24, 32)])
    images = np.stack([items[0].image])
    with_amp = predict_batch(PixelSegmenter(), images, (24, 32), EvalOptions(amp=True))
    without = predict_batch(PixelSegmenter(), images, (24, 32), EvalOptions(amp=False))
    assert np.array_equal(with_amp[0], without[0]) and with_amp[0].dtype == np.float32


def test_report_files(tmp_path):
    items = make_items([(24, 32), (24, 32), (16, 40)])
    evaluation = evaluate_dataset(PixelSegmenter(stride=2), ArrayDataset(tmp_path / "data", items),
                                  EvalOptions(examples=3, example_width=24))
    out = open_root(tmp_path / "report")
    record = write_dataset_report(out, "muad", evaluation, "first")
    files = record["files"]
    assert set(files) == {"curve_points", "roc", "pr", "grid"}
    for key in ("roc", "pr", "grid"):
        with Image.open(tmp_path / "report" / files[key]) as picture:
            picture.load()
            assert picture.mode == "RGB"
    with Image.open(tmp_path / "report" / files["grid"]) as grid:
        assert grid.width == 4 * 24 and grid.height > 3 * 18  # 3 rows of 4 panels (24 px wide)
    curve = pq.read_table(tmp_path / "report" / files["curve_points"]).to_pydict()
    assert curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0
    write_results(out, [record], {"checkpoint": "fake", "fpr_rule": "first"})

    def no_nan(name):
        raise AssertionError(f"results.json holds {name}")

    results = json.loads((tmp_path / "report" / "results.json").read_text(), parse_constant=no_nan)
    assert results["datasets"][0]["auroc"] == pytest.approx(evaluation.anomaly_metrics("first")["auroc"])
    assert results["datasets"][0]["iou"]["road"] is not None
    row = pq.read_table(tmp_path / "report" / "results.parquet").to_pylist()[0]
    assert row["name"] == "muad" and row["iou_traffic_light"] == results["datasets"][0]["iou"]["traffic light"]
    assert "| muad | 3 |" in markdown_summary([record], {"checkpoint": "fake", "fpr_rule": "first"})
    assert not list((tmp_path / "report").rglob(".*tmp-*"))  # atomic writes leave no temporary files


def test_a_dataset_without_positives_reports_no_anomaly_metrics(tmp_path):
    items = make_items([(24, 32)])
    items = [EvalItem(i.sample_id, i.image, np.where(i.ood == 1, 0, i.ood).astype(np.uint8), i.train_ids)
             for i in items]
    evaluation = evaluate_dataset(PixelSegmenter(), ArrayDataset(tmp_path / "d", items), EvalOptions())
    record = write_dataset_report(open_root(tmp_path / "r"), "muad", evaluation, "first")
    assert record["auroc"] is None and record["positives"] == 0 and record["miou"] is not None
    assert "roc" not in record["files"] and "grid" in record["files"]
