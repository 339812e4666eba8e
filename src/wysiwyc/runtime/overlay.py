"""Drawing attribution masks over frames: per-class heat overlays, labels, a legend.

Choices:

* Which classes are shown — :func:`select_classes`: the ``top_k`` most probable classes
  whose probability is at least ``threshold``; ``--classes`` pins the set instead (those
  classes are always drawn, whatever their probability, which is how one asks "where is
  the evidence for class X?").
* Colours — ``colormap="class"`` (default) gives every class its own colour, with the
  mask as the blending weight, so several classes stay distinguishable on one frame;
  a named colormap (``jet``, ``turbo``, ``inferno``, ``viridis``, ``magma``) draws the
  pixel-wise max of the shown masks as a classic heat map.
* Blending — ``out = frame·(1 − α·m) + colour·α·m``, one layer per shown class in
  order: where the mask is 0 the frame is untouched, so the overlay never hides what
  the classifier did not use. The layers are composited at the masks' resolution (the
  model's: a few thousand pixels) into a premultiplied colour and an opacity, both
  upsampled once to the frame, and two uint8 passes blend them in
  (``frame·(1 − opacity) + colour·opacity``, to within one grey level of blending each
  class in turn) — the cost of drawing does not grow with the number of shown classes.
* Text — OpenCV's Hershey font (each label rasterised once and cached) when OpenCV is
  installed, else Pillow's default font.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..errors import require

from .imageops import cv2_or_none, resize, upscale

# Tableau-10 (matplotlib's default cycle), RGB: distinct and readable on most frames.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], dtype=np.float32)
COLORMAPS = ("class", "jet", "turbo", "inferno", "viridis", "magma")


def select_classes(probs: np.ndarray, threshold: float = 0.5, top_k: int = 3,
                   pinned: list[int] | None = None) -> list[int]:
    """Class indices to draw for one frame, most probable first.

    Args:
        probs: (C,) class probabilities.
        threshold: minimum probability of an unpinned class.
        top_k: at most this many unpinned classes.
        pinned: when given, exactly these classes (in this order).
    """
    return select_classes_batch(np.asarray(probs)[None], threshold, top_k, pinned)[0]


def select_classes_batch(probs: np.ndarray, threshold: float = 0.5, top_k: int = 3,
                         pinned: list[int] | None = None) -> list[list[int]]:
    """:func:`select_classes` of every frame of a batch, probs (B,C), in one sort."""
    if pinned:
        return [list(pinned) for _ in range(len(probs))]
    k = max(0, top_k)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    keep = np.take_along_axis(probs, order, axis=1) >= threshold
    return [[int(c) for c, ok in zip(row, oks) if ok] for row, oks in zip(order.tolist(), keep.tolist())]


def class_colour(c: int) -> np.ndarray:
    """RGB float32 (3,) colour of class ``c``."""
    return PALETTE[c % len(PALETTE)]


@functools.cache
def colormap_lut(name: str) -> np.ndarray:
    """(256,3) float32 RGB lookup table of a matplotlib colormap."""
    colormaps = require("matplotlib", "plot", f"--colormap {name}").colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


class Overlay:
    """Renders one frame with its masks.

    Args:
        class_names: the model's C class names.
        alpha: maximum opacity of a mask colour (at mask value 1).
        colormap: ``class`` or a name in :data:`COLORMAPS`.
        normalize: divide each shown mask by its maximum before drawing (the usual CAM
            display); off by default, so what is drawn is the mask the model output.
    """

    def __init__(self, class_names: list[str], alpha: float = 0.5, colormap: str = "class",
                 normalize: bool = False) -> None:
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown colormap {colormap!r}; choose from {', '.join(COLORMAPS)}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        self.class_names = list(class_names)
        self.alpha = float(alpha)
        self.colormap = colormap
        self.normalize = normalize

    def layer(self, classes: list[int], masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shown masks (K,h,w) in [0,1] composited at their own resolution: (colour
        (h,w,3) float32 RGB, opacity (h,w) float32), such that
        ``frame·(1 − opacity) + colour·opacity`` is the layers blended in order."""
        premult, opacity = self._composite(classes, masks)
        return (premult / np.maximum(opacity, 1e-6)).transpose(1, 2, 0), opacity

    def _composite(self, classes: list[int], masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The layers "over" each other: (premultiplied colour (3,h,w) float32 — colour·opacity,
        channels first so numpy's inner loops run over pixels —, opacity (h,w) float32)."""
        masks = np.asarray(masks, dtype=np.float32)
        if self.normalize:
            masks = masks / np.maximum(masks.reshape(len(masks), -1).max(axis=1), 1e-6)[:, None, None]
        if self.colormap != "class":
            m = masks.max(axis=0)
            opacity = self.alpha * m
            lut = colormap_lut(self.colormap)[np.clip(m * 255 + 0.5, 0, 255).astype(np.uint8)]
            return lut.transpose(2, 0, 1) * opacity, opacity
        w = self.alpha * masks  # (K,h,w): layer k's weight, drawn over layers 0..k-1
        premult = class_colour(classes[0])[:, None, None] * w[0]
        opacity = w[0].copy()
        for c, wk in zip(classes[1:], w[1:]):
            premult *= 1 - wk
            premult += class_colour(c)[:, None, None] * wk
            opacity += wk * (1 - opacity)
        return premult, opacity

    def blend(self, frame: np.ndarray, classes: list[int], masks: np.ndarray) -> np.ndarray:
        """Frame (H,W,3) uint8 + masks (K,h,w) in [0,1] at any resolution -> blended (H,W,3)
        uint8 at the frame's size: ``frame·(1 − opacity) + ink``, with the composite's
        premultiplied colour (ink) and opacity upsampled once (interpolating premultiplied
        colour leaves no fringes where a mask fades out)."""
        if len(classes) == 0:
            return frame.copy()
        premult, opacity = self._composite(classes, masks)
        size = frame.shape[:2]
        planes = np.clip(premult + 0.5, 0, 255).astype(np.uint8)
        cv2 = cv2_or_none()
        if cv2 is not None:  # uint8 passes: frame·keep (rounded) + ink (saturated)
            ink = upscale(cv2.merge(list(planes)), size)
            keep = np.ascontiguousarray(resize(1 - opacity, size), dtype=np.float32)
            return cv2.add(cv2.multiply(frame, cv2.merge([keep] * 3), dtype=cv2.CV_8U), ink)
        ink = resize(planes.transpose(1, 2, 0), size).astype(np.float32)
        keep = resize(1 - opacity, size)[..., None]
        return np.clip(frame * keep + ink + 0.5, 0, 255).astype(np.uint8)

    def render(self, frame: np.ndarray, probs: np.ndarray, classes: list[int], masks: np.ndarray,
               status: str = "", size: tuple[int, int] | None = None) -> np.ndarray:
        """The displayed image (h,w,3) uint8 RGB.

        Args:
            frame: (H,W,3) uint8 RGB, resized to (h,w) when it differs.
            probs: (C,) probabilities.
            classes: the K shown classes; ``masks`` (K,mh,mw) their masks in [0,1], at any
                resolution (the model's is cheapest: they are composited there).
            status: a line for the bottom-left corner (e.g. latency and FPS).
            size: (h, w) of the image (default: the masks' size, or the frame's without masks).
        """
        h, w = size or (masks.shape[-2:] if len(classes) else frame.shape[:2])
        if frame.shape[0] * frame.shape[1] < h * w:  # a small frame: blend at its size, upscale the result once
            img = upscale(self.blend(frame, classes, masks), (h, w))
        else:
            img = self.blend(resize(frame, (h, w)), classes, masks)
        text = _Text(img)
        scale = label_scale(h, w)
        top = int(26 * scale)
        for c in classes:  # legend: every shown class with its probability (boxes stack down)
            text.put(f"{self.class_names[c]} {probs[c]:.2f}", (6, top), class_colour(c), scale)
        if not classes:
            text.put("no class above threshold", (6, top), np.array((230, 230, 230), np.float32), scale)
        if status:
            text.put(status, (6, h - 6), np.array((255, 255, 255), np.float32), scale * STATUS_SCALE)
        for k, c in enumerate(classes):  # a tag at each mask's strongest point
            y, x = np.unravel_index(int(np.argmax(masks[k])), masks[k].shape)
            if masks[k][y, x] >= 0.2:
                # the peak's pixel centre, mapped from the mask's grid to the image's
                my, mx = masks[k].shape
                at = (int((x + 0.5) * w / mx), int((y + 0.5) * h / my))
                text.put(f"{self.class_names[c]}", at, class_colour(c), scale, centre=True)
        return text.image()


STATUS_SCALE = 0.8  # the status line (and a caption) relative to the labels


def label_scale(h: int, w: int) -> float:
    """Hershey font scale of the labels on an (h, w) image: in proportion to the short side
    (1.0 at 640 px), never below 0.4 (still legible on small images)."""
    return max(0.4, min(h, w) / 640)


CAPTION_WIDTH = 0.45  # a caption takes at most this fraction of the image's width (the legend has the left)


def caption(img: np.ndarray, text: str) -> np.ndarray:
    """``text`` in the top-right corner of ``img`` (H,W,3) uint8, in the labels' style (light
    grey on a dark box, the status line's size), cut with an ellipsis to
    :data:`CAPTION_WIDTH` of the width; returns the image (drawn in place with OpenCV)."""
    t = _Text(img)
    scale = label_scale(*img.shape[:2]) * STATUS_SCALE
    text = _fit(text, scale, int(CAPTION_WIDTH * img.shape[1]), t._size)
    tw, th, _ = t._size(text, scale)
    t.put(text, (img.shape[1] - tw - 6, th + 6), np.array((230, 230, 230), np.float32), scale)
    return t.image()


def _fit(text: str, scale: float, width: int, size: Callable[[str, float], tuple[int, int, int]]) -> str:
    """``text``, or its longest head + "..." that is at most ``width`` pixels wide."""
    if size(text, scale)[0] <= width:
        return text
    for n in range(len(text) - 1, 0, -1):
        cut = text[:n].rstrip() + "..."
        if size(cut, scale)[0] <= width:
            return cut
    return text[:1]


class _Text:
    """Text on a dark box (readable on any frame), with OpenCV or Pillow.

    Boxes already drawn are remembered; a new one that would overlap moves down, so
    tags of classes whose masks peak at the same place stay readable. With OpenCV each
    label is rasterised once into a sprite (:func:`_sprite`) and pasted in two uint8 passes:
    the box darkened and the colour blended in by coverage — what darkening the box and
    ``cv2.putText`` with anti-aliasing do, at a fraction of their cost per frame.
    """

    def __init__(self, img: np.ndarray) -> None:
        self.cv2 = cv2_or_none()
        self.img = img
        self.boxes: list[tuple[int, int, int, int]] = []
        if self.cv2 is None:
            from PIL import Image, ImageDraw

            self._pil = Image.fromarray(img)
            self._draw = ImageDraw.Draw(self._pil)

    def _size(self, s: str, scale: float) -> tuple[int, int, int]:
        if self.cv2 is not None:
            return _text_size(s, scale)
        left, top, right, bottom = self._draw.textbbox((0, 0), s)
        return right - left, bottom - top, 2

    def put(self, s: str, org: tuple[int, int], colour: np.ndarray, scale: float, centre: bool = False) -> None:
        """Draw ``s`` with its baseline-left at ``org`` (or centred on it)."""
        tw, th, base = self._size(s, scale)
        x, y = org
        if centre:
            x, y = x - tw // 2, y + th // 2
        h, w = self.img.shape[:2]
        x = int(min(max(x, 2), max(2, w - tw - 2)))
        y = int(min(max(y, th + 2), h - base - 2))
        while any(x < bx1 and x + tw > bx0 and y - th < by1 and y + base > by0 for bx0, by0, bx1, by1 in self.boxes):
            y += th + base + 4
        self.boxes.append((x - 2, y - th - 2, x + tw + 2, y + base + 2))
        col = tuple(int(v) for v in colour)
        if self.cv2 is not None:
            self._paste(_sprite(s, scale, col), x - _PAD, y - th - _PAD)
            return
        self._draw.rectangle((x - 3, y - th - 3, x + tw + 3, y + base + 2), fill=(20, 20, 20))
        self._draw.text((x, y - th), s, fill=col)

    def _paste(self, sprite: tuple[np.ndarray, np.ndarray], x0: int, y0: int) -> None:
        """Paste a :func:`_sprite` with its top-left at (x0, y0) (it may overhang the image):
        ``roi·keep/255 + ink``, two saturating uint8 passes in place."""
        keep, ink = sprite
        h, w = self.img.shape[:2]
        sy, sx = max(0, -y0), max(0, -x0)
        ey, ex = min(keep.shape[0], h - y0), min(keep.shape[1], w - x0)
        if ey <= sy or ex <= sx:
            return
        roi = self.img[y0 + sy:y0 + ey, x0 + sx:x0 + ex]
        cv2 = self.cv2
        roi[:] = cv2.add(cv2.multiply(roi, keep[sy:ey, sx:ex], scale=1 / 255), ink[sy:ey, sx:ex])

    def image(self) -> np.ndarray:
        return self.img if self.cv2 is not None else np.asarray(self._pil)


_PAD = 3  # sprite margin around the text: the dark box's border (pixels)


@functools.lru_cache(maxsize=4096)
def _text_size(s: str, scale: float) -> tuple[int, int, int]:
    """(width, height, baseline) of ``s`` in OpenCV's Hershey font (pixels)."""
    cv2 = cv2_or_none()
    (tw, th), base = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return tw, th, base


@functools.lru_cache(maxsize=1024)
def _sprite(s: str, scale: float, colour: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A label rasterised once, with its box: (keep, ink), both (h,w,3) uint8, such that
    ``background·keep/255 + ink`` is the box darkened to 35 % with ``s`` drawn over it in
    ``colour`` by its anti-aliased coverage a — ``0.35·(1 − a)·background + a·colour`` —
    with the text's baseline-left at (_PAD, _PAD + text height); the box reaches 2 pixels
    below the baseline's descent."""
    cv2 = cv2_or_none()
    tw, th, base = _text_size(s, scale)
    mask = np.zeros((th + base + _PAD + 2, tw + 2 * _PAD), np.uint8)
    cv2.putText(mask, s, (_PAD, _PAD + th), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
    cover = (mask.astype(np.float32) / 255)[..., None]
    keep = np.broadcast_to(255 * 0.35 * (1 - cover) + 0.5, (*mask.shape, 3)).astype(np.uint8)
    ink = (cover * np.asarray(colour, np.float32) + 0.5).astype(np.uint8)
    return keep, ink
