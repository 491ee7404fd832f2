"""The two-stage training objective (method.md, Part 2): relative contrastive loss + noise-aware CE.

    L = L_unc + beta1 * CE(f(x), y) + beta2 * CE_sel(f(x_aug), y_aug)

    L_unc = E r_a1(u_o - u_i)  +  E r_a2(u_o - u_c)  +  E max(u_c - u_i - a3, 0),   r_l(z) = max(l - z, 0)

with o in Omega_out (OOD pixels, label 254, of originals and augmented images), i in Omega_in
(in-distribution pixels of originals), c in Omega_aug (in-distribution pixels of augmented
images); the third term pairs the same location of an original and its augmented image where
both are in-distribution. Higher u = more anomalous.

Pixel sampling (terms 1-2): k = floor(sample_ratio * N) pixels are drawn without replacement from
each set, capped by the smallest set, so every set contributes equally; N counts the pixels of all 2B
images (`sample_base: batch`, the reference's `lib/loss.py:149-156`) or of the B originals. With the
reference's ratio 1, k is the smallest set. `shared_ood` (reference) draws one OOD sample that both
terms hinge against; otherwise each term draws its own. `pairing="sampled"` (reference) hinges the
j-th sampled OOD pixel against the j-th sampled in-distribution pixel; `pairing="all_pairs"` (the
paper's expectation) averages over all k x k pairs of the samples. Term 3 averages over every
paired pixel (`pair_term: all`, reference) or over up to floor(sample_ratio * N) sampled ones. A
term whose set is empty is 0 (kept in the graph so the step still works).

Noise-aware CE keeps the `int(rho * n)` (`select_rounding: floor`, reference) or `ceil(rho * n)`
labelled augmented pixels with the lowest CE (n = labelled pixels, pooled over the batch):
generated pixels that disagree with their label are treated as label noise. The OOD id and the
void id are never CE targets.

Mask2Former's own losses (`mask2former_losses`, stages with `mask_losses`): Hungarian matching of
the queries to one binary mask per class present in each image (void and OOD pixels belong to no
mask), then a class CE over the queries and sigmoid-CE + dice losses on points sampled in each
matched mask. Noise-aware on augmented images the reference way: pixel selection becomes point
selection (see `_clean_points`).

Pure torch, no Prefect; randomness comes from the `torch.Generator` the caller passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from cgaug.config import TrainLossConfig

_RATIO_EPS = 1e-9  # ceil(0.8 * 10) must be 8, not 9 from 8.000000000000002
CLEAN_IMPORTANCE = 0.95  # the reference's clean-point sampler keeps 95 % lowest-BCE points, 5 % random
MASK_LOSS_KEYS = ("m2f_class", "m2f_mask", "m2f_dice")


@dataclass(frozen=True)
class LossTerms:
    """The total loss (with graph) and its parts as floats for logging."""

    total: torch.Tensor
    parts: dict[str, float]


def hinge(z: torch.Tensor, margin: float) -> torch.Tensor:
    """r_margin(z) = max(margin - z, 0): zero once z exceeds the margin."""
    import torch

    return torch.clamp(margin - z, min=0.0)


def sample_count(ratio: float, total_pixels: int, *set_sizes: int) -> int:
    """k = floor(ratio * total_pixels), capped by every set's size."""
    return max(0, min([math.floor(ratio * total_pixels + _RATIO_EPS), *set_sizes]))


def _zero_graph(*tensors: torch.Tensor) -> torch.Tensor:
    return sum((_zero(t) for t in tensors[1:]), _zero(tensors[0]))


