"""load_filter_models and the tiny filter models: built once, loaded through from_pretrained, cached."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cgaug.config import FilterConfig  # noqa: E402
from cgaug.models.filters import build_tiny_filter, ensure_tiny_filter, load_filter_models, load_sam  # noqa: E402
from cgaug.models.filters.pixel import load_pixel_model, tiny_segmenter_config  # noqa: E402
from cgaug.models.hub import ModelNotFound, clear_cache  # noqa: E402
from cgaug.models.segmenters import CheckpointError, load_segmenter  # noqa: E402
from cgaug.models.tiny import RECIPE_FILE  # noqa: E402


def test_tiny_models_are_built_once(tiny):
    for kind, path in tiny.items():
        assert json.loads((path / RECIPE_FILE).read_text())["kind"] == kind
        stamp = (path / RECIPE_FILE).stat().st_mtime_ns
        assert ensure_tiny_filter(kind) == path and (path / RECIPE_FILE).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="expected one of"):
        build_tiny_filter("detector")


def test_tiny_segmenter_loads_the_seeded_segformer_through_from_pretrained(tiny):
    from transformers import SegformerForSemanticSegmentation

    segmenter = load_segmenter(tiny["segmenter"])
    torch.manual_seed(0)
    reference = SegformerForSemanticSegmentation(tiny_segmenter_config()).state_dict()
    assert all(torch.equal(segmenter.model.state_dict()[k], v) for k, v in reference.items())
    pixels = load_pixel_model("tiny", "filters.segmenter_model", cityscapes=True, device="cpu", dtype=torch.float32)
    np.testing.assert_array_equal(pixels.class_map, np.arange(19))


def test_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound, match=r"filters\.sam_model 'facebook/sam-vit-huge'.*HF_HUB_OFFLINE"):
        load_sam("facebook/sam-vit-huge")
    common = {"cityscapes": True, "device": "cpu", "dtype": torch.float32}
    with pytest.raises(ModelNotFound, match=r"filters\.segmenter_model: .*nowhere: no such file or directory"):
        load_pixel_model(str(tmp_path / "nowhere"), "filters.segmenter_model", **common)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"holds no config\.json"):
        load_pixel_model(str(tmp_path / "empty"), "filters.segmenter_model", **common)


def test_only_the_enabled_gates_load_models_once_per_process(tiny):
    clear_cache()
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
    assert separate.anomaly.segmenter is everything.segmenter.segmenter  # one set of weights per checkpoint
    assert separate.anomaly.class_map is None and everything.segmenter.class_map is not None
