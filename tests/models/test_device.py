"""The device and dtype policy: auto picks CUDA + bf16 when there is CUDA, CPU + fp32 otherwise."""

from __future__ import annotations

import typing

import pytest
import torch

from cgaug.config import DtypeName
from cgaug.models.device import DTYPE_NAMES, dtype_name, resolve_device, torch_device, torch_dtype


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def cuda(monkeypatch):
    """A CUDA machine as far as the policy can tell (no kernel runs)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)


def test_auto_is_the_cpu_without_cuda_and_cuda_with_it(monkeypatch, no_cuda):
    assert resolve_device("auto", "generator.device") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "generator.device") == "cuda"


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "meta"])
def test_explicit_devices_are_kept_as_written_when_present(cuda, name):
    assert resolve_device(name, "generator.device") == name


def test_an_invalid_device_name_is_an_error_naming_the_field_and_the_value():
    with pytest.raises(ValueError, match=r"^filters\.device: expected 'auto' or a torch device .* found 'gpu0'$"):
        resolve_device("gpu0", "filters.device")


def test_cuda_without_cuda_is_an_error_naming_the_field(no_cuda):
    assert resolve_device("cuda", "generator.device") == "cuda"  # a config may be read where it is not run
    with pytest.raises(ValueError, match=r"generator\.device 'cuda' requested but CUDA is not available"):
        torch_device("cuda", "generator.device")
    assert torch_device("auto", "generator.device") == torch.device("cpu")


def test_auto_dtype_is_bf16_on_cuda_and_fp32_on_the_cpu(cuda):
    assert dtype_name("auto", "cuda") == "bf16"
    assert dtype_name("auto", "cuda:1") == "bf16"
    assert dtype_name("auto", "cpu") == "fp32"  # bf16 convolutions crawl on CPUs


def test_auto_dtype_is_fp32_on_a_gpu_without_bf16_or_without_cuda(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert dtype_name("auto", "cuda") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dtype_name("auto", "cuda") == "fp32"


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_explicit_dtypes_win_on_any_device(no_cuda, name):
    assert dtype_name(name, "cpu") == name


def test_dtype_names_map_to_torch_dtypes_and_match_the_config_choices():
    assert {name: torch_dtype(name) for name in DTYPE_NAMES} == {
        "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    assert set(typing.get_args(DtypeName)) == {"auto", *DTYPE_NAMES}
