#!/usr/bin/env python
"""Temporal stability of masks on video: do a class's masks stay on a moving object, or flicker?

    python bench/experiments/temporal.py --md bench/results/temporal_stability.md

The clip: shapes test scenes with exact per-frame masks (``--scenes`` scenes of ``--frames``
frames each). Within a scene the whole frame pans sideways 1 px every other frame (a
wrap-around roll, like ``runtime-explain --demo``: the ground truth moves with it, exactly)
and every frame gets fresh sensor noise (Gaussian, ``--noise`` in 8-bit levels), so a
model sees a new image every frame even where nothing moved.

Per method (the bundled Explainer and classifier: ``explainer``, ``reciprocam``,
``gradcam``) and per smoothing weight α (``--smooth``: ``runtime-explain --smooth``'s
exponential moving average per class, reset at each scene cut; 1 = what the model output):

* **per-class IoU**: each present class's mask against its own object, continuous
  Σmin/Σmax, mean over frames and classes;
* **flicker**: mean |m_t − m_{t−1}| of each present class's mask between consecutive frames
  of a scene, over all pixels, next to the ground truth's own change mean |g_t − g_{t−1}|
  (the motion a mask should follow); their ratio is the table's ``flicker ÷ motion``;
* **flicker on still pixels**: mean |m_t − m_{t−1}| where the ground truth did not change;
* **lag**: the k (frames) that maximises mean IoU(m_t, g_{t−k}) for k in 0..``--max-lag``:
  how far behind the object a smoothed mask trails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)

from wysiwyc.errors import cli_main

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "src" / "wysiwyc" / "assets"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Temporal stability of masks on a moving shapes clip.",
                                add_help=add_help)
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--frames", type=int, default=24, help="frames per scene")
    p.add_argument("--noise", type=float, default=4.0, help="per-frame Gaussian noise, 8-bit levels")
    p.add_argument("--methods", default="explainer,reciprocam,gradcam")
    p.add_argument("--smooth", default="1,0.5,0.25", help="comma-separated α of the moving average (1 = none)")
    p.add_argument("--max-lag", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--md", default=None, help="write the Markdown table here")
    p.add_argument("--json", default=None, help="write the numbers here")
    return p


def make_clip(scenes: int, frames: int, noise: float, seed: int, size: int = 64):  # noqa: ANN201
    """(images (S,T,3,H,W) float32 in [0,1], ground truth (S,T,C,H,W) float32, labels (S,C))."""
    import numpy as np

    from wysiwyc.data.shapes_render import ShapesRenderer

    rng = np.random.default_rng(seed)
    r = ShapesRenderer(split="test", size=size, seed=0)
    imgs, gts, labels = [], [], []
    for k in range(scenes):
        img, lab, masks = r.generate(k)
        seq_i, seq_g = [], []
        for t in range(frames):
            shift = t // 2
            frame = np.roll(img, shift, axis=1).astype(np.float32) + rng.normal(0, noise, img.shape)
            seq_i.append(np.clip(frame, 0, 255).transpose(2, 0, 1) / 255.0)
            seq_g.append(np.roll(masks, shift, axis=2).astype(np.float32))
        imgs.append(seq_i)
        gts.append(seq_g)
        labels.append(lab)
    return np.asarray(imgs, np.float32), np.asarray(gts, np.float32), np.asarray(labels)


def run_method(name: str, images, labels):  # noqa: ANN001, ANN201
    """Masks (S,T,C,H,W) of every class from method ``name`` on the clip."""
    import numpy as np
    import torch

    from wysiwyc.attribution import build_method
    from wysiwyc.models.fused import load_model

    ckpt = ASSETS / ("shapes_explainer.pt" if name == "explainer" else "shapes_classifier.pt")
    model = load_model(ckpt)
    method = build_method(name, model)
    s, t = images.shape[:2]
    c = labels.shape[1]
    out = np.empty((s, t, c, *images.shape[-2:]), np.float32)
    classes = torch.arange(c).view(1, -1)
    for i in range(s):
        x = torch.from_numpy(images[i])
        with torch.set_grad_enabled(method.needs_grad):
            out[i] = method(x, classes.expand(t, -1)).detach().numpy()
    return out


def smooth(masks, alpha: float):  # noqa: ANN001, ANN201
    """Each scene's masks (S,T,C,H,W) through the runtime's smoother (reset per scene)."""
    import numpy as np

    from wysiwyc.runtime.smoothing import MaskSmoother

    out = np.empty_like(masks)
    for i in range(masks.shape[0]):
        sm = MaskSmoother(alpha)
        classes = list(range(masks.shape[2]))
        for t in range(masks.shape[1]):
            out[i, t] = sm(0, classes, masks[i, t])
    return out


def scores(masks, gt, labels, max_lag: int) -> dict[str, float]:  # noqa: ANN001
    """Per-class IoU, flicker (all pixels and still pixels), the ground truth's motion, lag."""
    import numpy as np

    present = labels.astype(bool)  # (S,C)

    def iou(m, g):  # noqa: ANN001, ANN202 - (...,H,W) -> (...)
        return np.minimum(m, g).sum((-2, -1)) / np.maximum(np.maximum(m, g).sum((-2, -1)), 1e-9)

    sel = present[:, None, :]  # (S,1,C)
    per_iou = iou(masks, gt)  # (S,T,C)
    d_m = np.abs(np.diff(masks, axis=1))  # (S,T-1,C,H,W)
    d_g = np.abs(np.diff(gt, axis=1))
    still = d_g == 0
    flick = d_m.mean((-2, -1))
    still_flick = (d_m * still).sum((-2, -1)) / np.maximum(still.sum((-2, -1)), 1)
    lags = [float(iou(masks[:, k:], gt[:, :gt.shape[1] - k])[np.broadcast_to(sel, (masks.shape[0], masks.shape[1] - k,
                                                                                 masks.shape[2]))].mean())
            for k in range(min(max_lag, masks.shape[1] - 1) + 1)]  # a lag shorter than the scene
    both = np.broadcast_to(sel, flick.shape)
    return {"per_class_iou": float(per_iou[np.broadcast_to(sel, per_iou.shape)].mean()),
            "flicker": float(flick[both].mean()), "motion": float(d_g.mean((-2, -1))[both].mean()),
            "still_flicker": float(still_flick[both].mean()), "lag": int(np.argmax(lags))}


