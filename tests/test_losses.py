"""Each term of the Explainer loss (the authors' code for paper 1) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from wysiwyc.training.losses import (ExplainerLossWeights, area, area_bounds, class_mask_loss, classification_loss,
                                    explainer_loss, merge_masks, negative_entropy_loss, nontarget_area,
                                    total_variation)


def test_merge_masks_max_over_label_and_other_classes() -> None:
    masks = torch.tensor([[[[0.1, 0.9]], [[0.7, 0.2]], [[0.4, 0.3]]]])  # (1,3,1,2)
    m, n = merge_masks(masks, torch.tensor([[1.0, 0.0, 1.0]]))
    assert torch.allclose(m, torch.tensor([[[0.4, 0.9]]]))
    assert torch.allclose(n, torch.tensor([[[0.7, 0.2]]]))
    m0, n_all = merge_masks(masks, torch.zeros(1, 3))  # no label: m = 0, n = max of all
    assert torch.all(m0 == 0) and torch.allclose(n_all, torch.tensor([[[0.7, 0.9]]]))


def test_classification_loss_is_mean_bce_over_classes() -> None:
    # p = sigmoid(logits) = [0.5, 0.75]; Y = {0}: -(log 0.5 + log(1 - 0.75)) / 2
    loss = classification_loss(torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2, abs=1e-6)


def test_negative_entropy_uniform_and_peaked() -> None:
    assert negative_entropy_loss(torch.zeros(2, 4)).item() == pytest.approx(0.25 * math.log(0.25), abs=1e-6)
    assert negative_entropy_loss(torch.tensor([[100.0, 0.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    # p = [0.75, 0.25]: (0.75 log 0.75 + 0.25 log 0.25) / 2
    val = negative_entropy_loss(torch.tensor([[math.log(3.0), 0.0]])).item()
    assert val == pytest.approx((0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / 2, abs=1e-6)


def test_area_is_mean_mask_value() -> None:
    assert area(torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.5]]])).item() == pytest.approx((0.75 + 0.125) / 2)


def test_area_bounds_by_hand() -> None:
    # Z = 10, a = 0.2 -> q_min = [1,1,0…], b = 0.5 -> q_max = [1]*5 + [0]*5
    vals = torch.tensor([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.0, 0.0, 0.0])
    shuffled = vals[torch.tensor([3, 7, 0, 9, 5, 1, 8, 2, 6, 4])]
    # lower: (1-0.9) + (1-0.5) = 0.6; upper: values past index 5 above 0: 0.1 + 0.1 = 0.2; /Z
    expected = (0.6 + 0.2) / 10
    full = torch.ones(10)  # B = (0 + 5) / 10 = 0.5 for an all-ones mask
    masks = torch.stack([shuffled, full, full]).view(1, 3, 1, 10)
    one = area_bounds(masks, torch.tensor([[1.0, 0.0, 0.0]]), a=0.2, b=0.5)
    assert one.item() == pytest.approx(expected, abs=1e-6)
    two = area_bounds(masks, torch.tensor([[1.0, 1.0, 0.0]]), a=0.2, b=0.5)  # summed over label classes (code)
    assert two.item() == pytest.approx(expected + 0.5, abs=1e-6)
    none = area_bounds(masks, torch.zeros(1, 3), a=0.2, b=0.5)  # no label: contributes 0
    assert none.item() == 0.0


def test_area_bounds_floor_tolerates_float_error() -> None:
    # ⌊100·0.29⌋ = 29 although 100*0.29 == 28.999…; a mask with exactly 29 ones meets the bound
    mask = torch.zeros(1, 1, 10, 10)
    mask.view(-1)[:29] = 1
    assert area_bounds(mask, torch.ones(1, 1), a=0.29, b=0.29).item() == pytest.approx(0.0, abs=1e-7)


def test_total_variation_reflect_padded_like_the_authors_conv() -> None:
    # right diffs m[i,j]-m[i,j+1] with the last column reflected (m[i,W] = m[i,W-2]):
    # row 0: |0-1|, |1-0|; row 1: 0, 0. Down diffs: col 0: |0-1|, |1-0|; col 1: 0, 0. Sum 4 / 4 px
    assert total_variation(torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])).item() == pytest.approx(1.0)
    assert total_variation(torch.full((2, 3, 3), 0.3)).item() == pytest.approx(0.0)
    # a vertical edge in a 3x3 mask: one right diff |0-1| per row (the reflected column 2 equals column 1)
    m = torch.tensor([[[0.0, 1.0, 1.0]] * 3])
    assert total_variation(m).item() == pytest.approx(3 * 1.0 / 9)


def test_nontarget_area_max_and_mean() -> None:
    masks = torch.tensor([[[[0.2, 0.4]], [[0.6, 0.0]], [[1.0, 1.0]]]])  # (1,3,1,2); class 2 is the label
    y = torch.tensor([[0.0, 0.0, 1.0]])
    assert nontarget_area(masks, y, "max").item() == pytest.approx((0.6 + 0.4) / 2)
    assert nontarget_area(masks, y, "mean").item() == pytest.approx((0.3 + 0.3) / 2)
    with pytest.raises(ValueError):
        nontarget_area(masks, y, "sum")


class _PixelClassifier(torch.nn.Module):
    """Logit of class c = channel 0 at pixel (0, c) (a hand-checkable explanandum)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :]


