"""ONNX Runtime CPU latency of the exported demo model at each precision (fp32, fp16, int8).

Run (the README table comes from the JSON)::

    pytest bench/test_onnx_precision.py --benchmark-only --benchmark-json out/onnx_precision.json
    python bench/tables.py onnx_precision out/onnx_precision.json

The bench checkpoint (default: the bundled shapes Explainer; ``--bench-classifier X.pt`` for
another) is exported by the product's own path
(:func:`wysiwyc.export.onnx_export.export_checkpoint`; int8 = static QDQ calibrated on 128
training images, as ``export/to_onnx.py --precision int8`` does; :mod:`_methods`, shared with
``test_latency.py``) into a temporary folder,
and checked against torch with :func:`~wysiwyc.export.onnx_export.parity_report` on 32
test images of its dataset (the numbers ``OUT.report.json`` holds). Each file then runs in
one ONNX Runtime CPU session (the runtime's own ``OnnxBackend``: ``ORT_ENABLE_ALL``, default
threads) at batch 1 and batch 16 on the same random images. All six cases are one group, so the
table shows precision and batch side by side; ``extra_info`` holds file size, ms per image
and the parity numbers.

This is separate from ``test_latency.py``, whose ``explainer[onnxruntime-*]`` entries export
whatever model the bench builds (an architecture name gives an untrained model with no
checkpoint) and compare ONNX Runtime against the other attribution methods; here the
question is what each *export precision* of a checkpoint costs and loses.

Graph simplification is measured by ``bench/experiments/onnx_simplify.py`` (no variant helps; none is
applied).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

PRECISIONS = ("fp32", "fp16", "int8")
PARITY_IMAGES = 32
_EXPORTS: dict[str, tuple[Path, dict[str, Any]]] = {}


def _checkpoint(bench_config: dict) -> Path:
    src = bench_config.get("source")
    if src and str(src).endswith(".pt"):
        return Path(src)
    return ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.pt"


def _export(ckpt: Path, precision: str) -> tuple[Path, dict[str, Any]]:
    """(path, parity report) of ``ckpt`` exported at ``precision`` by :mod:`_methods` (shared
    with ``test_latency.py``); cached per session."""
    if precision not in _EXPORTS:
        import torch
        from _methods import export_onnx

        from wysiwyc.checkpoint import load_checkpoint
        from wysiwyc.data import build_dataset, dataset_kwargs
        from wysiwyc.export.onnx_export import export_model, parity_report

        spec = load_checkpoint(ckpt).spec
        size = tuple(spec.image_size)
        out = export_onnx(ckpt, Path(tempfile.mkdtemp(prefix="wysiwyc-prec-")) / f"model_{precision}.onnx", precision)
        ds = build_dataset(spec.dataset, "test", size, **dataset_kwargs(spec.dataset, PARITY_IMAGES))
        images = torch.stack([ds[i][0] for i in range(min(PARITY_IMAGES, len(ds)))])
        _EXPORTS[precision] = (out, parity_report(export_model(ckpt), out, images))
    return _EXPORTS[precision]


_BACKENDS: dict[str, Any] = {}


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_onnxruntime_precision(benchmark, bench_config, precision, batch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from _methods import open_session

    path, parity = _export(_checkpoint(bench_config), precision)
    if precision not in _BACKENDS:
        _BACKENDS[precision] = open_session(path)
    sess = _BACKENDS[precision].session
    h, w = sess.get_inputs()[0].shape[2:]
    x = np.random.default_rng(0).random((batch, 3, h, w), dtype=np.float32)
    benchmark.group = "onnxruntime cpu | exported demo model | precision x batch"
    benchmark.name = f"{precision} batch {batch}"
    logits, masks = benchmark(sess.run, ["logits", "masks"], {"images": x})
    assert masks.shape[0] == batch and 0 <= masks.min() and masks.max() <= 1
    stats = benchmark.stats.stats if hasattr(benchmark.stats, "stats") else benchmark.stats
    benchmark.extra_info.update({
        "precision": precision, "batch": batch, "size_mb": round(path.stat().st_size / 1e6, 2),
        "median_ms": round(1000 * stats.median, 3), "ms_per_image_median": round(1000 * stats.median / batch, 3),
        "onnxruntime": ort.__version__, "parity": {k: float(v) for k, v in parity.items()}})
