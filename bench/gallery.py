#!/usr/bin/env python
"""A PNG grid of attributions, one row per image.

``--layout classes`` (default): image | for each labelled class, that class's mask with its
own ground-truth outline in green and the class name above | one class NOT in the image
(red name: its mask should stay dark) | overlay. With ``--min-labels 2`` (default) only
multi-object images are shown, so a viewer sees which mask belongs to which object.

``--layout all``: image | ground truth | every class's mask (green frame = labelled) | overlay.

``--layout methods``: image | the ground truth of its first labelled class | each method's
mask of that class, side by side (``--methods a,b,…``). ``bench/report.py`` draws its
gallery this way, from the masks its run computed; a method that skipped an image there
(``--slow-limit``) gets a blank tile captioned "not run".

Mask tiles are grey (white = kept); the overlay dims what the aggregated mask of the true
classes removes (m⊙x, as the explanandum sees it). Pillow draws the PNG.

``--photos DIR|GLOB|skimage`` (real photographs, no ground truth; ``skimage``: scikit-image's
sample photos): one row per photo — the photo with the classifier's top-1 name | for each
method, the mask of each of the top-3 predicted classes as a jet heat map over the photo
(caption: class and probability); with ``--runtime-model X.onnx``, first the same three
masks as that export computes them in the runtime (ONNX Runtime, the graph a deployment
runs) and last the runtime's own overlay of that export (its defaults: top 3 classes above
its threshold).

Examples::

    python bench/gallery.py --model src/wysiwyc/assets/shapes_explainer.pt --data shapes -o gallery.png
    python bench/gallery.py --model mobilenet_v2.pt --photos skimage --methods reciprocam,gradcam \
        --runtime-model mobilenet_v2_reciprocam.onnx -o photos.png
"""

from __future__ import annotations

import argparse
import sys

import _path  # noqa: F401  (checkout src/ on sys.path)
from _methods import parse_methods

from wysiwyc.errors import UserError, cli_main
from wysiwyc.scripting import add_device_arg

GREEN, RED, HEAD, PAD = (0, 200, 0), (220, 0, 0), 14, 4


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PNG gallery of attribution masks.", add_help=add_help)
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--data", default="shapes", help="shapes | voc:ROOT | coco:ROOT | folder:DIR")
    p.add_argument("--split", default="test")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the checkpoint's kind)")
    p.add_argument("--layout", choices=("classes", "all", "methods"), default="classes",
                   help="classes: one column per labelled class + one absent class; all: every class; "
                        "methods: each method's mask of the first labelled class")
    p.add_argument("--min-labels", type=int, default=2, help="layout classes: only images with this many classes")
    p.add_argument("-n", "--num-images", type=int, default=8)
    p.add_argument("--start", type=int, default=0, help="first dataset index to consider")
    p.add_argument("--with-class", default=None, help="only images containing this class")
    p.add_argument("--scale", type=int, default=2, help="tile upscaling factor")
    p.add_argument("--spurious", choices=("auto", "on", "off"), default="auto",
                   help="shapes: planted cue in the data (auto: as the model was trained)")
    p.add_argument("--photos", default=None, metavar="DIR|GLOB|skimage",
                   help="real photographs instead of a dataset: top-3 predicted classes per photo")
    p.add_argument("--runtime-model", default=None, metavar="X.onnx",
                   help="--photos: add the runtime's overlay of this export")
    p.add_argument("-o", "--output", required=True, help="PNG path")
    add_device_arg(p)
    return p


SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def load_photos(source: str) -> list[tuple[str, object]]:
    """(name, (H,W,3) uint8 RGB) of each photo: a folder, a glob, or ``skimage`` (its sample
    photos :data:`SKIMAGE_PHOTOS`)."""
    import glob
    from pathlib import Path

    import numpy as np
    from PIL import Image

    if source == "skimage":
        from skimage import data

        return [(n, np.asarray(getattr(data, n)())[..., :3]) for n in SKIMAGE_PHOTOS]
    files = sorted(Path(source).glob("*")) if Path(source).is_dir() else sorted(Path(p) for p in glob.glob(source))
    files = [f for f in files if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp")]
    if not files:
        raise UserError(f"--photos {source}: no images")
    return [(f.stem, np.asarray(Image.open(f).convert("RGB"))) for f in files]


def photo_rows(model, photos: list, methods: list[str], runtime_model: str | None) -> list[list[tuple]]:  # noqa: ANN001
    """The ``--photos`` rows (see the module doc)."""
    import numpy as np
    import torch

    from wysiwyc.attribution import build_method
    from wysiwyc.runtime.imageops import resize
    from wysiwyc.runtime.overlay import Overlay

    spec, names = model.spec, model.spec.class_names
    overlay = Overlay(names, alpha=0.6, colormap="jet")  # one class per tile: a heat map reads best
    h, w = spec.image_size
    frames = np.stack([resize(img, (h, w)) for _, img in photos])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).to(next(model.parameters()).device)
    with torch.no_grad():
        logits = model.classify(x)
    probs = (torch.softmax(logits, 1) if spec.activation == "softmax" else torch.sigmoid(logits)).cpu().numpy()
    top = torch.from_numpy(np.argsort(-probs, 1, kind="stable")[:, :3].copy())
    masks = {}
    for m in methods:
        method = build_method(m, model)
        with torch.set_grad_enabled(method.needs_grad):
            masks[m] = method(x, top.to(x.device)).detach().cpu().numpy()
    exported, shown = _runtime_outputs(runtime_model, [img for _, img in photos], top, (h, w)) if runtime_model \
        else ({}, None)
    rows = []
    for i, (name, _) in enumerate(photos):
        c0 = int(top[i, 0])
        row = [(frames[i], f"{name}: {names[c0]}", None, False)]
        for m, mk in {**exported, **masks}.items():
            for k, c in enumerate(top[i].tolist()):
                tile = overlay.blend(frames[i], [c], mk[i, k:k + 1])
                row.append((tile, f"{m}: {names[c]} {probs[i, c]:.2f}", None, False))
        if shown is not None:
            row.append((shown[i], "runtime overlay", None, False))
        rows.append(row)
    return rows


def _runtime_outputs(path: str, images: list, top, size: tuple[int, int]) -> tuple[dict, list]:  # noqa: ANN001
    """What the runtime makes of ``images`` with the export ``path``: ({label: masks (N,3,h,w)
    of the classes ``top`` (N,3)}, the rendered overlays (its default threshold and top-k),
    each resized to ``size``)."""
    from pathlib import Path

    import numpy as np

    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.cli import threshold
    from wysiwyc.runtime.imageops import resize
    from wysiwyc.runtime.overlay import Overlay, select_classes

    masks, shown = [], []
    with open_backend(path, provider="cpu") as be:
        overlay = Overlay(list(be.spec.class_names))
        for i, img in enumerate(images):
            logits, raw = be.infer(be.preprocess([img]))
            masks.append(be.masks_for(raw, 0, top[i].tolist(), size))
            probs = be.probabilities(logits)[0]
            classes = select_classes(probs, threshold(None, be.spec.activation), 3)
            rendered = overlay.render(img, probs, classes, be.masks_for(raw, 0, classes, be.input_size),
                                      size=img.shape[:2])
            shown.append(resize(rendered, size))
    label = f"{be.spec.kind} ONNX" if Path(path).suffix == ".onnx" else be.spec.kind
    return {label: np.stack(masks)}, shown


