"""Renderer of ``shapes`` (numpy only, so the torch-free runtime can stream it): a procedurally generated multi-label dataset with pixel-exact class masks.

Every image is a pure function of ``(seed, split, index)``, at any size. A class lives
in an object's *content* — the pattern inside a random blob — never in its outline,
because a mask is itself a shape and can forge outline evidence (an Explainer trained
on outline-defined classes learns to keep the background *around* objects).

Per image:
  * a textured background: random base colour, a linear gradient and low-frequency
    noise (no periodic structure, so it cannot be mistaken for a class pattern);
  * 1–4 class objects: a random smooth blob (random radius, harmonics, rotation) filled
    with the class pattern (``stripes``, ``checks``, ``dots``, ``grid``, ``rings``,
    ``zigzag``) in two random colours of clear contrast, at a random period and angle;
  * 0–2 plain distractor blobs of no class (a single colour with mild shading);
  * occlusion: objects are painted in order and later ones hide earlier ones; a
    placement that would leave an earlier object less than half visible is redrawn, so
    every labelled object stays recognisable;
  * ``spurious=True`` plants a cue: every image that contains ``spurious_class`` (and
    only those) gets a low-contrast diagonal hatch over its background, so a classifier
    can learn the shortcut and an attribution can reveal it.

Labels are exact: class c is present iff some pixel of ``masks[c]`` is 1, and
``masks[c]`` is the union of the *visible* pixels of every object of class c.
"""

from __future__ import annotations

import math

import numpy as np

CLASSES: tuple[str, ...] = ("stripes", "checks", "dots", "grid", "rings", "zigzag")
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTHS = {"train": 6000, "val": 1000, "test": 1000}


