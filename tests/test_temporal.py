"""Temporal smoothing (runtime-explain --smooth) and the temporal-stability metrics on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import load_script
from wysiwyc.runtime.smoothing import MaskSmoother


def test_moving_average_per_stream_and_class_by_hand():
    sm = MaskSmoother(0.25)
    a, b = np.full((1, 2, 2), 1.0, np.float32), np.zeros((1, 2, 2), np.float32)
    assert np.allclose(sm(0, [3], a), 1.0)  # the first mask starts the average
    assert np.allclose(sm(0, [3], b), 0.75)  # 0.25·0 + 0.75·1
    assert np.allclose(sm(0, [3], b), 0.5625)  # 0.25·0 + 0.75·0.75
    assert np.allclose(sm(1, [3], b), 0.0)  # another stream has its own state
    assert np.allclose(sm(0, [5], a), 1.0)  # a new class starts afresh ...
    assert np.allclose(sm(0, [3], b), 0.0)  # ... and class 3, absent a frame, was forgotten
    assert MaskSmoother(1.0)(0, [0], a) is a  # α = 1: what the model output
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError):
            MaskSmoother(bad)


def test_temporal_scores_on_known_cases():
    exp = load_script("bench/experiments/temporal.py")
    t, h, w = 10, 4, 8
    gt = np.zeros((1, t, 1, h, w), np.float32)
    for k in range(t):
        gt[0, k, 0, :, k % w] = 1.0  # a bar moving one column a frame
    labels = np.ones((1, 1))
    exact = exp.scores(gt, gt, labels, max_lag=3)
    assert exact["per_class_iou"] == 1.0 and exact["lag"] == 0 and exact["still_flicker"] == 0.0
    assert exact["flicker"] == pytest.approx(exact["motion"]) and exact["motion"] == pytest.approx(2 / w)
    late = np.concatenate([gt[:, :2], gt[:, :-2]], axis=1)  # the same masks, two frames behind
    assert exp.scores(late, gt, labels, max_lag=3)["lag"] == 2
    noisy = gt + 0.1 * (np.arange(t) % 2)[None, :, None, None, None]  # flickers on every pixel
    s = exp.scores(noisy, gt, labels, max_lag=3)
    assert s["still_flicker"] == pytest.approx(0.1) and s["flicker"] > s["motion"]
    smoothed = exp.smooth(noisy, 0.5)
    assert exp.scores(smoothed, gt, labels, max_lag=3)["still_flicker"] < s["still_flicker"]
