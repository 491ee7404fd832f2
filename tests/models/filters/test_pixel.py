"""The pixel adapter: any registry segmenter as the filter's PixelModel, trained exports included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cgaug.config import FilterConfig, load_train_config  # noqa: E402
from cgaug.models.filters import load_filter_models  # noqa: E402
from cgaug.models.filters.pixel import PixelSegmenter, load_pixel_model, tiny_segmenter_config  # noqa: E402
from cgaug.models.hub import clear_cache  # noqa: E402
from cgaug.models.segmenters import CITYSCAPES_TRAIN_NAMES, cityscapes_class_map, load_segmenter  # noqa: E402
from cgaug.models.segmenters.hf import HfSegmenter  # noqa: E402
from cgaug.models.segmenters.training import build_train_model  # noqa: E402


def _image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _energy(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=0)
    return -(top + np.log(np.exp(logits - top).sum(axis=0)))  # -logsumexp, written out


def test_energy_and_label_mapping_at_the_image_size():
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    config = tiny_segmenter_config()
    config.id2label = dict(enumerate(reversed(CITYSCAPES_TRAIN_NAMES)))  # model class i is train id 18 - i
    torch.manual_seed(3)
    segmenter = HfSegmenter(SegformerForSemanticSegmentation(config),
                            SegformerImageProcessor(size={"height": 64, "width": 128}, do_reduce_labels=False))
    class_map = cityscapes_class_map(segmenter.id2label, "filters.segmenter_model")
    np.testing.assert_array_equal(class_map, 18 - np.arange(19))
    pixels = PixelSegmenter(segmenter, class_map, batch_size=2)
    images = [_image(i, 64, 128) for i in range(3)]
    outputs = pixels.predict(images)
    with torch.inference_mode():
        logits = torch.nn.functional.interpolate(pixels.logits(images), size=(64, 128), mode="bilinear",
                                                 align_corners=False).numpy()
    for output, lg in zip(outputs, logits, strict=True):
        np.testing.assert_allclose(output.anomaly, _energy(lg), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(output.train_ids, 18 - lg.argmax(axis=0))


def test_images_of_different_sizes_come_back_at_their_own_size(tiny):
    pixels = load_pixel_model(str(tiny["segmenter"]), "filters.segmenter_model", cityscapes=False, device="cpu",
                              dtype=torch.float32, batch_size=3, short_side=64)
    outputs = pixels.predict([_image(0, 64, 128), _image(1, 50, 90), _image(2, 50, 90)])
    assert [o.anomaly.shape for o in outputs] == [(64, 128), (50, 90), (50, 90)]
    assert all(o.train_ids is None and o.anomaly.dtype == np.float32 for o in outputs)


def test_smp_checkpoint_directories_serve_as_filter_segmenters(tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, classes=19, encoder_depth=3,
                              decoder_channels=16, encoder_output_stride=8, decoder_atrous_rates=(1, 2, 3)).eval()
    model.save_pretrained(str(tmp_path / "smp"))
    pixels = load_pixel_model(str(tmp_path / "smp"), "filters.segmenter_model", cityscapes=True, device="cpu",
                              dtype=torch.float32)
    loaded = pixels.segmenter.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    [output] = pixels.predict([_image(0, 64, 128)])
    assert output.train_ids.shape == output.anomaly.shape == (64, 128)


@pytest.fixture
def trained_export(tmp_path):
    """A `cgaug train` RUN/model.pt of the tiny preset, written as the training loop writes it."""
    cfg = load_train_config(preset="tiny")
    model = build_train_model(cfg.model, seed=0)
    with torch.no_grad():
        model.uncertainty.weight.mul_(1.5)  # u no longer equals the energy of the logits
    path = tmp_path / "model.pt"
    export = model.export_config() | {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}
    torch.save({"config": export, "state_dict": model.state_dict()}, path)
    return path, model.eval(), cfg


def test_a_training_export_is_the_filters_segmenter_and_anomaly_model(trained_export):
    path, model, cfg = trained_export
    clear_cache()
    models = load_filter_models(FilterConfig(mode="tiny", segmenter_model=str(path), object_gate=False,
                                             clip_text_gate=False, clip_object_gate=False))
    assert models.segmenter is not None and models.anomaly is None  # one model serves both pixel gates
    image = _image(4, 64, 128)
    [output] = models.segmenter.predict([image])
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    mean, std = torch.tensor(cfg.data.mean).view(1, 3, 1, 1), torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits, u = model((x - mean) / std)
    np.testing.assert_allclose(output.anomaly, u[0].numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(output.anomaly, _energy(logits[0].numpy()), atol=1e-3)  # u, not the energy
    np.testing.assert_array_equal(output.train_ids, logits[0].argmax(dim=0).numpy())
    separate = load_filter_models(FilterConfig(mode="tiny", anomaly_model=str(path), object_gate=False,
                                               clip_text_gate=False, clip_object_gate=False, consistency_gate=False))
    np.testing.assert_allclose(separate.anomaly.predict([image])[0].anomaly, output.anomaly, rtol=1e-5, atol=1e-5)


def test_the_same_export_loads_for_evaluation(trained_export):
    path, model, cfg = trained_export
    segmenter = load_segmenter(path)
    x = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(cfg.data.mean).view(1, 3, 1, 1), torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    logits, score = segmenter.predict(x)
    with torch.no_grad():
        expected_logits, expected_u = model((x - mean) / std)
    torch.testing.assert_close(score, expected_u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
