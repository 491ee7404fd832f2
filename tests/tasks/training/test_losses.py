"""Each term of the training objective against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from cgaug.config import TrainLossConfig  # noqa: E402
from cgaug.tasks.training.losses import (  # noqa: E402
    cross_entropy,
    hinge,
    sample_count,
    selected_count,
    selected_cross_entropy,
    training_loss,
    uncertainty_loss,
)

C = 19
# one image of 4 pixels: original labels road, sidewalk, OOD, void; augmented: road, OOD, sidewalk, void
Y = torch.tensor([[[0, 1, 254, 255]]])
Y_AUG = torch.tensor([[[0, 254, 1, 255]]])
U = torch.tensor([[[1.0, 2.0, 8.0, 0.0]]])
U_AUG = torch.tensor([[[3.0, 9.0, 4.0, 0.0]]])


def cfg(**kw) -> TrainLossConfig:
    return TrainLossConfig(**({"margins": (10.0, 6.0, 1.0), "sample_ratio": 1.0} | kw))


def test_hinge_is_margin_minus_z_clamped_at_zero():
    assert hinge(torch.tensor([-1.0, 3.0, 12.0]), 10.0).tolist() == [11.0, 7.0, 0.0]


def test_uncertainty_terms_by_hand_sampled_pairing():
    # Omega_out = {8 (orig), 9 (aug)}, Omega_in = {1, 2}, Omega_aug = {3, 4}; k = min(4, 2, 2, 2) = 2
    # term1: r_10(8-1) = 3, r_10(9-2) = 3 -> 3; term2: r_6(8-3) = 1, r_6(9-4) = 1 -> 1
    # pair term: only pixel 0 is in-distribution in both: max(3 - 1 - 1, 0) = 1
    loss, parts = uncertainty_loss(U, U_AUG, Y, Y_AUG, cfg(), C)
    assert parts["k"] == 2 and parts["k_pair"] == 1
    assert parts["unc_out_in"] == pytest.approx(3.0)
    assert parts["unc_out_aug"] == pytest.approx(1.0)
    assert parts["unc_pair"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(5.0)


def test_uncertainty_terms_by_hand_all_pairs():
    # term1 over (8-1, 8-2, 9-1, 9-2) = (7, 6, 8, 7): hinges 3, 4, 2, 3 -> 3
    # term2 over (8-3, 8-4, 9-3, 9-4) = (5, 4, 6, 5): hinges 1, 2, 0, 1 -> 1
    loss, parts = uncertainty_loss(U, U_AUG, Y, Y_AUG, cfg(pairing="all_pairs", margins=(10.0, 6.0, 3.0)), C)
    assert parts["unc_out_in"] == pytest.approx(3.0)
    assert parts["unc_out_aug"] == pytest.approx(1.0)
    assert parts["unc_pair"] == 0.0  # max(3 - 1 - 3, 0)
    assert float(loss) == pytest.approx(4.0)


def test_sample_count_is_the_ratio_of_all_pixels_capped_by_the_smallest_set():
    assert sample_count(0.25, 4, 2, 2, 2) == 1
    assert sample_count(0.1, 1000, 50, 7, 400) == 7
    assert sample_count(0.3, 10) == 3  # floor(3.0000000000000004), not 4
    # base = the 8 pixels of both images (reference): k = min(floor(0.25 * 8), 2, 2, 2) = 2
    _, parts = uncertainty_loss(U, U_AUG, Y, Y_AUG, cfg(sample_ratio=0.25), C)
    assert parts["k"] == 2 and parts["k_pair"] == 1  # term 3: every paired pixel, whatever the ratio
    # base = the 4 pixels of the originals: k = floor(0.25 * 4) = 1; sampled term 3: min(1, 1 paired pixel)
    _, parts = uncertainty_loss(U, U_AUG, Y, Y_AUG, cfg(sample_ratio=0.25, sample_base="originals",
                                                        pair_term="sampled"), C)
    assert parts["k"] == 1 and parts["k_pair"] == 1


def test_one_ood_sample_serves_both_terms_unless_told_otherwise():
    # Omega_out = {8 (orig), 9 (aug)}, Omega_in = {1}, Omega_aug = {3}: k = 1, so each term sees one OOD pixel.
    # term1 = r_10(o - 1): 3 for o = 8, 2 for o = 9; term2 = r_6(o - 3): 1 for o = 8, 0 for o = 9
    y, y_aug = torch.tensor([[[0, 254, 255, 255]]]), torch.tensor([[[255, 254, 1, 255]]])
    u, u_aug = torch.tensor([[[1.0, 8.0, 0.0, 0.0]]]), torch.tensor([[[0.0, 9.0, 3.0, 0.0]]])

    def pairs(shared: bool) -> set[tuple[float, float]]:
        out = set()
        for seed in range(16):
            _, parts = uncertainty_loss(u, u_aug, y, y_aug, cfg(shared_ood=shared), C,
                                        torch.Generator().manual_seed(seed))
            assert parts["k"] == 1 and parts["k_pair"] == 0
            out.add((parts["unc_out_in"], parts["unc_out_aug"]))
        return out

    assert pairs(True) == {(3.0, 1.0), (2.0, 0.0)}  # the same o in both terms
    assert pairs(False) & {(3.0, 0.0), (2.0, 1.0)}  # independent draws mix them


def test_pair_term_averages_every_paired_pixel_or_a_sample():
    # three pixels in-distribution in both images: max(u_c - u_i - 1, 0) = 2, 0, 4 -> mean 2
    y = torch.tensor([[[0, 1, 2, 254]]])
    u, u_aug = torch.tensor([[[1.0, 5.0, 0.0, 9.0]]]), torch.tensor([[[4.0, 2.0, 5.0, 9.0]]])
    _, parts = uncertainty_loss(u, u_aug, y, y, cfg(sample_ratio=0.1), C)
    assert parts["k_pair"] == 3 and parts["unc_pair"] == pytest.approx(2.0)
    # sampled: floor(0.1 * 8) = 0 paired pixels -> the term is 0
    _, parts = uncertainty_loss(u, u_aug, y, y, cfg(sample_ratio=0.1, pair_term="sampled"), C)
    assert parts["k_pair"] == 0 and parts["unc_pair"] == 0.0
    # sampled with floor(0.25 * 8) = 2 of the 3: the mean of two of (2, 0, 4)
    _, parts = uncertainty_loss(u, u_aug, y, y, cfg(sample_ratio=0.25, pair_term="sampled"), C)
    assert parts["k_pair"] == 2 and parts["unc_pair"] in (pytest.approx(1.0), pytest.approx(3.0), pytest.approx(2.0))


def test_empty_sets_give_zero_terms_that_still_backpropagate():
    u = U.clone().requires_grad_(True)
    y = torch.zeros_like(Y)  # no OOD pixel anywhere
    loss, parts = uncertainty_loss(u, U_AUG, y, torch.zeros_like(Y_AUG), cfg(), C)
    assert parts["k"] == 0 and parts["unc_out_in"] == 0.0
    loss.backward()
    assert u.grad is not None


def test_cross_entropy_ignores_ood_and_void():
    # pixel 0: logits (0, 0), target 0 -> ln 2; pixel 1: (ln 3, 0), target 1 -> -ln(1/4) = ln 4
    logits = torch.tensor([[0.0, math.log(3.0), 5.0, 5.0], [0.0, 0.0, 1.0, 1.0]]).view(1, 2, 1, 4)
    y = torch.tensor([[[0, 1, 254, 255]]])
    assert float(cross_entropy(logits, y, 2)) == pytest.approx((math.log(2) + math.log(4)) / 2)


def test_selection_count_rounds_down_like_the_reference_or_up():
    assert [selected_count(0.8, n, "floor") for n in (0, 1, 10, 11)] == [0, 0, 8, 8]  # int(0.8 n)
    assert [selected_count(0.8, n, "ceil") for n in (0, 1, 10, 11)] == [0, 1, 8, 9]  # ceil(8.8) = 9
    assert selected_count(0.75, 10, "floor") == 7 and selected_count(0.75, 10) == 8
    # one labelled pixel, rho 0.8: floor keeps none, so CE_sel is 0 (with its graph), as the reference's select_num 0
    logits = torch.zeros(1, 2, 1, 1, requires_grad=True)
    loss, kept, rate = selected_cross_entropy(logits, torch.zeros(1, 1, 1, dtype=torch.long), 2, 0.8,
                                              rounding="floor")
    assert float(loss.detach()) == 0.0 and not kept.any() and rate == 0.0
    loss.backward()
    assert logits.grad is not None


def test_selection_keeps_ceil_rho_n_lowest_ce_pixels():
    assert [selected_count(0.8, n) for n in (0, 1, 10, 11)] == [0, 1, 8, 9]  # ceil(0.8 n), ceil(8.8) = 9
    assert selected_count(0.75, 10) == 8
    # 10 labelled pixels whose CE is -log softmax = increasing with the margin given to the wrong class
    margins = torch.arange(10, dtype=torch.float32)
    logits = torch.stack([torch.zeros(10), margins]).view(1, 2, 1, 10)
    y = torch.zeros(1, 1, 10, dtype=torch.long)
    per_pixel = torch.log1p(torch.exp(margins))  # CE of target 0
    loss, kept, rate = selected_cross_entropy(logits, y, 2, 0.8)
    assert int(kept.sum()) == 8 and rate == pytest.approx(0.8)
    assert kept.view(-1).tolist() == [True] * 8 + [False] * 2  # the 8 lowest-CE pixels
    assert float(loss) == pytest.approx(float(per_pixel[:8].mean()))


def test_selection_skips_unlabelled_pixels():
    logits = torch.zeros(1, 2, 1, 4)
    y = torch.tensor([[[0, 254, 255, 1]]])
    _, kept, rate = selected_cross_entropy(logits, y, 2, 0.5)
    assert kept.view(-1).tolist().count(True) == 1 and not kept[0, 0, 1] and not kept[0, 0, 2]
    assert rate == 0.5


def test_total_is_unc_plus_weighted_ce_terms():
    logits = torch.zeros(1, C, 1, 4)
    terms = training_loss(logits, U, Y, logits, U_AUG, Y_AUG, cfg(betas=(50.0, 10.0), select_rounding="ceil"), C)
    ce = math.log(C)  # uniform logits
    assert terms.parts["ce"] == pytest.approx(ce)
    assert terms.parts["ce_sel"] == pytest.approx(ce)
    assert float(terms.total) == pytest.approx(5.0 + 50 * ce + 10 * ce, rel=1e-6)
    assert terms.parts["loss"] == pytest.approx(float(terms.total))
