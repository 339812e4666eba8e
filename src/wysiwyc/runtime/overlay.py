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
  model's: a few thousand pixels), the composite colour and its opacity are upsampled
  once to the view, and one uint8 pass blends them into the frame — the cost of drawing
  no longer grows with the number of shown classes times the view's pixels.
* Text — OpenCV's Hershey font when OpenCV is installed, else Pillow's default font.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import require

from .imageops import cv2_or_none, resize

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
    if pinned:
        return list(pinned)
    order = np.argsort(-probs, kind="stable")[:max(0, top_k)]
    return [int(c) for c in order if probs[c] >= threshold]


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
        self._planes: dict[tuple, np.ndarray] = {}

    def _plane(self, shape: tuple[int, ...], colour: np.ndarray) -> np.ndarray:
        """A constant colour image, cached: filling one costs more than the blend itself."""
        key = (shape, colour.tobytes())
        plane = self._planes.get(key)
        if plane is None:
            if len(self._planes) > 64:
                self._planes.clear()
            plane = self._planes[key] = np.full(shape, colour, np.float32)
        return plane

    def layer(self, classes: list[int], masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shown masks (K,h,w) in [0,1] composited at their own resolution: (colour
        (h,w,3) float32 RGB, opacity (h,w) float32), such that
        ``frame·(1 − opacity) + colour·opacity`` is the layers blended in order."""
        masks = np.asarray(masks, dtype=np.float32)
        if self.normalize:
            masks = masks / np.maximum(masks.reshape(len(masks), -1).max(axis=1), 1e-6)[:, None, None]
        if self.colormap != "class":
            m = masks.max(axis=0)
            return colormap_lut(self.colormap)[np.clip(m * 255 + 0.5, 0, 255).astype(np.uint8)], self.alpha * m
        w = self.alpha * masks  # (K,h,w): layer k's weight, drawn over layers 0..k-1
        # each layer is seen through the layers drawn after it: Π_{j>k} (1 − w_j)
        through = 1 - w  # becomes Π_{j≥k} (1 − w_j), last layer first (K is small: a loop beats cumprod)
        for k in range(len(w) - 2, -1, -1):
            through[k] *= through[k + 1]
        seen = w * np.concatenate([through[1:], np.ones_like(w[:1])])
        colours = np.stack([class_colour(c) for c in classes])  # (K,3)
        premult = (seen.reshape(len(w), -1).T @ colours).reshape(*w.shape[1:], 3)  # Σ colour_k·seen_k
        opacity = 1 - through[0]
        colour = premult / np.maximum(opacity, 1e-6)[..., None]  # straight colour: blended with the opacity
        return colour, opacity

    def blend(self, frame: np.ndarray, classes: list[int], masks: np.ndarray) -> np.ndarray:
        """Frame (H,W,3) uint8 + masks (K,h,w) in [0,1] at any resolution -> blended (H,W,3)
        uint8 at the frame's size (:meth:`layer`, upsampled once)."""
        if len(classes) == 0:
            return frame.copy()
        colour, opacity = self.layer(classes, masks)
        size = frame.shape[:2]
        colour = resize(np.clip(colour + 0.5, 0, 255).astype(np.uint8), size)
        opacity = np.ascontiguousarray(resize(opacity, size), dtype=np.float32)
        cv2 = cv2_or_none()
        if cv2 is not None:  # one fused uint8 pass: (frame·(1 − a) + colour·a), rounded and saturated
            return cv2.blendLinear(frame, colour, 1.0 - opacity, opacity)
        out = frame.astype(np.float32) * (1 - opacity)[..., None] + colour.astype(np.float32) * opacity[..., None]
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

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
            img = resize(self.blend(frame, classes, masks), (h, w))
        else:
            img = self.blend(resize(frame, (h, w)), classes, masks)
        text = _Text(img)
        scale = max(0.4, min(h, w) / 640)
        top = int(26 * scale)
        for c in classes:  # legend: every shown class with its probability (boxes stack down)
            text.put(f"{self.class_names[c]} {probs[c]:.2f}", (6, top), class_colour(c), scale)
        if not classes:
            text.put("no class above threshold", (6, top), np.array((230, 230, 230), np.float32), scale)
        if status:
            text.put(status, (6, h - 6), np.array((255, 255, 255), np.float32), scale * 0.8)
        for k, c in enumerate(classes):  # a tag at each mask's strongest point
            y, x = np.unravel_index(int(np.argmax(masks[k])), masks[k].shape)
            if masks[k][y, x] >= 0.2:
                # the peak's pixel centre, mapped from the mask's grid to the image's
                my, mx = masks[k].shape
                at = (int((x + 0.5) * w / mx), int((y + 0.5) * h / my))
                text.put(f"{self.class_names[c]}", at, class_colour(c), scale, centre=True)
        return text.image()


class _Text:
    """Text on a dark box (readable on any frame), with OpenCV or Pillow.

    Boxes already drawn are remembered; a new one that would overlap moves down, so
    tags of classes whose masks peak at the same place stay readable.
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
            (tw, th), base = self.cv2.getTextSize(s, self.cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            return tw, th, base
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
            cv2 = self.cv2
            roi = self.img[max(0, y - th - 3):y + base + 2, max(0, x - 3):x + tw + 3]
            roi[:] = (roi * 0.35).astype(np.uint8)  # darken behind the text
            cv2.putText(self.img, s, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, col, 1, cv2.LINE_AA)
            return
        self._draw.rectangle((x - 3, y - th - 3, x + tw + 3, y + base + 2), fill=(20, 20, 20))
        self._draw.text((x, y - th), s, fill=col)

    def image(self) -> np.ndarray:
        return self.img if self.cv2 is not None else np.asarray(self._pil)
