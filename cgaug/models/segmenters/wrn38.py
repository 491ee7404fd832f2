"""The reference's DeepLabv3+ with a WideResNet38 backbone (`DeepWV3Plus`), so its published weights load.

The reference (`gaozhitong/MultiShiftSeg`, like RPL, PEBAL and Meta-OoD) starts from NVIDIA's
Cityscapes model ``DeepLabV3+_WideResNet38_baseline.pth``: the network `DeepWV3Plus` of
NVIDIA/semantic-segmentation (`network/deepv3.py`, `network/wider_resnet.py`; the reference's copy is
`lib/network/deepv3/`). This module rebuilds that architecture with exactly its parameter names
and shapes, so the file loads with ``strict=True``:

- ``mod1``: a 3x3 stem (3 -> 64); ``pool2``, ``mod2`` (3 blocks, 128 ch, stride 2 overall); ``pool3``,
  ``mod3`` (3 blocks, 256 ch); ``mod4`` (6 blocks, 512 ch, the first with stride 2: output stride 8);
  ``mod5`` (3 blocks, 1024 ch, dilation 2); ``mod6`` (1 bottleneck block 512/1024/2048, dilation 4,
  dropout 0.3); ``mod7`` (1 bottleneck block 1024/2048/4096, dilation 4, dropout 0.5). Every block is a
  pre-activation identity block: ``bn1`` (BN + ReLU as ``bn1.0``), ``convs.conv1``, ``convs.bn2``,
  ``convs.conv2`` (bottlenecks also ``convs.bn3``, ``convs.conv3``) and a 1x1 ``proj_conv`` where the
  channels or the stride change;
- ``aspp``: image pooling (``img_conv``) and four branches (``features.0`` 1x1, ``features.1-3`` 3x3
  at rates 12, 24, 36), each conv + BN + ReLU, concatenated (1280 ch);
- ``bot_aspp`` (1x1, 1280 -> 256) and ``bot_fine`` (1x1 on ``mod2``'s output, 128 -> 48);
- ``final``: 3x3 conv + BN + ReLU twice (304 -> 256 -> 256), then the bias-free 1x1 classifier
  ``final.6``. Upsampling is bilinear with ``align_corners=True`` as in the reference.

The checkpoint is usually saved from a ``DataParallel`` model (keys prefixed ``module.``) inside
``{"state_dict": ...}``; both are accepted (`published_state`). Inputs are RGB in [0, 1]
normalised with ImageNet's mean and std (the reference's `lib/configs/config.py:26-27`).

`TINY_WRN38` is the same structure with few channels and one block per module, for CPU tests.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cgaug.models.segmenters.base import CheckpointError

FULL_WRN38: dict[str, Any] = {
    "structure": [3, 3, 6, 3, 1, 1],
    "channels": [[128, 128], [256, 256], [512, 512], [512, 1024], [512, 1024, 2048], [1024, 2048, 4096]],
    "stem": 64, "aspp": 256, "skip": 48, "classes": 19,
}
"""The published network (`DeepWV3Plus(19)`)."""
TINY_WRN38: dict[str, Any] = {
    "structure": [1, 1, 1, 1, 1, 1],
    "channels": [[8, 8], [8, 8], [16, 16], [16, 16], [8, 16, 32], [16, 32, 32]],
    "stem": 8, "aspp": 8, "skip": 4, "classes": 19,
}
"""The same structure with few channels and blocks (about 70 k parameters) for tests; its outputs mean nothing."""
WRN38_DIVISOR = 8  # the output stride: input sizes that are multiples of it need no padding
_DROPOUT = {4: 0.3, 5: 0.5}  # module index (mod6, mod7) -> Dropout2d probability
_ASPP_RATES = (12, 24, 36)  # (6, 12, 18) doubled for output stride 8
_MARKERS = ("mod1.conv1.weight", "bot_fine.weight", "bot_aspp.weight", "final.6.weight")


def upsample(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """The reference's `Upsample`: bilinear, align_corners=True."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())


