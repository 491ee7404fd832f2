"""CLIP: scores against open_clip's own preprocessing, crop windows, missing weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cgaug.models.filters.clip import ClipScorer, load_clip  # noqa: E402
from cgaug.models.hub import ModelNotFound  # noqa: E402
from cgaug.models.segmenters import CITYSCAPES_TRAIN_NAMES  # noqa: E402


def _image(seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_tiny_clip_loads_with_the_real_tokenizer(tiny):
    clip, tokenizer = load_clip("tiny", None)
    assert clip.visual.preprocess_cfg["size"] in (32, (32, 32))
    assert tokenizer(["a dog"]).shape == (1, 77)


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


def test_unknown_clip_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound, match=r"filters\.clip_model 'ViT-Nonexistent-1'.*open_clip architecture"):
        load_clip("ViT-Nonexistent-1", None)
    with pytest.raises(ModelNotFound, match=r"holds no open_clip_config\.json"):
        load_clip(str(tmp_path), None)


@pytest.mark.slow
def test_missing_clip_weights_offline_is_a_clear_error():
    with pytest.raises(ModelNotFound, match=r"filters\.clip_pretrained"):
        load_clip("ViT-B-16", "laion2b_s34b_b88k")
