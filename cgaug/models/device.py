"""The one device and dtype policy of every model stage (generator, filters, evaluation, training).

`auto` means CUDA when present, and bf16 there (as fast as fp16 on current GPUs,
without fp16's VAE overflow), fp32 on the CPU, where bf16 convolutions crawl.
Config values are checked here, so an error names the config key (`field`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("fp32", "fp16", "bf16")


def resolve_device(name: str, field: str = "device") -> str:
    """`auto` or a torch device string, checked; `field` names the config key in errors.

    An explicit CUDA device is accepted on a machine without CUDA (a config may be read where it
    is not run, e.g. to record generator settings); `torch_device` refuses it.
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"{field}: expected 'auto' or a torch device such as 'cuda:0', found {name!r}") from exc
    return name


def torch_device(name: str, field: str = "device") -> torch.device:
    """The device to put tensors on now: `resolve_device`, and CUDA must be there if named.

    Raises:
        ValueError: not a device, or CUDA requested on a machine without it.
    """
    import torch

    device = torch.device(resolve_device(name, field))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field} {name!r} requested but CUDA is not available; use --device cpu or auto")
    return device


def dtype_name(name: str, device: str) -> str:
    """The dtype name for `name` (`auto` or one of DTYPE_NAMES) on `device`."""
    if name != "auto":
        return name
    import torch

    on_cuda = device.startswith("cuda") and torch.cuda.is_available()
    return "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