def test_class_keep_term_is_bce_of_every_class_mask_against_its_own_label() -> None:
    x = torch.ones(1, 3, 2, 2) * math.log(3.0)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1.0  # class 0 keeps its own pixel: logits [ln3, 0], target [1, 0]
    masks[0, 1, 0, 0] = 1.0  # class 1 keeps class 0's pixel, not its own: logits [ln3, 0], target [0, 1]
    both = class_mask_loss(_PixelClassifier(), x, masks, torch.tensor([[1.0, 1.0]]), mode="keep")
    # C = 2: the keep entry has weight C-1 = 1
    own = -(math.log(0.75) + math.log(0.5)) / 2
    wrong = -(math.log(0.25) + math.log(0.5)) / 2
    assert both.item() == pytest.approx((own + wrong) / 2, abs=1e-6)
    # class 1 absent: its mask must show no class at all (target [0, 0]); logits [ln3, 0]
    only0 = class_mask_loss(_PixelClassifier(), x, masks, torch.tensor([[1.0, 0.0]]), mode="keep")
    assert only0.item() == pytest.approx((own - (math.log(0.25) + math.log(0.5)) / 2) / 2, abs=1e-6)
    # C = 3: keep weighs 2, as much as the two drop entries
    x3 = torch.ones(1, 3, 2, 3) * math.log(3.0)
    m3 = torch.zeros(1, 3, 2, 3)
    m3[0, 0, 0, 0] = 1.0  # logits [ln3, 0, 0] against [1, 0, 0]
    val = class_mask_loss(_PixelClassifier(), x3, m3, torch.tensor([[1.0, 0.0, 0.0]]), absent_samples=0, mode="keep")
    assert val.item() == pytest.approx(-(2 * math.log(0.75) + 2 * math.log(0.5)) / 3, abs=1e-6)
    # no label: every mask should show nothing
    none = class_mask_loss(_PixelClassifier(), x, torch.zeros(1, 2, 2, 2), torch.zeros(1, 2), mode="keep")
    assert none.item() == pytest.approx(-math.log(0.5), abs=1e-6)


def test_class_remove_term_by_hand() -> None:
    x = torch.ones(1, 3, 2, 3) * math.log(3.0)
    masks = torch.zeros(1, 3, 2, 3)
    masks[0, 0, 0, 0] = 1.0  # removing mask 0 removes class 0's pixel: logits [0, ln3, ln3]
    masks[0, 1, 0, 0] = 1.0  # mask 1 covers class 0's pixel instead of its own: same logits
    y = torch.tensor([[1.0, 1.0, 0.0]])
    # C = 3: the own entry weighs 2. Pair 0: want [0, 1, 0]; pair 1: want [1, 0, 0]; pair 2 (absent,
    # empty mask): logits [ln3]*3, want [1, 1, 0]
    l75, l25, l5 = -math.log(0.75), -math.log(0.25), -math.log(0.5)
    pair0 = (2 * l5 + l75 + l25) / 3
    pair1 = (l5 + 2 * l25 + l25) / 3
    pair2 = (l75 + l75 + 2 * l25) / 3
    got = class_mask_loss(_PixelClassifier(), x, masks, y, mode="remove")
    assert got.item() == pytest.approx((pair0 + pair1 + pair2) / 3, abs=1e-6)
    with pytest.raises(ValueError):
        class_mask_loss(_PixelClassifier(), x, masks, y, mode="swap")


