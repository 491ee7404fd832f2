"""Filter models: tiny builds through the real loading code, SAM/segmenter/CLIP wrappers against references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgaug.config import FilterConfig
from cgaug.models.filters import (
    CITYSCAPES_TRAIN_NAMES,
    RECIPE_FILE,
    ClipScorer,
    SamMasker,
    Segmenter,
    cityscapes_class_map,
    clear_filter_cache,
    ensure_tiny_filter,
    input_size,
    load_clip,
    load_filter_models,
    load_sam,
    load_segmenter,
    scale_boxes,
    tiny_sam_config,
    tiny_segmenter_config,
)
from cgaug.models.generator import ModelNotFound


@pytest.fixture(scope="module")
def tiny(tiny_home):
    return {kind: ensure_tiny_filter(kind) for kind in ("sam", "segmenter", "clip")}


def _image(seed: int, h: int = 96, w: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_models_are_built_once_and_load_through_from_pretrained(tiny):
    from transformers import SamModel, SegformerForSemanticSegmentation

    for kind, path in tiny.items():
        assert json.loads((path / RECIPE_FILE).read_text())["kind"] == kind
        stamp = (path / RECIPE_FILE).stat().st_mtime_ns
        assert ensure_tiny_filter(kind) == path and (path / RECIPE_FILE).stat().st_mtime_ns == stamp
    sam, _ = load_sam("tiny")
    torch.manual_seed(0)
    assert _same_weights(sam, SamModel(tiny_sam_config()))
    segmenter, _, class_map = load_segmenter("tiny", "segmenter_model")
    torch.manual_seed(0)
    assert _same_weights(segmenter, SegformerForSemanticSegmentation(tiny_segmenter_config()))
    np.testing.assert_array_equal(class_map, np.arange(19))
    clip, tokenizer = load_clip("tiny", None)
    assert clip.visual.preprocess_cfg["size"] in (32, (32, 32))
    assert tokenizer(["a dog"]).shape == (1, 77)


def test_sam_masker_matches_the_processor_path_and_returns_one_mask_per_box(tiny):
    model, processor = load_sam("tiny")
    image, boxes = _image(1), [(10, 20, 60, 70), (80, 5, 150, 90)]
    masks = SamMasker(model, processor).masks([image, _image(2)], [boxes, []])
    assert len(masks) == 2 and masks[1] == []
    assert [m.shape for m in masks[0]] == [(96, 160), (96, 160)] and masks[0][0].dtype == bool
    inputs = processor(images=image, input_boxes=[[list(b) for b in boxes]], return_tensors="pt")
    np.testing.assert_allclose(scale_boxes(boxes, (96, 160), tuple(inputs["reshaped_input_sizes"][0].tolist())),
                               inputs["input_boxes"][0].numpy())
    with torch.inference_mode():
        pred = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(),
                     multimask_output=False).pred_masks
    reference = processor.image_processor.post_process_masks(
        pred, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    for ours, ref in zip(masks[0], reference, strict=True):
        np.testing.assert_array_equal(ours, ref[0].numpy())


def test_segmenter_energy_and_label_mapping():
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    config = tiny_segmenter_config()
    reversed_names = dict(enumerate(reversed(CITYSCAPES_TRAIN_NAMES)))  # model class i is train id 18 - i
    config.id2label = reversed_names
    torch.manual_seed(3)
    model = SegformerForSemanticSegmentation(config).eval()
    processor = SegformerImageProcessor(size={"height": 64, "width": 128}, do_reduce_labels=False)
    class_map = cityscapes_class_map(reversed_names, "segmenter_model")
    np.testing.assert_array_equal(class_map, 18 - np.arange(19))
    segmenter = Segmenter(model, processor, class_map, batch_size=2)
    images = [_image(i, 64, 128) for i in range(3)]
    outputs = segmenter.predict(images)
    with torch.inference_mode():
        logits = torch.nn.functional.interpolate(segmenter.logits(images), size=(64, 128), mode="bilinear",
                                                 align_corners=False).numpy()
    for output, lg in zip(outputs, logits, strict=True):
        top = lg.max(axis=0)
        energy = -(top + np.log(np.exp(lg - top).sum(axis=0)))  # -logsumexp, written out
        np.testing.assert_allclose(output.anomaly, energy, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(output.train_ids, 18 - lg.argmax(axis=0))


def test_class_map_accepts_cityscapes_names_or_anonymous_19_classes_only():
    underscored = {i: n.replace(" ", "_") for i, n in enumerate(CITYSCAPES_TRAIN_NAMES)}
    np.testing.assert_array_equal(cityscapes_class_map(underscored, "f"), np.arange(19))
    np.testing.assert_array_equal(cityscapes_class_map({i: f"LABEL_{i}" for i in range(19)}, "f"), np.arange(19))
    with pytest.raises(ValueError, match="19 Cityscapes"):
        cityscapes_class_map({i: f"c{i}" for i in range(150)}, "segmenter_model")


def test_input_size_keeps_aspect_in_multiples_of_32():
    assert input_size(1024, 2048, 1024) == (1024, 2048)
    assert input_size(256, 512, None) == (256, 512)
    assert input_size(250, 500, 100) == (96, 192)


def test_smp_checkpoint_directories_load_as_segmenters(tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, classes=19, encoder_depth=3,
                              decoder_channels=16, encoder_output_stride=8, decoder_atrous_rates=(1, 2, 3)).eval()
    model.save_pretrained(str(tmp_path / "smp"))
    loaded, processor, class_map = load_segmenter(str(tmp_path / "smp"), "segmenter_model")
    assert processor is None and _same_weights(loaded, model)
    [output] = Segmenter(loaded, None, class_map).predict([_image(0, 64, 128)])
    assert output.train_ids.shape == output.anomaly.shape == (64, 128)


def test_clip_scores_agree_with_open_clip_preprocessing(tiny):
    import open_clip
    from PIL import Image

    model, tokenizer = load_clip("tiny", None)
    scorer = ClipScorer(model, tokenizer, context=1.0)
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny['clip']}")
    image = _image(5, 64, 64)  # square: open_clip's resize + centre crop is a plain resize
    [ours] = scorer.image_text([image], ["a dog on a road"])
    with torch.inference_mode():
        feature = model.encode_image(preprocess(Image.fromarray(image))[None], normalize=True)
        text = model.encode_text(tokenizer(["a dog on a road"]), normalize=True)
    assert ours == pytest.approx(float((feature * text).sum()), abs=0.02)
    box = (8, 8, 40, 40)  # a 32-px square crop
    [[margin]] = scorer.object_margins([image], [[box]], [["dog"]])
    crop = Image.fromarray(image[8:40, 8:40])
    with torch.inference_mode():
        feature = model.encode_image(preprocess(crop)[None], normalize=True)
        texts = model.encode_text(tokenizer(["a photo of a dog."] + [f"a photo of a {n}." for n in
                                                                     CITYSCAPES_TRAIN_NAMES]), normalize=True)
        sims = (feature @ texts.T)[0]
    assert margin == pytest.approx(float(sims[0] - sims[1:].max()), abs=0.02)


def test_crop_windows_are_squares_inside_the_image():
    scorer = ClipScorer.__new__(ClipScorer)
    scorer.context = 1.0
    assert scorer.crop_window(100, 200, (10, 10, 30, 20)) == (10, 5, 30, 25)
    scorer.context = 2.0
    assert scorer.crop_window(100, 200, (0, 0, 10, 10)) == (0, 0, 20, 20)  # shifted in at the border
    assert scorer.crop_window(100, 200, (0, 0, 200, 100)) == (50, 0, 150, 100)  # centred, at most the short side


def test_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound, match=r"filters\.sam_model 'facebook/sam-vit-huge'.*HF_HUB_OFFLINE"):
        load_sam("facebook/sam-vit-huge")
    with pytest.raises(ModelNotFound, match="no such directory"):
        load_segmenter(str(tmp_path / "nowhere"), "segmenter_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match=r"holds no config\.json"):
        load_segmenter(str(tmp_path / "empty"), "segmenter_model")
    with pytest.raises(ModelNotFound, match="open_clip architecture"):
        load_clip("ViT-Nonexistent-1", None)


@pytest.mark.slow
def test_missing_clip_weights_offline_is_a_clear_error():
    with pytest.raises(ModelNotFound, match=r"filters\.clip_pretrained"):
        load_clip("ViT-B-16", "laion2b_s34b_b88k")


def test_only_the_enabled_gates_load_models_once_per_process(tiny):
    clear_filter_cache()
    only_sam = FilterConfig(mode="tiny", anomaly_gate=False, clip_text_gate=False, clip_object_gate=False,
                            consistency_gate=False)
    models = load_filter_models(only_sam)
    assert models.masker is not None and models.segmenter is None and models.clip is None
    assert load_filter_models(only_sam).masker.model is models.masker.model  # cached weights
    everything = load_filter_models(FilterConfig(mode="tiny"))
    assert everything.segmenter is not None and everything.clip is not None and everything.anomaly is None
    assert load_filter_models(FilterConfig()) == type(models)()  # mode none: nothing loads
    separate = load_filter_models(FilterConfig(mode="tiny", anomaly_model="tiny", consistency_gate=False))
    assert separate.anomaly is not None and separate.segmenter is None
