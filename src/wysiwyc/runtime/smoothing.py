"""Temporal smoothing of masks on video (``runtime-explain --smooth ALPHA``).

An exponential moving average per stream and per class, at the model's resolution:
``m̃_t = α·m_t + (1 − α)·m̃_{t−1}``, starting from the class's first mask. ``α = 1`` is
what the model output (the default: no smoothing); a smaller α trades lag for steadiness
(``bench/experiments/temporal.py`` measures both). A class that leaves a stream's frames
(not shown, not computed) starts afresh when it comes back. Numpy only: the torch-free
runtime runs it.
"""

from __future__ import annotations

import numpy as np


class MaskSmoother:
    """Per (stream, class) exponential moving average of masks (h,w) in [0,1].

    Args:
        alpha: weight of the newest mask, in (0, 1]; 1 returns the masks unchanged.
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"--smooth must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._state: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, stream: int, classes: list[int], masks: np.ndarray) -> np.ndarray:
        """The smoothed masks (K,h,w) float32 of ``classes`` for the next frame of ``stream``
        (``masks`` (K,h,w): this frame's). Classes of the stream not in ``classes`` are
        forgotten."""
        if self.alpha == 1.0:
            return masks
        out = np.empty(masks.shape, np.float32)
        keep = set()
        for k, c in enumerate(classes):
            prev = self._state.get((stream, c))
            m = np.asarray(masks[k], np.float32)
            out[k] = m if prev is None or prev.shape != m.shape else self.alpha * m + (1 - self.alpha) * prev
            self._state[(stream, c)] = out[k]
            keep.add(c)
        for key in [key for key in self._state if key[0] == stream and key[1] not in keep]:
            del self._state[key]
        return out
