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


def test_runtime_smooth_averages_the_saved_masks_per_stream(tmp_path, capsys):
    """runtime-explain --smooth 0.5 on a still clip of one frame repeated with noise: every
    saved mask is the moving average of the unsmoothed run's masks, frame by frame."""
    from wysiwyc.runtime import cli

    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    from wysiwyc.data.shapes_render import ShapesRenderer

    img = ShapesRenderer(split="test", size=64).generate(3)[0]
    rng = np.random.default_rng(0)
    for k in range(5):
        noisy = np.clip(img.astype(np.int16) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(frames / f"{k}.png")
    runs = {}
    for alpha in ("1", "0.5"):
        out = tmp_path / f"m{alpha}"
        assert cli.main(["--images", str(frames / "*.png"), "--save-masks", str(out), "--no-show", "--batch", "2",
                         "--smooth", alpha]) == 0
        runs[alpha] = [np.load(p)["masks"].astype(np.float32) / 255 for p in sorted(out.glob("*.npz"))]
    expect = runs["1"][0]
    for raw, smoothed in zip(runs["1"], runs["0.5"]):
        expect = raw if expect is raw else 0.5 * raw + 0.5 * expect
        assert np.abs(smoothed - expect).max() <= 2 / 255  # uint8 rounding, twice
    assert cli.main(["--demo", "--max-frames", "1", "--no-show", "--smooth", "0"]) == 2
    assert "--smooth 0.0 is out of range" in capsys.readouterr().err
