"""Cross-stream batching: one model batch from the frames several streams have ready.

Every :class:`~.reader.FrameStream` of a run shares one condition, which its reader
notifies on every frame and at its end, so :class:`Batcher` sleeps until any stream has
something and never polls in a loop. A batch is built as follows:

* **live streams** (cameras, network streams) give their newest frame, one each. Once one
  of them has a frame, the batcher waits at most ``wait_s`` (DeepStream's
  *batched-push-timeout*) for the other live streams to deliver too, then goes with what
  is there: live latency is bounded by that wait plus the model, never by a batch size
  to fill;
* **buffered streams** (files, folders, the demo) fill the rest of the batch up to
  ``max_batch`` frames, taking one frame per stream in turn so no stream starves; they
  drop nothing and are never waited for (a batch holds the frames already decoded).

A batch holds at most ``max(max_batch, live streams)`` frames: :func:`batch_plan` is the
one place that rule lives (the batcher, the backend's batch profile and the run summary
all read it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .reader import POLL_S, FrameStream
from .sources import Frame


@dataclass(frozen=True)
class BatchPlan:
    """How a run batches frames.

    Attributes:
        batch: frames per batch from buffered streams (``--batch``).
        live: live streams, one frame each per batch.
        runs: batches in the model at once (``--runs``; ``None``: :attr:`model_runs`' default).
    """

    batch: int
    live: int
    runs: int | None = None

    @property
    def model_runs(self) -> int:
        """Batches in the model at once: ``runs`` when given, else two when every stream is
        buffered (throughput: two single-threaded CPU runs never wait for each other) and one
        with a live stream (a second batch in flight would only make live frames older)."""
        if self.runs is not None:
            return max(1, self.runs)
        return 1 if self.live else 2

    @property
    def max_batch(self) -> int:
        """The largest batch the run can make: max(batch, live streams)."""
        return max(self.batch, self.live, 1)

    @property
    def profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch sizes for a backend that builds for a range (TensorRT)."""
        return 1, max(1, self.batch), self.max_batch


def batch_plan(batch: int, live_streams: int, runs: int | None = None) -> BatchPlan:
    """The batching of a run with ``--batch batch``, ``live_streams`` live streams and
    ``--runs runs``."""
    return BatchPlan(max(1, int(batch)), max(0, int(live_streams)), None if runs is None else max(1, int(runs)))


class Batcher:
    """Batches the frames of ``streams`` (see the module doc).

    Args:
        streams: the run's streams, not started yet or already sharing one condition.
        max_batch: frames per batch from buffered streams (live streams add one each, at most).
        wait_s: longest wait for the other live streams once one has a frame (seconds).
    """

    def __init__(self, streams: Sequence[FrameStream], max_batch: int = 8, wait_s: float = 0.01) -> None:
        if not streams:
            raise ValueError("Batcher needs at least one stream")
        self.streams = list(streams)
        self.max_batch = max(1, int(max_batch))
        self.wait_s = max(0.0, float(wait_s))
        self.cond = self.streams[0]._cond
        for s in self.streams[1:]:
            s.share_condition(self.cond)
        self.live = [s for s in self.streams if s.live]
        self.buffered = [s for s in self.streams if not s.live]
        self.plan = batch_plan(self.max_batch, len(self.live))
        self._turn = 0  # the buffered stream that gives the first frame of the next batch

    def start(self) -> "Batcher":
        for s in self.streams:
            s.start()
        return self

    @property
    def finished(self) -> bool:
        with self.cond:
            return all(s._finished() for s in self.streams)

    def next_batch(self, limit: int | None = None, stop: threading.Event | None = None) -> list[Frame]:
        """Block until frames are ready and return a batch; ``[]`` when every stream has
        ended (or ``stop`` was set).

        Args:
            limit: take at most this many frames (e.g. what is left of ``--max-frames``).
            stop: checked at every wake-up (at least every :data:`~.reader.POLL_S` s).
        """
        self.start()
        cap = self.plan.max_batch
        if limit is not None:
            cap = min(cap, limit)
        if cap <= 0:
            return []
        with self.cond:
            self._raise_errors()  # a reader that failed ends the run, not only its stream
            while not any(s._ready() for s in self.streams):
                if all(s._finished() for s in self.streams) or (stop is not None and stop.is_set()):
                    return []
                self.cond.wait(POLL_S)
            if self.wait_s and any(s._ready() for s in self.live):
                deadline = time.monotonic() + self.wait_s
                while any(not s._ready() and not s._done for s in self.live):
                    left = deadline - time.monotonic()
                    if left <= 0 or (stop is not None and stop.is_set()):
                        break
                    self.cond.wait(min(left, POLL_S))
            out: list[Frame] = []
            for s in self.live:
                if len(out) < cap:
                    out += s._take(1)
            n = len(self.buffered)
            while len(out) < cap and any(s._buf for s in self.buffered):
                s = self.buffered[self._turn % n]
                self._turn += 1
                out += s._take(1)
        return out

    def _raise_errors(self) -> None:
        for s in self.streams:
            if s._done:
                s._raise_thread_error()

    def close(self) -> None:
        for s in self.streams:
            s.close()
