"""The `cgaug-experiment` flow: the miniature world, three methods, the table (`cgaug experiment mini`).

Prefect wiring of `cgaug.tasks.experiment`: the worlds are written, painted by the `cgaug` flow
(as sub-flows, with the painter generator), the methods trained and their predictions saved per
seed, and the table computed from the saved predictions only. Every step skips what the output
folder already holds, so an interrupted run continues where it stopped.

Output folder::

    world/                      originals, test scenes, banks (`cgaug.tasks.experiment.world`)
    painted/{train,shifted,clear}/   cgaug output roots: C's variants and the two test sets
    runs/seed{S}/{A,B,C}/       training run directories (A also closed.pt)
    predictions/*.npz           per method, seed and test set: float16 scores, uint8 predictions
    results.json, results.md, figure.png, PROTOCOL.json
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task

from cgaug.fixtures import write_class_masks, write_fixture_dataset, write_fixtures
from cgaug.flows.generate import generate_dataset_flow
from cgaug.tasks.experiment.methods import train_method
from cgaug.tasks.experiment.predict import (
    TestSet,
    load_predictions,
    load_test_set,
    predict,
    save_predictions,
    set_metrics,
)
from cgaug.tasks.experiment.protocol import METHODS, MiniProtocol, generation_config
from cgaug.tasks.experiment.report import claim, figure, markdown, summarise
from cgaug.tasks.experiment.world import TEST_SPLIT, TEST_WORLD_OFFSET, unseen_ood_classes

TEST_SETS = ("shifted", "clear")
FIGURE_FRAMES = 4


def prediction_path(out: Path, method: str, seed: int, test_set: str) -> Path:
    return out / "predictions" / f"{method}-seed{seed}-{test_set}.npz"


@task(name="experiment-world")
def world_task(out: Path, protocol: MiniProtocol) -> dict[str, str]:
    """Write the training originals (with their bank) and the test scenes (with the unseen classes' bank)."""
    from cgaug.storage.bank_sources import build_from_folder

    world = out / "world"
    train, test, test_bank = world / "train", world / "test", world / "test_bank"
    size = {"height": protocol.height, "width": protocol.width}
    if not (train / "bank.parquet").is_file():
        write_fixture_dataset(train, images=protocol.train_scenes, split="train", seed=protocol.world_seed, **size)
    bank = test_bank / "test_bank.parquet"
    if not bank.is_file():
        test_seed = protocol.world_seed + TEST_WORLD_OFFSET
        write_fixtures(test, images=protocol.test_scenes, split=TEST_SPLIT, seed=test_seed, **size)
        write_class_masks(test_bank / "masks", unseen_ood_classes(protocol.test_classes), test_seed,
                          protocol.masks_per_class)
        build_from_folder(str(test_bank / "masks"), str(bank))
    return {"train": str(train), "test": str(test), "test_bank": str(bank)}


@task(name="experiment-train", task_run_name="train-{method}-seed{seed}")
def train_task(out: Path, protocol: MiniProtocol, method: str, seed: int, source: str, shards: str,
               closed: str | None) -> str:
    return train_method(out / "runs" / f"seed{seed}" / method, protocol, method, seed, source, shards, closed)


@task(name="experiment-predict", task_run_name="predict-{method}-seed{seed}")
def predict_task(out: Path, method: str, seed: int, checkpoint: str, tests: dict[str, TestSet]) -> None:
    for name, test in tests.items():
        path = prediction_path(out, method, seed, name)
        if not path.is_file():
            scores, predictions = predict(checkpoint, test)
            save_predictions(path, scores, predictions, test.sample_ids)


def table_metrics(out: Path, protocol: MiniProtocol, tests: dict[str, TestSet]) -> dict[str, Any]:
    """{method: {seed: {set: metrics}}} from the saved predictions alone."""
    return {method: {seed: {name: set_metrics(test, *load_predictions(prediction_path(out, method, seed, name), test))
                            for name, test in tests.items()}
                     for seed in protocol.seeds}
            for method in METHODS}


def figure_frames(test: TestSet, count: int = FIGURE_FRAMES) -> list[int]:
    """Frames with an object, one per domain first (in sample order), for the figure."""
    seen, picked = set(), []
    for i, domain in enumerate(test.domains):
        if (test.ood[i] == 1).any() and domain not in seen:
            seen.add(domain)
            picked.append(i)
    return picked[:count]


@flow(name="cgaug-experiment", log_prints=True)
def experiment_flow(out: str, protocol: MiniProtocol | None = None) -> dict[str, Any]:
    """Run the miniature experiment into `out` (see the module docstring); returns the summary and the claim."""
    import torch

    protocol = protocol or MiniProtocol()
    logger = get_run_logger()
    if protocol.threads:
        torch.set_num_threads(protocol.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "PROTOCOL.json").write_text(json.dumps(protocol.model_dump(mode="json"), indent=2) + "\n")
    world = world_task(dest, protocol)
    painted = {"train": str(dest / "painted" / "train"), "shifted": str(dest / "painted" / "shifted"),
               "clear": str(dest / "painted" / "clear")}
    generate_dataset_flow(source=world["train"], out=painted["train"], bank=f"{world['train']}/bank.parquet",
                          config=generation_config("train", protocol.world_seed, protocol.variants))
    for name in TEST_SETS:
        generate_dataset_flow(source=world["test"], out=painted[name], bank=world["test_bank"],
                              config=generation_config(name, protocol.world_seed + TEST_WORLD_OFFSET))
    tests = {name: load_test_set(painted[name], name) for name in TEST_SETS}
    for seed in protocol.seeds:
        closed = train_task(dest, protocol, "A", seed, world["train"], painted["train"], None)
        predict_task(dest, "A", seed, closed, tests)
        for method in ("B", "C"):
            checkpoint = train_task(dest, protocol, method, seed, world["train"], painted["train"], closed)
            predict_task(dest, method, seed, checkpoint, tests)
        logger.info("seed %d done after %.0f s", seed, time.perf_counter() - started)
    metrics = table_metrics(dest, protocol, tests)
    summary = summarise(metrics)
    meta = {"protocol": protocol.model_dump(mode="json"), "protocol_text": protocol.describe(),
            "seeds": protocol.seeds, "test_classes": list(unseen_ood_classes(protocol.test_classes)),
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                       f"{torch.get_num_threads()})",
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu_started}
    verdict = claim(summary)
    document = {"meta": meta, "summary": summary, "claim": verdict, "per_seed": metrics}
    (dest / "results.json").write_text(json.dumps(document, indent=2, default=_json) + "\n")
    (dest / "results.md").write_text(markdown(summary, meta))
    shifted, seed = tests["shifted"], protocol.seeds[0]
    frames = figure_frames(shifted)
    columns = {f"A energy (seed {seed})": load_predictions(prediction_path(dest, "A", seed, "shifted"), shifted)[0],
               f"C u (seed {seed})": load_predictions(prediction_path(dest, "C", seed, "shifted"), shifted)[0]}
    picture = figure(shifted.images[frames], shifted.train_ids[frames], shifted.ood[frames],
                     {name: scores[frames] for name, scores in columns.items()},
                     [shifted.domains[i] for i in frames])
    picture.save(dest / "figure.png")
    logger.info("experiment done: claim %s; table in %s", "holds" if verdict["holds"] else "does not hold",
                dest / "results.md")
    return {"out": str(dest), "claim": verdict, "summary": summary, "wall_s": meta["wall_s"], "cpu_s": meta["cpu_s"]}


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