def markdown(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = ["# Temporal stability of masks on a moving clip", "",
             f"Command: `{command}`. {args.scenes} shapes test scenes × {args.frames} frames, 64 px; each scene "
             f"pans 1 px every other frame; per-frame Gaussian noise σ = {args.noise:g} levels. The bundled "
             "Explainer and classifier; smoothing = `runtime-explain --smooth α` (1: none).", "",
             "| method | α | per-class IoU ↑ | flicker ↓ | motion | flicker ÷ motion ↓ | flicker on still pixels ↓ "
             "| lag (frames) ↓ |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['alpha']:g} | {r['per_class_iou']:.3f} | {r['flicker']:.4f} | "
                     f"{r['motion']:.4f} | {r['flicker'] / r['motion']:.2f} | {r['still_flicker']:.4f} | {r['lag']} |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import shlex

    from _methods import write_rows

    images, gt, labels = make_clip(args.scenes, args.frames, args.noise, args.seed)
    rows = []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        masks = run_method(name, images, labels)
        for alpha in [float(a) for a in args.smooth.split(",")]:
            row = {"method": name, "alpha": alpha, **scores(smooth(masks, alpha), gt, labels, args.max_lag)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    command = shlex.join(["python", "bench/experiments/temporal.py", *(argv if argv is not None else sys.argv[1:])])
    write_rows(rows, command, args.md, markdown(rows, args, command), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
