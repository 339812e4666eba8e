"""Bounded per-frame statistics: a run of any length keeps the same memory.

Every timing the runtime records per frame goes into a :class:`Window`: the count, sum,
minimum and maximum cover every sample, while the percentiles are computed over the
newest ``window`` samples, kept in a fixed numpy ring buffer (8 bytes a sample). For runs
shorter than the window the percentiles are exact (``np.percentile`` of every sample);
for longer runs they describe the recent past, which is also what a live view wants.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# 4096 samples: p99 still rests on ~40 samples; 32 KiB per recorded quantity.
DEFAULT_WINDOW = 4096
QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}


class Window:
    """Streaming statistics of one quantity (e.g. a stage's latency in ms).

    Args:
        window: how many of the newest samples the percentiles use (the ring's size).
    """

    __slots__ = ("_ring", "_next", "count", "total", "min", "max")

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._ring = np.empty(int(window), np.float64)
        self._next = 0  # where the next sample goes
        self.count = 0  # samples ever added
        self.total = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, value: float) -> None:
        v = float(value)
        self._ring[self._next] = v
        self._next = (self._next + 1) % len(self._ring)
        self.count += 1
        self.total += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.add(v)

    def __len__(self) -> int:
        """Samples in the window (at most its size)."""
        return min(self.count, len(self._ring))

    def values(self) -> np.ndarray:
        """The window's samples, oldest first (a copy)."""
        n = len(self)
        if n < len(self._ring):
            return self._ring[:n].copy()
        return np.concatenate([self._ring[self._next:], self._ring[:self._next]])

    def last(self, k: int) -> np.ndarray:
        """The newest ``min(k, len(self))`` samples, oldest first."""
        v = self.values()
        return v[len(v) - min(max(k, 0), len(v)):]

    @property
    def mean(self) -> float:
        """Mean over every sample ever added (not only the window)."""
        return self.total / self.count if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """``p50``/``p95``/``p99`` over the window and ``mean`` over every sample; ``{}`` when empty."""
        if not self.count:
            return {}
        v = self.values()
        qs = np.percentile(v, list(QUANTILES.values()))
        return {**{k: float(q) for k, q in zip(QUANTILES, qs)}, "mean": self.mean}


class StageTimings:
    """One :class:`Window` per stage name, created on first use."""

    def __init__(self, stages: Iterable[str] = (), window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self.stages: dict[str, Window] = {s: Window(window) for s in stages}

    def __getitem__(self, stage: str) -> Window:
        w = self.stages.get(stage)
        if w is None:
            w = self.stages[stage] = Window(self.window)
        return w

    def add(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            self[k].add(v)

    def summary(self) -> dict[str, dict[str, float]]:
        """stage -> :meth:`Window.summary`, for stages with samples."""
        return {k: w.summary() for k, w in self.stages.items() if w.count}
