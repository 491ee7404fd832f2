"""What the experiment adds to training: pairs without generated images, and A's closed-world export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cgaug.config import load_train_config
from cgaug.models.segmenters import load_segmenter
from cgaug.models.segmenters.base import energy_score
from cgaug.models.segmenters.training import build_train_model
from cgaug.tasks.experiment.methods import export_closed_world
from cgaug.tasks.training.dataset import PairDataset, TrainDataError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """6 painted originals with the fixture bank and its object pixels (what the anomaly mix reads)."""
    from cgaug.fixtures import write_fixture_dataset

    root = tmp_path_factory.mktemp("world")
    write_fixture_dataset(root, images=6, seed=2, height=64, width=128)
    return root


def _data(**data):
    return load_train_config(preset="tiny", overrides={"data": {"crop_size": (64, 128), **data}}, environ={}).data


def test_originals_pair_every_source_image_with_itself(world):
    pairs = PairDataset(str(world), None, _data(augmented="originals", anomaly_mix=False, mixup=False), seed=0)
    assert len(pairs) == 6
    pairs.set_epoch(0)
    examples = list(pairs)
    assert sorted(e["source_id"] for e in examples) == sorted(rec.source_id for rec, _ in pairs.pairs)
    for example in examples:
        assert torch.equal(example["image"], example["aug_image"])
        assert torch.equal(example["label"], example["aug_label"])


def test_originals_with_the_anomaly_mix_paste_into_the_original_only(world):
    pairs = PairDataset(str(world), None, _data(augmented="originals", mixup=False), seed=0)
    pairs.set_epoch(1)
    example = next(iter(pairs))
    assert (example["label"] == 254).any() and not (example["aug_label"] == 254).any()
    same = example["label"] == example["aug_label"]
    assert torch.equal(example["image"][:, same], example["aug_image"][:, same])


def test_the_order_of_originals_changes_with_the_epoch(world):
    pairs = PairDataset(str(world), None, _data(augmented="originals", anomaly_mix=False), seed=0)
    orders = []
    for epoch in (0, 1, 2):
        pairs.set_epoch(epoch)
        orders.append([i for i, _ in pairs.epoch_plan()[0]])
    assert len({tuple(o) for o in orders}) > 1 and all(sorted(o) == list(range(6)) for o in orders)


def test_generated_objects_need_generated_images(world):
    with pytest.raises(TrainDataError, match="anomaly_source"):
        PairDataset(str(world), None, _data(augmented="originals", anomaly_source="generated"), seed=0)
    with pytest.raises(TrainDataError, match="no shards root"):
        PairDataset(str(world), None, _data(), seed=0)


def test_the_default_keeps_earlier_fingerprints():
    cfg = load_train_config(preset="tiny", environ={})
    assert cfg.fingerprint() != cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"augmented": "originals"})}).fingerprint()
    import hashlib
    import json

    data = cfg.model_dump(mode="json")
    for volatile in ("device", "progress"):
        data["run"].pop(volatile)
    for key in ("num_workers", "prefetch_factor", "augmented"):
        data["data"].pop(key)
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def test_the_closed_world_export_scores_by_energy_and_fine_tuning_starts_from_it(tmp_path):
    cfg = load_train_config(preset="tiny", environ={}).model
    trained = build_train_model(cfg, seed=3)
    with torch.no_grad():  # as after training A: the classifier moved, W did not
        trained.model.segmentation_head[0].weight.mul_(1.5)
    export = trained.export_config() | {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    torch.save({"config": export, "state_dict": trained.state_dict()}, tmp_path / "model.pt")
    closed = export_closed_world(tmp_path / "model.pt", tmp_path / "closed.pt")

    segmenter = load_segmenter(closed)
    x = torch.rand(1, 3, 64, 128)
    logits, score = segmenter.predict(x)
    assert torch.allclose(score, energy_score(logits), atol=1e-5)
    trained.eval()
    with torch.no_grad():
        normalised = (x - torch.tensor(export["mean"]).view(1, 3, 1, 1)) / torch.tensor(export["std"]).view(1, 3, 1, 1)
        reference_logits, stale_u = trained(normalised)
    assert torch.allclose(logits, reference_logits, atol=1e-4)
    assert not torch.allclose(stale_u, energy_score(reference_logits), atol=1e-3)  # A's own u is stale

    fine = build_train_model(cfg.model_copy(update={"checkpoint": closed}), seed=0).eval()
    with torch.no_grad():
        logits2, u = fine(torch.rand(1, 3, 64, 128))
    assert torch.allclose(u, energy_score(logits2), atol=1e-4)  # W copied from the trained classifier
    assert np.isfinite(u.numpy()).all()


def test_self_paired_originals_take_one_forward_pass_with_the_same_update():
    """A's batches pair each original with itself: one forward pass gives the step of the doubled batch.

    Exactly so without dropout; with it (smp's ASPP), the pass draws one mask per image instead of two,
    and only the first half's CE counts either way (beta2 = 0), so the step is the same in distribution.
    """
    import copy

    from cgaug.tasks.experiment.protocol import MiniProtocol, method_config
    from cgaug.tasks.training.loop import StepRunner, loss_generator

    cfg = method_config(MiniProtocol(), "A", 0)
    model = build_train_model(cfg.model, seed=1)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    twin = copy.deepcopy(model)
    image = torch.randn(2, 3, 64, 128)
    label = torch.randint(0, 19, (2, 64, 128))
    batch = {"image": image, "aug_image": image.clone(), "label": label, "aug_label": label.clone()}
    fast = StepRunner(model, cfg, 2, torch.device("cpu"), 4)
    slow = StepRunner(twin, cfg, 2, torch.device("cpu"), 4)
    slow.self_paired = False
    assert fast.self_paired
    parts_fast = fast.step(batch, loss_generator(0, 0, 0))
    parts_slow = slow.step(batch, loss_generator(0, 0, 0))
    assert parts_fast["ce"] == pytest.approx(parts_slow["ce"], rel=1e-5)
    # the gradients (Adam's first update is ~lr * sign(g), which amplifies rounding in near-zero gradients)
    # and some are zero up to rounding (a bias before a batch norm), so the tolerance is the largest gradient's
    scale = max(float(p.grad.abs().max()) for p in twin.parameters() if p.grad is not None)
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        if b.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-4 * scale), name
