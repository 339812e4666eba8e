"""Throughput of a call made from several threads at once (the model alone, the classifier
alone): the yardsticks the runtime benchmarks measure a pipeline against."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def model_only_fps(be, batch: int, frames: int, size: int = 64) -> float:  # noqa: ANN001
    """The model alone (a preprocessed ``--demo`` batch of ``size`` px in, outputs out) at
    ``batch``, over ``frames`` frames, with as many batches at once as the backend runs
    (``concurrent_runs``): the yardstick of a pipeline run on that backend."""
    from wysiwyc.runtime.sources import DemoSource

    x = be.preprocess([DemoSource(size=size).read()] * batch)
    return rate(lambda: be.infer(x), batch, frames, be.concurrent_runs)


def rate(call: Callable[[], object], batch: int, frames: int, runs: int = 1) -> float:
    """Frames per second of ``call()`` (one batch of ``batch`` frames) made from ``runs``
    threads at once until ``frames`` frames are done, after one untimed call."""
    call()
    left = [frames]
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= batch
            call()

    threads = [threading.Thread(target=work) for _ in range(max(1, runs))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (frames - left[0]) / (time.perf_counter() - t0)