def test_class_mask_loss_samples_absent_classes() -> None:
    g = torch.Generator().manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x, masks = torch.randn(4, 3, 8, 8, generator=g), torch.rand(4, 5, 8, 8, generator=g)
    y = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    full = class_mask_loss(classifier, x, masks, y)
    assert class_mask_loss(classifier, x, masks, y, absent_samples=5).item() == pytest.approx(full.item())
    full = class_mask_loss(classifier, x, masks, y, mode="keep")
    # k = 0: the labelled pairs only, each against its one-hot
    bi, ci = y.nonzero(as_tuple=True)
    logits = classifier(x[bi] * masks[bi, ci].unsqueeze(1))
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.eye(5)[ci],
                                                                pos_weight=torch.full((5,), 4.0))
    assert class_mask_loss(classifier, x, masks, y, absent_samples=0, mode="keep").item() == pytest.approx(want.item(), abs=1e-6)
    # k = 1: one absent class more per image (image 2 has none labelled: 1 pair), same draw for the same seed
    a = class_mask_loss(classifier, x, masks, y, 1, torch.Generator().manual_seed(3), "keep")
    b = class_mask_loss(classifier, x, masks, y, 1, torch.Generator().manual_seed(3), "keep")
    assert a.item() == b.item() and a.item() != pytest.approx(want.item())


def _authors_reference(classifier, x, masks, y, w):  # noqa: ANN001, ANN202
    """The authors' training_step, term by term with per-image loops (independent of the code under test)."""
    tot = torch.nn.functional.binary_cross_entropy_with_logits
    b = x.shape[0]
    m = torch.stack([masks[i][y[i] == 1].amax(0) for i in range(b)])
    n = torch.stack([masks[i][y[i] == 0].amax(0) for i in range(b)])
    cls = tot(classifier(m.unsqueeze(1) * x), y)
    p = torch.softmax(classifier((1 - m).unsqueeze(1) * x), -1).clamp(min=1e-16)
    ent = -(-p * p.log()).mean()

    def tv(mk):  # noqa: ANN001, ANN202
        kr = torch.tensor([[0.0, 0, 0], [0, 1, -1], [0, 0, 0]]).view(1, 1, 3, 3)
        kd = torch.tensor([[0.0, 0, 0], [0, 1, 0], [0, -1, 0]]).view(1, 1, 3, 3)
        pad = torch.nn.functional.pad(mk.unsqueeze(1), (1, 1, 1, 1), mode="reflect")
        return (torch.nn.functional.conv2d(pad, kr).abs() + torch.nn.functional.conv2d(pad, kd).abs()).mean()

    z = masks.shape[-1] * masks.shape[-2]
    ones = lambda frac: torch.cat([torch.ones(int(z * frac)), torch.zeros(z - int(z * frac))])  # noqa: E731
    per = torch.zeros(b)
    for i in range(b):
        for mk in masks[i][y[i] == 1]:
            q = mk.flatten().sort(descending=True).values
            per[i] += (torch.relu(ones(w.class_mask_min_area) - q) + torch.relu(q - ones(w.class_mask_max_area))).mean()
    return (cls + w.entropy_regularizer * ent + w.mask_variation_regularizer * (tv(m) + tv(n))
            + w.mask_area_constraint_regularizer * per.mean() + w.mask_total_area_regularizer * m.mean()
            + w.ncmask_total_area_regularizer * n.mean())


def test_explainer_loss_matches_the_authors_training_step() -> None:
    g = torch.Generator().manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(3, 3, 10, 10, generator=g)
    masks = torch.rand(3, 4, 10, 10, generator=g)
    y = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0]])
    w = ExplainerLossWeights(entropy_regularizer=3.0, mask_variation_regularizer=0.05,
                             mask_area_constraint_regularizer=0.1, mask_total_area_regularizer=0.01,
                             ncmask_total_area_regularizer=0.03)
    total, _ = explainer_loss(classifier, x, masks, y, w)
    assert total.item() == pytest.approx(_authors_reference(classifier, x, masks, y, w).item(), abs=1e-6)


