"""``runtime-explain``: single-pass attribution masks on live video, files and image folders.

Examples::

    runtime-explain --demo                                  # synthetic stream, bundled model
    runtime-explain --camera 0 --model explainer.onnx
    runtime-explain --video clip.mp4 --output explained.mp4 --no-show
    runtime-explain --rtsp rtsp://10.0.0.5/stream --reconnect 10 --json -
    runtime-explain --images 'photos/*.jpg' --save-masks masks/ --summary run.json

Exit status: 0 done (also after Ctrl-C or 'q'), 1 a live stream was lost for good,
2 a user error (bad flag, missing model/camera/file, model mismatch), printed as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import UserError, cli_main
from ..fileio import atomic_path, check_writable
from .backends import Backend, describe_model, open_backend
from .outputs import JsonLinesOutput, MaskOutput, Output, VideoOutput, WindowOutput, display_available
from .overlay import COLORMAPS, Overlay
from .progress import progress_for
from .pipeline import STAGES, Pipeline, RunOptions, RunResult
from .sources import FrameStream, Source, open_source


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default: appends ``(default: X)`` unless the help text already
    states it or there is nothing to state (a switch that is off, an unset option)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return super()._get_help_string(action)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runtime-explain", add_help=add_help, formatter_class=HelpFormatter,
                                description="Explain a classifier live: per-class attribution masks in one "
                                            "forward pass on cameras, video files, streams and image folders.")
    src = p.add_argument_group("source (exactly one)").add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", metavar="N|DEV", help="camera index (0) or device path (/dev/video2)")
    src.add_argument("--video", metavar="PATH", help="a video file (decoded ahead, nothing dropped)")
    src.add_argument("--rtsp", metavar="URL", help="a network stream: rtsp://, rtmp://, http(s)://, udp://")
    src.add_argument("--images", metavar="DIR|GLOB", help="an image folder or a glob such as 'photos/*.jpg'")
    src.add_argument("--demo", action="store_true", help="a synthetic shapes video generated on the fly")

    m = p.add_argument_group("model")
    m.add_argument("--model", default=None, metavar="X.pt|X.onnx|X.engine",
                   help="model file; the backend follows the suffix (default: the bundled demo Explainer)")
    m.add_argument("--provider", default="auto", choices=("auto", "tensorrt", "cuda", "cpu"),
                   help="ONNX Runtime execution provider (default: best installed)")
    m.add_argument("--device", default="auto", help=".pt models: auto | cpu | cuda | cuda:N")
    m.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help=".pt models: half precision (default: on for CUDA)")
    m.add_argument("--threads", type=int, default=None, help="CPU inference threads (default: all cores)")

    s = p.add_argument_group("stream")
    s.add_argument("--max-frames", type=int, default=None,
                   help="stop after N frames (default: at the end of the source; never for --demo and live sources)")
    s.add_argument("--fps-limit", type=float, default=None,
                   help="process at most F frames per second (default: as fast as possible)")
    s.add_argument("--batch", type=int, default=8,
                   help="files/images/demo: batch up to N frames that are already decoded (live: always 1)")
    s.add_argument("--reconnect", type=int, default=5,
                   help="live streams: reopen attempts in a row after a drop, with back-off (0: give up)")
    s.add_argument("--seed", type=int, default=0, help="--demo: scene seed")

    o = p.add_argument_group("overlay")
    o.add_argument("--threshold", type=float, default=0.5, help="show classes with probability ≥ this")
    o.add_argument("--top-k", type=int, default=3, help="show at most K classes per frame")
    o.add_argument("--classes", default=None,
                   help="comma-separated class names to always show (pins the set; default: the top-k rule)")
    o.add_argument("--alpha", type=float, default=0.5, help="mask opacity at mask value 1")
    o.add_argument("--colormap", default="class", choices=COLORMAPS,
                   help="'class': a colour per class; else one heat map of the shown masks")
    o.add_argument("--normalize", action="store_true",
                   help="draw each mask divided by its maximum (default: the raw mask values)")
    o.add_argument("--view-size", type=int, default=384,
                   help="upscale frames whose short side is below this many pixels before drawing")

    out = p.add_argument_group("outputs")
    out.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                     help="preview window (default: when a display exists)")
    out.add_argument("--output", default=None, metavar="OUT.mp4", help="write the rendered video")
    out.add_argument("--save-masks", default=None, metavar="DIR",
                     help="one .npz per frame: masks of every class at model resolution, probabilities and "
                          "the frame's source size (wysiwyc.runtime.outputs.load_masks maps them back)")
    out.add_argument("--json", default=None, metavar="FILE|-", help="per-frame predictions and timings as JSON lines")
    out.add_argument("--summary", default=None, metavar="FILE.json", help="write the run summary as JSON")
    out.add_argument("--status-every", type=float, default=5.0, metavar="S",
                     help="without a window or a terminal: print frames and FPS every S seconds (0: never)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    for flag, val, ok in (("--max-frames", args.max_frames, lambda v: v > 0),
                          ("--fps-limit", args.fps_limit, lambda v: v > 0),
                          ("--batch", args.batch, lambda v: v >= 1),
                          ("--threads", args.threads, lambda v: v >= 1),
                          ("--reconnect", args.reconnect, lambda v: v >= 0),
                          ("--top-k", args.top_k, lambda v: v >= 0),
                          ("--view-size", args.view_size, lambda v: v >= 1),
                          ("--status-every", args.status_every, lambda v: v >= 0),
                          ("--threshold", args.threshold, lambda v: 0 <= v <= 1),
                          ("--alpha", args.alpha, lambda v: 0 <= v <= 1)):
        if val is not None and not ok(val):
            raise UserError(f"{flag} {val} is out of range")


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


def open_source_from_args(args: argparse.Namespace, model_size: tuple[int, int]) -> Source:
    if args.demo:
        return open_source("demo", None, size=model_size[0], seed=args.seed)
    if args.camera is not None:
        return open_source("camera", args.camera)
    if args.video is not None:
        return open_source("video", args.video)
    if args.rtsp is not None:
        return open_source("stream", args.rtsp)
    return open_source("images", args.images)


def build_outputs(args: argparse.Namespace, source: Source, class_names: list[str]) -> list[Output]:
    outputs: list[Output] = []
    show = args.show
    if show is None:
        from .imageops import cv2_or_none

        show = display_available() and cv2_or_none() is not None
    elif show and not display_available():
        raise UserError("--show: no display here (DISPLAY/WAYLAND_DISPLAY unset); use --output or --no-show")
    if show:
        outputs.append(WindowOutput())
    if args.output:
        outputs.append(VideoOutput(args.output, args.fps_limit or source.fps or 30.0))
    if args.save_masks:
        outputs.append(MaskOutput(args.save_masks, class_names))
    if args.json:
        outputs.append(JsonLinesOutput(args.json, class_names))
    return outputs


def summarize(res: RunResult, stream: FrameStream, model: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    st = stream.stats
    return {
        "frames": res.frames, "seconds": round(res.seconds, 4), "fps": round(res.fps, 2),
        "batches": res.batches, "max_batch": 1 if stream.live else args.batch,
        "source": {"name": stream.source.describe(), "live": stream.live, "grabbed": st.grabbed,
                   "dropped": st.dropped, "corrupt": st.corrupt, "corrupt_frames": st.corrupt_names,
                   "reconnects": st.reconnects, "lost": stream.lost},
        "model": model,
        "latency_ms": {k: {q: round(v, 3) for q, v in d.items()} for k, d in res.percentiles().items()},
        "interrupted": res.interrupted, "stopped_by_user": res.stopped_by_user,
    }


def print_summary(summary: dict[str, Any], outputs: list[str], file: TextIO) -> None:
    src, model = summary["source"], summary["model"]
    w = lambda s="": print(s, file=file)  # noqa: E731
    w(f"runtime-explain: {summary['frames']} frames in {summary['seconds']:.2f} s = {summary['fps']:.1f} FPS"
      + (" (interrupted)" if summary["interrupted"] else ""))
    policy = "live, newest frame" if src["live"] else f"buffered, batch ≤ {summary['max_batch']}"
    w(f"  source  {src['name']} ({policy})")
    h, wd = model["input_size"]
    w(f"  model   {model['path']}")
    w(f"          {model['backend']} · {model['kind']} · {len(model['classes'])} classes @ {h}x{wd}")
    w(f"  {'stage (ms)':<13}{'p50':>9}{'p95':>9}{'p99':>9}")
    for stage in STAGES:
        d = summary["latency_ms"].get(stage)
        if d:
            w(f"  {stage:<13}{d['p50']:>9.2f}{d['p95']:>9.2f}{d['p99']:>9.2f}")
    w(f"  dropped {src['dropped']} · corrupt {src['corrupt']} · reconnects {src['reconnects']}")
    if src["corrupt_frames"]:
        w(f"  corrupt {corrupt_list(src['corrupt_frames'], src['corrupt'])}")
    for o in outputs:
        w(f"  wrote {o}")


def corrupt_list(names: list[str], count: int, show: int = 10) -> str:
    """``a.png, b.png … and 3 more``: the first ``show`` of the skipped files/frames."""
    text = ", ".join(names[:show])
    more = count - min(len(names), show)
    return text + (f" … and {more} more" if more > 0 else "")


def run_model(args: argparse.Namespace, backend: Backend) -> tuple[RunResult, FrameStream]:
    """Open the source and outputs the flags ask for and run ``backend`` over them."""
    names = list(backend.spec.class_names)
    pinned = pinned_classes(args.classes, names)
    overlay = Overlay(names, alpha=args.alpha, colormap=args.colormap, normalize=args.normalize)
    if args.summary:
        check_writable(args.summary)  # fail now, not after a long run
    source = open_source_from_args(args, backend.input_size)
    try:
        outputs = build_outputs(args, source, names)
    except BaseException:
        source.close()
        raise
    stream = FrameStream(source, reconnect=args.reconnect)
    opts = RunOptions(max_frames=args.max_frames, fps_limit=args.fps_limit, batch=args.batch,
                      threshold=args.threshold, top_k=args.top_k, pinned=pinned, min_view=args.view_size)
    window = any(isinstance(o, WindowOutput) for o in outputs)
    with progress_for(source.describe(), args.max_frames, window, args.status_every) as bar:
        res = Pipeline(stream, backend, overlay, outputs, opts).run(progress=bar)
    return res, stream


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    _check_args(args)
    # OpenCV/FFmpeg log every failed open and dropped connection to stderr; the runtime
    # reports those itself (one line, and counters in the summary).
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    with open_backend(args.model, provider=args.provider, device=args.device, fp16=args.fp16,
                      threads=args.threads) as backend:
        res, stream = run_model(args, backend)
    summary = summarize(res, stream, describe_model(args.model, backend), args)
    if args.summary:
        with atomic_path(args.summary) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2))
    written = [p for p in (args.output, args.save_masks, None if args.json == "-" else args.json, args.summary) if p]
    print_summary(summary, written, sys.stderr if args.json == "-" else sys.stdout)
    if stream.lost:
        print(f"error: {stream.lost}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
