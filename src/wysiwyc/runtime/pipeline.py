"""The runtime loop: capture → preprocess → infer → postprocess → render, timed per stage.

Stages, as reported (milliseconds per frame):

* ``capture`` — grabbing/decoding the frame in the source thread;
* ``preprocess`` — resize + scale to the model input, for the frame's whole batch;
* ``infer`` — the model (classifier + attribution head, one pass), for the whole batch;
* ``postprocess`` — probabilities, class choice, upsampling the shown masks;
* ``render`` — drawing the overlay and showing / encoding it (window, video file);
  record outputs (``--json``, ``--save-masks``) are written after the timings close;
* ``end_to_end`` — from the frame's decode to its delivery. For live sources this
  includes the time the frame waited for the model (its age); for buffered sources
  (files, ``--demo``) the time spent in the decode-ahead queue is excluded, because it
  is buffering by design and not latency a viewer sees.

Batched frames each carry their batch's preprocess and infer time (that is the latency
they experienced); FPS is frames delivered over wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend
from .imageops import view_size
from .outputs import FrameRecord, Output
from .overlay import Overlay, select_classes
from .sources import FrameStream
from .stats import StageTimings

STAGES = ("capture", "preprocess", "infer", "postprocess", "render", "end_to_end")


@dataclass
class RunOptions:
    """Knobs of :class:`Pipeline` (the CLI flags of the same names)."""

    max_frames: int | None = None
    fps_limit: float | None = None
    batch: int = 8
    threshold: float = 0.5
    top_k: int = 3
    pinned: list[int] | None = None
    min_view: int = 384


@dataclass
class RunResult:
    """What a run did: timings per stage (ms per frame, bounded: see :mod:`.stats`) and counters."""

    frames: int = 0
    seconds: float = 0.0
    timings: StageTimings = field(default_factory=lambda: StageTimings(STAGES))
    batches: int = 0
    interrupted: bool = False
    stopped_by_user: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        """stage -> p50/p95/p99 (over the newest frames, see :mod:`.stats`) and mean (ms)."""
        return self.timings.summary()


class Pipeline:
    """Runs a :class:`FrameStream` through a :class:`Backend` into :class:`Output` s.

    Args:
        stream: frames (live: newest-frame policy; buffered: batched, nothing dropped).
        backend: the model.
        overlay: the renderer.
        outputs: where frames go (window, video, masks, JSON lines).
        opts: frame limit, pacing, batch size, class selection.
    """

    def __init__(self, stream: FrameStream, backend: Backend, overlay: Overlay, outputs: list[Output],
                 opts: RunOptions) -> None:
        self.stream, self.backend, self.overlay = stream, backend, overlay
        self.outputs, self.opts = outputs, opts
        self.want_masks = any(o.wants_masks for o in outputs)

    def run(self, progress: Any = None) -> RunResult:
        """Process until the source ends, ``max_frames``, an output asks to stop, or Ctrl-C.

        ``progress``: optional object with ``update(n)`` (e.g. a tqdm bar).
        Outputs are closed cleanly on every exit except an unexpected exception.
        """
        opts, res = self.opts, RunResult()
        t_start = time.perf_counter()
        ok = False
        ema_ms: float | None = None
        try:
            while opts.max_frames is None or res.frames < opts.max_frames:
                left = None if opts.max_frames is None else opts.max_frames - res.frames
                want = 1 if self.stream.live else max(1, min(opts.batch, left or opts.batch))
                frames = self.stream.next_batch(want)
                if not frames:
                    break
                keep_going = self._process(frames, res, t_start, ema_ms)
                ema_ms = self._ema(ema_ms, res.timings["end_to_end"].last(len(frames)))
                if progress is not None:
                    progress.update(len(frames))
                if not keep_going:
                    res.stopped_by_user = True
                    break
                if opts.fps_limit:
                    delay = t_start + res.frames / opts.fps_limit - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            ok = True
        except KeyboardInterrupt:
            res.interrupted = True
            ok = True  # Ctrl-C is a normal way to end a live session: finish the files
        finally:
            res.seconds = time.perf_counter() - t_start
            self.stream.close()
            for out in self.outputs:
                out.close(ok=ok)
        return res

    @staticmethod
    def _ema(prev: float | None, vals: Any) -> float:
        for v in vals:
            prev = v if prev is None else 0.9 * prev + 0.1 * v
        return prev if prev is not None else 0.0

    def _process(self, frames: list[Any], res: RunResult, t_start: float, ema_ms: float | None) -> bool:
        be, opts = self.backend, self.opts
        t0 = time.perf_counter()
        x = be.preprocess([f.image for f in frames])
        t1 = time.perf_counter()
        logits, masks = be.infer(x)
        t2 = time.perf_counter()
        probs = be.probabilities(logits)
        raw = be.raw_masks(masks) if self.want_masks else None
        t_shared = (time.perf_counter() - t2) / len(frames)
        res.batches += 1
        keep_going = True
        for i, f in enumerate(frames):
            ta = time.perf_counter()
            shown = select_classes(probs[i], opts.threshold, opts.top_k, opts.pinned)
            shown_masks = be.masks_for(masks, i, shown, view_size(f.image.shape, opts.min_view))
            tb = time.perf_counter()
            fps = res.frames / (tb - t_start) if res.frames else 0.0
            status = f"{be.name}  {ema_ms or 0:.1f} ms  {fps:.0f} FPS"
            img = self.overlay.render(f.image, probs[i], shown, shown_masks, status)
            timings = {"capture": f.capture_ms, "preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3,
                       "postprocess": (tb - ta + t_shared) * 1e3}
            rec = FrameRecord(f.index, f.name, img, probs[i], shown, timings, tb - t_start,
                              masks=None if raw is None else raw[i], source_size=f.image.shape[:2],
                              stream=f.stream)
            for out in self.outputs:
                if not out.records:
                    keep_going = out.write(rec) and keep_going
            tc = time.perf_counter()
            timings["render"] = (tc - tb) * 1e3
            since = f.t_capture if self.stream.live else t0
            timings["end_to_end"] = (tc - since) * 1e3 + f.capture_ms
            for out in self.outputs:  # records carry the complete timings, so they go last
                if out.records:
                    keep_going = out.write(rec) and keep_going
            res.timings.add(timings)
            res.frames += 1
        return keep_going
