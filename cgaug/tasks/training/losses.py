"""The two-stage training objective (method.md, Part 2): relative contrastive loss + noise-aware CE.

    L = L_unc + beta1 * CE(f(x), y) + beta2 * CE_sel(f(x_aug), y_aug)

    L_unc = E r_a1(u_o - u_i)  +  E r_a2(u_o - u_c)  +  E max(u_c - u_i - a3, 0),   r_l(z) = max(l - z, 0)

with o in Omega_out (OOD pixels, label 254, of originals and augmented images), i in Omega_in
(in-distribution pixels of originals), c in Omega_aug (in-distribution pixels of augmented
images); the third term pairs the same location of an original and its augmented image where
both are in-distribution. Higher u = more anomalous.

Pixel sampling: k = floor(sample_ratio * B * H * W) pixels (B * H * W: the originals' pixels) are
drawn without replacement from each set, capped by the smallest set, so every set contributes
equally; term 3 averages over up to floor(sample_ratio * B * H * W) sampled paired pixels. The
reference uses ratio 1 of the whole 2B batch, so its k is the smallest set, and averages term 3
over every paired pixel: `sample_ratio: 1.0` gives both (docs/fidelity.md).
`pairing="sampled"` (reference) hinges the j-th sampled OOD pixel against the j-th sampled
in-distribution pixel; `pairing="all_pairs"` (the paper's expectation) averages over all k x k
pairs of the samples. A term whose set is empty is 0 (kept in the graph so the step still works).

Noise-aware CE keeps the `ceil(rho * n)` labelled augmented pixels with the lowest CE (n = labelled
pixels in the batch, pooled over the batch): generated pixels that disagree with their label are
treated as label noise. The OOD id and the void id are never CE targets.

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


def _pick(values: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    import torch

    if k >= values.numel():
        return values
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
    total = yf.numel()
    k = sample_count(cfg.sample_ratio, total, u_out.numel(), u_in.numel(), u_c.numel())
    if k > 0:
        o = _pick(u_out, k, generator)
        term1 = contrast_term(o, _pick(u_in, k, generator), a1, cfg.pairing)
        o = _pick(u_out, k, generator)
        term2 = contrast_term(o, _pick(u_c, k, generator), a2, cfg.pairing)
    else:
        term1 = term2 = _zero(uf) + _zero(uaf)
    both = in_orig & in_aug
    k_pair = sample_count(cfg.sample_ratio, total, int(both.sum()))
    if k_pair > 0:
        where = _pick(torch.nonzero(both).squeeze(1), k_pair, generator)
        term3 = torch.clamp(uaf[where] - uf[where] - a3, min=0.0).mean()
    else:
        term3 = _zero(uf) + _zero(uaf)
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


def selected_count(rho: float, n: int) -> int:
    """Pixels CE_sel keeps of n labelled ones: ceil(rho * n) (at least one when n > 0)."""
    return min(n, math.ceil(rho * n - _RATIO_EPS)) if n > 0 else 0


def selected_cross_entropy(logits: torch.Tensor, y: torch.Tensor, num_classes: int, rho: float,
                           ignore_id: int = 255) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Noise-aware CE: mean of the `selected_count(rho, n)` lowest per-pixel CE values of the batch.

    Returns (loss, kept mask (B, H, W) bool, selection rate kept / n).
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
    k = selected_count(rho, n)
    flat = per_pixel.reshape(-1)
    index = torch.nonzero(valid).squeeze(1)
    lowest = torch.topk(flat[index].detach(), k, largest=False, sorted=False).indices
    kept[index[lowest]] = True
    return flat[index[lowest]].mean(), kept.reshape(target.shape), k / n


def training_loss(logits: torch.Tensor, u: torch.Tensor, y: torch.Tensor, logits_aug: torch.Tensor,
                  u_aug: torch.Tensor, y_aug: torch.Tensor, cfg: TrainLossConfig, num_classes: int,
                  generator: torch.Generator | None = None) -> LossTerms:
    """The full objective of one batch; `u`/`u_aug` and `logits` at the label resolution."""
    beta1, beta2 = cfg.betas
    unc, parts = uncertainty_loss(u, u_aug, y, y_aug, cfg, num_classes, generator)
    total = unc
    ce = ce_sel = None
    rate = 0.0
    if beta1:
        ce = cross_entropy(logits, y, num_classes, cfg.ignore_id)
        total = total + beta1 * ce
    if beta2:
        ce_sel, _, rate = selected_cross_entropy(logits_aug, y_aug, num_classes, cfg.select_ratio, cfg.ignore_id)
        total = total + beta2 * ce_sel
    parts.update(unc=float(unc.detach()), ce=float(ce.detach()) if ce is not None else 0.0,
                 ce_sel=float(ce_sel.detach()) if ce_sel is not None else 0.0, selection_rate=rate,
                 loss=float(total.detach()))
    return LossTerms(total, parts)
