"""The experiment's table: means and spreads over seeds, the claim check, the figure."""

from __future__ import annotations

import numpy as np
import pytest

from cgaug.tasks.experiment.report import claim, figure, markdown, summarise


def _record(ap: float, fpr: float, miou: float) -> dict:
    domains = {"foggy night": {"frames": 2, "miou": miou - 0.1, "macc": 0.5}}
    return {"auroc": 0.9, "ap": ap, "fpr95_first": fpr, "fpr95_closest": fpr, "miou": miou, "macc": 0.6,
            "domains": domains}


def _metrics(c_ap: float, c_miou: float) -> dict:
    per = {"A": (0.2, 0.6, 0.50), "B": (0.3, 0.5, 0.50), "C": (c_ap, 0.4, c_miou)}
    return {m: {seed: {name: _record(ap + 0.01 * seed, fpr, miou) for name in ("shifted", "clear")}
                for seed in (0, 1, 2)}
            for m, (ap, fpr, miou) in per.items()}


def test_summary_is_mean_and_sample_spread_over_seeds():
    summary = summarise(_metrics(0.4, 0.5))
    ap = summary["C"]["shifted"]["ap"]
    assert ap["mean"] == pytest.approx(0.41) and ap["std"] == pytest.approx(0.01)
    assert ap["values"] == pytest.approx([0.40, 0.41, 0.42])
    assert summary["A"]["clear"]["domains"]["foggy night"]["frames"] == 2


@pytest.mark.parametrize(("c_ap", "c_miou", "holds", "failing"), [
    (0.4, 0.5, True, set()),
    (0.25, 0.5, False, {"ap"}),  # better than A, not than B
    (0.4, 0.485, False, {"miou_shifted", "miou_clear"}),  # 1.5 points below A
    (0.4, 0.495, True, set()),  # 0.5 points below A: within the tolerance
])
def test_claim_needs_every_check(c_ap, c_miou, holds, failing):
    verdict = claim(summarise(_metrics(c_ap, c_miou)))
    assert verdict["holds"] is holds
    assert {k for k, v in verdict["checks"].items() if not v} == failing


def test_markdown_lists_every_method_and_the_verdict():
    text = markdown(summarise(_metrics(0.4, 0.5)), {"seeds": [0, 1, 2], "test_classes": ["sand"]})
    assert "| A: closed world (energy) | 90.0 ± 0.0 | 21.0 ± 1.0 |" in text
    assert "| foggy night (2) |" in text and "**Claim**" in text and "holds" in text


def test_figure_has_one_row_per_frame_and_a_panel_per_column():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 32, 64, 3), dtype=np.uint8)
    ids = np.zeros((2, 32, 64), np.uint8)
    ood = np.zeros((2, 32, 64), np.uint8)
    ood[:, 10:20, 10:20] = 1
    scores = {"A": rng.random((2, 32, 64)).astype(np.float16), "C": rng.random((2, 32, 64)).astype(np.float16)}
    picture = np.asarray(figure(images, ids, ood, scores, ["foggy day", "rainy night"]))
    assert picture.shape[0] > 2 * 32 and picture.shape[1] >= 4 * 64
    gt_panel = picture[14:14 + 32, 64 + 4:2 * 64 + 4]
    assert (gt_panel[12, 12] == 255).all()  # the object is white in the ground truth
