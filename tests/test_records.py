"""The records stages exchange: immutable, value-equal, JSON-plain where they cross a task boundary."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cgaug.records import (
    OOD_TRAIN_ID,
    VOID_TRAIN_ID,
    Composition,
    PastedObject,
    Prompt,
    SampleSkipped,
    SampleSpec,
    SourceRecord,
)

SOURCE = SourceRecord("aachen_000000_000019", "aachen", "train",
                      "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
                      "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
SPEC = SampleSpec("aachen_000000_000019__v000", "aachen_000000_000019", 0, 0, 8512072480951310313, 0)
OBJECT = PastedObject("dog", "animal", "obj-1", "ade/1", (2, 3, 10, 12), 0.5, 63)
PROMPT = Prompt("a street in Tokyo", "blurry", True, "rainy", "night", "Tokyo", "a dog")
SCALAR_RECORDS = [SOURCE, SPEC, OBJECT, PROMPT]


def test_ood_and_void_train_ids_are_the_top_two_uint8_values():
    assert (OOD_TRAIN_ID, VOID_TRAIN_ID) == (254, 255)
    assert np.array([OOD_TRAIN_ID, VOID_TRAIN_ID], dtype=np.uint8).tolist() == [254, 255]


@pytest.mark.parametrize("record", SCALAR_RECORDS, ids=lambda r: type(r).__name__)
def test_records_are_frozen_and_slotted(record):
    first = dataclasses.fields(record)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, first, "changed")
    assert not hasattr(record, "__dict__")  # slots: a typo'd attribute cannot be attached silently


@pytest.mark.parametrize("record", SCALAR_RECORDS, ids=lambda r: type(r).__name__)
def test_task_boundary_records_survive_json_and_compare_by_value(record):
    data = json.loads(json.dumps(dataclasses.asdict(record)))
    if isinstance(record, PastedObject):
        data["box"] = tuple(data["box"])  # JSON has no tuples
    rebuilt = type(record)(**data)
    assert rebuilt == record and hash(rebuilt) == hash(record)


def test_specs_differing_in_one_field_are_different_keys():
    assert len({SPEC, dataclasses.replace(SPEC), dataclasses.replace(SPEC, attempt=1)}) == 2


def test_composition_holds_arrays_and_is_frozen():
    label = np.full((2, 3), VOID_TRAIN_ID, dtype=np.uint8)
    composition = Composition(np.zeros((2, 3, 3), np.uint8), label, label == OOD_TRAIN_ID, (OBJECT,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        composition.objects = ()  # type: ignore[misc]
    assert composition.objects[0].box == (2, 3, 10, 12)


def test_sample_skipped_carries_a_stable_reason_and_a_human_detail():
    error = SampleSkipped("no_road", "gtFine/x_labelIds.png: no pixel of class road")
    assert isinstance(error, Exception)
    assert (error.reason, error.detail) == ("no_road", "gtFine/x_labelIds.png: no pixel of class road")
    assert str(error) == "no_road: gtFine/x_labelIds.png: no pixel of class road"
