"""Each term of the Explainer loss (paper 1, Eqs. 1-8) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from wysiwyc.training.losses import (ExplainerLossWeights, area, area_bounds, classification_loss, explainer_loss,
                            merge_masks, negative_entropy_loss, total_variation)


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
    two = area_bounds(masks, torch.tensor([[1.0, 1.0, 0.0]]), a=0.2, b=0.5)  # mean over label classes
    assert two.item() == pytest.approx((expected + 0.5) / 2, abs=1e-6)
    none = area_bounds(masks, torch.zeros(1, 3), a=0.2, b=0.5)  # no label: contributes 0
    assert none.item() == 0.0


def test_area_bounds_floor_tolerates_float_error() -> None:
    # ⌊100·0.29⌋ = 29 although 100*0.29 == 28.999…; a mask with exactly 29 ones meets the bound
    mask = torch.zeros(1, 1, 10, 10)
    mask.view(-1)[:29] = 1
    assert area_bounds(mask, torch.ones(1, 1), a=0.29, b=0.29).item() == pytest.approx(0.0, abs=1e-7)


def test_total_variation_anisotropic() -> None:
    # down diffs |1-0|, |1-1| -> mean 0.5; right diffs |1-0|, |1-1| -> mean 0.5
    assert total_variation(torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])).item() == pytest.approx(1.0)
    assert total_variation(torch.full((2, 3, 3), 0.3)).item() == pytest.approx(0.0)


class _PixelClassifier(torch.nn.Module):
    """Logit of class c = sum of channel 0 over pixel column c (a hand-checkable explanandum)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :]


def test_explainer_loss_combines_terms_with_weights() -> None:
    x = torch.ones(1, 3, 1, 2) * math.log(3.0)
    masks = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.5]]]], requires_grad=True)  # (1,2,1,2)
    y = torch.tensor([[1.0, 0.0]])
    w = ExplainerLossWeights(entropy=2.0, area=3.0, tv=5.0, total_area=0.1, nontarget_area=0.3, min_area=0.5, max_area=0.5)
    total, t = explainer_loss(_PixelClassifier(), x, masks, y, w)
    # m = [1, 0] keeps pixel 0: logits [ln3, 0] -> p = [0.75, 0.5]; BCE mean
    assert t["cls"].item() == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2, abs=1e-6)
    # 1-m keeps pixel 1: logits [0, ln3] -> softmax [0.25, 0.75]
    assert t["ent"].item() == pytest.approx((0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / 2, abs=1e-6)
    assert t["area_m"].item() == pytest.approx(0.5) and t["area_n"].item() == pytest.approx(0.25)
    assert t["bounds"].item() == pytest.approx(0.0)  # exactly one of two pixels on: a = b = 0.5
    assert t["tv"].item() == pytest.approx(1.0 + 0.5)  # |1-0| + |0.5-0| (no vertical neighbours)
    expected = (t["cls"] + 2 * t["ent"] + 3 * (t["area_m"] + t["area_n"] + t["bounds"]) + 5 * t["tv"]
                + 0.1 * t["area_m"] + 0.3 * t["area_n"])
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    total.backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0


def test_default_weights_are_the_papers() -> None:
    w = ExplainerLossWeights()
    assert (w.entropy, w.area, w.tv, w.total_area, w.nontarget_area, w.min_area, w.max_area) == (1, 1, 1, 0.1, 0.3, 0.05, 0.3)


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
