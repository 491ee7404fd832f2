"""The fixed protocol of `cgaug experiment mini`: sizes, counts, seeds and the three training recipes.

Everything that decides a number in the table is a field of `MiniProtocol` and is written to
PROTOCOL.json next to the results; nothing is tuned on the test world. The recipes:

- A: `data.augmented: originals`, no anomaly mix, CE only (betas (1, 0): with no OOD pixel and an
  identical partner image, the uncertainty loss is exactly zero), every group but the uncertainty
  head trained from random weights, poly learning rate;
- B and C: the tiny preset's two stages from A's weights (stage 1: the uncertainty head W; stage 2:
  ASPP, decoder and W) with the reference's margins and betas and the anomaly mix of bank objects
  into originals; B pairs each original with itself, C with its painted CG-Aug variant. The
  protocol is the same for both, so any difference comes from the generated images.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cgaug.config import CGAugConfig, StrictModel, TrainConfig, load_train_config

METHODS = ("A", "B", "C")
METHOD_NAMES = {"A": "closed world (energy)", "B": "OOD only (anomaly mix, no generated images)",
                "C": "CG-Aug (painter variants, noise-aware)"}
Steps = Literal["small", "full"]


class MiniProtocol(StrictModel):
    """The miniature experiment. Defaults: the documented run (3 seeds, ~20 minutes on 2 cores)."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    train_scenes: int = Field(200, ge=8)  # clear-day originals with labels
    test_scenes: int = Field(60, ge=2)  # test-world source scenes (each: one shifted and one clear-day frame)
    height: int = Field(128, ge=64)
    width: int = Field(256, ge=64)
    variants: int = Field(1, ge=1)  # painted CG-Aug variants per original (C)
    world_seed: int = 0  # the training world's scenes; the test world uses world_seed + 1000 (disjoint layouts)
    batch_size: int = Field(8, ge=1)
    closed_epochs: int = Field(16, ge=1)  # A
    stage1_epochs: int = Field(2, ge=0)  # B and C
    stage2_epochs: int = Field(6, ge=1)
    closed_lr: float = 3e-3
    stage1_lr: float = 1e-3
    stage2_lr: float = 1e-4
    test_classes: int = Field(8, ge=1)  # unseen OOD classes in the test world
    masks_per_class: int = Field(3, ge=1)
    threads: int | None = Field(2, ge=1)  # torch threads; None: torch's default

    def describe(self) -> str:
        return (f"{len(self.seeds)} seeds, {self.train_scenes} training scenes at {self.height}x{self.width}, "
                f"{self.test_scenes} test scenes; A {self.closed_epochs} epochs, B/C {self.stage1_epochs}+"
                f"{self.stage2_epochs} epochs")


STEPS: dict[str, dict[str, Any]] = {
    "full": {},
    # a smoke run of the whole protocol: a few minutes on 2 cores, numbers not meaningful
    "small": {"seeds": [0], "train_scenes": 40, "test_scenes": 12, "closed_epochs": 4, "stage1_epochs": 1,
              "stage2_epochs": 1},
}
"""`--steps`: presets of the protocol; explicit options override them."""


def protocol_for(steps: Steps = "full", **overrides: Any) -> MiniProtocol:
    """The protocol of a `--steps` preset with explicit options (None: keep the preset's) on top."""
    values = dict(STEPS[steps])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return MiniProtocol.model_validate(values)


def method_config(protocol: MiniProtocol, method: str, seed: int, closed: str | None = None) -> TrainConfig:
    """The training configuration of method A, B or C for one seed; B and C start from `closed` (A's export)."""
    crop = (protocol.height, protocol.width)
    common: dict[str, Any] = {
        "run": {"seed": seed, "progress": False, "device": "cpu"},
        "data": {"batch_size": protocol.batch_size, "crop_size": crop, "num_workers": 0, "flip_probability": 0.5},
    }
    if method == "A":
        overrides = _merge(common, {
            "data": {"augmented": "originals", "anomaly_mix": False, "mixup": False},
            "loss": {"betas": (1.0, 0.0)},
            "stage1": {"epochs": 0},
            "stage2": {"epochs": protocol.closed_epochs, "lr": protocol.closed_lr, "scheduler": "poly",
                       "trainable": ["encoder", "aspp", "decoder", "classifier"]},
        })
    elif method in ("B", "C"):
        if closed is None:
            raise ValueError(f"method {method} fine-tunes the closed-world model: pass its checkpoint")
        overrides = _merge(common, {
            "model": {"checkpoint": closed},
            "data": {"augmented": "originals" if method == "B" else "shards"},
            "stage1": {"epochs": protocol.stage1_epochs, "lr": protocol.stage1_lr},
            "stage2": {"epochs": protocol.stage2_epochs, "lr": protocol.stage2_lr},
        })
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return load_train_config(preset="tiny", overrides=overrides, environ={})


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for key, value in extra.items():
        out.setdefault(key, {}).update(value)
    return out


def generation_config(kind: Literal["train", "shifted", "clear"], seed: int = 0, variants: int = 1) -> CGAugConfig:
    """The painter run of one world: the training variants (training OOD classes, the reference's prompt mix),
    the shifted test frames (a weather / time / place prompt for every frame) or the clear-day test frames
    (the plain prompt, as the originals). The two test runs share their seed, so they paste the same objects
    at the same places and differ by domain only."""
    split = "train" if kind == "train" else "test"
    prompts: dict[str, Any] = {}
    if kind == "shifted":
        prompts = {"domain_probability": 1.0}
    elif kind == "clear":
        prompts = {"domain_probability": 0.0}
    compose: dict[str, Any] = {"ood_classes": "train"} if kind == "train" else {}
    return CGAugConfig.model_validate({
        "run": {"seed": seed, "split": split, "variants": variants if kind == "train" else 1, "shard_size": 32},
        "generator": {"model": "painter"}, "filters": {"mode": "none"}, "prompts": prompts, "compose": compose,
    })
