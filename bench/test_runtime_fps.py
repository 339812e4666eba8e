"""End-to-end FPS of ``runtime-explain`` (a benchmark, not a timed test).

Run: ``pytest bench/test_runtime_fps.py --benchmark-only``. Each case runs the real
runtime pipeline (source thread → preprocess → infer → postprocess → overlay render at
384 px) on the synthetic ``--demo`` stream for ``FRAMES`` frames, without a window or
files, and reports FPS (frames / wall time) and the p50 / p95 end-to-end latency in
``extra_info`` (``--benchmark-json``) and in the run's end summary (``bench/conftest.py``),
which pytest prints with or without ``-s``. pytest-benchmark's own table for this group
shows the seconds of one whole run of ``FRAMES`` frames; the FPS are in the summary.

Cases (group ``runtime | cpu``):

* the bundled demo Explainer (U-Net w16 + small_cnn, 64 px) through ONNX Runtime fp32
  at the default batch (up to 8 waiting frames) and at batch 1, and through torch;
* the same model on 4 concurrent ``--demo`` streams (one reader thread each, batches
  across the streams), with the model-only rate at that batch for comparison;
* the bundled demo mask predictor (same classifier) through ONNX Runtime fp32;
* ``lraspp_mobilenet_v3`` Explainer + ``mobilenet_v3_large`` classifier at 224×224
  through ONNX Runtime (fp32, batch 1 and 8): untrained weights, which do not change
  latency — the architecture is what is measured.

On a machine with CUDA the torch backend also runs on the GPU in fp16.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

FRAMES = 300


def _run(model: Path, size: int, batch: int, frames: int = FRAMES, **backend_opts) -> dict:
    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.sources import DemoSource, FrameStream

    be = open_backend(model, **backend_opts)
    warm = be.preprocess([DemoSource(size=size).read()] * batch)
    be.infer(warm)  # first-run allocations are not steady state
    stream = FrameStream(DemoSource(size=size, seed=1))
    res = Pipeline(stream, be, Overlay(list(be.spec.class_names)), [], RunOptions(max_frames=frames, batch=batch)).run()
    pct = res.percentiles()
    return {"backend": be.name, "fps": res.fps, "e2e_p50_ms": pct["end_to_end"]["p50"],
            "e2e_p95_ms": pct["end_to_end"]["p95"], "infer_p50_ms": pct["infer"]["p50"], "batch": batch,
            "size": size, "frames": res.frames}


def _run_streams(model: Path, size: int, batch: int, streams: int, frames: int = FRAMES) -> dict:
    """``streams`` concurrent demo streams through one pipeline, and the model alone at ``batch``."""
    import threading
    import time

    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.sources import DemoSource, FrameStream

    be = open_backend(model)
    x = be.preprocess([DemoSource(size=size).read()] * batch)
    be.infer(x)
    t0, n = time.perf_counter(), 0
    while n < frames:  # the model alone, same batch: the ceiling of the pipeline
        be.infer(x)
        n += batch
    model_only = n / (time.perf_counter() - t0)
    cond = threading.Condition()
    ss = [FrameStream(DemoSource(size=size, seed=k), cond=cond, stream_id=k) for k in range(streams)]
    res = Pipeline(ss, be, Overlay(list(be.spec.class_names)), [], RunOptions(max_frames=frames, batch=batch)).run()
    pct = res.percentiles()
    return {"backend": be.name, "fps": res.fps, "model_only_fps": model_only, "ratio": res.fps / model_only,
            "e2e_p50_ms": pct["end_to_end"]["p50"], "e2e_p95_ms": pct["end_to_end"]["p95"],
            "infer_p50_ms": pct["infer"]["p50"], "batch": batch, "size": size, "frames": res.frames,
            "streams": streams, "per_stream_frames": [res.streams[k].frames for k in sorted(res.streams)]}


@pytest.fixture(scope="module")
def lraspp_onnx(tmp_path_factory) -> Path:
    """Untrained lraspp_mobilenet_v3 Explainer + mobilenet_v3_large classifier, 224 px, as ONNX."""
    import torch

    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.models.explainer import head_from_spec
    from wysiwyc.spec import ModelSpec

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("fps")
    names = ["stripes", "checks", "dots", "grid", "rings", "zigzag"]
    spec = ModelSpec(class_names=names, image_size=(224, 224), classifier_arch="mobilenet_v3_large",
                     kind="explainer", head_arch="lraspp_mobilenet_v3", mask_kind="sigmoid")
    clf = build_classifier("mobilenet_v3_large", len(names)).eval()
    head = head_from_spec(spec).eval()
    pt = d / "lraspp.pt"
    save_checkpoint(pt, "explainer", spec, clf.state_dict(), head.state_dict())
    out = d / "lraspp.onnx"
    export_checkpoint(pt, out, ExportOptions())
    return out


DEMO_ONNX = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.onnx"
DEMO_PT = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.pt"


def _bench(benchmark, name: str, fn) -> None:  # noqa: ANN001
    benchmark.group = "runtime | cpu | end to end, --demo stream"
    benchmark.name = name
    out = benchmark.pedantic(fn, rounds=1, iterations=1)
    benchmark.extra_info.update(out)


@pytest.mark.parametrize("batch", [8, 1])
def test_demo_model_onnxruntime(benchmark, batch):
    pytest.importorskip("onnxruntime")
    _bench(benchmark, f"demo explainer 64px onnxruntime fp32 batch≤{batch}", lambda: _run(DEMO_ONNX, 64, batch))


def test_demo_model_four_streams_onnxruntime(benchmark):
    pytest.importorskip("onnxruntime")
    _bench(benchmark, "demo explainer 64px onnxruntime fp32, 4 demo streams, batch≤8",
           lambda: _run_streams(DEMO_ONNX, 64, 8, 4))


@pytest.fixture(scope="module")
def mask_predictor_onnx(tmp_path_factory) -> Path:
    """The bundled demo mask predictor exported to fp32 ONNX."""
    pytest.importorskip("onnx")
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("mp") / "mp.onnx"
    export_checkpoint(ROOT / "src" / "wysiwyc" / "assets" / "shapes_mask_predictor.pt", out, ExportOptions())
    return out


@pytest.mark.parametrize("batch", [8, 1])
def test_demo_mask_predictor_onnxruntime(benchmark, mask_predictor_onnx, batch):
    pytest.importorskip("onnxruntime")
    _bench(benchmark, f"demo mask predictor 64px onnxruntime fp32 batch≤{batch}",
           lambda: _run(mask_predictor_onnx, 64, batch))


def test_demo_model_torch(benchmark):
    _bench(benchmark, "demo explainer 64px torch cpu batch≤8", lambda: _run(DEMO_PT, 64, 8, device="cpu"))


@pytest.mark.parametrize("batch", [1, 8])
def test_lraspp_224_onnxruntime(benchmark, lraspp_onnx, batch):
    pytest.importorskip("onnxruntime")
    _bench(benchmark, f"lraspp_mobilenet_v3 + mobilenet_v3_large 224px onnxruntime fp32 batch≤{batch}",
           lambda: _run(lraspp_onnx, 224, batch, frames=150))


def test_demo_model_torch_cuda(benchmark):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _bench(benchmark, "demo explainer 64px torch cuda fp16 batch≤8", lambda: _run(DEMO_PT, 64, 8, device="cuda"))
