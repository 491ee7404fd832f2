"""What every tree shares: environment parsing, YAML reading, merging and strict models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cgaug.config import base
from cgaug.config.base import ConfigError, StrictModel


class Section(StrictModel):
    size: int = 1


class Tree(StrictModel):
    section: Section = Section()


def test_env_layer_nests_sections_and_parses_json_only_for_lists_and_maps():
    env = {"CGAUG_RUN__SEED": "3", "CGAUG_COMPOSE__SIZES": "[1, 2]", "CGAUG_X": "{not json", "OTHER": "1"}
    with pytest.raises(ConfigError, match="CGAUG_X: invalid JSON"):
        base.env_layer(env)
    del env["CGAUG_X"]
    assert base.env_layer(env) == {"run": {"seed": "3"}, "compose": {"sizes": [1, 2]}}
    with pytest.raises(ConfigError, match="run is not a section"):
        base.env_layer({"CGAUG_RUN": "1", "CGAUG_RUN__SEED": "2"})


def test_yaml_sections_name_the_file(tmp_path):
    assert base.read_yaml_sections(None) == {}
    (tmp_path / "empty.yaml").write_text("")
    assert base.read_yaml_sections(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping of sections, found list"):
        base.read_yaml_sections(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read YAML"):
        base.read_yaml_sections(tmp_path / "missing.yaml")


def test_merge_is_by_section_and_none_overrides_are_dropped():
    low = {"run": {"seed": 1, "variants": 2}, "list": [1, 2]}
    assert base.deep_merge(low, {"run": {"seed": 5}, "list": [3]}) == {"run": {"seed": 5, "variants": 2}, "list": [3]}
    assert low == {"run": {"seed": 1, "variants": 2}, "list": [1, 2]}  # inputs are not modified
    assert base.drop_none({"run": {"seed": None, "split": "val"}, "filters": {"mode": None}, "x": 0}) == {
        "run": {"split": "val"}, "x": 0}


def test_layers_merge_lowest_first_into_a_strict_frozen_model():
    with pytest.raises(ConfigError, match=r"(?s)invalid tree \(flags\):\n.*section.sise"):
        base.layered(Tree, [{"section": {"sise": 2}}], "tree", "flags")
    tree = base.layered(Tree, [{"section": {"size": 2}}, {}, {"section": {"size": 3}}], "tree", "flags")
    assert tree.section.size == 3
    with pytest.raises(ValidationError):
        tree.section.size = 3
