"""Paper-1 segmentation metrics (Table 2) and the class-specific masking matrix (Table 1)."""

from __future__ import annotations

import math

import pytest
import torch

from wysiwyc.metrics.segmentation import (ClassMaskingMeter, SegmentationMeter, aggregate, aggregate_gt,
                                          matrix_goal, saliency_score, segmentation_scores, trivial_masks)


def test_scores_by_hand() -> None:
    m = torch.tensor([[[0.5, 1.0, 0.0, 0.0]]])
    g = torch.tensor([[[1.0, 1.0, 0.0, 1.0]]])
    s = segmentation_scores(m, g)
    assert s["mae"].item() == pytest.approx((0.5 + 0 + 0 + 1) / 4)
    assert s["acc"].item() == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert s["iou"].item() == pytest.approx(1.5 / 3.0)
    # ignoring the last pixel (unknown ground truth)
    v = segmentation_scores(m, g, torch.tensor([[[True, True, True, False]]]))
    assert v["mae"].item() == pytest.approx(0.5 / 3) and v["iou"].item() == pytest.approx(1.5 / 2)


def test_trivial_baselines_match_table2_relations() -> None:
    g = torch.zeros(1, 10, 10)
    g[0, :3] = 1  # 30 % foreground
    rows = {k: segmentation_scores(v, g) for k, v in trivial_masks(g).items()}
    assert rows["0"]["acc"].item() == pytest.approx(0.7) and rows["0"]["iou"].item() == 0
    assert rows["0.5"]["acc"].item() == pytest.approx(0.5) and rows["0.5"]["mae"].item() == pytest.approx(0.5)
    assert rows["0.5"]["iou"].item() == pytest.approx(0.15 / 0.65)  # Σmin = 0.5·30, Σmax = 30 + 0.5·70
    assert rows["1"]["iou"].item() == pytest.approx(0.3) and rows["1"]["mae"].item() == pytest.approx(0.7)
    assert rows["G.T."]["iou"].item() == 1 and rows["G.T."]["mae"].item() == 0
    both_empty = segmentation_scores(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    assert both_empty["iou"].item() == 1.0


def test_saliency_eq9() -> None:
    m = torch.zeros(1, 10, 10)
    m[0, 0, 0] = 1  # area 0.01 -> clamped to 0.05
    logits = torch.tensor([[0.0, -100.0, 0.0]])  # sigmoid: 0.5, 0, 0.5
    sal = saliency_score(m, logits, torch.tensor([[1.0, 1.0, 0.0]]))  # Σ_Y p = 0.5
    assert sal.item() == pytest.approx(math.log(0.05) - math.log(0.5), abs=1e-5)
    big = saliency_score(torch.full((1, 4, 4), 0.5), logits, torch.tensor([[1.0, 0.0, 1.0]]))  # Σ_Y p = 1
    assert big.item() == pytest.approx(math.log(0.5), abs=1e-5)


def test_aggregate_and_gt_with_unknown_pixels() -> None:
    masks = torch.tensor([[[[0.2, 0.9]], [[0.6, 0.1]], [[1.0, 1.0]]]])
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    assert torch.allclose(aggregate(masks, labels), torch.tensor([[[0.6, 0.9]]]))
    gt = torch.tensor([[[[1, 0]], [[0, 255]], [[255, 1]]]], dtype=torch.uint8)
    g, valid = aggregate_gt(gt, labels)
    assert g.tolist() == [[[1.0, 0.0]]]
    assert valid.tolist() == [[[True, False]]]  # class 2 is not labelled: its 255 does not count


def test_segmentation_meter_skips_unlabelled_images() -> None:
    meter = SegmentationMeter(lambda x: torch.zeros(x.shape[0], 2))
    x = torch.ones(2, 3, 2, 2)
    g = torch.ones(2, 2, 2)
    meter.update(x, torch.ones(2, 2, 2), g, torch.ones(2, 2, 2, dtype=torch.bool), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    r = meter.result()
    assert r["n"] == 1 and r["iou"] == 1.0 and r["sal"] == pytest.approx(-math.log(0.5), abs=1e-6)


def _pixel_logits(x: torch.Tensor) -> torch.Tensor:
    """Class c's logit = ln3 · (pixel c of channel 0): evidence of class c lives in pixel c."""
    return math.log(3.0) * x[:, 0, 0, :]


def test_class_masking_matrix_by_hand() -> None:
    x = torch.ones(1, 3, 1, 2)
    labels = torch.tensor([[1.0, 1.0]])
    masks = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    meter = ClassMaskingMeter(_pixel_logits, 2)
    meter.update(x, masks, labels)
    r = meter.result()
    # unmasked: logits [ln3, ln3] -> 0.5 each; mask k keeps pixel k -> softmax [0.75, 0.25]
    assert r["none"] == pytest.approx([0.5, 0.5])
    assert r["matrix"] == [pytest.approx([0.75, 0.25]), pytest.approx([0.25, 0.75])]
    goal = matrix_goal(r)
    assert goal["diag_ratio"] == pytest.approx([1.5, 1.5]) and goal["diag_ok"]
    assert goal["offdiag_max_ratio"] == pytest.approx([0.5, 0.5]) and not goal["offdiag_ok"]
    assert goal["diag_min"] == pytest.approx(1.5) and goal["offdiag_max"] == pytest.approx(0.5)
    assert goal["offdiag_mean"] == pytest.approx(0.5)
    r["matrix"] = [[0.75, 0.125], [0.05, 0.75]]  # ratios 0.25 and 0.1: max ≤ 0.3, mean 0.175 ≤ 0.2
    goal = matrix_goal(r)
    assert goal["offdiag_ok"] and goal["offdiag_mean"] == pytest.approx(0.175)
    assert not matrix_goal(r, leak=0.2)["offdiag_ok"]


def test_per_class_scores_by_hand() -> None:
    from wysiwyc.metrics.segmentation import PerClassMeter, per_class_scores

    # 1x4 image: class 0's object is pixel 0, class 1's is pixel 1, pixel 3 unknown for class 0
    gt = torch.tensor([[[[1, 0, 0, 255]], [[0, 1, 0, 0]], [[0, 0, 0, 0]]]], dtype=torch.uint8)
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    masks = torch.tensor([[[[0.8, 0.4, 0.0, 1.0]], [[0.2, 1.0, 0.0, 0.0]], [[0.5, 0.1, 0.9, 0.0]]]])
    s = per_class_scores(masks, gt, labels)
    # class 0 over its 3 valid pixels: min sum 0.8, max sum 1.0 + 0.4 = 1.4; |diff| 0.2 + 0.4 + 0
    assert s["iou"][0, 0].item() == pytest.approx(0.8 / 1.4) and s["mae"][0, 0].item() == pytest.approx(0.6 / 3)
    assert s["own"][0, 0].item() == pytest.approx(0.8) and s["leak"][0, 0].item() == pytest.approx(0.4)
    assert s["own"][0, 1].item() == pytest.approx(1.0) and s["leak"][0, 1].item() == pytest.approx(0.2)
    # class 2 is not labelled: no iou/own/leak; its mask on the labelled objects (pixels 0, 1)
    assert torch.isnan(s["iou"][0, 2]) and torch.isnan(s["own"][0, 2])
    assert s["absent"][0, 2].item() == pytest.approx(0.3) and torch.isnan(s["absent"][0, 0])
    meter = PerClassMeter(3)
    meter.update(masks, gt, labels)
    meter.update(masks, gt, labels)
    r = meter.result()
    assert r["per_class"]["own"][:2] == pytest.approx([0.8, 1.0]) and math.isnan(r["per_class"]["own"][2])
    assert r["own"] == pytest.approx(0.9) and r["leak"] == pytest.approx(0.3)
    assert r["iou_min"] == pytest.approx(min(0.8 / 1.4, s["iou"][0, 1].item()))


def test_class_masking_matrix_averages_thresholds_and_only_target_images() -> None:
    x = torch.ones(2, 3, 1, 2)
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # second image has no class: ignored
    masks = torch.tensor([[[[0.35, 0.0]], [[0.0, 0.0]]], [[[1.0, 1.0]], [[1.0, 1.0]]]])
    meter = ClassMaskingMeter(_pixel_logits, 2)
    meter.update(x, masks, labels)
    r = meter.result()
    # mask 0 survives thresholds 0.1, 0.2, 0.3 (p0 = 0.75), removed for 6 (logits 0 -> 0.5)
    assert r["matrix"][0][0] == pytest.approx((3 * 0.75 + 6 * 0.5) / 9)
    assert r["matrix"][0][1] == pytest.approx(0.5)
    assert r["count"] == [1.0, 0.0] and r["matrix"][1] == [0.0, 0.0]