def _pick(values: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    import torch

    # Always shuffled, also when every value is kept (the reference's randperm), so "sampled" pairing pairs
    # random partners even when k is a whole set.
    order = torch.randperm(values.numel(), generator=generator, device="cpu")[:k].to(values.device)
    return values[order]


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph connected (backward works even when every term is empty)."""
    return like.sum() * 0.0


def contrast_term(high: torch.Tensor, low: torch.Tensor, margin: float, pairing: str) -> torch.Tensor:
    """Mean of r_margin(high - low): `high` should exceed `low` by at least `margin`."""
    if pairing == "all_pairs":
        return hinge(high[:, None] - low[None, :], margin).mean()
    return hinge(high - low, margin).mean()


def uncertainty_loss(u: torch.Tensor, u_aug: torch.Tensor, y: torch.Tensor, y_aug: torch.Tensor,
                     cfg: TrainLossConfig, num_classes: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L_unc of a batch: `u`, `u_aug` (B, H, W) scores of originals and augmented images; `y`, `y_aug` labels.

    Returns the loss and its three terms plus the set sizes and the sample count k (floats).
    """
    import torch

    a1, a2, a3 = cfg.margins
    uf, uaf = u.float().reshape(-1), u_aug.float().reshape(-1)
    yf, yaf = y.reshape(-1), y_aug.reshape(-1)
    in_orig = yf < num_classes
    in_aug = yaf < num_classes
    u_out = torch.cat([uf[yf == cfg.ood_id], uaf[yaf == cfg.ood_id]])
    u_in, u_c = uf[in_orig], uaf[in_aug]
    total = yf.numel() * (2 if cfg.sample_base == "batch" else 1)
    k = sample_count(cfg.sample_ratio, total, u_out.numel(), u_in.numel(), u_c.numel())
    if k > 0:
        o = _pick(u_out, k, generator)
        term1 = contrast_term(o, _pick(u_in, k, generator), a1, cfg.pairing)
        if not cfg.shared_ood:
            o = _pick(u_out, k, generator)
        term2 = contrast_term(o, _pick(u_c, k, generator), a2, cfg.pairing)
    else:
        term1 = term2 = _zero_graph(uf, uaf)
    both = in_orig & in_aug
    n_pair = int(both.sum())
    k_pair = n_pair if cfg.pair_term == "all" else sample_count(cfg.sample_ratio, total, n_pair)
    if k_pair > 0:
        where = torch.nonzero(both).squeeze(1)
        if k_pair < n_pair:
            where = _pick(where, k_pair, generator)
        term3 = torch.clamp(uaf[where] - uf[where] - a3, min=0.0).mean()
    else:
        term3 = _zero_graph(uf, uaf)
    loss = term1 + term2 + term3
    parts = {"unc_out_in": float(term1.detach()), "unc_out_aug": float(term2.detach()),
             "unc_pair": float(term3.detach()), "n_out": float(u_out.numel()), "n_in": float(u_in.numel()),
             "n_aug": float(u_c.numel()), "k": float(k), "k_pair": float(k_pair)}
    return loss, parts


def _ce_targets(y: torch.Tensor, num_classes: int, ignore_id: int) -> torch.Tensor:
    """Labels with every non-class id (OOD 254, void 255, anything else) mapped to `ignore_id`."""
    import torch

    return torch.where((y >= 0) & (y < num_classes), y, torch.full_like(y, ignore_id))


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, num_classes: int, ignore_id: int = 255) -> torch.Tensor:
    """Mean CE over labelled pixels (OOD and void ignored); 0 with graph when no pixel is labelled."""
    import torch.nn.functional as F

    target = _ce_targets(y, num_classes, ignore_id)
    if not bool((target != ignore_id).any()):
        return _zero(logits)
    return F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_id)


def selected_count(rho: float, n: int, rounding: str = "ceil") -> int:
    """Pixels CE_sel keeps of n labelled ones: ceil(rho * n) (at least one when n > 0) or floor (int(rho * n))."""
    if n <= 0:
        return 0
    if rounding == "floor":
        return min(n, math.floor(rho * n + _RATIO_EPS))
    return min(n, math.ceil(rho * n - _RATIO_EPS))


def selected_cross_entropy(logits: torch.Tensor, y: torch.Tensor, num_classes: int, rho: float,
                           ignore_id: int = 255, rounding: str = "ceil") -> tuple[torch.Tensor, torch.Tensor, float]:
    """Noise-aware CE: mean of the `selected_count(rho, n, rounding)` lowest per-pixel CE values of the batch.

    Returns (loss, kept mask (B, H, W) bool, selection rate kept / n). When no pixel is kept (floor
    rounding of a tiny n, as the reference's `select_num == 0`) the loss is 0 with its graph.
    """
    import torch
    import torch.nn.functional as F

    target = _ce_targets(y, num_classes, ignore_id)
    per_pixel = F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_id, reduction="none")
    valid = (target != ignore_id).reshape(-1)
    n = int(valid.sum())
    kept = torch.zeros_like(valid)
    if n == 0:
        return _zero(logits), kept.reshape(target.shape), 0.0
    k = selected_count(rho, n, rounding)
    if k == 0:
        return _zero(logits), kept.reshape(target.shape), 0.0
    flat = per_pixel.reshape(-1)
    index = torch.nonzero(valid).squeeze(1)
    lowest = torch.topk(flat[index].detach(), k, largest=False, sorted=False).indices
    kept[index[lowest]] = True
    return flat[index[lowest]].mean(), kept.reshape(target.shape), k / n


