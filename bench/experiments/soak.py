#!/usr/bin/env python
"""Soak the runtime: many frames over several streams, and is its memory flat?

Runs the real pipeline (reader threads → preprocess → infer → postprocess → overlay render
→ outputs thread) on ``--streams`` concurrent ``--demo`` streams without a window for
``--frames`` frames, sampling the process's resident memory (RSS) every
``--sample-every`` frames. After ``--warmup`` frames (allocator pools, ONNX Runtime arenas
and the statistics' ring buffers fill up first), a least-squares line through the RSS
samples gives the slope in KB per 1000 frames: a stream that never ends needs it near zero.

Writes ``OUT.md`` and ``OUT.json`` (default ``bench/results/runtime_soak_cpu``): frames,
wall time, FPS, RSS at the end of warm-up and at the end, the slope and what it would add
over a million frames, and every sample.

Examples::

    python bench/experiments/soak.py           # 100k frames, 4 streams (tens of minutes on 2 cores)
    python bench/experiments/soak.py --frames 2000 --warmup 500 --out /tmp/soak   # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)
import numpy as np

from wysiwyc.errors import UserError, cli_main
from wysiwyc.fileio import atomic_path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "runtime_soak_cpu"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Soak the runtime and fit its RSS slope.", add_help=add_help)
    p.add_argument("--frames", type=int, default=100_000, help="frames in all, every stream together")
    p.add_argument("--streams", type=int, default=4, help="concurrent --demo streams")
    p.add_argument("--batch", type=int, default=8, help="frames per batch")
    p.add_argument("--sample-every", type=int, default=1000, metavar="N", help="sample RSS every N frames")
    p.add_argument("--warmup", type=int, default=10_000, metavar="N", help="frames before the slope fit starts")
    p.add_argument("--model", default=None, help="model file (default: the bundled demo Explainer)")
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix (.md and .json are written)")
    return p


# -- memory ---------------------------------------------------------------------------------
def rss_kb() -> float:
    """The process's resident set size now, in KB (``/proc/self/statm`` on Linux; elsewhere
    the peak from ``getrusage``, which can only rise, so a flat slope still means flat)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if sys.platform == "darwin" else float(peak)  # bytes on macOS, KB elsewhere


def rss_slope(frames: list[int], rss: list[float], warmup: int) -> dict[str, float]:
    """Least-squares slope of RSS (KB) over frames, from the samples at or after ``warmup``.

    Returns ``{"kb_per_1k_frames", "samples", "rss_start_kb", "rss_end_kb"}`` (the slope is
    NaN with fewer than 2 samples after the warm-up).
    """
    f = np.asarray(frames, dtype=np.float64)
    r = np.asarray(rss, dtype=np.float64)
    keep = f >= warmup
    f, r = f[keep], r[keep]
    if len(f) < 2 or np.ptp(f) == 0:
        slope = float("nan")
    else:
        slope = float(np.polyfit(f, r, 1)[0]) * 1000.0
    return {"kb_per_1k_frames": slope, "samples": int(len(f)),
            "rss_start_kb": float(r[0]) if len(r) else float("nan"), "rss_end_kb": float(r[-1]) if len(r) else float("nan")}


class RssSampler:
    """The pipeline's progress hook: ``update(n)`` after each batch; samples RSS whenever the
    frame count crosses a multiple of ``every`` (and at frame 0)."""

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self.frames = 0
        self.samples: list[tuple[int, float]] = [(0, rss_kb())]

    def update(self, n: int) -> None:
        before = self.frames
        self.frames += n
        if self.frames // self.every > before // self.every:
            self.samples.append((self.frames, rss_kb()))


class CountingOutput:
    """A deferred output that keeps nothing (the outputs thread runs, as in a real deployment)."""

    main_thread = False
    wants_masks = False
    stream = None

    def __init__(self) -> None:
        self.frames = 0

    def write(self, rec: Any) -> bool:
        self.frames += 1
        return True

    def close(self, ok: bool = True) -> None:
        pass


