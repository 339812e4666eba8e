#!/usr/bin/env python
"""A PNG grid of attributions: image | ground truth | one mask per class | overlay, one
row per image (and one block of mask columns per method).

Mask tiles are grey (white = kept); a green frame marks the image's true classes. The
overlay dims what the aggregated mask of the true classes removes (m⊙x, as the
explanandum sees it). Pillow (a torchvision dependency) draws the PNG.

Example::

    python bench/gallery.py --model src/wysiwyc/assets/shapes_explainer.pt --data shapes -o gallery.png
"""

from __future__ import annotations

import argparse
import sys

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main
from wysiwyc.scripting import add_device_arg


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PNG gallery of attribution masks.", add_help=add_help)
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--data", default="shapes", help="shapes | voc:ROOT | coco:ROOT | folder:DIR")
    p.add_argument("--split", default="test")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the checkpoint's kind)")
    p.add_argument("-n", "--num-images", type=int, default=8)
    p.add_argument("--start", type=int, default=0, help="first dataset index to consider")
    p.add_argument("--with-class", default=None, help="only images containing this class")
    p.add_argument("--scale", type=int, default=2, help="tile upscaling factor")
    p.add_argument("--spurious", choices=("auto", "on", "off"), default="auto",
                   help="shapes: planted cue in the data (auto: as the model was trained)")
    p.add_argument("-o", "--output", required=True, help="PNG path")
    add_device_arg(p)
    return p


def _tile(arr, scale: int):  # noqa: ANN001, ANN202 - (H,W,3) uint8 -> upscaled
    return arr.repeat(scale, 0).repeat(scale, 1)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from wysiwyc.attribution import build_method
    from wysiwyc.data import build_dataset, check_classes, dataset_kwargs
    from wysiwyc.fileio import atomic_path, check_writable
    from wysiwyc.metrics.segmentation import aggregate
    from wysiwyc.models.fused import load_model
    from wysiwyc.devices import resolve_device

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from quality import default_methods

    out = check_writable(args.output)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    spec = model.spec
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else default_methods(spec.kind)
    attributions = {m: build_method(m, model) for m in methods}
    spurious = bool(spec.extra.get("spurious", False)) if args.spurious == "auto" else args.spurious == "on"
    ds = build_dataset(args.data, args.split, tuple(spec.image_size), **dataset_kwargs(args.data, None, spurious))
    check_classes(list(ds.class_names), spec.class_names, args.model)
    names = spec.class_names
    want = None
    if args.with_class is not None:
        if args.with_class not in names:
            raise UserError(f"--with-class {args.with_class!r} is not one of: {', '.join(names)}")
        want = names.index(args.with_class)
    picked = []
    for i in range(args.start, len(ds)):
        sample = ds[i]
        if want is None or sample[1][want] > 0:
            picked.append(sample)
        if len(picked) == args.num_images:
            break
    if not picked:
        raise UserError("no image matched")
    images = torch.stack([s[0] for s in picked]).to(device)
    labels = torch.stack([s[1] for s in picked]).to(device)
    gt = torch.stack([s[2] for s in picked]).to(device)
    masks = {m: a(images, list(range(spec.num_classes))).cpu() for m, a in attributions.items()}

    s, C = args.scale, spec.num_classes
    H, W = images.shape[-2:]
    th, tw, pad, head = H * s, W * s, 4, 16
    cols = ["image", "ground truth"] + [f"{m}:{c}" if len(methods) > 1 else c for m in methods for c in names] \
        + [f"overlay {m}" if len(methods) > 1 else "overlay" for m in methods]
    canvas = np.full((head + len(picked) * (th + pad), len(cols) * (tw + pad), 3), 255, np.uint8)
    img_np = (images.cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    g = ((gt == 1) & labels.bool()[:, :, None, None]).any(1).cpu().numpy()
    grey = lambda a: np.repeat((a * 255).round().astype(np.uint8)[..., None], 3, axis=-1)  # noqa: E731
    for r in range(len(picked)):
        tiles = [img_np[r], grey(g[r].astype(np.float32))]
        frames = [False, False]
        for m in methods:
            for c in range(C):
                tiles.append(grey(masks[m][r, c].numpy()))
                frames.append(bool(labels[r, c] > 0))
        for m in methods:
            agg = aggregate(masks[m][r:r + 1], labels[r:r + 1].cpu())[0].numpy()
            tiles.append((img_np[r] * (0.15 + 0.85 * agg[..., None])).round().astype(np.uint8))
            frames.append(False)
        y = head + r * (th + pad)
        for j, (t, fr) in enumerate(zip(tiles, frames)):
            x = j * (tw + pad)
            canvas[y:y + th, x:x + tw] = _tile(t, s)
            if fr:
                canvas[y:y + 2, x:x + tw] = canvas[y + th - 2:y + th, x:x + tw] = (0, 200, 0)
                canvas[y:y + th, x:x + 2] = canvas[y:y + th, x + tw - 2:x + tw] = (0, 200, 0)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for j, c in enumerate(cols):
        draw.text((j * (tw + pad) + 2, 2), c[: max(4, tw // 6)], fill=(0, 0, 0))
    with atomic_path(out) as tmp:
        pil.save(tmp, format="PNG")
    print(f"wrote {out} ({len(picked)} images, methods: {', '.join(methods)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
