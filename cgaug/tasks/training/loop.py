"""Two-stage noise-aware training (method.md, Part 2): the loop, checkpoints, exact resume. No Prefect.

Stage 1 trains only the uncertainty function (every other parameter frozen); stage 2 unfreezes the
configured groups with its own optimizer, learning rate (per-group multipliers), weight decay and
gradient clipping. By default the whole model runs in train mode as in the reference, so frozen
batch-norm layers still normalise with batch statistics and update their running ones;
`frozen_mode: eval` keeps frozen modules in eval mode instead. A stage with `mask_losses` adds
Mask2Former's own class / mask / dice losses. Each epoch ends with an optional validation, a
checkpoint written atomically (``checkpoints/epoch-NNNN.pt`` and ``checkpoints/last.pt``;
``checkpoints/best.pt`` when the validation AP improves) and a metrics record.

Why resume is exact: the data order, variant choice, crops and anomaly objects derive from (run
seed, epoch, source id), the loss's pixel sampling from (run seed, epoch, step), and the
checkpoint holds the model, optimizer, scheduler and loss scaler; torch's RNG (dropout) is seeded from
(run seed, epoch) at each epoch start (its state is also recorded in the checkpoint). A run
resumed from the checkpoint of epoch e therefore computes the same next step as the run that went
on, on the same hardware, software and number of data workers.

Run directory::

    RUN_DIR/config.json         the resolved TrainConfig + inputs (source, shards, bank), written first
    RUN_DIR/checkpoints/*.pt    training state per epoch, last, best
    RUN_DIR/metrics.json        one record per epoch (rewritten atomically after each epoch)
    RUN_DIR/model.pt            the final model, loadable by `cgaug eval --checkpoint` (anomaly score u)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cgaug.config import EvalOptions, TrainConfig, TrainStageConfig
from cgaug.seeds import derive_seed
from cgaug.storage.fs import Root, open_root

if TYPE_CHECKING:
    import torch

    from cgaug.models.segmenters.uncertainty import UncertaintyModel

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
MODEL_NAME = "model.pt"
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"
POLY_POWER = 0.9
LOSS_KEYS = ("loss", "unc", "unc_out_in", "unc_out_aug", "unc_pair", "ce", "ce_sel", "selection_rate",
             "m2f_class", "m2f_mask", "m2f_dice")


class RunDirError(ValueError):
    """A run directory that cannot be started or resumed; the message names the file."""


def stage_of(cfg: TrainConfig, epoch: int) -> int:
    """1 during the first `stage1.epochs` epochs, then 2."""
    return 1 if epoch < cfg.stage1.epochs else 2


def stage_config(cfg: TrainConfig, stage: int) -> TrainStageConfig:
    return cfg.stage1 if stage == 1 else cfg.stage2


class StepRunner:
    """One stage's optimizer, scheduler and loss scaler, and the training step itself."""

    def __init__(self, model: UncertaintyModel, cfg: TrainConfig, stage: int, device: torch.device,
                 steps_per_epoch: int):
        import torch

        from cgaug.models.segmenters.uncertainty import set_trainable

        self.model, self.cfg, self.stage, self.device = model, cfg, stage, device
        # Originals paired with themselves and nothing pasted: the augmented half of the batch is the original
        # half exactly, so one forward pass serves both (batch-norm statistics of a batch and of it twice agree)
        self.self_paired = cfg.data.augmented == "originals" and not cfg.data.anomaly_mix
        stage_cfg = self.stage_cfg = stage_config(cfg, stage)
        self.trainable = list(stage_cfg.trainable)
        self.params = set_trainable(model, self.trainable, stage_cfg.frozen_mode, stage_cfg.eval_groups)
        if stage_cfg.mask_losses and not hasattr(model, "forward_with_queries"):
            raise ValueError(f"stage{stage}.mask_losses: Mask2Former's own losses need a mask2former model, "
                             f"not a {model.kind} one")
        self.mask_points = cfg.loss.mask_points or int(getattr(getattr(getattr(model, "hf", None), "config", None),
                                                                "train_num_points", 12544))
        optimizer = torch.optim.AdamW if stage_cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(param_groups(model, stage_cfg), lr=stage_cfg.lr, weight_decay=stage_cfg.weight_decay)
        self.grad_clip = stage_cfg.grad_clip if stage_cfg.grad_clip is not None else cfg.run.grad_clip
        total = max(1, stage_cfg.epochs * steps_per_epoch)
        if stage_cfg.scheduler == "poly":
            def factor(step: int) -> float:
                return max(0.0, 1.0 - step / total) ** POLY_POWER
        else:
            def factor(step: int) -> float:
                return 1.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.amp_dtype = None
        if cfg.run.amp and device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    @property
    def lr(self) -> float:
        """The stage's current base learning rate (groups with a multiplier run at a multiple of it)."""
        return float(self.stage_cfg.lr * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch))

    def restore_modes(self) -> None:
        """Back to this stage's train/eval modes after validation put the whole model in eval mode."""
        from cgaug.models.segmenters.uncertainty import set_trainable

        set_trainable(self.model, self.trainable, self.stage_cfg.frozen_mode, self.stage_cfg.eval_groups)

    def step(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, float]:
        """Forward originals and augmented images together, the loss, backward, clip, update."""
        import torch

        from cgaug.tasks.training.losses import training_loss

        image = batch["image"].to(self.device, non_blocking=True)
        aug = batch["aug_image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        aug_label = batch["aug_label"].to(self.device, non_blocking=True)
        n = image.shape[0]
        queries = None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            if self.stage_cfg.mask_losses:
                logits, u, queries = self.model.forward_with_queries(torch.cat([image, aug]))
            elif self.self_paired:
                logits, u = self.model(image)
                logits, u = torch.cat([logits, logits]), torch.cat([u, u])
            else:
                logits, u = self.model(torch.cat([image, aug]))
        terms = training_loss(logits[:n], u[:n], label, logits[n:], u[n:], aug_label, self.cfg.loss,
                              self.model.num_classes, generator, mask_outputs=queries, mask_points=self.mask_points)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return terms.parts

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def param_groups(model: UncertaintyModel, stage: TrainStageConfig) -> list[dict[str, Any]]:
    """Optimizer parameter groups of a stage: per model group its lr multiplier, and `norm_weight_decay` for
    normalisation, embedding and position-bias parameters (detectron2's WEIGHT_DECAY_NORM / _EMBED rule,
    which the reference's Mask2Former stage 2 uses: `train_m2f.py:246-265`).

    Raises ValueError naming multiplier keys that are not groups of the model.
    """
    from torch import nn

    modules = model.group_modules()
    unknown = sorted(set(stage.lr_multipliers) - set(modules))
    if unknown:
        raise ValueError(f"lr_multipliers {unknown} are not groups of a {model.kind} model; expected some of "
                         f"{list(modules)}")
    special: set[int] = set()
    if stage.norm_weight_decay is not None:
        norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
                 nn.LocalResponseNorm, nn.Embedding)
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, norms) or "relative_position_bias_table" in name or "absolute_pos_embed" in name:
                    special.add(id(p))
    seen: set[int] = set()
    groups: list[dict[str, Any]] = []
    for name in stage.trainable:
        params = [p for m in modules[name] for p in m.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        lr = stage.lr * stage.lr_multipliers.get(name, 1.0)
        for is_special in (False, True):
            chosen = [p for p in params if (id(p) in special) == is_special]
            if chosen:
                decay = stage.norm_weight_decay if is_special else stage.weight_decay
                groups.append({"params": chosen, "lr": lr, "weight_decay": decay, "name": name})
    if not groups:
        raise ValueError(f"the groups {stage.trainable} of a {model.kind} model hold no parameter")
    return groups


def loss_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The pixel-sampling randomness of one step: a function of (run seed, epoch, step) only."""
    import torch

    return torch.Generator().manual_seed(derive_seed(seed, "loss", epoch, step))


@dataclass
class RunState:
    """What a checkpoint records besides the tensors."""

    next_epoch: int = 0
    step: int = 0
    best_ap: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _save(root: Root, path: str, payload: dict[str, Any]) -> None:
    import torch

    root.write_atomic(path, lambda f: torch.save(payload, f))


def _load(root: Root, path: str) -> dict[str, Any]:
    import torch

    if not root.exists(path):
        raise RunDirError(f"{root.uri(path)}: no checkpoint to resume from (the run finished no epoch yet)")
    with root.open(path) as f:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and torch errors all mean "not a usable checkpoint"
            raise RunDirError(f"{root.uri(path)}: not a readable checkpoint ({type(error).__name__}: {error})"
                              ) from None


def start_run(out: str, cfg: TrainConfig, inputs: dict[str, Any]) -> Root:
    """Create RUN_DIR with config.json; refuses a directory that already holds a run."""
    root = open_root(out)
    document = {"config": cfg.model_dump(mode="json"), "fingerprint": cfg.fingerprint(), "inputs": inputs}
    if root.exists(CONFIG_NAME):
        previous = json.loads(root.read_bytes(CONFIG_NAME))
        same = previous.get("fingerprint") == document["fingerprint"] and previous.get("inputs") == inputs
        if root.exists(LAST) or not same:  # a run that crashed before its first checkpoint may start again
            raise RunDirError(f"{root.uri(CONFIG_NAME)} exists: {out} already holds a run; resume it "
                              "(cgaug train --resume RUN_DIR) or choose another --out")
    root.write_bytes_atomic(CONFIG_NAME, json.dumps(document, indent=2).encode() + b"\n")
    return root


def read_run(out: str) -> tuple[Root, TrainConfig, dict[str, Any]]:
    """(root, config, inputs) of an existing run directory."""
    root = open_root(out, create=False)
    if not root.exists(CONFIG_NAME):
        raise RunDirError(f"{root.uri(CONFIG_NAME)}: no such file; {out} is not a cgaug training run directory")
    document = json.loads(root.read_bytes(CONFIG_NAME))
    return root, TrainConfig.model_validate(document["config"]), dict(document["inputs"])


def _epoch_record(epoch: int, stage: int, sums: dict[str, float], steps: int, images: int, seconds: float,
                  lr: float) -> dict[str, Any]:
    record: dict[str, Any] = {"epoch": epoch, "stage": stage, "steps": steps, "images": images,
                              "seconds": round(seconds, 3), "images_per_s": images / seconds if seconds else 0.0,
                              "lr": lr}
    record.update({key: (sums.get(key, 0.0) / steps if steps else math.nan) for key in LOSS_KEYS})
    return record


def validate(model: UncertaintyModel, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """AUROC / AP / FPR@95 and mIoU on every validation set, keyed ``val/NAME/METRIC``; `val/ap` is their mean AP."""
    from cgaug.models.segmenters.uncertainty import trained_segmenter
    from cgaug.tasks.evaluation.evaluate import evaluate_dataset
    from cgaug.tasks.training.dataset import open_validation

    segmenter = trained_segmenter(model.export_config() | {"mean": cfg.data.mean, "std": cfg.data.std}, {},
                                  "training", model=model)
    segmenter.model.eval()
    options = EvalOptions(limit=cfg.run.validation_limit, device=str(device), amp=cfg.run.amp, examples=0)
    out: dict[str, float] = {}
    aps = []
    for spec in cfg.run.validation:
        dataset = open_validation(spec)
        result = evaluate_dataset(segmenter, dataset, options)
        name = dataset.kind
        anomaly = result.anomaly_metrics(options.fpr_rule) or {}
        for key in ("auroc", "ap", "fpr95"):
            if key in anomaly:
                out[f"val/{name}/{key}"] = float(anomaly[key])
        if "ap" in anomaly:
            aps.append(float(anomaly["ap"]))
        if result.confusion is not None:
            out[f"val/{name}/miou"] = float(result.confusion.compute()["miou"])
    if aps:
        out["val/ap"] = sum(aps) / len(aps)
    return out


def train(out: str, *, cfg: TrainConfig | None = None, source: str | None = None, shards: str | None = None,
          bank: str | None = None, resume: bool = False, stop_after_epoch: int | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the run at `out`; returns {"out", "epochs", "best_ap", "history", "model"}.

    Args:
        out: run directory (path or fsspec URI).
        cfg, source, shards, bank: a new run's configuration and inputs (ignored on resume, where
            RUN_DIR/config.json holds them).
        resume: continue from ``checkpoints/last.pt``.
        stop_after_epoch: end after this epoch (0-based) as if interrupted (tests, time-boxed jobs).
        on_epoch: called with each epoch's metrics record after its checkpoint is written.

    Raises:
        RunDirError: a new run into a used directory, or a resume without config or checkpoint.
        TrainDataError, FileNotFoundError, CheckpointError: missing or inconsistent inputs.
    """

    from cgaug.models.device import torch_device
    from cgaug.models.segmenters.training import build_train_model
    from cgaug.tasks.training.dataset import PairDataset, make_loader

    # 1. The run directory: a new one records its inputs first; a resumed one supplies them.
    if resume:
        root, cfg, inputs = read_run(out)
    else:
        if cfg is None or source is None or (shards is None and cfg.data.augmented == "shards"):
            raise ValueError("a new run needs cfg, source and shards (shards only with data.augmented 'shards'), "
                             "or resume=True")
        inputs = {"source": source, "shards": shards, "bank": bank}
    # 2. Inputs are checked before anything is written, so a bad input leaves no run behind.
    device = torch_device(cfg.run.device, "run.device")
    dataset = PairDataset(inputs["source"], inputs["shards"], cfg.data, cfg.run.seed, inputs.get("bank"))
    workers = cfg.data.num_workers
    steps_per_epoch = dataset.batches_per_epoch(cfg.data.batch_size, workers)
    if steps_per_epoch == 0:
        raise ValueError(f"{inputs['shards']}: {len(dataset)} usable pairs make no full batch of "
                         f"data.batch_size={cfg.data.batch_size} (with {workers} workers)")
    if cfg.run.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.run.max_steps_per_epoch)
    model = build_train_model(cfg.model, cfg.run.seed).to(device)
    if not resume:
        root = start_run(out, cfg, inputs)
    state = RunState()
    runner: StepRunner | None = None
    # 3. Resume: tensors, optimizer state of the stage in progress, counters. Torch's RNG needs no restore:
    #    every epoch seeds it from (run seed, epoch); the checkpoint records its state for audits only.
    if resume:
        checkpoint = _load(root, LAST)
        model.load_state_dict(checkpoint["model"])
        state = RunState(checkpoint["epoch"] + 1, checkpoint["step"], checkpoint["best_ap"],
                         list(checkpoint["history"]))
        if state.next_epoch < cfg.stage1.epochs + cfg.stage2.epochs \
                and stage_of(cfg, state.next_epoch) == checkpoint["stage"]:
            runner = StepRunner(model, cfg, checkpoint["stage"], device, steps_per_epoch)
            runner.load_state_dict(checkpoint["runner"])
    loader = make_loader(dataset, cfg.data.batch_size, workers, cfg.data.prefetch_factor,
                         pin_memory=device.type == "cuda")
    total_epochs = cfg.stage1.epochs + cfg.stage2.epochs
    # 4. Epochs: a new optimizer at each stage start; validation, checkpoint, metrics after each.
    end = total_epochs if stop_after_epoch is None else min(total_epochs, stop_after_epoch + 1)
    for epoch in range(state.next_epoch, end):
        with _epoch_rng(cfg.run.seed, epoch, device):
            stage = stage_of(cfg, epoch)
            if runner is None or runner.stage != stage:
                runner = StepRunner(model, cfg, stage, device, steps_per_epoch)
            runner.restore_modes()
            dataset.set_epoch(epoch)
            sums: dict[str, float] = {}
            steps = images = 0
            started = time.perf_counter()
            iterator = iter(loader)
            if cfg.run.progress:
                from tqdm import tqdm

                iterator = iter(tqdm(iterator, total=steps_per_epoch, desc=f"epoch {epoch} (stage {stage})",
                                     unit="step"))
            for batch in iterator:
                parts = runner.step(batch, loss_generator(cfg.run.seed, epoch, steps))
                for key in LOSS_KEYS:
                    sums[key] = sums.get(key, 0.0) + parts.get(key, 0.0)
                steps += 1
                images += 2 * batch["image"].shape[0]
                state.step += 1
                if steps >= steps_per_epoch:
                    break
            record = _epoch_record(epoch, stage, sums, steps, images, time.perf_counter() - started, runner.lr)
            if cfg.run.validation and (epoch + 1) % cfg.run.validate_every == 0:
                record.update(validate(model, cfg, device))
                runner.restore_modes()
            state.history.append(record)
            improved = "val/ap" in record and (state.best_ap is None or record["val/ap"] > state.best_ap)
            if improved:
                state.best_ap = record["val/ap"]
            _checkpoint(root, model, runner, state, epoch, stage, improved)
            root.write_bytes_atomic(METRICS_NAME, json.dumps(state.history, indent=2).encode() + b"\n")
            logger.info("epoch %d (stage %d): %s", epoch, stage, {k: record[k] for k in ("loss", "selection_rate")})
            if on_epoch is not None:
                on_epoch(record)
    finished = len(state.history) >= total_epochs
    if finished:
        export = model.export_config() | {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}
        _save(root, MODEL_NAME, {"config": export, "state_dict": model.state_dict()})
    return {"out": root.uri(), "epochs": len(state.history), "finished": finished, "best_ap": state.best_ap,
            "history": state.history, "model": root.uri(MODEL_NAME) if finished else None}


@contextmanager
def _epoch_rng(seed: int, epoch: int, device: torch.device) -> Iterator[None]:
    """Torch's global RNG (dropout) seeded from (run seed, epoch) for the epoch, the caller's state restored after.

    Seeding per epoch makes a resumed run draw what the uninterrupted run drew, whatever the process did before.
    """
    import torch

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "torch", epoch, 0))
        yield


def _checkpoint(root: Root, model: UncertaintyModel, runner: StepRunner, state: RunState, epoch: int, stage: int,
                best: bool) -> None:
    import torch

    rng = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    payload = {"model": model.state_dict(), "runner": runner.state_dict(), "rng": rng, "epoch": epoch,
               "stage": stage, "step": state.step, "best_ap": state.best_ap, "history": state.history,
               "export": model.export_config()}
    _save(root, f"checkpoints/epoch-{epoch:04d}.pt", payload)
    _save(root, LAST, payload)
    if best:
        _save(root, BEST, payload)
