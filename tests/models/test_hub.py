"""The one resolver and cache: hub id or directory, helpful not-found messages, one load per process."""

from __future__ import annotations

import pytest

from cgaug.models import hub


def test_a_name_is_a_hub_id_or_a_path(tmp_path):
    assert hub.locate("org/model", "filters.sam_model") == ("org/model", False)
    assert hub.locate("model", "filters.sam_model") == ("model", False)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "config.json").write_text("{}")
    assert hub.locate(str(tmp_path / "saved"), "filters.sam_model") == (str(tmp_path / "saved"), True)
    with pytest.raises(hub.ModelNotFound, match=r"holds no model_index\.json, so it is not a saved diffusers pipeline"):
        hub.locate(str(tmp_path / "saved"), "generator.model", marker="model_index.json", what="diffusers pipeline")
    with pytest.raises(hub.ModelNotFound, match=r"generator\.model '\./nowhere' was not found: no such directory"):
        hub.locate("./nowhere", "generator.model")
    assert not hub.is_hub_id("~/models/sam") and not hub.is_hub_id("a/b/c")


def test_a_hub_miss_names_the_field_and_the_offline_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    def missing(ref: str, is_local: bool):
        raise OSError(f"We couldn't connect to load {ref}\nfrom the cache")

    with pytest.raises(hub.ModelNotFound) as info:
        hub.from_pretrained(missing, "facebook/sam-vit-base", "filters.sam_model")
    message = str(info.value)
    assert message.startswith("filters.sam_model 'facebook/sam-vit-base' was not found: not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE is set" in message and str(tmp_path / "hf") in message
    assert "`hf download facebook/sam-vit-base`" in message and "save_pretrained" in message
    assert "`--filters tiny` needs no download" in message and "\n" not in message
    with pytest.raises(hub.ModelNotFound, match=r"generator\.model: tiny` needs no download"):
        hub.from_pretrained(missing, "org/pipeline", "generator.model")


def test_a_missing_variant_names_the_variant_setting():
    def no_variant(ref: str, is_local: bool):
        raise ValueError("You are trying to load the model files of the `variant=fp16`, but no such files exist")

    with pytest.raises(hub.ModelNotFound, match=r"with generator\.variant 'fp16'.*unset generator\.variant"):
        hub.from_pretrained(no_variant, "org/pipeline", "generator.model", variant="fp16")
    with pytest.raises(ValueError, match="variant=fp16"):  # no variant asked for: not a hub miss
        hub.from_pretrained(no_variant, "org/pipeline", "generator.model")


def test_errors_reading_a_local_directory_are_not_hub_misses(tmp_path):
    (tmp_path / "config.json").write_text("{}")

    def broken(ref: str, is_local: bool):
        assert is_local and ref == str(tmp_path)
        raise OSError("truncated safetensors file")

    with pytest.raises(OSError, match="truncated") as info:
        hub.from_pretrained(broken, str(tmp_path), "filters.sam_model")
    assert not isinstance(info.value, hub.ModelNotFound)


def test_the_cache_loads_once_until_cleared():
    calls = []

    def load():
        calls.append(1)
        return object()

    hub.clear_cache()
    first = hub.cached(("test", "a"), load)
    assert hub.cached(("test", "a"), load) is first and len(calls) == 1
    assert hub.cached(("test", "b"), load) is not first and len(calls) == 2
    hub.clear_cache()
    assert hub.cached(("test", "a"), load) is not first and len(calls) == 3
