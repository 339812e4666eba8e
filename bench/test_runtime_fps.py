"""End-to-end FPS of ``runtime-explain`` (a benchmark, not a timed test).

Run: ``pytest bench/test_runtime_fps.py --benchmark-only`` (smoke run of the
concurrent cases, a few seconds each: ``pytest bench/test_runtime_fps.py --benchmark-only
-k concurrent --bench-seconds 1``). Each case runs the real
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
* the same model on 1, 4 and 8 concurrent **paced** streams, each case for
  ``--bench-seconds`` (default 20): video files played at their real frame rate
  (``--realtime``: 30 FPS each, newest frame, drops counted) and loopback MJPEG-over-HTTP
  streams at 30 FPS (the IP-camera protocol; ``tests/_mjpeg.py``). Reported: aggregate
  FPS, the offered rate, per-stream p50/p95 end-to-end latency and drops, the run's mean
  batch, and the model-only rate at that batch measured in the same case, with the
  ratio (how much of the model's capacity the pipeline delivered);
* the bundled demo mask predictor (same classifier) through ONNX Runtime fp32;
* ``lraspp_mobilenet_v3`` Explainer + ``mobilenet_v3_large`` classifier at 224×224
  through ONNX Runtime (fp32, batch 1 and 8): untrained weights, which do not change
  latency — the architecture is what is measured.

On a machine with CUDA the torch backend also runs on the GPU in fp16.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

FRAMES = 300


def _shown(draw: bool) -> list:
    """The outputs of a case: one that shows the overlay (so it is drawn, as for a window or a
    video; the frames are then dropped) or none (JSON-lines-style analytics: nothing drawn)."""
    from wysiwyc.runtime.outputs import Output

    class Shown(Output):
        draws = True

    return [Shown()] if draw else []


def _run(model: Path, size: int, batch: int, frames: int = FRAMES, draw: bool = True, **backend_opts) -> dict:
    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import DemoSource

    be = open_backend(model, **backend_opts)
    _model_only_fps(be, batch, batch, size)  # warm-up: first-run allocations
    stream = FrameStream(DemoSource(size=size, seed=1))
    res = Pipeline(stream, be, Overlay(list(be.spec.class_names)), _shown(draw),
                   RunOptions(max_frames=frames, batch=batch)).run()
    assert res.frames == frames, f"the pipeline delivered {res.frames} of {frames} frames"
    pct = res.percentiles()
    return {"backend": be.name, "fps": res.fps, **_yardsticks(model, be, batch, frames, size, res.fps),
            "e2e_p50_ms": pct["end_to_end"]["p50"], "e2e_p95_ms": pct["end_to_end"]["p95"],
            "infer_p50_ms": pct["infer"]["p50"], "batch": batch, "size": size, "frames": res.frames}


def _run_streams(model: Path, size: int, batch: int, streams: int, frames: int = FRAMES, draw: bool = True) -> dict:
    """``streams`` concurrent demo streams through one pipeline, and the model alone at ``batch``."""
    import threading

    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import DemoSource

    be = open_backend(model)
    _model_only_fps(be, batch, batch, size)  # warm-up: first-run allocations
    cond = threading.Condition()
    ss = [FrameStream(DemoSource(size=size, seed=k), cond=cond, stream_id=k) for k in range(streams)]
    res = Pipeline(ss, be, Overlay(list(be.spec.class_names)), _shown(draw),
                   RunOptions(max_frames=frames, batch=batch)).run()
    assert res.frames == frames and all(r.frames > 0 for r in res.streams.values()), "a stream delivered nothing"
    pct = res.percentiles()
    return {"backend": be.name, "fps": res.fps, **_yardsticks(model, be, batch, frames, size, res.fps),
            "e2e_p50_ms": pct["end_to_end"]["p50"], "e2e_p95_ms": pct["end_to_end"]["p95"],
            "infer_p50_ms": pct["infer"]["p50"], "batch": batch, "size": size, "frames": res.frames,
            "streams": streams, "per_stream_frames": [res.streams[k].frames for k in sorted(res.streams)]}


STREAM_FPS = 30.0  # the rate every paced stream offers
STREAM_SIZE = 64  # frame side of the clips and MJPEG streams (the demo model's input)


def _clip(path: Path, frames: int, seed: int) -> Path:
    """A demo-scene clip (MJPEG .avi: every OpenCV build writes and reads it) at STREAM_FPS."""
    import cv2

    from wysiwyc.runtime.sources import DemoSource

    src = DemoSource(size=STREAM_SIZE, seed=seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), STREAM_FPS, (STREAM_SIZE, STREAM_SIZE))
    for _ in range(frames):
        w.write(src.read()[..., ::-1].copy())
    w.release()
    return path


_CLASSIFIERS: dict = {}


def _classifier_only_fps(model: Path, batch: int, frames: int, size: int) -> float | None:
    """The classifier alone (logits only, ONNX Runtime with the runtime's session options) of an
    ``.onnx`` export whose checkpoint lies beside it, at ``batch``: the yardstick of what the
    masks cost on top of classifying; ``None`` for another model."""
    import time

    import numpy as np

    pt = model.with_suffix(".pt")
    if model.suffix != ".onnx" or not pt.is_file():
        return None
    if pt not in _CLASSIFIERS:
        import tempfile
        from dataclasses import replace

        import onnxruntime as ort
        from _methods import export_onnx

        from wysiwyc.checkpoint import load_checkpoint, save_checkpoint
        from wysiwyc.runtime.backends.onnxruntime import session_options

        ck = load_checkpoint(pt)
        tmp = Path(tempfile.mkdtemp(prefix="wysiwyc-fps-"))
        alone = save_checkpoint(tmp / "classifier.pt", replace(ck.spec, kind="classifier", head_arch=None,
                                                               mask_kind=None), ck.classifier)
        path = export_onnx(alone, tmp / "classifier.onnx", "fp32")
        _CLASSIFIERS[pt] = ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])
    sess = _CLASSIFIERS[pt]
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    sess.run(None, {"images": x})
    t0, n = time.perf_counter(), 0
    while n < frames:
        sess.run(None, {"images": x})
        n += batch
    return n / (time.perf_counter() - t0)


def _yardsticks(model: Path, be, batch: int, frames: int, size: int, fps: float) -> dict:  # noqa: ANN001
    """The model alone and the classifier alone at ``batch``, and the pipeline's rate against each."""
    model_only = _model_only_fps(be, batch, frames, size)
    out = {"model_only_fps": model_only, "ratio": fps / model_only}
    clf = _classifier_only_fps(model, batch, frames, size)
    if clf is not None:
        out.update(classifier_only_fps=clf, x_classifier=clf / fps)
    return out


def _model_only_fps(be, batch: int, frames: int, size: int = STREAM_SIZE) -> float:  # noqa: ANN001
    """The model alone (preprocessed batch in, outputs out) at ``batch``, over ``frames`` frames
    of ``size`` px, after one untimed call."""
    import time

    from wysiwyc.runtime.sources import DemoSource

    x = be.preprocess([DemoSource(size=size).read()] * batch)
    be.infer(x)
    t0, n = time.perf_counter(), 0
    while n < frames:
        be.infer(x)
        n += batch
    return n / (time.perf_counter() - t0)


def _run_concurrent(model: Path, kind: str, streams: int, seconds: float, workdir: Path, batch: int = 8) -> dict:
    """``streams`` paced streams of ``kind`` (``video``: files at their frame rate, ``mjpeg``:
    loopback MJPEG servers) through one pipeline for ``seconds``, then the model alone at
    the run's mean batch."""
    import contextlib
    import statistics
    import threading

    sys.path.insert(0, str(ROOT / "tests"))
    from _mjpeg import MJPEGServer

    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import open_source

    be = open_backend(model)
    be.infer(be.preprocess([np.zeros((STREAM_SIZE, STREAM_SIZE, 3), np.uint8)] * batch))
    cond = threading.Condition()
    with contextlib.ExitStack() as stack:
        if kind == "video":
            n_frames = int(seconds * STREAM_FPS) + int(STREAM_FPS)  # outlasts the case
            srcs = [open_source("video", _clip(workdir / f"clip{k}.avi", n_frames, seed=k)) for k in range(streams)]
            ss = [FrameStream(s, live=True, pace=s.fps or STREAM_FPS, cond=cond, stream_id=k) for k, s in enumerate(srcs)]
        else:
            servers = [stack.enter_context(MJPEGServer(fps=STREAM_FPS, size=STREAM_SIZE)) for _ in range(streams)]
            ss = [FrameStream(open_source("url", srv.url), cond=cond, stream_id=k) for k, srv in enumerate(servers)]
        pipe = Pipeline(ss, be, Overlay(list(be.spec.class_names)), _shown(True), RunOptions(batch=batch))
        timer = threading.Timer(seconds, pipe.stop)
        timer.start()
        try:
            res = pipe.run()
        finally:
            timer.cancel()
    per = []
    for s in ss:
        r = res.streams.get(s.stream_id)
        e2e = r.timings.summary().get("end_to_end", {}) if r is not None else {}
        per.append({"stream": s.stream_id, "frames": r.frames if r else 0, "e2e_p50_ms": e2e.get("p50", float("nan")),
                    "e2e_p95_ms": e2e.get("p95", float("nan")), "dropped": s.stats.dropped})
    mean_batch = max(1, round(res.frames / max(1, res.batches)))
    model_only = _model_only_fps(be, mean_batch, max(res.frames, 8 * mean_batch))
    pct = res.percentiles()
    return {"backend": be.name, "kind": kind, "streams": streams, "seconds": res.seconds, "frames": res.frames,
            "fps": res.fps, "offered_fps": STREAM_FPS * streams, "mean_batch": mean_batch,
            "model_only_fps": model_only, "ratio": res.fps / model_only,
            "e2e_p50_ms": pct["end_to_end"]["p50"], "e2e_p95_ms": pct["end_to_end"]["p95"],
            "infer_p50_ms": pct["infer"]["p50"], "dropped": sum(p["dropped"] for p in per),
            "stream_e2e_p50_ms_median": statistics.median(p["e2e_p50_ms"] for p in per),
            "stream_e2e_p95_ms_max": max(p["e2e_p95_ms"] for p in per), "per_stream": per}


@pytest.mark.parametrize("kind", ["video", "mjpeg"])
@pytest.mark.parametrize("streams", [1, 4, 8])
def test_concurrent_paced_streams_onnxruntime(benchmark, request, tmp_path, kind, streams):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    seconds = float(request.config.getoption("--bench-seconds"))
    label = "video files at 30 FPS (--realtime)" if kind == "video" else "loopback MJPEG 30 FPS"
    _bench(benchmark, f"demo explainer 64px onnxruntime, {streams} × {label}, batch≤8",
           lambda: _run_concurrent(DEMO_ONNX, kind, streams, seconds, tmp_path))


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
    save_checkpoint(pt, spec, clf.state_dict(), head.state_dict())
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


@pytest.mark.parametrize("streams", [1, 4])
def test_demo_model_analytics_only_onnxruntime(benchmark, streams):
    """JSON lines / mask files only: no window, video or web view, so nothing is drawn."""
    pytest.importorskip("onnxruntime")
    _bench(benchmark, f"demo explainer 64px onnxruntime fp32, {streams} demo stream(s), batch≤8, nothing drawn",
           lambda: _run_streams(DEMO_ONNX, 64, 8, streams, draw=False))


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