def test_explainer_loss_combines_terms_with_weights() -> None:
    x = torch.ones(1, 3, 2, 2) * math.log(3.0)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1.0
    masks[0, 1, 0, 1] = 0.5
    masks.requires_grad_(True)
    y = torch.tensor([[1.0, 0.0]])
    w = ExplainerLossWeights(entropy_regularizer=2.0, mask_variation_regularizer=5.0,
                             mask_area_constraint_regularizer=3.0, mask_total_area_regularizer=0.1,
                             ncmask_total_area_regularizer=0.3, class_mask_min_area=0.25, class_mask_max_area=0.25,
                             class_regularizer=0.7, class_term="keep")
    total, t = explainer_loss(_PixelClassifier(), x, masks, y, w)
    # m keeps pixel (0,0) only: logits [ln3, 0] -> p = [0.75, 0.5]; BCE mean
    assert t["cls"].item() == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2, abs=1e-6)
    # 1-m zeroes pixel (0,0): logits [0, ln3] -> softmax [0.25, 0.75]
    assert t["ent"].item() == pytest.approx((0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / 2, abs=1e-6)
    assert t["area_m"].item() == pytest.approx(0.25) and t["area_n"].item() == pytest.approx(0.125)
    assert t["bounds"].item() == pytest.approx(0.0)  # exactly one of four pixels on: a = b = 0.25
    assert t["tv"].item() == pytest.approx(1.0 + 0.5)  # m: 4 unit steps / 4 px; n: 4 half steps / 4 px
    # s_0 keeps pixel (0,0): logits [ln3, 0] against [1, 0]; s_1 (absent) keeps half of pixel (0,1):
    # logits [0, ln3/2] against [0, 0], p_1 = √3/(1+√3)
    own = -(math.log(0.75) + math.log(0.5)) / 2
    absent = -(math.log(0.5) + math.log(1 / (1 + math.sqrt(3)))) / 2
    assert t["class_mask"].item() == pytest.approx((own + absent) / 2, abs=1e-6)
    expected = (t["cls"] + 2 * t["ent"] + 5 * t["tv"] + 3 * t["bounds"] + 0.1 * t["area_m"] + 0.3 * t["area_n"]
                + 0.7 * t["class_mask"])
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    total.backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0


def test_default_weights_are_the_authors_vgg16_voc() -> None:
    w = ExplainerLossWeights()
    assert (w.entropy_regularizer, w.mask_variation_regularizer, w.mask_area_constraint_regularizer,
            w.mask_total_area_regularizer, w.ncmask_total_area_regularizer, w.class_mask_min_area,
            w.class_mask_max_area) == (1, 1, 1, 0.1, 0.3, 0.05, 0.3)
    assert (w.nontarget_reduce, w.class_regularizer) == ("max", 0.0)


def test_rtis_loss_by_hand():
    from wysiwyc.training.losses import RTISLossWeights, rtis_loss

    kept = torch.tensor([[0.5, -2.0], [3.0, 0.0]])
    destroyed = torch.tensor([[1.0, 0.0], [-4.0, -0.5]])
    classes = torch.tensor([0, 1])
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1.0
    w = RTISLossWeights()
    total, t = rtis_loss(kept, destroyed, classes, masks, w)
    # preserver relu(1 - z): pair 0 -> 0.5, pair 1 (z=0) -> 1; destroyer relu(z + 1): 2 and 0.5
    assert torch.isclose(t["preserve"], torch.tensor(0.75)) and torch.isclose(t["destroy"], torch.tensor(1.25))
    area = ((1 + 5e-4) ** 0.3 + 7 * (5e-4) ** 0.3) / 8
    assert torch.isclose(t["area"], torch.tensor(area), atol=1e-6)
    # one corner of one channel at 1: vertical and horizontal squared steps, 1 each out of 4 per direction
    assert torch.isclose(t["smooth"], torch.tensor(0.25 + 0.25))
    assert torch.isclose(total, 0.3 * 0.75 + 1.25 + 8 * t["area"] + 0.5 * 0.5)
