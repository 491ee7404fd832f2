"""Evaluation options: defaults and strictness (they are flow parameters, so typos must fail)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cgaug.config import EvalOptions


def test_defaults_and_validation():
    options = EvalOptions()
    assert options.fpr_rule == "first" and options.window is None and options.device == "auto"
    assert EvalOptions.model_validate(options.model_dump(mode="json")) == options  # a flow parameter round trip
    for bad in ({"fpr_rule": "last"}, {"batch_size": 0}, {"windoww": [8, 8]}):
        with pytest.raises(ValidationError):
            EvalOptions.model_validate(bad)
