"""The stream reader: a :class:`~.sources.Source` in a background thread under the live or
buffered policy (see :mod:`.sources` for the policies), ending in a state the consumer
always sees."""

from __future__ import annotations

import threading
import time
from collections import deque

from .sources import CorruptFrame, Frame, Source, SourceStats

# -- reading policies ---------------------------------------------------------------------
# Longest single wait on the stream's condition. Every wait re-checks the state afterwards,
# so a missed notification costs at most this long; no wait in this module is unbounded.
POLL_S = 0.25


class FrameStream:
    """Runs a :class:`Source` in a background thread; see the module doc for the policies.

    The end of the stream is a state (the reader finished and nothing is left), not a
    marker in the queue, so it reaches the consumer whatever the queue holds.

    Args:
        source: an opened source.
        live: newest-frame policy (default: ``source.live``).
        reconnect: live sources: reopen attempts in a row before giving up (0 = none).
        prefetch: buffered sources: frames decoded ahead.
        backoff: (first, max) reconnect delays in seconds.
        cond: the condition the reader notifies on every frame and at the end; several
            streams share one so a consumer can wait for whichever delivers first.
        stream_id: the stream's number, copied into every :class:`Frame` it yields.
        pace: hand frames over at this rate (frames per second; ``None``: as they are read).
    """

    def __init__(self, source: Source, live: bool | None = None, reconnect: int = 5, prefetch: int = 32,
                 backoff: tuple[float, float] = (0.5, 8.0), cond: threading.Condition | None = None,
                 stream_id: int = 0, pace: float | None = None) -> None:
        if pace is not None and not pace > 0:
            raise ValueError(f"pace must be > 0 frames per second, got {pace}")
        self.pace = pace
        self.source = source
        self.live = source.live if live is None else live
        self.reconnect = max(0, int(reconnect))
        self.backoff = backoff
        self.prefetch = max(1, int(prefetch))
        self.stream_id = int(stream_id)
        self.stats = SourceStats()
        self.lost: str | None = None  # why a live stream ended, if it did
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = False  # the reader has finished (end of source, loss, error or close)
        self._cond = cond if cond is not None else threading.Condition()
        self._latest: Frame | None = None  # live: the newest frame nobody took yet
        self._buf: deque[Frame] = deque()  # buffered: decoded ahead, at most `prefetch`
        self._thread = threading.Thread(target=self._run, name=f"wysiwyc-{source.kind}", daemon=True)
        self._started = False

    # -- consumer side --------------------------------------------------------------
    def start(self) -> "FrameStream":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def share_condition(self, cond: threading.Condition) -> None:
        """Notify ``cond`` instead of the stream's own condition (before :meth:`start`)."""
        if self._started and cond is not self._cond:
            raise RuntimeError("share_condition() must come before start()")
        self._cond = cond

    @property
    def finished(self) -> bool:
        """The reader has finished and every frame it read was taken."""
        with self._cond:
            return self._finished()

    def _finished(self) -> bool:
        return self._done and self._latest is None and not self._buf

    def _ready(self) -> bool:
        return self._latest is not None or bool(self._buf)

    def next_batch(self, max_batch: int = 1, timeout: float | None = None) -> list[Frame]:
        """Block for the next frame(s); ``[]`` at the end of the stream (or after ``timeout``
        seconds without a frame: tell the two apart with :attr:`finished`).

        Live: exactly the newest frame. Buffered: the next frame plus up to
        ``max_batch - 1`` more that are already decoded (never waits to fill a batch).
        """
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready() and not self._done:
                left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if left <= 0:
                    break
                self._cond.wait(left)
            out = self._take(max_batch)
        if not out:
            self._raise_thread_error()
        return out

    def _take(self, max_batch: int) -> list[Frame]:
        """Frames ready now (the caller holds the condition)."""
        if self.live:
            frame, self._latest = self._latest, None
            return [frame] if frame is not None else []
        out = [self._buf.popleft() for _ in range(min(max(1, max_batch), len(self._buf)))]
        if out:
            self._cond.notify_all()  # room for the reader
        return out

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()  # wake a reader waiting for room
        if self._started:
            self._thread.join()  # the reader re-checks the stop flag at least every POLL_S
        self.source.close()

    def _raise_thread_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # -- producer side --------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # surfaced in the consumer thread
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _due(self, t0: float, k: int) -> float:
        """When the ``k``-th frame handed over is due (``perf_counter`` seconds) when paced."""
        return t0 + k / self.pace if self.pace else t0

    def _wait_until(self, due: float) -> bool:
        """Wait for ``due`` (``perf_counter`` seconds); ``False`` when the stream is closed first."""
        left = due - time.perf_counter()
        return not (left > 0 and self._stop.wait(left))

    def _produce(self) -> None:
        index = 0
        handed = 0  # frames handed over, for pacing
        t_first: float | None = None
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                img = self.source.read()
            except CorruptFrame as exc:
                self.stats.corrupt += 1
                if len(self.stats.corrupt_names) < 100:
                    self.stats.corrupt_names.append(str(exc) or f"frame {index}")
                index += 1
                continue
            t1 = time.perf_counter()
            if img is None:
                if self.live and self._reconnect():
                    continue
                return
            decode_ms = (t1 - t0) * 1e3
            if self.pace:
                t_first = t1 if t_first is None else t_first
                if not self._wait_until(self._due(t_first, handed)):
                    return
                handed += 1
                t1 = max(t1, time.perf_counter())  # it arrives when due, like a camera's frame
            frame = Frame(index, img, t1, decode_ms, self.source.name, self.stream_id)
            index += 1
            with self._cond:
                self.stats.grabbed += 1
                if self.live:
                    if self._latest is not None:
                        self.stats.dropped += 1  # replaced before anyone took it
                    self._latest = frame
                else:
                    while len(self._buf) >= self.prefetch and not self._stop.is_set():
                        self._cond.wait(POLL_S)  # full: wait for the consumer (or close)
                    if self._stop.is_set():
                        return
                    self._buf.append(frame)
                self._cond.notify_all()

    def _reconnect(self) -> bool:
        first, cap = self.backoff
        for attempt in range(self.reconnect):
            if self._stop.wait(min(first * 2**attempt, cap)):
                return False
            if self.source.reopen():
                self.stats.reconnects += 1
                return True
        self.lost = (f"{self.source.describe()} stopped delivering frames"
                     + (f" and {self.reconnect} reconnect attempts failed" if self.reconnect else
                        " (reconnect disabled)"))
        return False
