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


# -- item: bounded statistics ----------------------------------------------------------------
def test_window_percentiles_match_numpy_within_the_window():
    from wysiwyc.runtime.stats import Window

    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 3.0, 1000)
    w = Window(256)
    w.add(data[0])
    assert w.summary()["p50"] == data[0] and len(w) == 1
    w.extend(data[1:200])  # fewer than the window: every sample
    np.testing.assert_array_equal(w.values(), data[:200])
    for q, name in ((50, "p50"), (95, "p95"), (99, "p99")):
        assert w.summary()[name] == pytest.approx(np.percentile(data[:200], q), rel=1e-12)
    w.extend(data[200:])  # more than the window: the newest 256, in order
    np.testing.assert_array_equal(w.values(), data[-256:])
    np.testing.assert_array_equal(w.last(3), data[-3:])
    s = w.summary()
    for q, name in ((50, "p50"), (95, "p95"), (99, "p99")):
        assert s[name] == pytest.approx(np.percentile(data[-256:], q), rel=1e-12)
    # count, mean, min and max cover every sample
    assert w.count == 1000 and s["mean"] == pytest.approx(data.mean(), rel=1e-12)
    assert (w.min, w.max) == (data.min(), data.max())


def test_run_statistics_memory_does_not_grow_with_frames():
    import tracemalloc

    from wysiwyc.runtime.pipeline import STAGES, RunResult

    res = RunResult()
    frame = {s: 1.5 for s in STAGES}

    def record(n: int) -> None:
        for i in range(n):
            res.timings.add({k: v + i % 7 for k, v in frame.items()})
            res.frames += 1

    record(5000)  # past the window: the ring buffers are full from here on
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    record(30000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    assert grown < 16384, f"statistics grew {grown} bytes over 30000 frames"  # a list: ~6 MB
    assert res.timings["end_to_end"].count == 35000 and len(res.timings["end_to_end"]) == 4096
    assert set(res.percentiles()) == set(STAGES)
