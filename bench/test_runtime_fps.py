"""End-to-end FPS of ``runtime-explain`` (a benchmark, not a timed test).

Run: ``pytest bench/test_runtime_fps.py --benchmark-only`` (smoke run of the
concurrent cases, a few seconds each: ``pytest bench/test_runtime_fps.py --benchmark-only
-k concurrent --bench-seconds 1``). Each case runs the real runtime pipeline (source
thread → preprocess → infer → postprocess → outputs) on the synthetic ``--demo`` stream
and reports FPS (frames / wall time), the p50 / p95 end-to-end latency, and two
yardsticks measured in the same case on the same backend: the model alone (preprocessed
batches in, outputs out, as many batches at once as the pipeline ran: ``runs``; the mean
of a run just before the pipeline and one just after it) and the
classifier alone (``× classifier``: what the masks cost on top of classifying; the limit
is 1.0). Results go to ``extra_info`` (``--benchmark-json``) and the run's end summary
(``bench/conftest.py``). Every case checks what it timed before its time counts: every
frame delivered, every stream delivered, every frame drawn or recorded, every web client
served.

Cases (group ``runtime | cpu``):

* the bundled demo Explainer (U-Net w16 + small_cnn, 64 px) through ONNX Runtime fp32 on
  1 and 4 concurrent ``--demo`` streams (one reader thread each, batches of up to 8 across
  the streams, two batches in the model at once as ``runtime-explain`` runs buffered
  sources), four ways: **recorded** (``--output``: one ``.mp4`` per stream, every frame
  drawn and encoded by the encoder ``runtime-explain`` would pick here, each video read
  back), **every frame drawn** (the 384 px overlay of each frame, what ``--output`` draws
  before it encodes), **web view watched** (the real ``--serve`` view with one MJPEG client
  per stream: only the frames sent are drawn and encoded, at most 30 a second per client)
  and **nothing drawn** (JSON lines / mask files only); each case ``--bench-repeats`` times
  (default 3), each run paired with its own yardsticks: the run with the median ratio is
  reported, with the range of the ratios;
* the same model at batch 1, every frame drawn, and through torch;
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

from _rate import model_only_fps, rate  # noqa: E402

FRAMES = 300


class _EveryFrame:
    """Output of the "every frame drawn" cases: reads every frame's overlay (so each is drawn,
    in the outputs thread, as the video writer does before it encodes) and keeps nothing."""

    draws, wants_masks, records, main_thread, stream = True, False, False, False, None

    def __init__(self) -> None:
        self.drawn = 0

    def write(self, rec) -> bool:  # noqa: ANN001
        self.drawn += rec.image.shape[0] > 0
        return True

    def close(self, ok: bool = True) -> None:
        pass


class _Watchers:
    """Output of the web-view cases: the real ``--serve`` view on loopback with one MJPEG client
    per stream reading it as a browser does (at the view's default pace); only the frames
    sent are drawn and encoded."""

    def __init__(self, streams: int) -> None:
        import threading

        from wysiwyc.runtime.serve import ViewServer

        self.view = ViewServer("127.0.0.1:0", [f"demo {k}" for k in range(streams)])
        self.received = [0] * streams
        self.threads = [threading.Thread(target=self._watch, args=(k,), daemon=True) for k in range(streams)]
        for t in self.threads:
            t.start()

    def _watch(self, k: int) -> None:
        import urllib.request

        with urllib.request.urlopen(f"{self.view.url}stream/{k}.mjpg", timeout=30) as r:
            for line in r:
                self.received[k] += line.startswith(b"--frame")

    def outputs(self) -> list:
        return [self.view]

    def join(self) -> list[int]:
        """JPEGs each client received (the view is closed by the run's end)."""
        for t in self.threads:
            t.join(timeout=10)
        return self.received


class _Recordings:
    """Output of the recorded cases: one ``--output`` video per stream, as ``runtime-explain``
    opens them (``.mp4``: H.264 where the installed encoders allow, else MPEG-4 Part 2), in a
    temporary folder removed afterwards."""

    def __init__(self, streams: int) -> None:
        import tempfile

        from wysiwyc.runtime.outputs import VideoOutput

        self.dir = Path(tempfile.mkdtemp(prefix="wysiwyc-fps-"))
        self.videos = [VideoOutput(self.dir / f"stream{k}.mp4", 30.0, stream=k) for k in range(streams)]

    def frames(self) -> list[int]:
        """Frames in each finished video (read back), then the folder is removed."""
        import shutil

        import cv2

        counts = []
        for v in self.videos:
            cap = cv2.VideoCapture(str(v.path))
            counts.append(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
            cap.release()
        shutil.rmtree(self.dir, ignore_errors=True)
        return counts


def _outputs(mode: str, streams: int = 1) -> tuple[list, object]:
    """The outputs of a case and what checks them afterwards: ``every`` (every frame drawn),
    ``record`` (every frame drawn and encoded: ``--output``), ``web`` (the web view, watched)
    or ``none`` (JSON-lines-style analytics: nothing drawn)."""
    if mode == "every":
        out = _EveryFrame()
        return [out], out
    if mode == "record":
        rec = _Recordings(streams)
        return list(rec.videos), rec
    if mode == "web":
        w = _Watchers(streams)
        return w.outputs(), w
    return [], None


def _check_outputs(mode: str, probe: object, frames: int) -> dict:
    """Asserts the outputs got what the case claims, before its time counts; returns the facts."""
    if mode == "every":
        assert probe.drawn == frames, f"{probe.drawn} of {frames} frames drawn"
        return {"drawn": probe.drawn}
    if mode == "record":
        got = probe.frames()
        assert sum(got) == frames and all(n > 0 for n in got), f"videos of {got} frames for {frames} frames"
        return {"frames_recorded": got, "encoder": probe.videos[0].encoder}
    if mode == "web":
        got = probe.join()
        assert all(n > 0 for n in got), f"a web client received no frame: {got}"
        return {"jpegs_sent": got}
    return {}


def _run(model: Path, size: int, batch: int, frames: int = FRAMES, mode: str = "every", **backend_opts) -> dict:
    """One ``--demo`` stream (scene seed 1) through the pipeline: :func:`_run_streams` with one stream."""
    return _run_streams(model, size, batch, 1, frames, mode, seed=1, **backend_opts)


def _run_streams(model: Path, size: int, batch: int, streams: int, frames: int = FRAMES, mode: str = "every",
                 seed: int = 0, **backend_opts) -> dict:
    """``streams`` concurrent demo streams (scene seeds ``seed``, ``seed + 1``, ...) through one
    pipeline, and the model alone at ``batch``."""
    import threading

    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.batching import batch_plan
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import DemoSource

    runs = batch_plan(batch, 0).model_runs  # as runtime-explain plans --demo streams
    be = open_backend(model, runs=runs, **backend_opts)
    model_only_fps(be, batch, batch, size)  # warm-up: first-run allocations
    before = model_only_fps(be, batch, frames, size)
    cond = threading.Condition()
    ss = [FrameStream(DemoSource(size=size, seed=seed + k), cond=cond, stream_id=k) for k in range(streams)]
    outs, probe = _outputs(mode, streams)
    pipe = Pipeline(ss, be, Overlay(list(be.spec.class_names)), outs,
                    RunOptions(max_frames=frames, batch=batch, runs=runs))
    res = pipe.run()
    assert res.frames == frames and all(r.frames > 0 for r in res.streams.values()), "a stream delivered nothing"
    checked = _check_outputs(mode, probe, frames)
    pct = res.percentiles()
    return {"backend": be.name, "fps": res.fps, **_yardsticks(model, be, batch, frames, size, res.fps, before),
            "e2e_p50_ms": pct["end_to_end"]["p50"], "e2e_p95_ms": pct["end_to_end"]["p95"],
            "infer_p50_ms": pct["infer"]["p50"], "batch": batch, "runs": pipe.runs, "size": size,
            "frames": res.frames, "streams": streams,
            "per_stream_frames": [res.streams[k].frames for k in sorted(res.streams)], **checked}


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


def _classifier_only_fps(model: Path, batch: int, frames: int, size: int, runs: int = 1) -> float | None:
    """The classifier alone (logits only) of an ``.onnx`` export whose checkpoint lies beside it,
    at ``batch``, on ONNX Runtime as the runtime would run it (its session options, ``runs``
    batches at once, the cores shared between them): the yardstick of what the masks cost on
    top of classifying; ``None`` for another model."""
    pt = model.with_suffix(".pt")
    if model.suffix != ".onnx" or not pt.is_file():
        return None
    if (pt, runs) not in _CLASSIFIERS:
        import tempfile
        from dataclasses import replace

        import onnxruntime as ort
        from _methods import export_onnx

        from wysiwyc.checkpoint import load_checkpoint, save_checkpoint
        from wysiwyc.runtime.backends.base import available_cores
        from wysiwyc.runtime.backends.onnxruntime import session_options

        ck = load_checkpoint(pt)
        tmp = Path(tempfile.mkdtemp(prefix="wysiwyc-fps-"))
        alone = save_checkpoint(tmp / "classifier.pt", replace(ck.spec, kind="classifier", head_arch=None,
                                                               mask_kind=None), ck.classifier)
        path = export_onnx(alone, tmp / "classifier.onnx", "fp32")
        threads = max(1, available_cores() // runs) if runs > 1 else None
        _CLASSIFIERS[pt, runs] = ort.InferenceSession(str(path), session_options(ort, threads),
                                                      providers=["CPUExecutionProvider"])
    sess = _CLASSIFIERS[pt, runs]
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    return rate(lambda: sess.run(None, {"images": x}), batch, frames, runs)


def _yardsticks(model: Path, be, batch: int, frames: int, size: int, fps: float,  # noqa: ANN001
                before: float) -> dict:
    """The model alone and the classifier alone at ``batch`` (as many batches at once as the
    pipeline ran), and the pipeline's rate against each. The model alone is the mean of a run
    ``before`` the pipeline and one after it: a machine whose speed drifts over seconds (a
    shared VM) then drifts for the yardstick as it did for the pipeline between them."""
    after = model_only_fps(be, batch, frames, size)
    model_only = (before + after) / 2
    out = {"model_only_fps": model_only, "ratio": fps / model_only,
           "model_only_fps_before_after": [round(before, 1), round(after, 1)]}
    clf = _classifier_only_fps(model, batch, frames, size, be.concurrent_runs)
    if clf is not None:
        out.update(classifier_only_fps=clf, x_classifier=clf / fps)
    return out


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
        pipe = Pipeline(ss, be, Overlay(list(be.spec.class_names)), [_EveryFrame()], RunOptions(batch=batch))
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
    model_only = model_only_fps(be, mean_batch, max(res.frames, 8 * mean_batch))
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


STREAM_FRAMES = 1500  # frames of the 1- and 4-stream comparison (a web client sees a few dozen of them)
MODES = {"record": "recorded", "every": "every frame drawn", "web": "web view watched",
         "none": "nothing drawn"}


def _median_run(run, repeats: int) -> dict:  # noqa: ANN001
    """``run()`` (one case and its own yardsticks) ``repeats`` times: the run with the median
    ratio to the model alone, with every run's ratio (``ratio_runs``). A ratio of one run moves
    by several hundredths on a busy 2-core machine; pairing each run with its own yardstick
    and taking the median keeps one slow moment from deciding the row."""
    runs = sorted((run() for _ in range(max(1, repeats))), key=lambda r: r["ratio"])
    return {**runs[(len(runs) - 1) // 2], "ratio_runs": [round(r["ratio"], 3) for r in runs]}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("streams", [1, 4])
def test_demo_model_streams_onnxruntime(benchmark, request, streams, mode):
    """The demo model on 1 and 4 ``--demo`` streams: every frame drawn (what ``--output`` draws
    before it encodes), the web view with one MJPEG client per stream (only the frames sent
    are drawn), or nothing drawn (JSON lines / mask files only); the median of
    ``--bench-repeats`` paired runs."""
    pytest.importorskip("onnxruntime")
    repeats = int(request.config.getoption("--bench-repeats"))
    what = MODES[mode]
    if mode == "record":
        pytest.importorskip("cv2")
        from wysiwyc.runtime.encoders import choose_encoder

        what = f"recorded (--output .mp4: {choose_encoder('.mp4')[0]})"
    _bench(benchmark, f"demo explainer 64px onnxruntime fp32, {streams} demo stream(s), batch≤8, {what}",
           lambda: _median_run(lambda: _run_streams(DEMO_ONNX, 64, 8, streams, frames=STREAM_FRAMES, mode=mode),
                               repeats))


def test_demo_model_batch1_onnxruntime(benchmark):
    pytest.importorskip("onnxruntime")
    _bench(benchmark, "demo explainer 64px onnxruntime fp32 batch≤1, every frame drawn", lambda: _run(DEMO_ONNX, 64, 1))


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


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("streams", [1, 4])
def test_demo_model_streams_torch_cuda(benchmark, streams, mode):
    """The 1- and 4-stream cases with the model on the GPU (torch, fp16): the drawing has the
    CPU to itself, as on an edge box with an accelerator."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _bench(benchmark, f"demo explainer 64px torch cuda fp16, {streams} demo stream(s), batch≤8, {MODES[mode]}",
           lambda: _run_streams(DEMO_PT, 64, 8, streams, frames=STREAM_FRAMES, mode=mode, device="cuda"))


def test_demo_model_torch_cuda(benchmark):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _bench(benchmark, "demo explainer 64px torch cuda fp16 batch≤8", lambda: _run(DEMO_PT, 64, 8, device="cuda"))
