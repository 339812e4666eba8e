#!/usr/bin/env python
# explainer-issue: done
"""Attribution quality as in paper 1 (Stalder et al.): Table 2 and Table 1.

Per method (from the attribution registry, so any registered method plugs in):
``acc``, ``iou`` (continuous, Σmin/Σmax), ``sal`` (Eq. 9), ``mae`` on the masks of each
image's true classes merged by pixel-wise max, with the trivial baselines 0, 0.5, 1 and
the ground truth as rows; and the class-specific masking matrix of Table 1 (softmax
probability of each target class under each class's mask thresholded at 0.1 … 0.9).
On ``shapes`` with the planted cue (a model trained with ``--spurious``), also where the
biased class's mask lies: on the hatch stripes, on the hatched background (the stripes
and the gaps between them — the stripes are drawn near the dataset's mean colour, ≈0
after normalisation, so a mask cannot remove them, only the background contrast that
makes them visible), on its object; the same for the masks of the other classes present
(the control) and for the biased class's mask on the same images with the cue removed;
and the classifier's reliance on the cue — p(biased class) with the cue removed from its
images, and with the cue planted alone on images without the class (where the biased
class's mask should then light the hatched background).

Example::

    python bench/quality.py --model src/wysiwyc/assets/shapes_explainer.pt --data shapes \
        --split test --json bench/results/quality_explainer.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main
from wysiwyc.scripting import add_device_arg

BASELINE_ROWS = ("0", "0.5", "1", "G.T.")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Paper-1 quality metrics of attribution methods.", add_help=add_help)
    p.add_argument("--model", required=True, help="checkpoint (.pt): explainer, mask_predictor, … or classifier")
    p.add_argument("--data", default="shapes", help="shapes | voc:ROOT | coco:ROOT | folder:DIR")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--methods", default=None,
                   help="comma-separated attribution methods (default: the one matching the checkpoint kind)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--no-matrix", action="store_true", help="skip the class-specific masking matrix (Table 1)")
    p.add_argument("--spurious", choices=("auto", "on", "off"), default="auto",
                   help="shapes: planted cue in the data (auto: as the model was trained)")
    p.add_argument("--seed", type=int, default=0, help="shapes: dataset seed")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    add_device_arg(p)
    return p


def default_methods(kind: str) -> list[str]:
    from wysiwyc.attribution import available_methods

    if kind in available_methods():
        return [kind]
    raise UserError(f"checkpoint kind {kind!r} has no default attribution method; pass --methods "
                    f"(one of: {', '.join(available_methods())})")


def cue_regions(dataset, indices, device):  # noqa: ANN001, ANN201 - shapes only, small helper
    """For shapes samples ``indices``: (B,H,W) bool masks of the planted cue — the pixels
    that differ between the sample rendered with and without the cue (exact, same seed) —
    and (B,3,H,W) the cue-free images in [0,1] (to measure the classifier's reliance)."""
    import numpy as np
    import torch

    from wysiwyc.data.shapes_render import ShapesRenderer

    r = dataset.renderer
    plain = ShapesRenderer(split=r.split, size=r.size, seed=r.seed, spurious=False)
    regions, images = [], []
    for i in indices:
        a, _, _ = r.generate(int(i))
        b, _, _ = plain.generate(int(i))
        regions.append(torch.from_numpy(np.any(a != b, axis=-1)))
        images.append(torch.from_numpy(b).permute(2, 0, 1).float() / 255)
    return torch.stack(regions).to(device), torch.stack(images).to(device)


def cue_probe(dataset, indices, device):  # noqa: ANN001, ANN201 - shapes only, small helper
    """For shapes samples ``indices``: the sample with the cue planted whatever its labels
    (B,3,H,W) in [0,1], the cue-free sample (B,3,H,W), the hatch stripes (B,H,W) bool (pixels
    that differ between the two) and the hatched background (B,H,W) bool (stripes and gaps)."""
    import numpy as np
    import torch

    r = dataset.renderer
    planted, plain, stripes, field = [], [], [], []
    for i in indices:
        a, _, _ = r.generate(int(i), cue=True)
        b, _, _ = r.generate(int(i), cue=False)
        planted.append(torch.from_numpy(a).permute(2, 0, 1).float() / 255)
        plain.append(torch.from_numpy(b).permute(2, 0, 1).float() / 255)
        stripes.append(torch.from_numpy(np.any(a != b, axis=-1)))
        field.append(torch.from_numpy(r.background(int(i))))
    return tuple(torch.stack(t).to(device) for t in (planted, plain, stripes, field))


class CueMeter:
    """Sums for the spurious-cue report of one method (see the module doc)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def add(self, key: str, mask, weight) -> None:  # noqa: ANN001 - (N,H,W) tensors
        """Accumulate Σ mask·weight under ``key`` and Σ weight under ``key + '/w'``."""
        self.s[key] = self.s.get(key, 0.0) + float((mask * weight).sum())
        self.s[key + "/w"] = self.s.get(key + "/w", 0.0) + float(weight.sum())

    def mean(self, key: str) -> float:
        return self.s.get(key, 0.0) / max(self.s.get(key + "/w", 0.0), 1e-12)

    def share(self, key: str, total: str) -> float:
        return self.s.get(key, 0.0) / max(self.s.get(total, 0.0), 1e-12)


def format_table(rows: dict[str, dict[str, float]]) -> str:
    lines = [f"{'method':<16}{'acc↑':>9}{'iou↑':>9}{'sal↓':>9}{'mae↓':>9}"]
    for name, r in rows.items():
        lines.append(f"{name:<16}" + "".join(f"{r[k]:>9.4f}" for k in ("acc", "iou", "sal", "mae")))
    return "\n".join(lines)


def format_matrix(name: str, res: dict, class_names: list[str]) -> str:
    w = max(8, max(len(c) for c in class_names) + 1)
    lines = [f"class-specific masking ({name}): softmax prob of target (row) under mask (column), mean over "
             f"thresholds {res['thresholds'][0]}…{res['thresholds'][-1]}",
             f"{'target':<{w}}{'none':>{w}}" + "".join(f"{c:>{w}}" for c in class_names)]
    for i, c in enumerate(class_names):
        lines.append(f"{c:<{w}}{res['none'][i]:>{w}.3f}" + "".join(f"{v:>{w}.3f}" for v in res["matrix"][i]))
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch
    from torch.utils.data import Subset
    from tqdm.auto import tqdm

    from wysiwyc.attribution import build_method
    from wysiwyc.data import build_dataset, check_classes, dataset_kwargs, make_loader, parse_data_arg
    from wysiwyc.fileio import atomic_path, check_writable
    from wysiwyc.metrics.segmentation import (ClassMaskingMeter, SegmentationMeter, aggregate, aggregate_gt,
                                              matrix_goal, trivial_masks)
    from wysiwyc.models.fused import load_model
    from wysiwyc.devices import resolve_device

    if args.json:
        check_writable(args.json)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    spec = model.spec
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else default_methods(spec.kind)
    attributions = {name: build_method(name, model) for name in methods}

    name, _ = parse_data_arg(args.data)
    spurious = bool(spec.extra.get("spurious", False)) if args.spurious == "auto" else args.spurious == "on"
    full = build_dataset(args.data, args.split, tuple(spec.image_size), **dataset_kwargs(args.data, None, spurious, args.seed))
    check_classes(list(full.class_names), spec.class_names, args.model)
    n = len(full) if args.limit is None else min(args.limit, len(full))
    if n <= 0:
        raise UserError("--limit must be positive")
    ds = Subset(full, range(n))
    C = spec.num_classes
    cue_class = getattr(getattr(full, "renderer", None), "spurious_class", None) if name == "shapes" and spurious else None

    logits_fn = model.classifier
    seg = {m: SegmentationMeter(logits_fn) for m in methods}
    base = {r: SegmentationMeter(logits_fn) for r in BASELINE_ROWS}
    mat = {m: ClassMaskingMeter(logits_fn, C) for m in methods} if not args.no_matrix else {}
    seconds = {m: 0.0 for m in methods}
    cue = {m: {"on_cue": 0.0, "on_object": 0.0, "mass": 0.0, "cue_covered": 0.0, "cue_area": 0.0, "images": 0}
           for m in methods}
    cue_meters = {m: CueMeter() for m in methods}
    probe = CueMeter()  # classifier reliance and area fractions
    all_classes = list(range(C))
    reliance = {"with": 0.0, "without": 0.0, "images": 0, "cue_pixels": 0.0, "pixels": 0.0}
    seen = 0
    for images, labels, gt in tqdm(make_loader(ds, args.batch_size), desc="quality", disable=args.no_progress):
        images, labels, gt = images.to(device), labels.to(device), gt.to(device)
        with torch.no_grad():
            x = model.norm(images)
        g, valid = aggregate_gt(gt, labels)
        for r, mk in trivial_masks(g).items():
            base[r].update(x, mk, g, valid, labels)
        if cue_class is not None:
            k = full.class_names.index(cue_class)
            has = labels[:, k] > 0
            region, plain = (cue_regions(full, range(seen, seen + images.shape[0]), device) if has.any()
                             else (None, None))
            if region is not None:  # does the classifier use the cue? p(class) with and without it
                with torch.no_grad():
                    reliance["with"] += float(torch.sigmoid(model.classify(images[has]))[:, k].sum())
                    reliance["without"] += float(torch.sigmoid(model.classify(plain[has]))[:, k].sum())
                reliance["images"] += int(has.sum())
                reliance["cue_pixels"] += float(region[has].float().sum())
                reliance["pixels"] += float(region[has].numel())
            planted, plain_all, stripes, field = cue_probe(full, range(seen, seen + images.shape[0]), device)
            lacks = ~has
            with torch.no_grad():
                p_pl, p_no = (torch.sigmoid(model.classify(t))[:, k] for t in (planted, plain_all))
            probe.add("p_has_with", p_pl, has.float())
            probe.add("p_has_without", p_no, has.float())
            probe.add("p_lacks_with", p_pl, lacks.float())
            probe.add("p_lacks_without", p_no, lacks.float())
            probe.add("field_fraction", field.float().mean((1, 2)), has.float())
            probe.add("stripes_fraction", stripes.float().mean((1, 2)), has.float())
        for m, attr in attributions.items():
            t0 = time.perf_counter()
            masks = attr(images, all_classes)  # (B,C,H,W): every class, for Table 1 too
            seconds[m] += time.perf_counter() - t0
            seg[m].update(x, aggregate(masks, labels), g, valid, labels)
            if m in mat:
                mat[m].update(x, masks, labels)
            if cue_class is not None and region is not None:
                s, obj, reg = masks[has, k], (gt[has, k] == 1).float(), region[has].float()
                cue[m]["on_cue"] += float((s * reg).sum())
                cue[m]["on_object"] += float((s * obj).sum())
                cue[m]["mass"] += float(s.sum())
                cue[m]["cue_covered"] += float((s * reg).sum())
                cue[m]["cue_area"] += float(reg.sum())
                cue[m]["images"] += int(has.sum())
            if cue_class is not None:
                cm, fl, st = cue_meters[m], field.float(), stripes.float()
                objk = (gt[:, k] == 1).float()
                h = has.float()[:, None, None]
                lk = lacks.float()[:, None, None]
                sk = masks[:, k]
                # images with the class (and so the cue): where its mask lies
                cm.add("k_field", sk, fl * h)
                cm.add("k_stripes", sk, st * h)
                cm.add("k_object", sk, objk * h)
                cm.add("k_mass_field", sk * fl, h)
                cm.add("k_mass", sk, h)
                # control 1: the other present classes' masks, same images, same regions
                others = labels.clone()
                others[:, k] = 0
                ow = others[:, :, None, None] * h[:, None]
                cm.add("o_field", masks, ow * fl[:, None])
                cm.add("o_object", masks, ow * (gt == 1).float())
                cm.add("o_mass_field", masks * fl[:, None], ow)
                cm.add("o_mass", masks, ow)
                with torch.no_grad():
                    s_plain = attr(plain_all, [k])[:, 0]
                    s_planted = attr(planted, all_classes)
                # control 2: the class's mask on the same images with the cue removed
                cm.add("k_field_nocue", s_plain, fl * h)
                cm.add("k_object_nocue", s_plain, objk * h)
                # the cue alone, planted on images without the class
                cm.add("alone_k_field", s_planted[:, k], fl * lk)
                cm.add("alone_k_field_before", sk, fl * lk)
                absent_other = (1 - labels) * lk[:, :, 0]
                absent_other[:, k] = 0
                cm.add("alone_o_field", s_planted, absent_other[:, :, None, None] * fl[:, None])
                cm.add("alone_k_mass_field", s_planted[:, k] * fl, lk)
                cm.add("alone_k_mass", s_planted[:, k], lk)
        seen += images.shape[0]

    rows = {**{r: base[r].result() for r in BASELINE_ROWS}, **{m: seg[m].result() for m in methods}}
    print(f"{args.data} {args.split}: {n} images, model {args.model} ({spec.kind}, {spec.explainer_arch or spec.classifier_arch})")
    print(format_table(rows))
    report: dict = {"model": args.model, "kind": spec.kind, "data": args.data, "split": args.split, "images": n,
                    "spurious": spurious, "baselines": {r: rows[r] for r in BASELINE_ROWS}, "methods": {}}
    for m in methods:
        entry = {**rows[m], "seconds_per_image_all_classes": seconds[m] / n}
        if m in mat:
            res = mat[m].result()
            entry["class_matrix"] = {**res, "class_names": spec.class_names, "goal": matrix_goal(res)}
            print(format_matrix(m, res, spec.class_names))
            goal = entry["class_matrix"]["goal"]
            print(f"  diagonal/none min {goal['diag_min']:.3f} (goal ≥ 0.8: {goal['diag_ok']}); "
                  f"off-diagonal/none max {goal['offdiag_max']:.3f} (goal < 0.2: {goal['offdiag_ok']})")
        if cue_class is not None:
            c = cue[m]
            mass = max(c["mass"], 1e-12)
            entry["spurious_cue"] = {
                "class": cue_class, "images": c["images"],
                "mask_share_on_cue": c["on_cue"] / mass, "mask_share_on_object": c["on_object"] / mass,
                "cue_coverage": c["cue_covered"] / max(c["cue_area"], 1e-12),
                "uniform_mask_share_on_cue": reliance["cue_pixels"] / max(reliance["pixels"], 1e-12),
                "classifier_prob_with_cue": reliance["with"] / max(reliance["images"], 1),
                "classifier_prob_without_cue": reliance["without"] / max(reliance["images"], 1),
            }
            cm = cue_meters[m]
            e = entry["spurious_cue"]
            e.update({
                "hatched_background_fraction": probe.mean("field_fraction"),
                "stripes_fraction": probe.mean("stripes_fraction"),
                "class_mask": {"mean_on_hatched_background": cm.mean("k_field"),
                               "mean_on_stripes": cm.mean("k_stripes"), "mean_on_object": cm.mean("k_object"),
                               "share_on_hatched_background": cm.share("k_mass_field", "k_mass")},
                "class_mask_cue_removed": {"mean_on_background": cm.mean("k_field_nocue"),
                                           "mean_on_object": cm.mean("k_object_nocue")},
                "other_present_masks": {"mean_on_hatched_background": cm.mean("o_field"),
                                        "mean_on_object": cm.mean("o_object"),
                                        "share_on_hatched_background": cm.share("o_mass_field", "o_mass")},
                "cue_alone": {"classifier_prob_without_cue": probe.mean("p_lacks_without"),
                              "classifier_prob_with_cue": probe.mean("p_lacks_with"),
                              "class_mask_mean_on_background_without_cue": cm.mean("alone_k_field_before"),
                              "class_mask_mean_on_hatched_background": cm.mean("alone_k_field"),
                              "class_mask_share_on_hatched_background": cm.share("alone_k_mass_field", "alone_k_mass"),
                              "absent_classes_masks_mean_on_hatched_background": cm.mean("alone_o_field")},
            })
            print(f"  spurious cue ({cue_class}, {c['images']} images): {e['mask_share_on_cue']:.3f} of the mask on the "
                  f"cue, {e['mask_share_on_object']:.3f} on the object; cue coverage {e['cue_coverage']:.3f} "
                  f"(a uniform mask would put {e['uniform_mask_share_on_cue']:.3f} on the cue); classifier "
                  f"p({cue_class}) {e['classifier_prob_with_cue']:.3f} with the cue, "
                  f"{e['classifier_prob_without_cue']:.3f} with it removed")
            km, kn, om, ca = e["class_mask"], e["class_mask_cue_removed"], e["other_present_masks"], e["cue_alone"]
            print(f"  hatched background ({e['hatched_background_fraction']:.3f} of the image): mean {cue_class} mask "
                  f"{km['mean_on_hatched_background']:.3f} (stripes {km['mean_on_stripes']:.3f}, object "
                  f"{km['mean_on_object']:.3f}; {km['share_on_hatched_background']:.3f} of its mass); cue removed: "
                  f"{kn['mean_on_background']:.3f} (object {kn['mean_on_object']:.3f}); other present classes' masks "
                  f"{om['mean_on_hatched_background']:.3f} (their objects {om['mean_on_object']:.3f}; "
                  f"{om['share_on_hatched_background']:.3f} of their mass)")
            print(f"  cue alone (images without {cue_class}): classifier p({cue_class}) "
                  f"{ca['classifier_prob_without_cue']:.3f} -> {ca['classifier_prob_with_cue']:.3f} with the cue "
                  f"planted; mean {cue_class} mask on the background {ca['class_mask_mean_on_background_without_cue']:.3f}"
                  f" -> {ca['class_mask_mean_on_hatched_background']:.3f} "
                  f"({ca['class_mask_share_on_hatched_background']:.3f} of its mass); absent classes' masks there "
                  f"{ca['absent_classes_masks_mean_on_hatched_background']:.3f}")
        report["methods"][m] = entry
    if args.json:
        with atomic_path(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump(report, f, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
