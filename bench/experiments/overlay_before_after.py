#!/usr/bin/env python
"""The runtime's overlay against the direct way of drawing it: same look, less work.

    python bench/experiments/overlay_before_after.py --png bench/results/overlay_before_after.png \
        --md bench/results/overlay_before_after.md

Frames: ``--frames`` frames of the ``--demo`` stream (64 px, drawn at the runtime's 384 px
view) with the bundled demo Explainer's masks of the classes the runtime shows (top 3 above
0.5). Two renderers draw each frame:

* **direct** — what drawing an overlay does without care: the frame upscaled to the view,
  each shown class's mask upsampled to the view and blended in turn in float
  (``out·(1 − α·m) + colour·α·m``), then every label as a darkened box and ``cv2.putText``;
* **runtime** — :meth:`wysiwyc.runtime.overlay.Overlay.render`: the layers composited at the
  model's resolution, blended at the frame's size, upscaled once, labels pasted from cached
  sprites.

The PNG puts them side by side (direct left, runtime right) for some of the frames. The
Markdown reports the largest pixel difference between the two, overall and away from the
labels (the masks' colours), and the median milliseconds per frame of each renderer on this
machine, one thread, in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)
import numpy as np

from wysiwyc.errors import cli_main
from wysiwyc.fileio import atomic_path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.onnx"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The runtime's overlay against direct drawing.", add_help=add_help)
    p.add_argument("--frames", type=int, default=200, help="demo frames drawn by both (default 200)")
    p.add_argument("--show", type=int, default=3, help="frames put side by side in the PNG (default 3)")
    p.add_argument("--view", type=int, default=384, help="view size, as runtime-explain --view-size (default 384)")
    p.add_argument("--png", default=None, help="write the side-by-side frames here")
    p.add_argument("--md", default=None, help="write the numbers here (Markdown)")
    return p


def direct_render(overlay, frame: np.ndarray, probs: np.ndarray, classes: list[int], masks: np.ndarray,  # noqa: ANN001
                  status: str, size: tuple[int, int]) -> np.ndarray:
    """The overlay drawn the direct way: everything at the view's resolution, in float."""
    import cv2

    from wysiwyc.runtime.overlay import class_colour

    h, w = size
    out = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    for c, m in zip(classes, masks):
        a = overlay.alpha * cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
        out = out * (1 - a) + class_colour(c) * a
    img = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    scale = max(0.4, min(h, w) / 640)
    labels = [(f"{overlay.class_names[c]} {probs[c]:.2f}", (6, int(26 * scale)), class_colour(c), scale)
              for c in classes]
    labels.append((status, (6, h - 6), np.array((255, 255, 255), np.float32), scale * 0.8))
    for k, c in enumerate(classes):
        y, x = np.unravel_index(int(np.argmax(masks[k])), masks[k].shape)
        if masks[k][y, x] >= 0.2:
            my, mx = masks[k].shape
            labels.append((overlay.class_names[c], (int((x + 0.5) * w / mx), int((y + 0.5) * h / my)),
                           class_colour(c), scale, True))
    boxes: list[tuple[int, int, int, int]] = []
    for s, (x, y), colour, sc, *centre in labels:
        (tw, th), base = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, sc, 1)
        if centre:
            x, y = x - tw // 2, y + th // 2
        x = int(min(max(x, 2), max(2, w - tw - 2)))
        y = int(min(max(y, th + 2), h - base - 2))
        while any(x < bx1 and x + tw > bx0 and y - th < by1 and y + base > by0 for bx0, by0, bx1, by1 in boxes):
            y += th + base + 4
        boxes.append((x - 2, y - th - 2, x + tw + 2, y + base + 2))
        roi = img[max(0, y - th - 3):y + base + 2, max(0, x - 3):x + tw + 3]
        roi[:] = (roi * 0.35).astype(np.uint8)
        cv2.putText(img, s, (x, y), cv2.FONT_HERSHEY_SIMPLEX, sc, tuple(int(v) for v in colour), 1, cv2.LINE_AA)
    return img


def _median_ms(fn, items: list) -> float:  # noqa: ANN001
    times = []
    for it in items:
        t0 = time.perf_counter()
        fn(*it)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import cv2

    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.imageops import opencv_single_threaded
    from wysiwyc.runtime.overlay import Overlay, select_classes_batch
    from wysiwyc.runtime.sources import DemoSource

    be = open_backend(DEMO, threads=1)
    ov = Overlay(list(be.spec.class_names))
    src = DemoSource(size=64, seed=0, hold=24)
    frames = [src.read() for _ in range(args.frames)]
    items = []
    for i in range(0, len(frames), 8):
        chunk = frames[i:i + 8]
        logits, masks = be.infer(be.preprocess(chunk))
        probs = be.probabilities(logits)
        for k, classes in enumerate(select_classes_batch(probs, 0.5, 3)):
            items.append((chunk[k], probs[k], classes, be.masks_for(masks, k, classes, be.input_size),
                          "onnxruntime CPUExecutionProvider  12.3 ms  812 FPS", (args.view, args.view)))
    with opencv_single_threaded():
        ours = [ov.render(*it[:5], size=it[5]) for it in items]
        theirs = [direct_render(ov, *it) for it in items]
        ms_ours = _median_ms(lambda *it: ov.render(*it[:5], size=it[5]), items)
        ms_theirs = _median_ms(lambda *it: direct_render(ov, *it), items)
    diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(ours, theirs)]
    # away from the labels: pixels where neither image has a darkened text box
    away = []
    for a, b, d in zip(ours, theirs, diffs):
        boxes = np.zeros(a.shape[:2], bool)
        for img in (a, b):
            grey = img.max(axis=2)
            boxes |= cv2.dilate((grey < 40).astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
        away.append(int(d[~boxes].max()) if (~boxes).any() else 0)
    rows = [("frames", str(len(items))),
            ("largest pixel difference, whole frame (grey levels)", str(int(max(int(d.max()) for d in diffs)))),
            ("largest pixel difference away from the labels (grey levels)", str(max(away))),
            ("mean pixel difference, whole frame (grey levels)", f"{float(np.mean([d.mean() for d in diffs])):.3f}"),
            ("direct drawing, median ms per frame", f"{ms_theirs:.3f}"),
            ("runtime overlay, median ms per frame", f"{ms_ours:.3f}"),
            ("speed-up", f"{ms_theirs / ms_ours:.2f}")]
    text = ("# The runtime's overlay against direct drawing\n\n"
            "Command: `python bench/make_results.py --only overlay` (`bench/experiments/overlay_before_after.py`); "
            f"{len(items)} `--demo` frames with the bundled Explainer's masks, drawn at {args.view} px, one thread.\n\n"
            "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n")
    for line in rows:
        print(f"{line[0]}: {line[1]}")
    if args.md:
        with atomic_path(args.md) as tmp:
            Path(tmp).write_text(text)
        print(f"wrote {args.md}")
    if args.png:
        picks = np.linspace(0, len(items) - 1, max(1, args.show)).round().astype(int)
        gap = np.full((args.view, 8, 3), 255, np.uint8)
        rows_img = [np.concatenate([theirs[i], gap, ours[i]], axis=1) for i in picks]
        sheet = np.concatenate([np.concatenate([r, np.full((8, r.shape[1], 3), 255, np.uint8)]) for r in rows_img])
        from PIL import Image

        with atomic_path(args.png) as tmp:
            Image.fromarray(sheet).save(tmp, format="PNG", optimize=True)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
