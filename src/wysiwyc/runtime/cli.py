"""``runtime-explain``: single-pass attribution masks on live video, files and image folders.

Examples::

    runtime-explain --demo                                  # synthetic stream, bundled model
    runtime-explain --camera 0 --model explainer.onnx
    runtime-explain --video clip.mp4 --output explained.mp4 --no-show
    runtime-explain --url rtsp://10.0.0.5/stream --reconnect 10 --json -
    runtime-explain --images 'photos/*.jpg' --save-masks masks/ --summary run.json
    runtime-explain --source 0 --source rtsp://10.0.0.5/s --source clip.mp4 --output 'out_{stream}.mp4'
    runtime-explain --source cameras.streams --no-show --json - --serve 0.0.0.0:8080

Several sources run concurrently, one reader thread each, and share the model: a batch
holds the newest frame of every live stream and the frames files have ready (see
:mod:`.batching`). Streams are numbered 0.. in the order given; outputs are per stream.

Exit status: 0 done (also after Ctrl-C, SIGTERM, SIGHUP or 'q': the outputs are finalised),
1 a live stream was lost for good, 2 a user error (bad flag, missing model/camera/file, model
mismatch), printed as one line; 128 + the signal number after a second stop signal (or one
before the run has started), which stops at once and removes the unfinished files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ..errors import UserError, cli_main
from ..fileio import atomic_path, check_writable
from .backends import Backend, describe_model, open_backend
from .backends.onnxruntime import default_trt_cache
from .batching import BatchPlan, batch_plan
from .outputs import (DISPLAY_FPS, JsonLinesOutput, MaskOutput, Output, VideoOutput, WindowOutput,
                      display_available)
from .overlay import COLORMAPS, Overlay
from .pipeline import STAGES, Pipeline, RunOptions, RunResult
from .progress import progress_for
from .reader import FrameStream
from .sources import SOURCES, Source, expand_sources, open_source, redact_url, source_kind


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default: appends ``(default: X)`` unless the help text already
    states it or there is nothing to state (a switch that is off, an unset option)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False or action.default == []
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return super()._get_help_string(action)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runtime-explain", add_help=add_help, formatter_class=HelpFormatter,
                                description="Explain a classifier live: per-class attribution masks in one "
                                            "forward pass on cameras, video files, streams and image folders.")
    src = p.add_argument_group("sources (one or more; each flag can be repeated)")
    src.add_argument("--source", action="append", default=[], metavar="SPEC",
                     help="a camera index or /dev/videoN, a URL (rtsp://, http(s)://, ...), a video file, an "
                          "image folder or glob, 'demo', or a FILE.streams listing one such source per line")
    src.add_argument("--camera", action="append", default=[], metavar="N|DEV",
                     help="camera index (0) or device path (/dev/video2)")
    src.add_argument("--video", action="append", default=[], metavar="PATH",
                     help="a video file (decoded ahead, nothing dropped)")
    src.add_argument("--url", "--rtsp", dest="url", action="append", default=[], metavar="URL",
                     help="a network stream: rtsp://, rtmp://, http(s)://, udp://")
    src.add_argument("--images", action="append", default=[], metavar="DIR|GLOB",
                     help="an image folder or a glob such as 'photos/*.jpg'")
    src.add_argument("--demo", action="store_true", help="a synthetic shapes video generated on the fly")

    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, metavar="X.pt|X.onnx|X.engine|triton://HOST:PORT/NAME",
                   help="model file, the backend following the suffix, or a model on a Triton server "
                        "(default: the bundled demo Explainer)")
    m.add_argument("--provider", default="auto", choices=("auto", "tensorrt", "cuda", "cpu", "openvino"),
                   help=".onnx models: the ONNX Runtime execution provider (default: best installed), or openvino: "
                        "OpenVINO's CPU plugin instead of ONNX Runtime (the openvino extra; faster on small graphs "
                        "such as the 64 px demo, slower at 224 px: see docs/benchmarks.md)")
    m.add_argument("--device", default="auto", help=".pt models: auto | cpu | cuda | cuda:N")
    m.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help=".pt models: half precision (default: on for CUDA); ONNX on the TensorRT provider: "
                        "--no-fp16 keeps an fp32 model in fp32 (default: fp16 where the model allows)")
    m.add_argument("--trt-cache", default=None, metavar="DIR",
                   help="ONNX Runtime's TensorRT provider: engine cache folder, so engines are built once "
                        f"(default: {default_trt_cache()})")
    m.add_argument("--threads", type=int, default=None, help="CPU inference threads (default: all cores)")
    m.add_argument("--runs", type=int, default=None, metavar="N",
                   help="batches in the model at once, each in its own thread with its share of --threads "
                        "(ONNX Runtime on a CPU; default: 2 when every source is a file, folder or --demo, "
                        "1 with a live source)")
    m.add_argument("--triton-inflight", type=int, default=2, metavar="N",
                   help="triton:// models: requests outstanding at once (each batch is sent when it is ready, "
                        "so the server works while the pipeline prepares and draws)")
    m.add_argument("--triton-retry", type=float, default=60.0, metavar="S",
                   help="triton:// models: how long a server that went away mid-run is retried (with back-off) "
                        "before the run gives up")

    s = p.add_argument_group("stream")
    s.add_argument("--max-frames", type=int, default=None,
                   help="stop after N frames, all sources together (default: when every source has ended; "
                        "never for --demo and live sources)")
    s.add_argument("--fps-limit", type=float, default=None,
                   help="process at most F frames per second (default: as fast as possible)")
    s.add_argument("--batch", type=int, default=8,
                   help="files/images/demo: batch up to N frames that are already decoded (live streams: "
                        "the newest frame of each)")
    s.add_argument("--batch-wait", type=float, default=10.0, metavar="MS",
                   help="once a live stream has a frame, wait at most this long for the other live streams")
    s.add_argument("--realtime", action="store_true",
                   help="video files, image folders and --demo play at their frame rate (a video's own, else "
                        "30 FPS) and, like a camera, only the newest frame is taken: frames the model cannot "
                        "keep up with are dropped and counted")
    s.add_argument("--reconnect", type=int, default=5,
                   help="live streams: reopen attempts in a row after a drop, with back-off (0: give up)")
    s.add_argument("--url-timeout", type=float, default=5.0, metavar="S",
                   help="URL streams: opening or a read that waits longer than this is a drop (a stalled "
                        "stream is reopened)")
    s.add_argument("--seed", type=int, default=0, help="--demo: scene seed (stream n uses seed + n)")

    o = p.add_argument_group("overlay")
    o.add_argument("--threshold", type=float, default=None,
                   help="show classes with probability ≥ this (default: 0.5 for a multi-label model, "
                        f"{SOFTMAX_THRESHOLD} for a softmax one, whose probabilities share 1 among all classes)")
    o.add_argument("--top-k", type=int, default=3, help="show at most K classes per frame")
    o.add_argument("--classes", default=None,
                   help="comma-separated class names to always show (pins the set; default: the top-k rule)")
    o.add_argument("--alpha", type=float, default=0.5, help="mask opacity at mask value 1")
    o.add_argument("--colormap", default="class", choices=COLORMAPS,
                   help="'class': a colour per class; else one heat map of the shown masks")
    o.add_argument("--smooth", type=float, default=1.0, metavar="ALPHA",
                   help="steadier masks on video: a moving average per stream and class, m = α·new + (1 − α)·"
                        "previous, for the drawn and the saved masks; 1 = the masks as the model output them "
                        "(bench/experiments/temporal.py measures flicker and lag)")
    o.add_argument("--normalize", action="store_true",
                   help="draw each mask divided by its maximum (default: the raw mask values)")
    o.add_argument("--view-size", type=int, default=384,
                   help="upscale frames whose short side is below this many pixels before drawing")

    _add_output_args(p)
    return p


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """The ``outputs`` group: window, files, the web view and its access, status lines."""
    out = p.add_argument_group("outputs")
    out.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                     help="preview window (default: when a display exists); several sources share one, "
                          "as a grid")
    out.add_argument("--show-fps", type=float, default=None, metavar="FPS",
                     help="frames a second the window shows at most; only those are drawn (default: 30)")
    out.add_argument("--output", default=None, metavar="OUT.mp4",
                     help="write the rendered video; several sources: a pattern with {stream} "
                          "(out_{stream}.mp4) or a folder (DIR/ gets stream0.mp4, stream1.mp4, ...)")
    out.add_argument("--save-masks", default=None, metavar="DIR",
                     help="one .npz per frame: masks of every class (a top-k model: its K) at model resolution, probabilities and "
                          "the frame's source size (wysiwyc.runtime.outputs.load_masks maps them back); "
                          "several sources: DIR/streamN/")
    out.add_argument("--json", default=None, metavar="FILE|-",
                     help="per-frame predictions and timings as JSON lines, each tagged with its stream")
    out.add_argument("--summary", default=None, metavar="FILE.json", help="write the run summary as JSON")
    out.add_argument("--serve", default=None, metavar="HOST:PORT",
                     help="live web view: a page tiling every stream's overlay (MJPEG) and /stats.json "
                          "(port 0: a free one, printed at the start)")
    out.add_argument("--serve-token", default=None, metavar="TOKEN",
                     help="--serve: every request must carry this token (?token=TOKEN, or the header "
                          "'Authorization: Bearer TOKEN') (default: a random one, printed with the URL, when "
                          "HOST is not loopback; none on 127.0.0.1, ::1 or localhost)")
    out.add_argument("--serve-no-auth", action="store_true",
                     help="--serve beyond loopback without a token: anyone who reaches the port sees the streams")
    out.add_argument("--serve-max-clients", type=int, default=None, metavar="N",
                     help="--serve: requests served at once, each MJPEG viewer holding one; more get 503 "
                          "(default: 8, or the streams + 2 when that is more, so one page always fits)")
    out.add_argument("--serve-fps", type=float, default=None, metavar="FPS",
                     help="--serve: frames a second each MJPEG viewer gets at most; only those are drawn and "
                          "encoded (default: 30)")
    out.add_argument("--status-every", type=float, default=5.0, metavar="S",
                     help="without a window or a terminal: print frames and FPS every S seconds (0: never)")


def _check_args(args: argparse.Namespace) -> None:
    for flag, val, ok in (("--max-frames", args.max_frames, lambda v: v > 0),
                          ("--fps-limit", args.fps_limit, lambda v: v > 0),
                          ("--batch", args.batch, lambda v: v >= 1),
                          ("--threads", args.threads, lambda v: v >= 1),
                          ("--runs", args.runs, lambda v: v >= 1),
                          ("--triton-inflight", args.triton_inflight, lambda v: v >= 1),
                          ("--triton-retry", args.triton_retry, lambda v: v >= 0),
                          ("--reconnect", args.reconnect, lambda v: v >= 0),
                          ("--url-timeout", args.url_timeout, lambda v: v > 0),
                          ("--top-k", args.top_k, lambda v: v >= 0),
                          ("--view-size", args.view_size, lambda v: v >= 1),
                          ("--batch-wait", args.batch_wait, lambda v: v >= 0),
                          ("--status-every", args.status_every, lambda v: v >= 0),
                          ("--serve-max-clients", args.serve_max_clients, lambda v: v >= 1),
                          ("--serve-fps", args.serve_fps, lambda v: v > 0),
                          ("--show-fps", args.show_fps, lambda v: v > 0),
                          ("--threshold", args.threshold, lambda v: 0 <= v <= 1),
                          ("--alpha", args.alpha, lambda v: 0 <= v <= 1),
                          ("--smooth", args.smooth, lambda v: 0 < v <= 1)):
        if val is not None and not ok(val):
            raise UserError(f"{flag} {val} is out of range")
    if not args.serve:
        for flag, val in (("--serve-token", args.serve_token), ("--serve-no-auth", args.serve_no_auth),
                          ("--serve-max-clients", args.serve_max_clients), ("--serve-fps", args.serve_fps)):
            if val not in (None, False):
                raise UserError(f"{flag} needs --serve HOST:PORT")


SOFTMAX_THRESHOLD = 0.1


def threshold(flag: float | None, activation: str) -> float:
    """``--threshold``, or its default for the model's activation."""
    if flag is not None:
        return flag
    return SOFTMAX_THRESHOLD if activation == "softmax" else 0.5


