"""The runtime loop: capture → preprocess → infer → postprocess → render → outputs, pipelined.

Each stage runs in its own thread and hands its work to the next through a small
bounded queue (``RunOptions.depth`` batches), so the model infers batch *n* while batch
*n+1* is being prepared and batch *n−1* rendered; numpy, OpenCV and ONNX Runtime release
the GIL, so the stages really overlap:

* capture — one reader thread per source (:class:`~.reader.FrameStream`);
* preprocess — a thread builds a batch across the streams (:class:`~.batching.Batcher`)
  and resizes/scales it to the model input;
* infer — a thread runs the model and turns logits into probabilities; with
  ``RunOptions.runs`` > 1 that many threads each run a batch at once (a CPU backend gives
  each its share of the cores) and hand the results on in batch order;
* postprocess + render — the calling thread picks the classes and the shown masks, and
  shows the window (an OpenCV window must live in this thread);
* outputs — a thread writes the files (video, masks, JSON lines) and feeds the web view,
  in frame order, after each frame's timings are complete.

The overlay is drawn where it is first needed — by the window for the frames it shows, by
the video writer, by the web view for the frames a client fetches (:class:`~.outputs.FrameRecord`):
a frame no output shows is never drawn, and nothing is drawn without a window, video or
web view.

Stages, as reported (milliseconds per frame):

* ``capture`` — grabbing/decoding the frame in the source thread;
* ``preprocess`` — resize + scale to the model input, for the frame's whole batch;
* ``infer`` — the model (classifier + attribution head, one pass) and the probabilities,
  for the whole batch; on a GPU it ends with one wait for the device per batch, so the
  device time lands here and not in a later stage;
* ``postprocess`` — class choice, upsampling the shown masks (done for the whole batch at
  once, each frame carrying its share);
* ``render`` — the render stage in the calling thread: the shown masks' moving average
  (``--smooth``), and drawing and showing the window's frames;
* ``draw`` — drawing one frame's overlay, wherever it is drawn (window, video writer, web
  view), over the frames that are drawn (not part of ``end_to_end`` when an output in
  another thread draws it);
* ``end_to_end`` — from the frame's decode to the end of its render stage, queue waits between
  stages included. For live sources this includes the time the frame waited for the
  model (its age); for buffered sources (files, ``--demo``) the time spent in the
  decode-ahead queue is excluded, because it is buffering by design and not latency a
  viewer sees.

Batched frames each carry their batch's preprocess and infer time (that is the latency
they experienced); FPS is frames delivered over wall time. Every statistic is kept per
stream and for the whole run, in bounded memory (:mod:`.stats`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import Backend
from .backends.base import ClassMasks
from .batching import Batcher
from .imageops import opencv_single_threaded, view_size
from .outputs import FrameRecord, Output
from .overlay import Overlay, select_classes_batch
from .reader import POLL_S, FrameStream
from .smoothing import MaskSmoother
from .sources import Frame
from .stats import StageTimings

STATUS_S = 0.25  # seconds between refreshes of the overlay's status line
STAGES = ("capture", "preprocess", "infer", "postprocess", "render", "draw", "end_to_end")


@dataclass
class RunOptions:
    """Knobs of :class:`Pipeline` (the CLI flags of the same names).

    Attributes:
        max_frames: stop after this many frames, all streams together (``None``: never).
        fps_limit: at most this many frames per second, all streams together.
        batch: frames per batch from buffered streams (live streams add one each at most).
        batch_wait_s: once a live stream has a frame, wait at most this long for the
            other live streams (seconds).
        depth: batches each stage queue holds (more smooths jitter, adds latency).
        smooth: α of the per-stream, per-class moving average of the masks
            (:mod:`.smoothing`; 1: the masks as the model output them).
        runs: batches in the model at once (each in its own infer thread, handed on in
            order), at most the backend's ``concurrent_runs``.
    """

    max_frames: int | None = None
    fps_limit: float | None = None
    batch: int = 8
    threshold: float = 0.5
    top_k: int = 3
    pinned: list[int] | None = None
    min_view: int = 384
    batch_wait_s: float = 0.01
    depth: int = 1
    smooth: float = 1.0
    runs: int = 1


@dataclass
class StreamResult:
    """One stream's share of a run."""

    frames: int = 0
    timings: StageTimings = field(default_factory=lambda: StageTimings(STAGES))


