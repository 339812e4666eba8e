"""Signs of life for a run without a window: a progress bar on a terminal, else status lines.

A headless run (``--no-show``, no display, output to a log) would otherwise say nothing
until it ends, which for an endless source (``--demo``, a camera) is never.
:class:`StatusLine` prints ``runtime-explain: 1234 frames, 84.2 FPS`` once the first
frames are through and then every ``every_s`` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class StatusLine:
    """Periodic one-line status to ``file`` (stderr by default).

    Args:
        label: what runs (e.g. the source), printed in every line.
        every_s: seconds between lines after the first (which comes with the first frames).
        file: where the lines go.
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(self, label: str = "", every_s: float = 5.0, file: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.every_s = label, float(every_s)
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.frames = 0
        self.t0 = clock()
        self.last: float | None = None  # when the last line was printed

    def line(self, now: float) -> str:
        dt = now - self.t0
        fps = self.frames / dt if dt > 0 else 0.0
        return f"runtime-explain: {self.frames} frames, {fps:.1f} FPS" + (f" ({self.label})" if self.label else "")

    def update(self, n: int = 1) -> None:
        self.frames += n
        now = self.clock()
        if self.last is None or now - self.last >= self.every_s:
            self.last = now
            print(self.line(now), file=self.file, flush=True)

    def __enter__(self) -> "StatusLine":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_for(label: str, total: int | None, window: bool, every_s: float) -> Any:
    """A tqdm bar when stderr is a terminal; else, without a window, a :class:`StatusLine`
    (``every_s`` 0 turns it off); else nothing. Use it as a context manager."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit="frame", desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)
    if not window and every_s > 0:
        return StatusLine(label, every_s)
    return _Nothing()


class _Nothing:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "_Nothing":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
