"""Numpy image operations for the runtime: resizing frames and masks, batching.

OpenCV (the ``[video]`` extra) does the resizing when it is installed, because it is
several times faster than Pillow; Pillow (a core dependency) is the fallback, so the
``--images`` and ``--demo`` sources work without OpenCV. Both use bilinear filtering
with pixel centres aligned (``align_corners=False`` in torch terms), so the numpy and
the torch backends agree to within rounding.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from types import ModuleType

import numpy as np


@functools.cache
def cv2_or_none() -> ModuleType | None:
    """The ``cv2`` module, or ``None`` when OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


@contextlib.contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """OpenCV's own thread pool off for the block (restored after): the runtime's stages
    already run in parallel, and a resize split across OpenCV's pool only wakes threads
    that compete with the model for the same cores."""
    cv2 = cv2_or_none()
    if cv2 is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def swap_rb(image: np.ndarray) -> np.ndarray:
    """(H,W,3) RGB <-> BGR, or (H,W,4) BGRA -> RGB: a new contiguous uint8 (H,W,3) array.
    OpenCV does it in one SIMD pass; numpy's reversed-stride copy is some 50× slower."""
    cv2 = cv2_or_none()
    if cv2 is not None and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(image[..., 2::-1])


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H,W) or (H,W,3) array to ``size`` = (h, w); dtype kept.

    A no-op (no copy) when the size already matches.
    """
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    cv2 = cv2_or_none()
    if cv2 is not None:
        # INTER_AREA would alias less when shrinking, but the torch backend (and the
        # exported graph's training-time resize) are bilinear: stay bilinear for parity.
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    from PIL import Image

    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    chans = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[2])]
    out = [np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
           for c in chans]
    res = out[0] if image.ndim == 2 else np.stack(out, axis=-1)
    return res.astype(image.dtype, copy=False)


def upscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """:func:`resize` for drawing: a uint8 (H,W) or (H,W,3) image enlarged in both directions
    to ``size`` = (h, w) goes through ``cv2.warpAffine`` with the same bilinear,
    centres-aligned mapping (``x_out = s·x_in + (s − 1)/2``), which OpenCV runs faster than
    ``cv2.resize`` for such upscales (``bench/results/overlay_before_after.md``); it matches
    :func:`resize` to within one grey level (the warp's 1/32-pixel interpolation steps).
    Anything else — other dtypes, shrinking, no OpenCV — is :func:`resize`. Preprocessing
    keeps :func:`resize`: the model's input stays what the torch backend computes."""
    h, w = size
    ih, iw = image.shape[:2]
    cv2 = cv2_or_none()
    if cv2 is None or image.dtype != np.uint8 or h < ih or w < iw or (h, w) == (ih, iw) or min(ih, iw) == 0:
        return resize(image, size)
    sx, sy = w / iw, h / ih
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def frames_to_batch(frames: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Frames (H,W,3) uint8 RGB, any sizes -> model input (B,3,h,w) float32 in [0,1]."""
    batch = np.stack([resize(f, size) for f in frames])  # (B,h,w,3) uint8
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)


def view_size(frame_shape: tuple[int, ...], min_short_side: int) -> tuple[int, int]:
    """(h, w) to render a frame at: its own size, or upscaled so the short side is at
    least ``min_short_side`` (a 64 px demo frame is unreadable at native size)."""
    h, w = int(frame_shape[0]), int(frame_shape[1])
    short = min(h, w)
    if short >= min_short_side or short == 0:
        return h, w
    scale = min_short_side / short
    return int(round(h * scale)), int(round(w * scale))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out