@dataclass
class RunResult:
    """What a run did: timings per stage (ms per frame, bounded: see :mod:`.stats`) and
    counters, for the whole run and per stream (``streams``, by stream number)."""

    frames: int = 0
    seconds: float = 0.0
    timings: StageTimings = field(default_factory=lambda: StageTimings(STAGES))
    batches: int = 0
    interrupted: bool = False
    stopped_by_user: bool = False
    stopped_by: str | None = None  # the signal that ended the run (``"SIGTERM"``), if one did
    streams: dict[int, StreamResult] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        """stage -> p50/p95/p99 (over the newest frames, see :mod:`.stats`) and mean (ms)."""
        return self.timings.summary()

    def record(self, stream: int, timings: dict[str, float]) -> None:
        """Count one delivered frame of ``stream`` with its stage timings (ms)."""
        self.frames += 1
        self.timings.add(timings)
        per = self.streams.get(stream)
        if per is None:
            per = self.streams[stream] = StreamResult()
        per.frames += 1
        per.timings.add(timings)


@dataclass
class _Batch:
    """A batch on its way through the stages (times: ``perf_counter`` seconds)."""

    frames: list[Frame]
    seq: int = 0  # the batch's place in the run: infer threads hand batches on in this order
    x: Any = None
    t_pre: float = 0.0  # preprocess started
    t_ready: float = 0.0  # preprocess done (the wait for the model follows)
    t_inf: float = 0.0  # infer started
    t_post: float = 0.0  # infer (and probabilities) done
    logits: Any = None
    masks: Any = None
    probs: Any = None
    raw: Any = None
    shared_s: float = 0.0  # batch-wide postprocess (raw masks), shared by its frames


_END = object()  # the end of the work, passed down the stage queues


@dataclass
class _EndOfBatches:
    """The end of the work for one infer thread, in the batch order (the first one passes
    :data:`_END` on)."""

    seq: int
    first: bool