def _pattern(name: str, u: np.ndarray, v: np.ndarray, rr: np.ndarray, period: float) -> np.ndarray:
    """Binary pattern (H,W) bool in rotated object coordinates ``u, v`` (pixels)."""
    a, b = u / period, v / period
    if name == "stripes":
        return (a - np.floor(a)) < 0.5
    if name == "checks":
        return ((np.floor(a) + np.floor(b)) % 2) == 0
    if name == "dots":
        fa, fb = a - np.floor(a) - 0.5, b - np.floor(b) - 0.5
        return fa * fa + fb * fb < 0.30**2
    if name == "grid":
        return ((a - np.floor(a)) < 0.3) | ((b - np.floor(b)) < 0.3)
    if name == "rings":
        r = rr / period
        return (r - np.floor(r)) < 0.5
    if name == "zigzag":
        tri = np.abs((b / 2) - np.floor(b / 2) - 0.5)  # triangle wave in [0, .5]
        z = a + 1.2 * tri
        return (z - np.floor(z)) < 0.5
    raise KeyError(name)


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours in [0,1] whose luminance differs by at least 0.3."""
    lum = np.array([0.299, 0.587, 0.114])
    for _ in range(50):
        c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if abs(float(lum @ c1 - lum @ c2)) >= 0.3:
            return c1, c2
    return np.array([0.05, 0.05, 0.05]), np.array([0.95, 0.95, 0.95])


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int,
          rmin: float, rmax: float) -> tuple[np.ndarray, float, float]:
    """A random smooth star-convex blob: (mask (H,W) bool, centre y, centre x)."""
    radius = rng.uniform(rmin, rmax) * size
    cy = rng.uniform(radius * 0.6, size - radius * 0.6)
    cx = rng.uniform(radius * 0.6, size - radius * 0.6)
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    r_theta = np.ones_like(theta)
    for k in (2, 3, 4):
        r_theta += rng.uniform(0.0, 0.16) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    return np.hypot(dy, dx) <= radius * r_theta, cy, cx


def _upsample_bilinear(a: np.ndarray, size: int) -> np.ndarray:
    """(h,w,ch) -> (size,size,ch) bilinear, half-pixel centres (like align_corners=False)."""
    h, w = a.shape[:2]
    ys = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
    xs = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bot = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


class ShapesRenderer:
    """Renders sample ``index`` of a split; a pure function of (seed, split, index). See module doc."""

    def __init__(self, split: str = "train", size: int = 64, seed: int = 0, spurious: bool = False,
                 spurious_class: str = "dots", max_objects: int = 4, max_distractors: int = 2) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        if spurious_class not in CLASSES:
            raise ValueError(f"unknown spurious class {spurious_class!r}; choose from {', '.join(CLASSES)}")
        if size < 16:
            raise ValueError("shapes images must be at least 16 px")
        self.split, self.size, self.seed = split, int(size), int(seed)
        self.spurious, self.spurious_class = spurious, spurious_class
        self.max_objects, self.max_distractors = max_objects, max_distractors
        yy, xx = np.mgrid[0:self.size, 0:self.size].astype(np.float32)
        self._yy, self._xx = yy + 0.5, xx + 0.5

    # -- generation ------------------------------------------------------------------
    def generate(self, index: int, cue: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render sample ``index``: (image uint8 (H,W,3), labels uint8 (C,), masks uint8 (C,H,W)).

        ``cue`` overrides the planted cue for probing a classifier: ``None`` as configured
        (the hatch iff ``spurious`` and the sample has ``spurious_class``), ``True`` the
        hatch on this sample's background whatever its labels, ``False`` never. Labels and
        masks do not change (the hatch is no class)."""
        return self._render(index, cue)[:3]

    def background(self, index: int) -> np.ndarray:
        """(H,W) bool: the background of sample ``index`` (no object, distractors included
        as objects) — where the planted hatch is drawn, its stripes and the gaps between."""
        return self._render(index, False)[3] < 0

    def _render(self, index: int, cue: bool | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], int(index)])
        s, yy, xx = self.size, self._yy, self._xx
        C = len(CLASSES)
        img = self._background(rng)

        n_obj = int(rng.integers(1, self.max_objects + 1))
        n_dis = int(rng.integers(0, self.max_distractors + 1))
        kinds = [int(rng.integers(0, C)) for _ in range(n_obj)] + [-1] * n_dis
        rng.shuffle(kinds)

        owner = np.full((s, s), -1, dtype=np.int32)  # index into `placed` of the visible object
        placed: list[int] = []  # class id per placed object (-1 = distractor)
        areas: list[int] = []
        for kind in kinds:
            for _attempt in range(12):
                blob, cy, cx = _blob(rng, yy, xx, s, 0.13, 0.24)
                new_owner = np.where(blob, len(placed), owner)
                ok = all(
                    (new_owner == j).sum() >= 0.5 * areas[j] for j in range(len(placed)) if placed[j] >= 0
                )
                if ok and blob.sum() >= 12:
                    break
            else:
                continue
            owner = new_owner
            placed.append(kind)
            areas.append(int(blob.sum()))
            img[blob] = self._fill(rng, kind, yy, xx, cy, cx)[blob]

        masks = np.zeros((C, s, s), dtype=np.uint8)
        for j, kind in enumerate(placed):
            if kind >= 0:
                masks[kind] |= (owner == j).astype(np.uint8)
        labels = (masks.reshape(C, -1).max(axis=1) > 0).astype(np.uint8)

        if cue is None:
            cue = bool(self.spurious and labels[CLASSES.index(self.spurious_class)])
        if cue:
            bg = owner < 0
            u = (xx + yy) / (0.16 * s)
            hatch = (u - np.floor(u)) < 0.35
            on = bg & hatch
            img[on] = np.clip(img[on] * 0.55 + 0.45 * (1.0 - img[on]), 0, 1)
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), labels, masks, owner

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """(H,W,3) float: base colour + linear gradient + low-frequency noise."""
        s = self.size
        base = rng.uniform(0.15, 0.85, 3)
        ang = rng.uniform(0, 2 * math.pi)
        grad = ((self._xx * math.cos(ang) + self._yy * math.sin(ang)) / s - 0.5)[..., None]
        img = base + grad * rng.uniform(-0.3, 0.3, 3)
        coarse = rng.normal(0, 1, (4, 4, 3)).astype(np.float32)
        img = img + 0.08 * _upsample_bilinear(coarse, s)
        img = img + rng.normal(0, 0.02, (s, s, 3))
        return np.clip(img, 0, 1).astype(np.float32)

    def _fill(self, rng: np.random.Generator, kind: int, yy: np.ndarray, xx: np.ndarray,
              cy: float, cx: float) -> np.ndarray:
        """(H,W,3) float texture for a class pattern (kind ≥ 0) or a plain distractor (-1)."""
        s = self.size
        if kind < 0:
            col = rng.uniform(0, 1, 3)
            shade = 1.0 + 0.15 * ((yy - cy) / s)[..., None]
            return np.clip(col * shade, 0, 1)
        c1, c2 = _contrasting_colours(rng)
        period = rng.uniform(0.075, 0.11) * s
        ang = rng.uniform(0, math.pi)
        dy, dx = yy - cy + rng.uniform(0, period), xx - cx + rng.uniform(0, period)
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        on = _pattern(CLASSES[kind], u, v, np.hypot(yy - cy, xx - cx), period)
        return np.where(on[..., None], c1, c2)