def pinned_classes(value: str | None, class_names: list[str]) -> list[int] | None:
    """``--classes dots,rings`` -> class indices, or ``None`` when not given."""
    if not value:
        return None
    out = []
    for name in (v.strip() for v in value.split(",") if v.strip()):
        if name not in class_names:
            raise UserError(f"--classes: unknown class {name!r}; this model has: {', '.join(class_names)}")
        out.append(class_names.index(name))
    return out


def source_values(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """Every source the flags name, as (kind, target), in a fixed order: ``--source``
    (with ``.streams`` files expanded) first, then the per-kind flags."""
    sources: list[tuple[str, str | None]] = [(source_kind(v), v) for v in expand_sources(args.source)]
    for flag, kind in (("camera", "camera"), ("video", "video"), ("url", "url"), ("images", "images")):
        sources += [(kind, v) for v in getattr(args, flag)]
    if args.demo:
        sources.append(("demo", None))
    if not sources:
        raise UserError("no source: give --source (or --camera, --video, --url, --images, --demo)")
    return sources


def run_batch_plan(args: argparse.Namespace) -> BatchPlan:
    """The run's :class:`~.batching.BatchPlan`: cameras and URLs are live, and so is every
    source with ``--realtime``."""
    kinds = [kind for kind, _ in source_values(args)]
    return batch_plan(args.batch, sum(args.realtime or SOURCES[k].live for k in kinds), args.runs)


def open_sources(named: list[tuple[str, str | None]], model_size: tuple[int, int], seed: int = 0,
                 url_timeout: float = 5.0) -> list[Source]:
    """Open every (kind, target) source now, so a bad one fails before anything runs (the
    ones already open are closed again)."""
    sources: list[Source] = []
    try:
        for i, (kind, target) in enumerate(named):
            kwargs: dict[str, Any] = {}
            if kind == "demo":
                kwargs = {"size": model_size[0], "seed": seed + i}
            elif kind == "url":
                kwargs = {"timeout_s": url_timeout}
            sources.append(open_source(kind, target, **kwargs))
    except BaseException:
        for src in sources:
            src.close()
        raise
    return sources


def stream_path(template: str, stream: int, count: int, default_name: str) -> Path:
    """Where stream ``stream``'s file goes: ``template`` with ``{stream}`` filled in, or
    ``template/default_name`` for a folder (an existing one, or a path ending in ``/``)."""
    if "{stream}" in template:
        return Path(template.replace("{stream}", str(stream)))
    if template.endswith(("/", os.sep)) or Path(template).is_dir():
        return Path(template) / default_name.format(stream=stream)
    if count > 1:
        raise UserError(f"--output {template}: {count} sources need a pattern with {{stream}} "
                        "(out_{stream}.mp4) or a folder (out/)")
    return Path(template)


def build_outputs(args: argparse.Namespace, sources: list[Source], class_names: list[str]) -> list[Output]:
    outputs: list[Output] = []
    n = len(sources)
    show = args.show
    if show is None:
        from .imageops import cv2_or_none

        show = display_available() and cv2_or_none() is not None
    elif show and not display_available():
        raise UserError("--show: no display here (DISPLAY/WAYLAND_DISPLAY unset); use --output or --no-show")
    try:
        if show:  # several streams: one window, a grid of them
            names = [f"[{i}] {src.describe()}" for i, src in enumerate(sources)] if n > 1 else None
            outputs.append(WindowOutput(f"wysiwyc - {n} streams" if names else "wysiwyc",
                                        max_fps=args.show_fps or DISPLAY_FPS, names=names))
        for i, src in enumerate(sources):
            if args.output:
                path = stream_path(args.output, i, n, "stream{stream}.mp4")
                outputs.append(VideoOutput(path, args.fps_limit or src.fps or 30.0, stream=i))
            if args.save_masks:
                folder = Path(args.save_masks) / f"stream{i}" if n > 1 else Path(args.save_masks)
                outputs.append(MaskOutput(folder, class_names, stream=i))
        if args.json:
            outputs.append(JsonLinesOutput(args.json, class_names))
    except BaseException:
        for out in outputs:
            out.close(ok=False)
        raise
    return outputs


def _stream_summary(stream: FrameStream, res: RunResult) -> dict[str, Any]:
    st, per = stream.stats, res.streams.get(stream.stream_id)
    frames = per.frames if per is not None else 0
    latency = per.timings.summary() if per is not None else {}
    return {"stream": stream.stream_id, "name": stream.source.describe(), "live": stream.live,
            "frames": frames, "fps": round(frames / res.seconds, 2) if res.seconds > 0 else 0.0,
            "grabbed": st.grabbed, "dropped": st.dropped, "corrupt": st.corrupt,
            "corrupt_frames": list(st.corrupt_names), "reconnects": st.reconnects, "lost": stream.lost,
            "latency_ms": {k: {q: round(v, 3) for q, v in d.items()} for k, d in latency.items()}}


def summarize(res: RunResult, streams: list[FrameStream], model: dict[str, Any],
              args: argparse.Namespace) -> dict[str, Any]:
    """The run summary: totals and latency over every stream, ``source`` the streams'
    counters added up, and ``streams`` one entry per stream (its own FPS and latency)."""
    per = [_stream_summary(s, res) for s in streams]
    keys = ("grabbed", "dropped", "corrupt", "reconnects")
    total = {"name": per[0]["name"] if len(per) == 1 else f"{len(per)} streams",
             "live": any(p["live"] for p in per), **{k: sum(p[k] for p in per) for k in keys},
             "corrupt_frames": [name for p in per for name in p["corrupt_frames"]],
             "lost": "; ".join(p["lost"] for p in per if p["lost"]) or None}
    n_live = sum(p["live"] for p in per)
    return {
        "frames": res.frames, "seconds": round(res.seconds, 4), "fps": round(res.fps, 2),
        "batches": res.batches, "max_batch": batch_plan(args.batch, n_live).max_batch if len(per) - n_live else n_live,
        "source": total, "streams": per,
        "model": model,
        "latency_ms": {k: {q: round(v, 3) for q, v in d.items()} for k, d in res.percentiles().items()},
        "interrupted": res.interrupted, "stopped_by_user": res.stopped_by_user, "stopped_by": res.stopped_by,
    }


def print_summary(summary: dict[str, Any], outputs: list[str], file: TextIO) -> None:
    src, model = summary["source"], summary["model"]
    w = lambda s="": print(s, file=file)  # noqa: E731
    w(f"runtime-explain: {summary['frames']} frames in {summary['seconds']:.2f} s = {summary['fps']:.1f} FPS"
      + (f" (interrupted{' by ' + summary['stopped_by'] if summary.get('stopped_by') else ''})"
         if summary["interrupted"] else ""))
    streams = summary["streams"]
    if len(streams) == 1:
        policy = "live, newest frame" if src["live"] else f"buffered, batch ≤ {summary['max_batch']}"
        w(f"  source  {src['name']} ({policy})")
    else:
        w(f"  sources {len(streams)} streams, batch ≤ {summary['max_batch']}")
        for st in streams:
            e2e = st["latency_ms"].get("end_to_end", {})
            w(f"    [{st['stream']}] {st['name']} ({'live' if st['live'] else 'buffered'}): {st['frames']} frames, "
              f"{st['fps']:.1f} FPS, e2e p50 {e2e.get('p50', 0):.1f} ms, dropped {st['dropped']}, "
              f"corrupt {st['corrupt']}, reconnects {st['reconnects']}" + (" LOST" if st["lost"] else ""))
    h, wd = model["input_size"]
    w(f"  model   {model['path']}")
    w(f"          {model['backend']} · {model['kind']} · {len(model['classes'])} classes @ {h}x{wd}")
    w(f"  {'stage (ms)':<13}{'p50':>9}{'p95':>9}{'p99':>9}")
    for stage in STAGES:
        d = summary["latency_ms"].get(stage)
        if d:
            w(f"  {stage:<13}{d['p50']:>9.2f}{d['p95']:>9.2f}{d['p99']:>9.2f}")
    w(f"  dropped {src['dropped']} · corrupt {src['corrupt']} · reconnects {src['reconnects']}")
    server = summary.get("server")
    if server:
        w(f"  server  outages {server['outages']} ({server['outage_seconds']:.1f} s) · requests resent "
          f"{server['requests_resent']} · frames lost {server['frames_lost']}")
    if src["corrupt_frames"]:
        w(f"  corrupt {corrupt_list(src['corrupt_frames'], src['corrupt'])}")
    for o in outputs:
        w(f"  wrote {o}")


def corrupt_list(names: list[str], count: int, show: int = 10) -> str:
    """``a.png, b.png … and 3 more``: the first ``show`` of the skipped files/frames."""
    text = ", ".join(names[:show])
    more = count - min(len(names), show)
    return text + (f" … and {more} more" if more > 0 else "")


REALTIME_DEFAULT_FPS = 30.0


def playback(src: Source, realtime: bool) -> dict[str, Any]:
    """:class:`FrameStream` options for ``--realtime``: a file source becomes a paced live
    stream at its frame rate (:data:`REALTIME_DEFAULT_FPS` when it has none); live sources
    are paced by their device already."""
    if not realtime or src.live:
        return {}
    return {"live": True, "pace": src.fps or REALTIME_DEFAULT_FPS}


# What service managers send: systemd and Kubernetes SIGTERM (`docker stop` too), a closed
# terminal or `kill -HUP` SIGHUP, the terminal's Ctrl-C SIGINT.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP as a clean stop, while the CLI runs (a context manager).

    The first signal asks the run to finish: :attr:`on_stop` is called with the signal's
    name, the outputs are finalised and the CLI returns as usual. A second one, or a first
    one while :attr:`on_stop` is unset (before the run), stops at once: every
    :attr:`on_abort` callable removes its unfinished files and the process exits with
    128 + the signal number. Handlers are installed only in the main thread, a signal that
    was ignored (``nohup``) stays ignored, and the previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.on_stop: Callable[[str], None] | None = None
        self.on_abort: list[Callable[[], None]] = []
        self.received: str | None = None  # the first stop signal's name
        self._previous: dict[int, Any] = {}
        self._wake = threading.Event()  # set by the handler only (and by __exit__, handlers restored)
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)  # SIGHUP is POSIX-only
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                self._previous[sig] = signal.signal(sig, self._handle)
        if self._previous:
            # on_stop runs in this thread, not in the handler: the handler may interrupt the
            # main thread while it holds a lock that on_stop needs
            self._watcher = threading.Thread(target=self._watch, name="wysiwyc-signals", daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        if self._watcher is not None:
            self._wake.set()
            self._watcher.join()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None and self.on_stop is not None:
            self.received = name
            self._wake.set()
            return
        self.abort(signum)

    def _watch(self) -> None:
        self._wake.wait()
        stop, name = self.on_stop, self.received
        if name is not None and stop is not None:
            stop(name)
            print(f"runtime-explain: {name}: finishing the outputs (send it again to stop at once)",
                  file=sys.stderr, flush=True)

    def abort(self, signum: int) -> None:
        """Remove the unfinished files and exit now with 128 + ``signum`` (no cleanup runs:
        the finished files are complete, the others are gone)."""
        name = signal.Signals(signum).name
        how = "again: stopping now" if self.received else "before the run: stopping now"
        # os.write, not print: the signal may have interrupted a print to the same stream
        with contextlib.suppress(OSError):
            os.write(2, f"runtime-explain: {name} {how}; unfinished output files are removed\n".encode())
        for abort in self.on_abort:
            with contextlib.suppress(Exception):
                abort()
        os._exit(128 + signum)


def run_model(args: argparse.Namespace, backend: Backend,
              signals: StopSignals | None = None) -> tuple[RunResult, list[FrameStream]]:
    """Open the sources and outputs the flags ask for and run ``backend`` over them;
    ``signals``: the first stop signal finishes the run, a second removes its unfinished files."""
    signals = signals if signals is not None else StopSignals()
    names = list(backend.spec.class_names)
    pinned = pinned_classes(args.classes, names)
    overlay = Overlay(names, alpha=args.alpha, colormap=args.colormap, normalize=args.normalize)
    if args.summary:
        check_writable(args.summary)  # fail now, not after a long run
    sources = open_sources(source_values(args), backend.input_size, args.seed, args.url_timeout)
    try:
        outputs = build_outputs(args, sources, names)
    except BaseException:
        for src in sources:
            src.close()
        raise
    signals.on_abort += [out.abort for out in outputs]  # a second signal: their unfinished files go
    cond = threading.Condition()  # shared: the batcher wakes on any stream's frame
    streams = [FrameStream(src, reconnect=args.reconnect, cond=cond, stream_id=i, **playback(src, args.realtime))
               for i, src in enumerate(sources)]
    if hasattr(backend, "watch"):  # a served model: the frames dropped while its server is away are lost
        backend.watch(lambda: sum(s.stats.dropped for s in streams))
    opts = RunOptions(max_frames=args.max_frames, fps_limit=args.fps_limit, batch=args.batch,
                      threshold=threshold(args.threshold, backend.spec.activation), top_k=args.top_k, pinned=pinned,
                      min_view=args.view_size, batch_wait_s=args.batch_wait / 1e3, smooth=args.smooth,
                      runs=backend.concurrent_runs)  # opened with the batch plan's runs
    if args.serve:
        try:
            view = open_view(args, sources)
        except BaseException:
            for out in outputs:
                out.close(ok=False)
            for src in sources:
                src.close()
            raise
        outputs.append(view)
    pipeline = Pipeline(streams, backend, overlay, outputs, opts)
    signals.on_stop = pipeline.interrupt  # from now on a stop signal finishes the run cleanly
    if args.serve:
        view.stats = pipeline.live_stats
    window = any(isinstance(o, WindowOutput) for o in outputs)
    label = sources[0].describe() if len(sources) == 1 else f"{len(sources)} streams"
    with progress_for(label, args.max_frames, window, args.status_every) as bar:
        res = pipeline.run(progress=bar)
    return res, streams


def open_view(args: argparse.Namespace, sources: list[Source]) -> Any:
    """The ``--serve`` web view, its token decided by :func:`.serve.serve_token`; prints its
    address (with a generated token, so the link opens the page)."""
    from .serve import DEFAULT_FPS, DEFAULT_MAX_CLIENTS, ViewServer, serve_token

    token = serve_token(args.serve, args.serve_token, args.serve_no_auth)
    cap = args.serve_max_clients or max(DEFAULT_MAX_CLIENTS, len(sources) + 2)
    view = ViewServer(args.serve, [src.describe() for src in sources], token=token, max_clients=cap,
                      fps=args.serve_fps or DEFAULT_FPS)
    if token is None:
        where = view.url
    elif args.serve_token is None:
        where = f"{view.login_url} (a new token: every request needs it)"
    else:
        where = f"{view.url} (requests need the --serve-token)"
    print(f"runtime-explain: web view at {where}", file=sys.stderr, flush=True)
    if args.serve_no_auth and token is None:
        from .serve import is_loopback, parse_address

        if not is_loopback(parse_address(args.serve)[0]):
            print(f"warning: --serve-no-auth: anyone who can reach {args.serve} sees every stream",
                  file=sys.stderr, flush=True)
    return view


def written_files(args: argparse.Namespace, count: int) -> list[str]:
    """The files and folders a run wrote, for the summary."""
    out: list[str] = []
    if args.output:
        out += [str(stream_path(args.output, i, count, "stream{stream}.mp4")) for i in range(count)]
    out += [p for p in (args.save_masks, None if args.json == "-" else args.json, args.summary) if p]
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    # OpenCV/FFmpeg log every failed open and dropped connection to stderr; the runtime
    # reports those itself (one line, and counters in the summary).
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with StopSignals() as signals:
        try:
            return _main(args, signals)
        except UserError as exc:  # a message may quote a source URL: never its credentials
            raise UserError(redact_url(str(exc))) from None


def _main(args: argparse.Namespace, signals: StopSignals) -> int:
    _check_args(args)
    plan = run_batch_plan(args)
    with open_backend(args.model, provider=args.provider, device=args.device, fp16=args.fp16,
                      threads=args.threads, runs=plan.model_runs, trt_cache=args.trt_cache, batch_range=plan.profile,
                      top_k=args.top_k, triton_inflight=args.triton_inflight,
                      triton_retry=args.triton_retry) as backend:
        res, streams = run_model(args, backend, signals)
    signals.on_stop = lambda name: None  # the run is over: a first signal now lets the summary finish
    summary = summarize(res, streams, describe_model(args.model, backend), args)
    if hasattr(backend, "faults"):  # a served model: its server's outages and the frames lost in them
        summary["server"] = backend.faults()
    if args.summary:
        with atomic_path(args.summary) as tmp:
            signals.on_abort.append(lambda: tmp.unlink(missing_ok=True))
            Path(tmp).write_text(json.dumps(summary, indent=2))
    print_summary(summary, written_files(args, len(streams)), sys.stderr if args.json == "-" else sys.stdout)
    lost = [s.lost for s in streams if s.lost]
    for why in lost:
        print(f"error: {why}", file=sys.stderr)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
