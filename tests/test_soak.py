"""bench/experiments/soak.py: the RSS slope fit, the sampler, and a smoke run of a few dozen frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _helpers import load_script

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def soak():
    return load_script("bench/experiments/soak.py")


def test_rss_slope_fits_after_the_warmup(soak):
    frames = list(range(0, 20_001, 1000))
    # 50 MB of warm-up growth, then exactly 2 KB per 1000 frames
    rss = [100_000 + (50_000 if f >= 5000 else 10 * f) + 2 * f / 1000 for f in frames]
    fit = soak.rss_slope(frames, rss, warmup=5000)
    assert fit["kb_per_1k_frames"] == pytest.approx(2.0, abs=1e-6)
    assert fit["samples"] == 16 and fit["rss_start_kb"] == pytest.approx(150_010.0)
    assert soak.rss_slope(frames, [7.0] * len(frames), 0)["kb_per_1k_frames"] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(soak.rss_slope([0, 10], [1.0, 2.0], warmup=5)["kb_per_1k_frames"])  # one sample left


def test_sampler_samples_when_a_multiple_is_crossed(soak, monkeypatch):
    monkeypatch.setattr(soak, "rss_kb", lambda: 1.0)
    s = soak.RssSampler(every=100)
    for _ in range(30):
        s.update(8)  # batches of 8: 240 frames cross 100 and 200 once each
    assert [f for f, _ in s.samples] == [0, 104, 200]


def test_smoke_run_writes_the_report(soak, tmp_path, capsys):
    out = tmp_path / "soak"
    assert soak.main(["--frames", "96", "--streams", "2", "--batch", "8", "--sample-every", "16", "--warmup", "0",
                      "--threads", "1", "--out", str(out)]) == 0
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["frames"] == 96 and rep["delivered_to_outputs"] == 96 and sum(rep["per_stream_frames"]) == 96
    assert len(rep["per_stream_frames"]) == 2 and rep["streams"] == 2
    frames = [s["frames"] for s in rep["samples"]]
    assert frames[0] == 0 and frames[-1] == 96 and len(frames) >= 7 and frames == sorted(frames)
    assert all(s["rss_kb"] > 1000 for s in rep["samples"])  # a Python process with a model: MBs
    assert np.isfinite(rep["rss_kb_per_1k_frames"])
    md = out.with_suffix(".md").read_text()
    assert "| 96 |" in md and "KB / 1k frames" in md
    assert "soak: 96 frames" in capsys.readouterr().out


def test_bad_options_exit_2(soak, tmp_path, capsys):
    assert soak.main(["--frames", "10", "--warmup", "10", "--out", str(tmp_path / "x")]) == 2
    assert "--warmup must be in 0 .. --frames - 1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
