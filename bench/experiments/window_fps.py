#!/usr/bin/env python
"""End-to-end FPS with the desktop window open, against the model alone and nothing drawn.

    xvfb-run -a python bench/experiments/window_fps.py --md bench/results/runtime_window_fps.md

Needs what a window needs: an OpenCV with a GUI (``pip install -e ".[cpu,gui]"``) and a
display (``xvfb-run`` gives a virtual one); without them it stops with one line (exit 2).

The real pipeline of ``runtime-explain`` on 1 and 4 ``--demo`` streams of the bundled demo
Explainer (ONNX Runtime, batches of up to 8, two batches in the model at once as the CLI runs
buffered sources) for ``--frames`` frames, each case twice: with the real
:class:`~wysiwyc.runtime.outputs.WindowOutput` as ``runtime-explain`` opens it (one window;
four streams tiled in it as a 2×2 grid; ``cv2.imshow`` + ``pollKey`` at most 30 times a
second, each time drawing the newest frame of every stream), and with nothing drawn; each
run against the model alone on ready batches, as many at once, just before and just after
it (the mean), ``--repeats`` times. Reported: the run with the median ratio to the model
alone (FPS, ratio, the range of the ratios) and the frames the window drew.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)
from _rate import model_only_fps

from wysiwyc.errors import UserError, cli_main
from wysiwyc.fileio import atomic_path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.onnx"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Runtime FPS with the desktop window open.", add_help=add_help)
    p.add_argument("--frames", type=int, default=1500, help="frames per case (default 1500)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per case, each between two model-alone runs; the median is reported "
                        "(default 3)")
    p.add_argument("--md", default=None, help="write the table here (Markdown)")
    return p


def _check_window() -> None:
    """One line and exit 2 unless a window can really open here."""
    from wysiwyc.runtime.outputs import display_available

    if not display_available():
        raise UserError("no display: run it under xvfb-run (or on a desktop)")
    import cv2

    try:
        cv2.namedWindow("wysiwyc-probe")
        cv2.destroyWindow("wysiwyc-probe")
    except cv2.error as exc:
        raise UserError("this OpenCV has no GUI (headless): pip install -e '.[cpu,gui]'") from exc


def _case(be, streams: int, frames: int, window: bool) -> tuple[float, int]:  # noqa: ANN001
    """(FPS, frames the window drew) of one run."""
    from wysiwyc.runtime.batching import batch_plan
    from wysiwyc.runtime.outputs import WindowOutput
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import DemoSource

    cond = threading.Condition()
    ss = [FrameStream(DemoSource(size=64, seed=k), cond=cond, stream_id=k) for k in range(streams)]
    # one window, the streams tiled in it, as runtime-explain opens it
    names = [f"[{k}] demo" for k in range(streams)] if streams > 1 else None
    outs = [WindowOutput("wysiwyc", names=names)] if window else []
    pipe = Pipeline(ss, be, Overlay(list(be.spec.class_names)), outs,
                    RunOptions(max_frames=frames, batch=8, runs=batch_plan(8, 0).model_runs))
    res = pipe.run()
    if res.frames != frames:
        raise RuntimeError(f"the pipeline delivered {res.frames} of {frames} frames")
    drawn = res.timings["draw"].count
    if window and drawn == 0:
        raise RuntimeError("the window drew nothing")
    return res.fps, drawn


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    _check_window()
    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.batching import batch_plan

    be = open_backend(DEMO, runs=batch_plan(8, 0).model_runs)
    model_only_fps(be, 8, 64)  # warm-up
    rows = []
    for streams in (1, 4):
        for window in (True, False):
            runs = []  # (ratio, FPS, model-only FPS, frames drawn), one per paired run
            for _ in range(max(1, args.repeats)):
                before = model_only_fps(be, 8, args.frames)
                fps, drawn = _case(be, streams, args.frames, window)
                model = (before + model_only_fps(be, 8, args.frames)) / 2  # brackets the run: drift cancels
                runs.append((fps / model, fps, model, drawn))
            runs.sort()
            ratio, fps, model, drawn = runs[(len(runs) - 1) // 2]
            spread = f" ({runs[0][0]:.2f}–{runs[-1][0]:.2f})" if len(runs) > 1 else ""
            case = f"demo explainer 64px onnxruntime fp32, {streams} demo stream(s), batch≤8, " + (
                "window shown" if window else "nothing drawn")
            rows.append(f"| {case} | {be.concurrent_runs} | {args.frames} | {fps:.1f} | {model:.1f} | "
                        f"{ratio:.2f}{spread} | {drawn} |")
            print(rows[-1], flush=True)
    import platform

    from _methods import cpu_name

    text = ("# Runtime FPS with the desktop window open\n\n"
            "Command: `python bench/make_results.py --only window --display` (`xvfb-run -a python "
            "bench/experiments/window_fps.py`, from a `[cpu,gui]` environment).\n\n"
            "| case | runs | frames | FPS | model-only FPS | FPS / model-only | frames drawn |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Each row is the median of {args.repeats} runs of the case, each against the mean of a model-alone "
            "run just before it and one just after it (ratio range in brackets).\n\n"
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} ({cpu_name()}, "
            f"{os.cpu_count()} CPU threads), display {os.environ.get('DISPLAY', '?')} (Xvfb), "
            f"python {platform.python_version()}.\n")
    if args.md:
        with atomic_path(args.md) as tmp:
            Path(tmp).write_text(text)
        print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