def pick_samples(ds, names: list[str], args) -> list:  # noqa: ANN001
    """The first ``--num-images`` samples from ``--start`` that match the filters."""
    want = None
    if args.with_class is not None:
        if args.with_class not in names:
            raise UserError(f"--with-class {args.with_class!r} is not one of: {', '.join(names)}")
        want = names.index(args.with_class)
    min_labels = args.min_labels if args.layout == "classes" else 0
    picked = []
    for i in range(args.start, len(ds)):
        sample = ds[i]
        if (want is None or sample[1][want] > 0) and int(sample[1].sum()) >= min_labels:
            picked.append(sample)
        if len(picked) == args.num_images:
            break
    if not picked:
        raise UserError("no image matched")
    return picked


def _grey(a):  # noqa: ANN001, ANN202 - (H,W) float in [0,1] -> (H,W,3) uint8
    import numpy as np

    return np.repeat((a * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def _outline(tile, region):  # noqa: ANN001, ANN202 - draw the boundary of a bool (H,W) region in green
    inner = region.copy()
    inner[1:-1, 1:-1] &= region[:-2, 1:-1] & region[2:, 1:-1] & region[1:-1, :-2] & region[1:-1, 2:]
    out = tile.copy()
    out[region & ~inner] = GREEN
    return out


def row_tiles(img, masks: dict, labels, gt, names: list[str], layout: str,  # noqa: ANN001
              caption: str = "image") -> list[tuple]:
    """(tile (H,W,3) uint8, caption, caption colour or None, frame) for one image row: ``img``
    (H,W,3) uint8, ``masks`` {method: its (C,H,W) masks of the image, or None where it did
    not run}, ``labels`` (C,), ``gt`` (C,H,W)."""
    import numpy as np

    from wysiwyc.metrics.segmentation import aggregate

    if layout == "methods":
        return _methods_tiles(img, masks, labels, gt, names, caption)
    lab = labels.bool().numpy()
    tiles = [(img, caption, None, False)]
    if layout == "all":
        g = ((gt == 1) & labels.bool()[:, None, None]).any(0).numpy()
        tiles.append((_grey(g.astype(np.float32)), "ground truth", None, False))
    for m, mk in masks.items():
        prefix = f"{m}:" if len(masks) > 1 else ""
        if layout == "all":
            tiles += [(_grey(mk[c].numpy()), prefix + n, None, bool(lab[c])) for c, n in enumerate(names)]
            continue
        for c in np.flatnonzero(lab):
            tiles.append((_outline(_grey(mk[c].numpy()), (gt[c] == 1).numpy()), prefix + names[c], GREEN, False))
        absent = np.flatnonzero(~lab)
        if absent.size:  # the absent class whose mask is highest: the hardest case to show
            c = int(absent[int(mk[absent].flatten(1).mean(1).argmax())])
            tiles.append((_grey(mk[c].numpy()), f"{prefix}{names[c]} (absent)", RED, False))
    for m, mk in masks.items():
        agg = aggregate(mk[None], labels[None])[0].numpy()
        tiles.append(((img * (0.15 + 0.85 * agg[..., None])).round().astype(np.uint8),
                      f"overlay {m}" if len(masks) > 1 else "overlay", None, False))
    return tiles


def _methods_tiles(img, masks: dict, labels, gt, names: list[str], caption: str) -> list[tuple]:  # noqa: ANN001
    """The ``methods`` layout's row: image | ground truth of the first labelled class | each
    method's mask of that class (blank and captioned "not run" where the mask is None)."""
    import numpy as np

    present = np.flatnonzero(labels.bool().numpy())
    c = int(present[0]) if present.size else 0
    tiles = [(img, f"{caption} {names[c]}", None, False),
             (_grey((gt[c] == 1).numpy().astype(np.float32)), "ground truth", None, False)]
    for m, mk in masks.items():
        if mk is None:
            tiles.append((np.full_like(img, 235), f"{m}: not run", RED, False))
        else:
            tiles.append((_grey(mk[c].numpy()), m, None, False))
    return tiles


def methods_rows(ds, masks: dict[str, dict], idx: list[int], names: list[str]) -> list[list[tuple]]:  # noqa: ANN001
    """Rows of the ``methods`` layout for the samples ``idx`` of ``ds``: ``masks[method][i]``
    is that method's (C,H,W) masks of sample ``i`` (missing where it did not run on it); a
    method with no masks at all is left out."""
    import numpy as np

    shown = {m: by_index for m, by_index in masks.items() if by_index}
    rows = []
    for i in idx:
        img, labels, gt = ds[i]
        img_np = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        rows.append(row_tiles(img_np, {m: by_index.get(i) for m, by_index in shown.items()}, labels, gt, names,
                              "methods", caption=f"#{i}"))
    return rows


def draw_canvas(rows: list[list[tuple]], scale: int):  # noqa: ANN201
    """Rows of tiles -> a PIL image, each tile captioned above."""
    import numpy as np
    from PIL import Image, ImageDraw

    th, tw = rows[0][0][0].shape[0] * scale, rows[0][0][0].shape[1] * scale
    ncol = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (th + HEAD + PAD), ncol * (tw + PAD), 3), 255, np.uint8)
    captions = []
    for i, tiles in enumerate(rows):
        y = i * (th + HEAD + PAD) + HEAD
        for j, (t, cap, colour, frame) in enumerate(tiles):
            x = j * (tw + PAD)
            canvas[y:y + th, x:x + tw] = t.repeat(scale, 0).repeat(scale, 1)
            if frame:
                canvas[y:y + 2, x:x + tw] = canvas[y + th - 2:y + th, x:x + tw] = GREEN
                canvas[y:y + th, x:x + 2] = canvas[y:y + th, x + tw - 2:x + tw] = GREEN
            captions.append((x + 2, y - HEAD + 1, cap[: max(4, tw // 6)], colour or (0, 0, 0)))
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for x, y, text, colour in captions:
        draw.text((x, y), text, fill=colour)
    return pil


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import numpy as np
    import torch

    from wysiwyc.attribution import build_method
    from wysiwyc.data import build_dataset, check_classes, dataset_kwargs
    from wysiwyc.devices import resolve_device
    from wysiwyc.fileio import atomic_path, check_writable
    from wysiwyc.models.fused import load_model

    out = check_writable(args.output)
    model = load_model(args.model, device=resolve_device(args.device))
    spec = model.spec
    if args.photos:
        methods = [m.strip() for m in (args.methods or "reciprocam").split(",") if m.strip()]
        rows = photo_rows(model, load_photos(args.photos), methods, args.runtime_model)
        with atomic_path(out) as tmp:
            draw_canvas(rows, 1).save(tmp, format="PNG")
        print(f"wrote {out} ({len(rows)} photos, methods: {', '.join(methods)})")
        return 0
    methods = parse_methods(args.methods, spec.kind)
    spurious = bool(spec.extra.get("spurious", False)) if args.spurious == "auto" else args.spurious == "on"
    ds = build_dataset(args.data, args.split, tuple(spec.image_size), **dataset_kwargs(args.data, None, spurious))
    check_classes(list(ds.class_names), spec.class_names, args.model)
    picked = pick_samples(ds, spec.class_names, args)
    images = torch.stack([s[0] for s in picked])
    labels, gt = torch.stack([s[1] for s in picked]), torch.stack([s[2] for s in picked])
    dev = next(model.parameters()).device
    with torch.no_grad():
        masks = {m: build_method(m, model)(images.to(dev), list(range(spec.num_classes))).cpu() for m in methods}
    img_np = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    rows = [row_tiles(img_np[r], {m: mk[r] for m, mk in masks.items()}, labels[r], gt[r], spec.class_names, args.layout)
            for r in range(len(picked))]
    with atomic_path(out) as tmp:
        draw_canvas(rows, args.scale).save(tmp, format="PNG")
    print(f"wrote {out} ({len(picked)} images, methods: {', '.join(methods)}, layout {args.layout})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