class IdentityResidualBlock(nn.Module):
    """A pre-activation block: BN-ReLU, then 3x3-3x3 (two channels) or 1x1-3x3-1x1 (three), plus the shortcut."""

    def __init__(self, in_channels: int, channels: list[int], stride: int = 1, dilation: int = 1,
                 dropout: float | None = None):
        super().__init__()
        self.bn1 = _bn_relu(in_channels)
        if len(channels) == 2:
            layers: list[tuple[str, nn.Module]] = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 3, stride=stride, padding=dilation, dilation=dilation,
                                    bias=False)),
                ("bn2", _bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, padding=dilation, dilation=dilation, bias=False)),
            ]
            at = 2
        else:
            layers = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 1, stride=stride, bias=False)),
                ("bn2", _bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, padding=dilation, dilation=dilation, bias=False)),
                ("bn3", _bn_relu(channels[1])),
                ("conv3", nn.Conv2d(channels[1], channels[2], 1, bias=False)),
            ]
            at = 4
        if dropout is not None:
            layers.insert(at, ("dropout", nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        self.proj_conv = (nn.Conv2d(in_channels, channels[-1], 1, stride=stride, bias=False)
                          if stride != 1 or in_channels != channels[-1] else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.bn1(x)
        shortcut = self.proj_conv(pre) if self.proj_conv is not None else x
        return self.convs(pre) + shortcut


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling at output stride 8: image pooling first, then the four branches."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        branches = [nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())]
        branches += [nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=rate, dilation=rate, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU()) for rate in _ASPP_RATES]
        self.features = nn.ModuleList(branches)
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                      nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = upsample(self.img_conv(self.img_pooling(x)), x.shape[2:])
        return torch.cat([pooled, *(branch(x) for branch in self.features)], dim=1)


class DeepWV3Plus(nn.Module):
    """The closed-world network: forward returns logits at the input size (see the module docstring)."""

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        cfg = dict(FULL_WRN38 if config is None else config)
        self.config = cfg
        self.mod1 = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, cfg["stem"], 3, padding=1, bias=False))]))
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = cfg["stem"]
        for index, (count, channels) in enumerate(zip(cfg["structure"], cfg["channels"], strict=True)):
            dilation = 2 if index == 3 else 4 if index > 3 else 1
            blocks = []
            for block in range(count):
                stride = 2 if block == 0 and index == 2 else 1
                blocks.append((f"block{block + 1}", IdentityResidualBlock(
                    in_channels, list(channels), stride=stride, dilation=dilation, dropout=_DROPOUT.get(index))))
                in_channels = channels[-1]
            self.add_module(f"mod{index + 2}", nn.Sequential(OrderedDict(blocks)))
        aspp = cfg["aspp"]
        self.aspp = ASPP(in_channels, aspp)
        self.bot_fine = nn.Conv2d(cfg["channels"][0][-1], cfg["skip"], 1, bias=False)
        self.bot_aspp = nn.Conv2d(5 * aspp, aspp, 1, bias=False)
        self.final = nn.Sequential(
            nn.Conv2d(aspp + cfg["skip"], aspp, 3, padding=1, bias=False), nn.BatchNorm2d(aspp), nn.ReLU(),
            nn.Conv2d(aspp, aspp, 3, padding=1, bias=False), nn.BatchNorm2d(aspp), nn.ReLU(),
            nn.Conv2d(aspp, cfg["classes"], 1, bias=False))

    @property
    def num_classes(self) -> int:
        return int(self.config["classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features z(x): `final` without its classifier, at half the input resolution."""
        x = self.mod1(x)
        m2 = self.mod2(self.pool2(x))
        x = self.mod3(self.pool3(m2))
        x = self.mod7(self.mod6(self.mod5(self.mod4(x))))
        up = upsample(self.bot_aspp(self.aspp(x)), m2.shape[2:])
        return self.final[:-1](torch.cat([self.bot_fine(m2), up], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(self.final[-1](self.features(x)), x.shape[2:])


def is_wrn38_state(state: dict[str, Any]) -> bool:
    """Whether a state dict (optionally ``module.``-prefixed) holds DeepWV3Plus weights, by its key names."""
    keys = {k.removeprefix("module.") for k in state}
    return all(marker in keys for marker in _MARKERS)


def config_from_state(state: dict[str, Any]) -> dict[str, Any]:
    """The architecture config of DeepWV3Plus weights (the full one, or a smaller variant such as the tiny one)."""
    def shape(key: str) -> tuple[int, ...]:
        return tuple(state[key].shape)

    structure, channels = [], []
    for mod in range(2, 8):
        blocks = sorted({int(k.split(".")[1].removeprefix("block")) for k in state if k.startswith(f"mod{mod}.")})
        structure.append(len(blocks))
        convs = [k for k in ("conv1", "conv2", "conv3") if f"mod{mod}.block1.convs.{k}.weight" in state]
        channels.append([shape(f"mod{mod}.block1.convs.{k}.weight")[0] for k in convs])
    aspp, skip = shape("bot_aspp.weight")[0], shape("bot_fine.weight")[0]
    return {"structure": structure, "channels": channels, "stem": shape("mod1.conv1.weight")[0], "aspp": aspp,
            "skip": skip, "classes": shape("final.6.weight")[0]}


def published_state(payload: dict[str, Any], origin: str) -> dict[str, Any]:
    """The DeepWV3Plus state dict of a checkpoint: ``{"state_dict": ...}`` or bare, ``module.`` prefixes removed.

    Checkpoints saved before BatchNorm counted its batches (PyTorch < 0.4.1) lack the
    ``num_batches_tracked`` buffers; they are filled with zeros (unused by the forward pass), as torch
    itself does for such files. Nothing else is added or dropped, so loading stays strict.
    """
    state = payload.get("state_dict", payload)
    if not isinstance(state, dict):
        raise CheckpointError(f"{origin}: 'state_dict' holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not any(k.endswith("num_batches_tracked") for k in state):
        for key in [k for k in state if k.endswith(".running_mean")]:
            state[key.removesuffix("running_mean") + "num_batches_tracked"] = torch.tensor(0)
    return state


def build_wrn38(state: dict[str, Any] | None, origin: str, config: dict[str, Any] | None = None) -> DeepWV3Plus:
    """DeepWV3Plus with `state` (from `published_state`) loaded strictly; None: the config's random weights."""
    from cgaug.models.segmenters.base import load_state

    if config is None:
        config = FULL_WRN38 if state is None else _config_or_error(state, origin)
    model = DeepWV3Plus(config)
    if state is not None:
        load_state(model, state, origin, {"arch": "DeepWV3Plus (WideResNet38)", "classes": config["classes"]})
    return model


def _config_or_error(state: dict[str, Any], origin: str) -> dict[str, Any]:
    try:
        return config_from_state(state)
    except (KeyError, ValueError, IndexError) as error:
        raise CheckpointError(f"{origin}: looks like a WideResNet38 DeepLabV3+ checkpoint but its layers do not "
                              f"describe one ({type(error).__name__}: {error})") from None