def mask_targets(y: torch.Tensor, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mask2Former targets of semantic labels (N, H, W): per image the present classes and one binary mask each.

    Void, OOD and every other non-class id belong to no mask (the reference's `prepare_input`,
    `train_m2f.py:354-368`), so they are negatives of every mask.
    """
    import torch

    class_labels, mask_labels = [], []
    for label in y:
        classes = torch.unique(label)
        classes = classes[(classes >= 0) & (classes < num_classes)]
        class_labels.append(classes.long())
        mask_labels.append((label[None] == classes[:, None, None]).float())
    return class_labels, mask_labels


def _uniform_points(count: int, points: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    import torch

    return torch.rand(count, points, 2, generator=generator).to(device)


def _clean_points(pred: torch.Tensor, target: torch.Tensor, points: int, rho: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Point coordinates (M, points, 2) on the clean pixels of each matched mask of an augmented image.

    Pixel selection mapped to the mask losses the reference's way (`criterion.py:371-407`): draw
    points / rho uniform candidates per mask, keep the 95 % of `points` whose BCE against the mask
    label is lowest (the pixels the model already agrees with; a generated pixel that contradicts
    its label has a high BCE and is left out, as CE_sel leaves out high-CE pixels), and add 5 %
    uniform points so the selection cannot lock onto easy pixels only.
    """
    import torch
    import torch.nn.functional as F
    from transformers.models.mask2former.modeling_mask2former import sample_point

    count = pred.shape[0]
    candidates = max(points, int(points / rho))
    coords = _uniform_points(count, candidates, pred.device, generator)
    bce = F.binary_cross_entropy_with_logits(sample_point(pred, coords, align_corners=False),
                                             sample_point(target, coords, align_corners=False), reduction="none")
    clean = int(CLEAN_IMPORTANCE * points)
    keep = torch.topk(bce[:, 0, :], k=clean, dim=1, largest=False).indices
    coords = torch.gather(coords, 1, keep[..., None].expand(-1, -1, 2))
    return torch.cat([coords, _uniform_points(count, points - clean, pred.device, generator)], dim=1)


def _mask_terms(pred: torch.Tensor, target: torch.Tensor, coords: torch.Tensor,
                normaliser: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmoid CE, dice) of matched masks (M, 1, h, w) / (M, 1, H, W) at `coords`, summed over masks / normaliser."""
    from transformers.models.mask2former.modeling_mask2former import dice_loss, sample_point, sigmoid_cross_entropy_loss

    logits = sample_point(pred, coords, align_corners=False).squeeze(1)
    labels = sample_point(target, coords, align_corners=False).squeeze(1)
    return sigmoid_cross_entropy_loss(logits, labels, normaliser), dice_loss(logits, labels, normaliser)


def mask2former_losses(outputs: dict[str, torch.Tensor], y: torch.Tensor, y_aug: torch.Tensor,
                       cfg: TrainLossConfig, num_classes: int, points: int,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mask2Former's class / mask / dice losses of a batch of B originals and B augmented images.

    `outputs` holds the last decoder layer's ``masks_queries_logits`` (2B, Q, h, w) and
    ``class_queries_logits`` (2B, Q, C + 1) (originals first). The queries are matched to the
    targets of `mask_targets` (Hungarian, costs = `cfg.mask_weights`, as the reference's matcher);
    the class loss is the CE over every query (unmatched ones: "no object", weight
    `cfg.no_object_weight`). Mask and dice losses follow the reference's `loss_masks_aug`
    (`criterion.py:244-310`): the originals' matched masks on uniform points, weighted
    `cfg.original_mask_weight` and normalised by their own mask count; the augmented ones on clean
    points (`_clean_points`, with rho = `cfg.select_ratio`) unless `mask_selection: none`,
    normalised by theirs. Returns (weighted sum, parts as floats).
    """
    import torch
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerHungarianMatcher

    masks, classes = outputs["masks_queries_logits"].float(), outputs["class_queries_logits"].float()
    w_class, w_mask, w_dice = cfg.mask_weights
    if not (w_class or w_mask or w_dice):
        return _zero(masks) + _zero(classes), dict.fromkeys(MASK_LOSS_KEYS, 0.0)
    n = y.shape[0]
    class_labels, mask_labels = mask_targets(torch.cat([y, y_aug]), num_classes)
    matcher = Mask2FormerHungarianMatcher(cost_class=w_class, cost_mask=w_mask, cost_dice=w_dice, num_points=points)
    indices = matcher(masks, classes, mask_labels, class_labels)
    # class loss over every query of every image
    target_classes = torch.full(classes.shape[:2], num_classes, dtype=torch.long, device=classes.device)
    for b, (src, tgt) in enumerate(indices):
        target_classes[b, src.to(classes.device)] = class_labels[b][tgt.to(class_labels[b].device)].to(classes.device)
    weight = torch.ones(num_classes + 1, device=classes.device)
    weight[-1] = cfg.no_object_weight
    loss_class = torch.nn.functional.cross_entropy(classes.transpose(1, 2), target_classes, weight)
    # mask and dice losses per half
    loss_mask = loss_dice = _zero(masks)
    for half, (factor, clean) in enumerate(((cfg.original_mask_weight, False),
                                            (1.0, cfg.mask_selection == "clean_points"))):
        pred, target = [], []
        for b in range(half * n, (half + 1) * n):
            src, tgt = indices[b]
            pred.append(masks[b, src.to(masks.device)])
            target.append(mask_labels[b][tgt.to(mask_labels[b].device)].to(masks.device))
        pred_t, target_t = torch.cat(pred)[:, None], torch.cat(target)[:, None]
        count = pred_t.shape[0]
        if count == 0 or factor == 0:
            continue
        if clean:
            coords = _clean_points(pred_t.detach(), target_t, points, cfg.select_ratio, generator)
        else:
            coords = _uniform_points(count, points, masks.device, generator)
        bce, dice = _mask_terms(pred_t, target_t, coords, float(count))
        loss_mask = loss_mask + factor * bce
        loss_dice = loss_dice + factor * dice
    total = w_class * loss_class + w_mask * loss_mask + w_dice * loss_dice
    parts = {"m2f_class": float(loss_class.detach()), "m2f_mask": float(loss_mask.detach()),
             "m2f_dice": float(loss_dice.detach())}
    return total, parts


def training_loss(logits: torch.Tensor, u: torch.Tensor, y: torch.Tensor, logits_aug: torch.Tensor,
                  u_aug: torch.Tensor, y_aug: torch.Tensor, cfg: TrainLossConfig, num_classes: int,
                  generator: torch.Generator | None = None, *, mask_outputs: dict[str, torch.Tensor] | None = None,
                  mask_points: int = 12544) -> LossTerms:
    """The full objective of one batch; `u`/`u_aug` and `logits` at the label resolution.

    `mask_outputs`: the Mask2Former query outputs of the 2B images, to add its own losses
    (`mask2former_losses`, sampling `mask_points` points per mask).
    """
    beta1, beta2 = cfg.betas
    unc, parts = uncertainty_loss(u, u_aug, y, y_aug, cfg, num_classes, generator)
    total = unc
    ce = ce_sel = None
    rate = 0.0
    if beta1:
        ce = cross_entropy(logits, y, num_classes, cfg.ignore_id)
        total = total + beta1 * ce
    if beta2:
        ce_sel, _, rate = selected_cross_entropy(logits_aug, y_aug, num_classes, cfg.select_ratio, cfg.ignore_id,
                                                 cfg.select_rounding)
        total = total + beta2 * ce_sel
    if mask_outputs is not None:
        seg, seg_parts = mask2former_losses(mask_outputs, y, y_aug, cfg, num_classes, mask_points, generator)
        total = total + seg
        parts.update(seg_parts)
    parts.update(unc=float(unc.detach()), ce=float(ce.detach()) if ce is not None else 0.0,
                 ce_sel=float(ce_sel.detach()) if ce_sel is not None else 0.0, selection_rate=rate,
                 loss=float(total.detach()))
    return LossTerms(total, parts)