# -- the run ----------------------------------------------------------------------------------
def soak(frames: int, streams: int = 4, batch: int = 8, sample_every: int = 1000, warmup: int = 10_000,
         model: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run the soak and return its report (see the module doc)."""
    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import DemoSource

    with open_backend(model, threads=threads) as be:
        size = be.input_size[0]
        cond = threading.Condition()
        ss = [FrameStream(DemoSource(size=size, seed=k), cond=cond, stream_id=k) for k in range(streams)]
        sink = CountingOutput()
        sampler = RssSampler(sample_every)
        pipe = Pipeline(ss, be, Overlay(list(be.spec.class_names)), [sink], RunOptions(max_frames=frames, batch=batch))
        t0 = time.perf_counter()
        res = pipe.run(progress=sampler)
        wall = time.perf_counter() - t0
        backend = be.name
    sampler.samples.append((res.frames, rss_kb()))
    xs, ys = [s[0] for s in sampler.samples], [s[1] for s in sampler.samples]
    fit = rss_slope(xs, ys, warmup)
    return {"frames": res.frames, "streams": streams, "batch": batch, "seconds": round(wall, 2),
            "fps": round(res.frames / wall, 1) if wall > 0 else 0.0, "delivered_to_outputs": sink.frames,
            "per_stream_frames": [res.streams[k].frames for k in sorted(res.streams)],
            "backend": backend, "warmup_frames": warmup, "sample_every": sample_every,
            "rss_kb_per_1k_frames": round(fit["kb_per_1k_frames"], 3),
            "rss_mb_per_1m_frames": round(fit["kb_per_1k_frames"] * 1000 / 1024, 2),
            "rss_after_warmup_mb": round(fit["rss_start_kb"] / 1024, 1), "rss_end_mb": round(fit["rss_end_kb"] / 1024, 1),
            "fit_samples": fit["samples"], "samples": [{"frames": f, "rss_kb": round(r, 1)} for f, r in sampler.samples],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, Python {platform.python_version()}"}


def markdown(rep: dict[str, Any]) -> str:
    return "\n".join([
        "# Runtime soak (CPU)",
        "",
        f"`python bench/experiments/soak.py --frames {rep['frames']} --streams {rep['streams']}` — "
        f"{rep['streams']} concurrent "
        f"`--demo` streams, no window, every frame through the outputs thread; {rep['backend']}; {rep['machine']}.",
        "",
        "| frames | seconds | FPS | RSS after warm-up | RSS at the end | slope | over 1M frames |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {rep['frames']} | {rep['seconds']} | {rep['fps']} | {rep['rss_after_warmup_mb']} MB | {rep['rss_end_mb']} MB "
        f"| {rep['rss_kb_per_1k_frames']} KB / 1k frames | {rep['rss_mb_per_1m_frames']} MB |",
        "",
        f"Slope: least squares over the {rep['fit_samples']} RSS samples from frame {rep['warmup_frames']} on "
        f"(one every {rep['sample_every']} frames); every sample is in the JSON next to this file.",
        "",
    ])


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    for flag, val in (("--frames", args.frames), ("--streams", args.streams), ("--batch", args.batch),
                      ("--sample-every", args.sample_every)):
        if val < 1:
            raise UserError(f"{flag} must be ≥ 1, got {val}")
    if not 0 <= args.warmup < args.frames:
        raise UserError(f"--warmup must be in 0 .. --frames - 1, got {args.warmup}")
    rep = soak(args.frames, args.streams, args.batch, args.sample_every, args.warmup, args.model, args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(rep, indent=2))
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(markdown(rep))
    print(f"soak: {rep['frames']} frames in {rep['seconds']} s ({rep['fps']} FPS), RSS {rep['rss_after_warmup_mb']} → "
          f"{rep['rss_end_mb']} MB, slope {rep['rss_kb_per_1k_frames']} KB / 1k frames; wrote {out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
