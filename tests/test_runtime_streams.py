"""Runtime streams: end of stream always delivered, bounded statistics, multi-stream batching,
the live web view. Fast, CPU only, no model unless a test needs one."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from wysiwyc.runtime.sources import FrameStream, Source


class CountSource(Source):
    """``n`` tiny frames whose pixel value is their index (mod 256), then the end."""

    kind = "count"

    def __init__(self, n: int, size: int = 4) -> None:
        super().__init__()
        self.n, self.size, self.i = n, size, 0

    def _read(self) -> np.ndarray | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return np.full((self.size, self.size, 3), (self.i - 1) % 256, np.uint8)


def drain(stream: FrameStream, batch: int, model_s: float = 0.0, first_batch_hook=None,
          deadline_s: float = 10.0) -> tuple[bool, list[int]]:
    """Consume ``stream`` like the pipeline does, with a model taking ``model_s`` per batch.

    Returns (whether the end of the stream arrived before ``deadline_s``, frame indices).
    The consumer runs in a thread so a lost end marker is a failure, not a hung test.
    """
    got: list[int] = []
    ended = threading.Event()

    def consume() -> None:
        first = True
        while True:
            frames = stream.next_batch(batch)
            if not frames:
                break
            assert 1 <= len(frames) <= batch
            got.extend(f.index for f in frames)
            if first and first_batch_hook is not None:
                first_batch_hook()
            first = False
            if model_s:
                time.sleep(model_s)
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    ok = ended.wait(deadline_s)
    stream.close()
    return ok, got


# -- item: end of stream ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [40, 48])
def test_end_of_stream_arrives_with_default_prefetch_and_a_slow_model(n):
    """Defaults (prefetch 32, batch 8) and a model slower than the 0.1 s the end marker
    used to be offered for: the queue is full when the source ends."""
    ok, got = drain(FrameStream(CountSource(n), prefetch=32), batch=8, model_s=0.15)
    assert ok, f"the end of the stream never arrived after {len(got)} of {n} frames"
    assert got == list(range(n))


def test_end_of_stream_arrives_when_the_queue_is_full_at_the_end():
    """Event-driven form of the same fault: the model of the first batch returns only once
    the reader has finished the source, so the queue is full when the end is reached."""
    # batch 1: the first batch takes frame 0, the other 4 fill the queue exactly
    stream = FrameStream(CountSource(5), prefetch=4)

    def wait_for_reader() -> None:
        deadline = time.monotonic() + 10
        while stream.source.i < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
        stream._thread.join(0.5)  # the old reader gave up on the end marker after 0.1 s

    ok, got = drain(stream, batch=1, first_batch_hook=wait_for_reader)
    assert ok and got == list(range(5))


@pytest.mark.parametrize("batch, prefetch", list(itertools.product([1, 3, 8], [1, 2, 5, 32])))
def test_every_frame_and_the_end_arrive_for_any_batch_prefetch_delay_and_length(batch, prefetch):
    for model_s, n in itertools.product([0.0, 0.003], [0, 1, 2, 7, 16]):
        ok, got = drain(FrameStream(CountSource(n), prefetch=prefetch), batch=batch, model_s=model_s)
        assert ok and got == list(range(n)), (batch, prefetch, model_s, n, got)
