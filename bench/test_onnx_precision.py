"""ONNX Runtime CPU latency of the exported demo model at each precision (fp32, fp16, int8).

Run: ``pytest bench/test_onnx_precision.py --benchmark-only``. The bench checkpoint
(default: the bundled shapes Explainer; ``--bench-classifier X.pt`` for another) is
exported by the product's own path (:func:`wysiwyc.export.onnx_export.export_checkpoint`;
int8 = static QDQ calibrated on 128 training images) into a temporary folder, then each
file runs in one ONNX Runtime CPU session (all optimisations on, default threads) at
batch 1 and batch 16 on the same random images. One group per batch size, so each table
shows the precisions' ratios; ``extra_info`` holds the file size and ms per image.

Graph simplification: onnxsim 0.8 on the fp32 export leaves the graph unchanged (64 nodes
before and after; the dynamo exporter already folds BatchNorm into the convolutions) and
ONNX Runtime's own ``ORT_ENABLE_ALL`` pass runs at session creation, so no offline
simplification step is applied (measured on the bundled Explainer, 2026-11-22).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

PRECISIONS = ("fp32", "fp16", "int8")
_EXPORTS: dict[str, Path] = {}


def _checkpoint(bench_config: dict) -> Path:
    src = bench_config.get("source")
    if src and str(src).endswith(".pt"):
        return Path(src)
    return ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.pt"


def _export(ckpt: Path, precision: str) -> Path:
    if precision not in _EXPORTS:
        import torch

        from wysiwyc.checkpoint import load_checkpoint
        from wysiwyc.data import build_dataset
        from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

        out = Path(tempfile.mkdtemp(prefix="wysiwyc-prec-")) / f"model_{precision}.onnx"
        calib = None
        if precision == "int8":
            spec = load_checkpoint(ckpt)["spec_obj"]
            ds = build_dataset(spec.dataset if spec.dataset == "shapes" else "shapes", "train", tuple(spec.image_size))
            calib = torch.stack([ds[i][0] for i in range(128)]).numpy()
        export_checkpoint(ckpt, out, ExportOptions(precision=precision), calib_images=calib)
        _EXPORTS[precision] = out
    return _EXPORTS[precision]


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_onnxruntime_precision(benchmark, bench_config, precision, batch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = _export(_checkpoint(bench_config), precision)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    h, w = sess.get_inputs()[0].shape[2:]
    x = np.random.default_rng(0).random((batch, 3, h, w), dtype=np.float32)
    benchmark.group = f"onnxruntime cpu | batch {batch} | precision"
    benchmark.name = f"{precision} batch {batch}"
    logits, masks = benchmark(sess.run, ["logits", "masks"], {"images": x})
    assert masks.shape[0] == batch and 0 <= masks.min() and masks.max() <= 1
    stats = benchmark.stats.stats if hasattr(benchmark.stats, "stats") else benchmark.stats
    benchmark.extra_info.update({"precision": precision, "batch": batch, "size_mb": round(path.stat().st_size / 1e6, 2),
                                 "ms_per_image_median": round(1000 * stats.median / batch, 3),
                                 "onnxruntime": ort.__version__})
