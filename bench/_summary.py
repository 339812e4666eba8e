"""The end-of-run summary of ``pytest bench --benchmark-only``: short lines a person can read.

Per benchmark group, each entry's milliseconds per image (median over rounds / batch) and
its ratio to the Explainer of the same group (the torch ``explainer`` entry, else the
group's first ``fp32 batch 1`` entry); runtime cases (those with ``fps`` in their
``extra_info``) in frames per second. :func:`summary_lines` is pure, so it is tested
without running a benchmark; ``bench/conftest.py`` feeds it pytest-benchmark's results.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    """One measured benchmark.

    Attributes:
        group: its pytest-benchmark group.
        name: the method (latency bench) or the case name.
        median_s: median seconds of one call (one round).
        batch: images per call.
        extra: its ``extra_info`` (``fps`` for runtime cases, ``method``, ``settings`` ...).
    """

    group: str
    name: str
    median_s: float
    batch: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.median_s / max(1, self.batch)


def entry_from_benchmark(bench: Any) -> Entry | None:
    """An :class:`Entry` from a pytest-benchmark ``Metadata`` (``None`` if it has no stats)."""
    stats = getattr(bench, "stats", None)
    if not stats or not getattr(stats, "rounds", 0):
        return None
    extra = dict(bench.extra_info or {})
    name = str(extra.get("method") or bench.name)
    if extra.get("settings") == "reduced":
        name += " (reduced)"
    return Entry(group=str(bench.group or "ungrouped"), name=name, median_s=float(stats.median),
                 batch=int(extra.get("batch", 1) or 1), extra=extra)


def _reference(entries: list[Entry]) -> Entry | None:
    """The group's Explainer: the torch ``explainer`` entry, else ``fp32 batch 1``."""
    for e in entries:
        if e.name == "explainer":
            return e
    return next((e for e in entries if e.name == "fp32 batch 1"), None)


def summary_lines(entries: Iterable[Entry]) -> list[str]:
    """The summary: a header, then per group one line per entry, fastest first."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    lines = ["ms per image = median of one call / batch; × = ratio to the "
             "group's Explainer; runtime cases in frames per second"]
    for group, items in groups.items():
        lines.append(f"{group}:")
        if all("fps" in e.extra for e in items):
            for e in sorted(items, key=lambda e: -float(e.extra["fps"])):
                p50, model = e.extra.get("e2e_p50_ms"), e.extra.get("model_only_fps")
                lines.append(f"  {e.name:<64} {float(e.extra['fps']):8.1f} FPS"
                             + (f" = {float(e.extra['fps']) / float(model):.2f} × model alone ({float(model):.0f})"
                                if model else "")
                             + (f"   end-to-end p50 {float(p50):.1f} ms" if p50 is not None else ""))
            continue
        ref = _reference(items)
        width = max(len(e.name) for e in items)
        for e in sorted(items, key=lambda e: e.ms_per_image):
            ratio = f"{e.ms_per_image / ref.ms_per_image:10.2f}×" if ref and ref.ms_per_image > 0 else ""
            lines.append(f"  {e.name:<{width}} {_ms(e.ms_per_image):>11} ms/img{ratio}")
    return lines


def _ms(v: float) -> str:
    """Milliseconds with 3 significant digits (0.0412, 4.12, 41.2, 412, 41200)."""
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"
