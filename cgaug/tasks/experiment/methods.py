"""Training the three methods with the project's training loop, and A's closed-world export.

A run directory that already holds its final model is reused, and one interrupted after an epoch
resumes (`cgaug.tasks.training.loop.train`), so re-running an experiment redoes nothing it has.
"""

from __future__ import annotations

from pathlib import Path

from cgaug.tasks.experiment.protocol import MiniProtocol, method_config
from cgaug.tasks.training.loop import LAST, MODEL_NAME, train

CLOSED_NAME = "closed.pt"


def train_method(run_dir: Path, protocol: MiniProtocol, method: str, seed: int, source: str,
                 shards: str | None = None, closed: str | None = None) -> str:
    """Train method A, B or C for one seed; returns the checkpoint to evaluate.

    A returns its closed-world export (`export_closed_world`, scored by energy); B and C their
    training export ``model.pt`` (scored by u).
    """
    cfg = method_config(protocol, method, seed, closed)
    model = run_dir / MODEL_NAME
    if not model.is_file():
        resume = (run_dir / LAST).is_file()
        train(str(run_dir), cfg=None if resume else cfg, source=source,
              shards=shards if cfg.data.augmented == "shards" else None, resume=resume)
    if method == "A":
        return export_closed_world(model, run_dir / CLOSED_NAME)
    return str(model)


def export_closed_world(model_pt: Path, dest: Path) -> str:
    """The plain segmenter inside a training export, as an smp checkpoint: its anomaly score is the energy.

    Training A updates the classifier but never the uncertainty head W (a copy of the classifier
    taken at random initialisation), so A's own u is meaningless; the closed-world model is the smp
    network alone, and B and C start from it with W copied from its trained classifier.
    """
    import torch

    if not dest.is_file():
        payload = torch.load(model_pt, map_location="cpu", weights_only=True)
        export = payload["config"]
        state = {key.removeprefix("model."): value for key, value in payload["state_dict"].items()
                 if key.startswith("model.")}
        config = dict(export["smp"], mean=list(export["mean"]), std=list(export["std"]))
        partial = dest.with_suffix(".partial")
        torch.save({"config": config, "state_dict": state}, partial)
        partial.replace(dest)
    return str(dest)
