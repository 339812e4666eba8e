"""Settings shared by the bench's conftest, latency tests and report (no imports beyond torch)."""

from __future__ import annotations

import torch

# the papers' defaults live in the methods themselves; reduced ones only behind --bench-reduced
DEFAULT_SETTINGS: dict[str, dict] = {"rise": {}, "extremal": {}, "sise": {}}
REDUCED_SETTINGS: dict[str, dict] = {"rise": {"n_masks": 800}, "extremal": {"iterations": 80}, "sise": {"mu": 0.5}}


def bench_devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
