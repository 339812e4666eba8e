"""Localisation / faithfulness metrics on cases with a known answer."""

from __future__ import annotations

import math

import pytest
import torch

from wysiwyc.metrics import localization as L
from wysiwyc.ops import gaussian_blur


def _region() -> tuple[torch.Tensor, torch.Tensor]:
    # 4x4 map, G = the top-left 2x2 block
    g = torch.zeros(1, 4, 4, dtype=torch.bool)
    g[0, :2, :2] = True
    s = torch.zeros(1, 4, 4)
    s[0, 0, 0], s[0, 0, 1], s[0, 3, 3] = 1.0, 0.5, 0.5
    return s, g


def test_ebpg_hand():
    s, g = _region()
    assert L.ebpg(s, g).item() == pytest.approx(1.5 / 2.0)


def test_miou_top_hand():
    s, g = _region()
    # top 25 % (4 px): 1.0, then the 0.5s (index 1, 15), then the first 0 (index 2)
    assert L.miou_top(s, g, frac=0.25).item() == pytest.approx(2 / 6)


def test_bbox_hand():
    s, g = _region()
    assert L.bbox_score(s, g).item() == pytest.approx(2 / 4)


def test_m_i_average_precision_hand():
    s, g = _region()
    # ranking: idx0 (hit), idx1 (hit), idx15 (miss), then zeros by index: 2(miss),3,4(hit),5(hit)
    # precisions at hits: 1/1, 2/2, 3/6, 4/7
    want = (1 + 1 + 3 / 6 + 4 / 7) / 4 * 100
    assert L.m_i(s, g).item() == pytest.approx(want)
    perfect = g.float()
    assert L.m_i(perfect, g).item() == pytest.approx(100.0)


def test_m_i_matches_sklearn_without_ties():
    sk = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    s = torch.rand(1, 8, 8, generator=gen)
    g = torch.rand(1, 8, 8, generator=gen) > 0.7
    want = sk.average_precision_score(g.flatten().numpy(), s.flatten().numpy()) * 100
    assert L.m_i(s, g).item() == pytest.approx(want, rel=1e-5)


def test_pointing_game():
    s, g = _region()
    assert L.pointing_hits(s, g).tolist() == [True]
    s2 = torch.zeros(1, 4, 4)
    s2[0, 2, 2] = 1
    assert L.pointing_hits(s2, g).tolist() == [False]
    assert L.pointing_hits(s2, g, tolerance=1).tolist() == [True]
    hits = torch.tensor([True, False, True, True])
    cls = torch.tensor([0, 0, 1, 1])
    assert L.pointing_accuracy(hits, cls, 3) == pytest.approx((50 + 100) / 2)


def _linear_prob(images: torch.Tensor) -> torch.Tensor:
    """p_0 = mean of channel 0 (in [0,1]); p_1 = 1 - p_0."""
    p = images[:, 0].mean((1, 2))
    return torch.stack([p, 1 - p], 1)


def test_insertion_deletion_and_m_f_hand():
    # image: ones in the left half (8 of 16 pixels), zeros on the right
    img = torch.zeros(1, 3, 4, 4)
    img[:, :, :, :2] = 1
    s = img[:, 0].clone()  # perfect saliency: left half first
    cls = torch.tensor([0])
    dele = L.deletion_curve(_linear_prob, img, s, cls, steps=4)
    # removing 4 px at a time, all from the bright half first: 0.5, 0.25, 0, 0, 0
    assert torch.allclose(dele[0], torch.tensor([0.5, 0.25, 0.0, 0.0, 0.0]))
    assert L.auc(dele).item() == pytest.approx((0.5 + 0.25) / 2 / 4 + 0.25 / 2 / 4 * 1 + 0)
    black = torch.zeros_like(img)
    ins = L.causal_curve(_linear_prob, img, s, cls, black, steps=4)
    assert torch.allclose(ins[0], torch.tensor([0.0, 0.25, 0.5, 0.5, 0.5]))
    # M_F with Δ = 1/4 over this curve: mean of (q_i - q_F)/(q_O - q_F) for i = 1..4
    assert L.m_f_from_curve(ins).item() == pytest.approx((0.5 + 1 + 1 + 1) / 4 * 100)
    assert math.isnan(L.m_f_from_curve(torch.zeros(1, 5)).item())


def test_drop_increase_hand():
    img = torch.zeros(1, 3, 4, 4)
    img[:, :, :, :2] = 1
    s = img[:, 0].clone()
    drop, inc = L.drop_increase(_linear_prob, img, s, torch.tensor([0]), frac=0.25)
    # keeping the top 4 px (all bright): p 0.5 -> 0.25, drop 50 %, no increase
    assert drop.item() == pytest.approx(50.0)
    assert inc.item() == 0.0
    drop, inc = L.drop_increase(_linear_prob, img, s, torch.tensor([1]), frac=0.25)
    assert drop.item() == 0.0 and inc.item() == 100.0


def test_spearman_and_randomised_copy():
    a = torch.arange(16.0).view(1, 4, 4)
    assert L.spearman(a, a * 3 + 1).item() == pytest.approx(1.0)
    assert L.spearman(a, -a).item() == pytest.approx(-1.0)
    torch.manual_seed(123)  # not the re-initialisation seed, whatever ran before
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net[1].running_mean.fill_(3.0)
    clone = L.randomized_copy(net, seed=0)
    assert not torch.equal(clone[0].weight, net[0].weight)
    assert torch.equal(clone[1].running_mean, torch.zeros(4))
    assert torch.equal(L.randomized_copy(net, seed=0)[0].weight, clone[0].weight)


def test_box_regions_and_blur():
    g = torch.zeros(1, 5, 5, dtype=torch.bool)
    g[0, 1, 1] = g[0, 3, 2] = True
    box = L.box_regions(g)
    assert box[0].sum().item() == 3 * 2 and box[0, 1:4, 1:3].all()
    img = torch.rand(2, 3, 9, 9)
    out = gaussian_blur(img, 1.0)
    assert torch.allclose(out.mean(), img.mean(), atol=0.02)
    assert torch.allclose(gaussian_blur(torch.ones(1, 1, 9, 9), 2.0), torch.ones(1, 1, 9, 9), atol=1e-6)