class Pipeline:
    """Runs one or more :class:`FrameStream` s through a :class:`Backend` into :class:`Output` s.

    Args:
        streams: one stream or several (numbered by their ``stream_id``; renumbered
            0..N-1 when those are not distinct).
        backend: the model.
        overlay: the renderer.
        outputs: where frames go (window, video, masks, JSON lines, web view); an output
            whose ``stream`` is set gets only that stream's frames.
        opts: frame limit, pacing, batching, class selection.
    """

    def __init__(self, streams: FrameStream | Sequence[FrameStream], backend: Backend, overlay: Overlay,
                 outputs: list[Output], opts: RunOptions) -> None:
        self.streams = [streams] if isinstance(streams, FrameStream) else list(streams)
        if len({s.stream_id for s in self.streams}) < len(self.streams):
            for i, s in enumerate(self.streams):
                s.stream_id = i
        self.stream = self.streams[0]
        self.backend, self.overlay, self.outputs, self.opts = backend, overlay, outputs, opts
        self.want_masks = any(o.wants_masks for o in outputs)
        # no window, video or web view: nothing shows the overlay, so it is not drawn
        self.draw = any(getattr(o, "draws", True) for o in outputs)
        # outputs may be any object with write/close (duck-typed): default the routing attributes
        self.inline = [o for o in outputs if getattr(o, "main_thread", False)]
        self.deferred = [o for o in outputs if not getattr(o, "main_thread", False)]
        self._route = {id(o): getattr(o, "stream", None) for o in outputs}
        self.batcher = Batcher(self.streams, opts.batch, opts.batch_wait_s)
        self.runs = max(1, min(int(opts.runs), backend.concurrent_runs))
        self._turn = 0  # the next batch (seq) the infer threads may hand on
        self._turn_cond = threading.Condition()
        self.smoother = MaskSmoother(opts.smooth) if opts.smooth < 1.0 else None
        self._live = {s.stream_id: s.live for s in self.streams}
        self._stop = threading.Event()  # ends the capture-side stages (limit, 'q', Ctrl-C, failure)
        self._failure: BaseException | None = None
        self._t_start: float | None = None
        self._status = ("", -1.0)  # the overlay's status line and when it was last refreshed
        self._draw_lock = threading.Lock()  # frames are drawn in several threads; their times land here
        self.result = RunResult()  # live view of the run (the web view reads it)

    def stop(self) -> None:
        """Ask a running :meth:`run` (in another thread) to finish as after ``--max-frames``."""
        self._stop.set()

    def interrupt(self, reason: str = "SIGINT") -> None:
        """Finish as after Ctrl-C, from another thread (e.g. on SIGTERM): the frames already
        rendered are written, the files finalised, and the result says ``interrupted``
        and ``stopped_by`` ``reason``. Before :meth:`run` it makes the run end at once."""
        self.result.interrupted = True
        if self.result.stopped_by is None:
            self.result.stopped_by = reason
        self._stop.set()

    def live_stats(self) -> dict[str, Any]:
        """The run so far, safe to call from another thread (the web view's ``/stats.json``):
        frames, FPS, stage percentiles (ms), and per stream its counters and FPS."""
        res = self.result
        t0 = self._t_start
        secs = time.perf_counter() - t0 if t0 is not None else 0.0
        rnd = lambda d: {k: {q: round(v, 3) for q, v in qs.items()} for k, qs in d.items()}  # noqa: E731
        streams = []
        for s in self.streams:
            per = res.streams.get(s.stream_id)
            frames = per.frames if per is not None else 0
            st = s.stats
            streams.append({"stream": s.stream_id, "name": s.source.describe(), "live": s.live, "frames": frames,
                            "fps": round(frames / secs, 2) if secs > 0 else 0.0, "grabbed": st.grabbed,
                            "dropped": st.dropped, "corrupt": st.corrupt, "reconnects": st.reconnects,
                            "lost": s.lost,
                            "latency_ms": rnd(per.timings.summary()) if per is not None else {}})
        return {"frames": res.frames, "seconds": round(secs, 3), "fps": round(res.frames / secs, 2) if secs > 0 else 0.0,
                "batches": res.batches, "backend": self.backend.name, "latency_ms": rnd(res.percentiles()),
                "streams": streams}

    # -- stage plumbing ---------------------------------------------------------------
    def _put(self, q: queue.Queue, item: Any) -> bool:
        """Hand ``item`` on; gives up only when the run stops (then nobody needs it)."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def _get(self, q: queue.Queue) -> Any:
        """The next item, or :data:`_END` when the run stops."""
        while not self._stop.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                pass
        return _END

    def _worker(self, name: str, body: Any) -> threading.Thread:
        def run() -> None:
            try:
                body()
            except BaseException as exc:  # re-raised by run() in the calling thread
                if self._failure is None:
                    self._failure = exc
                self._stop.set()

        t = threading.Thread(target=run, name=f"wysiwyc-{name}", daemon=True)
        t.start()
        return t

    # -- stages -------------------------------------------------------------------------
    def _prepare(self, out: queue.Queue, t_start: float) -> None:
        opts, be = self.opts, self.backend
        sent = seq = 0
        while not self._stop.is_set():
            left = None if opts.max_frames is None else opts.max_frames - sent
            if left is not None and left <= 0:
                break
            if opts.fps_limit and sent:
                delay = t_start + sent / opts.fps_limit - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    break
            frames = self.batcher.next_batch(limit=left, stop=self._stop)
            if not frames:
                break
            b = _Batch(frames, seq=seq, t_pre=time.perf_counter())
            b.x = be.preprocess([f.image for f in frames])
            b.t_ready = time.perf_counter()
            sent, seq = sent + len(frames), seq + 1
            if not self._put(out, b):
                return
        for k in range(self.runs):
            self._put(out, _EndOfBatches(seq + k, first=k == 0))

    def _infer(self, inp: queue.Queue, out: queue.Queue) -> None:
        """One infer thread (of ``runs``): batches in, results out in batch order."""
        be = self.backend
        while True:
            b = self._get(inp)
            if b is _END:
                self._put(out, _END)
                return
            if isinstance(b, _EndOfBatches):
                if self._await_turn(b.seq):
                    if b.first:
                        self._put(out, _END)
                    self._next_turn()
                return
            b.t_inf = time.perf_counter()
            b.logits, b.masks = be.infer(b.x)
            be.synchronize()  # once per batch: device time counts as inference
            b.probs = be.probabilities(b.logits)
            b.x = None
            b.t_post = time.perf_counter()
            if self.want_masks:
                b.raw = be.raw_masks(b.masks)
                b.shared_s = (time.perf_counter() - b.t_post) / len(b.frames)
            if not self._await_turn(b.seq):
                return
            handed = self._put(out, b)
            self._next_turn()
            if not handed:
                return

    def _await_turn(self, seq: int) -> bool:
        """Wait until batch ``seq`` is the next to hand on; ``False`` when the run stops first."""
        with self._turn_cond:
            while self._turn != seq:
                if self._stop.is_set():
                    return False
                self._turn_cond.wait(POLL_S)
        return True

    def _next_turn(self) -> None:
        with self._turn_cond:
            self._turn += 1
            self._turn_cond.notify_all()

    def _write(self, inp: queue.Queue) -> None:
        """Outputs thread: every record it is given, in order, until :data:`_END` (it does
        not stop with the run, so a stopped or interrupted run still finishes its files)."""
        while True:
            try:
                recs = inp.get(timeout=POLL_S)
            except queue.Empty:
                continue  # the run always sends _END, also when it fails or is interrupted
            if recs is _END:
                return
            for rec in recs:
                for o in self.deferred:
                    if self._route[id(o)] in (None, rec.stream):
                        if not o.write(rec):
                            self._stop.set()

    # -- the run ------------------------------------------------------------------------
    def run(self, progress: Any = None) -> RunResult:
        """Process until every source ends, ``max_frames``, an output asks to stop, :meth:`stop`,
        :meth:`interrupt` or Ctrl-C. A pipeline runs once (its streams are closed at the end).

        ``progress``: optional object with ``update(n)`` (e.g. a tqdm bar).
        Outputs are closed cleanly on every exit except an unexpected exception.
        """
        with opencv_single_threaded():
            return self._run(progress)

    def _run(self, progress: Any) -> RunResult:
        opts, res = self.opts, self.result
        depth = max(1, int(opts.depth))
        # live frames waiting for the model only grow stale: one prepared batch is enough
        # to keep the model busy, and the next one is taken fresh when it frees up
        q_inf: queue.Queue = queue.Queue(1 if any(s.live for s in self.streams) else depth)
        q_post: queue.Queue = queue.Queue(depth)
        # the outputs queue is bounded too: a slow disk or encoder slows the run instead
        # of holding every rendered frame in memory; it carries one batch's records per item
        # (one hand-off and one wake-up of the outputs thread per batch, not per frame)
        q_out: queue.Queue = queue.Queue(depth + 1)
        t_start = time.perf_counter()
        self._t_start = t_start
        ok = False
        writer = threading.Thread(target=self._write_guarded, args=(q_out,), name="wysiwyc-outputs", daemon=True)
        writer.start()
        workers = [self._worker("preprocess", lambda: self._prepare(q_inf, t_start))]
        workers += [self._worker(f"infer-{k}" if self.runs > 1 else "infer", lambda: self._infer(q_inf, q_post))
                    for k in range(self.runs)]
        ema_ms: float | None = None
        try:
            while True:
                b = self._get(q_post)
                if b is _END:
                    break
                keep_going, ema_ms = self._render(b, q_out, res, t_start, ema_ms)
                if progress is not None:
                    progress.update(len(b.frames))
                if not keep_going:
                    res.stopped_by_user = True
                    break
            if self._failure is not None:
                raise self._failure
            ok = True
        except KeyboardInterrupt:
            res.interrupted = True
            ok = True  # Ctrl-C is a normal way to end a live session: finish the files
        finally:
            self._stop.set()
            for t in workers:
                t.join()  # each re-checks the stop flag at least every POLL_S
            self.batcher.close()
            while writer.is_alive():
                try:
                    q_out.put(_END, timeout=POLL_S)
                    break
                except queue.Full:
                    pass
            writer.join()
            res.seconds = time.perf_counter() - t_start
            if self._failure is not None:
                ok = False
            for out in self.outputs:
                out.close(ok=ok)
        if self._failure is not None and not ok:
            raise self._failure
        return res

    def _write_guarded(self, q: queue.Queue) -> None:
        try:
            self._write(q)
        except BaseException as exc:  # re-raised by run(); keep draining so nobody blocks
            if self._failure is None:
                self._failure = exc
            self._stop.set()
            while True:
                try:
                    if q.get(timeout=POLL_S) is _END:
                        return
                except queue.Empty:
                    pass

    def _render(self, b: _Batch, q_out: queue.Queue, res: RunResult, t_start: float,
                ema_ms: float | None) -> tuple[bool, float | None]:
        be, opts = self.backend, self.opts
        res.batches += 1
        keep_going = True
        pre_ms, inf_ms = (b.t_ready - b.t_pre) * 1e3, (b.t_post - b.t_inf) * 1e3
        ta = time.perf_counter()
        shown_sets = select_classes_batch(b.probs, opts.threshold, opts.top_k, opts.pinned)
        # the shown masks at the model's resolution (the overlay composites them there and
        # upsamples the result once), taken when a frame is drawn; the moving average needs
        # every frame's now, and a device backend takes the whole batch at once (one wait)
        eager = self.draw and (self.smoother is not None or be.masks_on_device)
        shown_all = (be.masks_for_batch(b.masks, [(c, be.input_size) for c in shown_sets]) if eager
                     else [None] * len(shown_sets))
        post_s = (time.perf_counter() - ta) / len(b.frames)
        recs = []
        for i, f in enumerate(b.frames):
            shown, shown_masks = shown_sets[i], shown_all[i]
            tb = time.perf_counter()
            raw = None if b.raw is None else b.raw[i]
            if self.smoother is not None:
                shown_masks, raw = self._smooth(f.stream, shown, shown_masks, raw)
            img = f.image
            if self.draw:  # drawn when an output first reads rec.image (never, for a frame nobody shows)
                img = self._drawing(f.image, b.probs[i], shown, shown_masks, (b.masks, i),
                                    self._status_line(tb, t_start, ema_ms), f.stream)
            timings = {"capture": f.capture_ms, "preprocess": pre_ms, "infer": inf_ms,
                       "postprocess": (post_s + b.shared_s) * 1e3}
            rec = FrameRecord(f.index, f.name, img, b.probs[i], shown, timings, tb - t_start,
                              masks=raw, source_size=f.image.shape[:2],
                              stream=f.stream)
            for out in self.inline:
                if self._route[id(out)] in (None, f.stream):
                    keep_going = out.write(rec) and keep_going
            tc = time.perf_counter()
            timings["render"] = (tc - tb) * 1e3
            since = f.t_capture if self._live.get(f.stream, False) else b.t_pre
            timings["end_to_end"] = (tc - since) * 1e3 + f.capture_ms
            ema_ms = timings["end_to_end"] if ema_ms is None else 0.9 * ema_ms + 0.1 * timings["end_to_end"]
            res.record(f.stream, timings)
            recs.append(rec)
        if self.deferred:
            while not self._put_out(q_out, recs):
                pass
        return keep_going, ema_ms

    def _drawing(self, image: np.ndarray, probs: np.ndarray, shown: list[int], shown_masks: Any,
                 batch_slot: tuple[Any, int], status: str, stream: int) -> Any:
        """A function that draws this frame's overlay (its masks taken from ``batch_slot``, the
        batch's masks and the frame's place in it, unless already given)."""
        be, size = self.backend, view_size(image.shape, self.opts.min_view)

        def draw() -> np.ndarray:
            t0 = time.perf_counter()
            masks = shown_masks if shown_masks is not None else be.masks_for(*batch_slot, shown, be.input_size)
            out = self.overlay.render(image, probs, shown, masks, status, size=size)
            ms = (time.perf_counter() - t0) * 1e3
            with self._draw_lock:
                self.result.timings["draw"].add(ms)
                per = self.result.streams.get(stream)
                if per is not None:
                    per.timings["draw"].add(ms)
            return out

        return draw

    def _status_line(self, now: float, t_start: float, ema_ms: float | None) -> str:
        """The overlay's status line (backend, latency, FPS), refreshed STATUS_S apart: digits
        that change every frame cannot be read, and a steady line is drawn from a cached sprite."""
        line, t = self._status
        if now - t >= STATUS_S:
            fps = self.result.frames / (now - t_start) if self.result.frames else 0.0
            line = f"{self.backend.name}  {ema_ms or 0:.1f} ms  {fps:.0f} FPS"
            self._status = (line, now)
        return line

    def _smooth(self, stream: int, shown: list[int], shown_masks: Any, raw: Any) -> tuple[Any, Any]:
        """One frame's masks through the stream's moving average: every class of the saved
        masks when they are saved (the shown ones taken from them), else the shown ones."""
        if raw is None:
            return (None if shown_masks is None else self.smoother(stream, shown, shown_masks)), None
        classes = [int(c) for c in raw.classes] if isinstance(raw, ClassMasks) else list(range(len(raw)))
        smoothed = self.smoother(stream, classes, raw.masks if isinstance(raw, ClassMasks) else raw)
        raw = ClassMasks(smoothed, raw.classes) if isinstance(raw, ClassMasks) else smoothed
        if shown_masks is not None:
            shown_masks = np.stack([smoothed[classes.index(c)] if c in classes else np.zeros(smoothed.shape[1:],
                                    np.float32) for c in shown]) if shown else shown_masks
        return shown_masks, raw

    def _put_out(self, q: queue.Queue, recs: list[FrameRecord]) -> bool:
        """Records are never dropped: the outputs thread always drains until the end."""
        if self._failure is not None:
            return True  # the outputs failed; the run is ending
        try:
            q.put(recs, timeout=POLL_S)
            return True
        except queue.Full:
            return False
