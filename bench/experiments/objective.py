#!/usr/bin/env python
"""Does the Explainer's objective prefer the right masks? Eq. 1 on candidate masks.

Evaluates the Explainer loss (paper Eq. 1–8 plus the authors' two extra area terms, with
the weights the checkpoint was trained with) on the Explainer's own masks and on masks
built from the ground truth: the class masks themselves, dilated by 2 and 4 px, at half
strength, and the trivial all-0 / all-1 masks. If the ground truth scores a *lower* loss
than the trained Explainer, the objective is fine and the optimisation stopped short (a
local optimum, too few steps); if it scores higher, the objective itself prefers what the
Explainer drew. Each row also gives the continuous IoU / MAE against the ground truth and
the classifier's mean sigmoid probability of the label classes with the mask kept
(m⊙x) and with it removed ((1−m)⊙x): the two things the loss trades off.

Example::

    python bench/experiments/objective.py --model src/wysiwyc/assets/shapes_explainer.pt --limit 500
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)

from wysiwyc.errors import UserError, cli_main
from wysiwyc.scripting import add_device_arg

COLUMNS = ("total", "cls", "ent", "area_m", "area_n", "bounds", "tv", "iou", "mae", "p_kept", "p_removed")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The Explainer loss on the Explainer's masks vs ground-truth masks.",
                                add_help=add_help)
    p.add_argument("--model", required=True, help="explainer checkpoint (.pt)")
    p.add_argument("--data", default=None, help="shapes | voc:ROOT | coco:ROOT (default: the checkpoint's dataset)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--json", default=None, help="write the rows as JSON here")
    add_device_arg(p)
    return p


def candidates() -> dict[str, Callable]:
    """name -> f(explainer masks (B,C,H,W), ground truth (B,C,H,W) in {0,1}) -> masks (B,C,H,W)."""
    import torch
    from torch.nn import functional as F

    return {
        "explainer": lambda e, g: e,
        "ground truth": lambda e, g: g,
        "ground truth dilated 2 px": lambda e, g: F.max_pool2d(g, 5, 1, 2),
        "ground truth dilated 4 px": lambda e, g: F.max_pool2d(g, 9, 1, 4),
        "ground truth x 0.5": lambda e, g: 0.5 * g,
        "all 0": lambda e, g: torch.zeros_like(e),
        "all 1": lambda e, g: torch.ones_like(e),
    }


def evaluate(model, loader, weights, device) -> tuple[dict[str, dict[str, float]], float]:  # noqa: ANN001
    """Image-weighted means of :data:`COLUMNS` for every candidate over ``loader``, and the
    mean number of labels per image (the area bounds are summed over an image's labels)."""
    import torch

    from wysiwyc.training.losses import explainer_loss, merge_masks
    from wysiwyc.metrics.segmentation import aggregate_gt, segmentation_scores

    sums: dict[str, dict[str, float]] = {}
    n, n_labels = 0, 0.0
    makers = candidates()
    with torch.no_grad():
        for batch in loader:
            images, labels, gt = (t.to(device) for t in batch[:3])
            x = model.norm(images)
            expl = torch.sigmoid(model.head(x))
            g = (gt == 1).float()  # 255 (unknown) counts as background here; IoU/MAE ignore it
            g_agg, valid = aggregate_gt(gt, labels)
            pos = labels.sum().clamp_min(1)
            for name, make in makers.items():
                masks = make(expl, g)
                total, terms = explainer_loss(model.classifier, x, masks, labels, weights)
                m, _ = merge_masks(masks, labels)
                seg = segmentation_scores(m, g_agg, valid)
                kept = torch.sigmoid(model.classifier(x * m.unsqueeze(1)))
                removed = torch.sigmoid(model.classifier(x * (1 - m).unsqueeze(1)))
                row = {"total": total, **terms, "iou": seg["iou"].mean(), "mae": seg["mae"].mean(),
                       "p_kept": (kept * labels).sum() / pos, "p_removed": (removed * labels).sum() / pos}
                acc = sums.setdefault(name, dict.fromkeys(COLUMNS, 0.0))
                for k in COLUMNS:
                    acc[k] += float(row[k]) * images.shape[0]
            n += images.shape[0]
            n_labels += float(labels.sum())
    return {name: {k: v / max(n, 1) for k, v in acc.items()} for name, acc in sums.items()}, n_labels / max(n, 1)


def to_markdown(rows: dict[str, dict[str, float]], n: int) -> str:
    lines = [f"Explainer loss on {n} images (lower is better for the loss; ent is negative entropy)", "",
             "| masks | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in COLUMNS) + " |" for name, r in rows.items()]
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from torch.utils.data import Subset

    from wysiwyc.checkpoint import load_checkpoint
    from wysiwyc.data import build_dataset, check_classes, dataset_kwargs, make_loader
    from wysiwyc.fileio import atomic_path
    from wysiwyc.training.losses import ExplainerLossWeights
    from wysiwyc.models.fused import load_model
    from wysiwyc.devices import resolve_device

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model, ("explainer",))
    model = load_model(ckpt, device=device)
    spec = model.spec
    data = args.data or spec.dataset or "shapes"
    spurious = bool(spec.extra.get("spurious", False))
    ds = build_dataset(data, args.split, tuple(spec.image_size), **dataset_kwargs(data, spurious=spurious))
    check_classes(list(ds.class_names), spec.class_names, args.model)
    if args.limit is not None:
        if args.limit < 1:
            raise UserError(f"--limit must be ≥ 1, got {args.limit}")
        ds = Subset(ds, range(min(args.limit, len(ds))))
    trained = (ckpt.train or {}).get("loss_weights", {})
    weights = ExplainerLossWeights(**{k: v for k, v in trained.items() if k in ExplainerLossWeights.__dataclass_fields__})
    rows, labels_per_image = evaluate(model, make_loader(ds, args.batch_size), weights, device)
    print(to_markdown(rows, len(ds)))
    if args.json:
        with atomic_path(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump({"model": args.model, "images": len(ds), "labels_per_image": labels_per_image,
                           "weights": weights.to_dict(), "rows": rows}, f,
                          indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
