"""--provider openvino: the bundled ONNX export on OpenVINO's CPU plugin, against ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _helpers import ROOT

pytest.importorskip("openvino", reason="pip install 'wysiwyc[openvino]'")
pytest.importorskip("onnxruntime")

DEMO = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.onnx"


def test_openvino_matches_onnxruntime_on_the_demo_export():
    from wysiwyc.runtime.backends import open_backend

    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    with open_backend(DEMO, provider="cpu") as ref, open_backend(DEMO, provider="openvino") as ov:
        assert ov.name.startswith("openvino") and ov.spec == ref.spec
        (lr, mr), (lo, mo) = ref(x), ov(x)
        again = ov(x[:1])  # another batch size on the same compiled model
    assert np.abs(lo - lr).max() <= 1e-4 and np.abs(mo - mr).max() <= 1e-4
    assert np.abs(again[1] - mr[:1]).max() <= 1e-4


def test_runtime_runs_the_demo_on_openvino(tmp_path: Path):
    from wysiwyc.runtime import cli

    summary = tmp_path / "s.json"
    assert cli.main(["--demo", "--max-frames", "16", "--no-show", "--provider", "openvino",
                     "--summary", str(summary)]) == 0
    s = json.loads(summary.read_text())
    assert s["frames"] == 16 and s["model"]["backend"].startswith("openvino")
