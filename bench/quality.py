#!/usr/bin/env python
"""Attribution quality as in paper 1 (Stalder et al.): Table 2 and Table 1.

Per method (from the attribution registry, so any registered method plugs in):
``acc``, ``iou`` (continuous, Σmin/Σmax), ``sal`` (Eq. 9), ``mae`` on the masks of each
image's true classes merged by pixel-wise max, with the trivial baselines 0, 0.5, 1 and
the ground truth as rows; per class (each class's own mask against its own ground truth:
``iou``, ``mae``, ``own`` = mean mask on the class's object, ``leak`` = mean mask on the other
labelled classes' objects, ``absent`` = an unlabelled class's mask on the labelled objects);
and the class-specific masking matrix of Table 1 (softmax probability of each target class
under each class's mask thresholded at 0.1 … 0.9), with its diagonal and off-diagonal
relative to the unmasked probability.
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
from _methods import parse_methods

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
    p.add_argument("--md", default=None, help="write the tables as Markdown here")
    p.add_argument("--no-progress", action="store_true")
    add_device_arg(p)
    return p


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
    """Weighted means for the spurious-cue report of one method (see the module doc)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def add(self, key: str, mask, weight) -> None:  # noqa: ANN001 - broadcastable tensors
        """Accumulate Σ mask·weight under ``key`` and Σ weight under ``key + '/w'``."""
        self.s[key] = self.s.get(key, 0.0) + float((mask * weight).sum())
        self.s[key + "/w"] = self.s.get(key + "/w", 0.0) + float(weight.sum())

    def mean(self, key: str) -> float:
        return self.s.get(key, 0.0) / max(self.s.get(key + "/w", 0.0), 1e-12)

    def share(self, key: str, total: str) -> float:
        return self.s.get(key, 0.0) / max(self.s.get(total, 0.0), 1e-12)


class CueBatch:
    """One batch's spurious-cue inputs (shapes with the planted cue): which images have the
    biased class ``k``, the planted / cue-free versions of every image with the hatched
    background and stripes, and ``region``: the cue's pixels on the images that carry it
    (those with ``k``; a sample with ``k`` is its planted version, so its cue is the stripes)."""

    def __init__(self, full, k: int, start: int, images, labels, device) -> None:  # noqa: ANN001
        idx = range(start, start + images.shape[0])
        self.k, self.has = k, labels[:, k] > 0
        self.lacks = ~self.has
        self.planted, self.plain_all, stripes, field = cue_probe(full, idx, device)
        self.region = stripes & self.has[:, None, None] if self.has.any() else None
        self.plain = self.plain_all  # the cue-free images
        self.stripes, self.field = stripes.float(), field.float()


def probe_classifier(probe: CueMeter, reliance: CueMeter, model, cb: CueBatch, images) -> None:  # noqa: ANN001
    """The classifier's reliance on the cue: p(k) with and without it, on images with and without k."""
    import torch

    k, has = cb.k, cb.has.float()
    with torch.no_grad():
        if cb.region is not None:
            sel = cb.has
            p_with = torch.sigmoid(model.classify(images[sel]))[:, k]
            reliance.add("with", p_with, torch.ones_like(p_with))
            reliance.add("without", torch.sigmoid(model.classify(cb.plain[sel]))[:, k], torch.ones_like(p_with))
            reg = cb.region[sel].float()
            reliance.add("cue_pixels", reg, torch.ones_like(reg))
        p_pl, p_no = (torch.sigmoid(model.classify(t))[:, k] for t in (cb.planted, cb.plain_all))
    probe.add("p_has_with", p_pl, has)
    probe.add("p_has_without", p_no, has)
    probe.add("p_lacks_with", p_pl, cb.lacks.float())
    probe.add("p_lacks_without", p_no, cb.lacks.float())
    probe.add("field_fraction", cb.field.mean((1, 2)), has)
    probe.add("stripes_fraction", cb.stripes.mean((1, 2)), has)


def measure_cue(cm: CueMeter, attr, cb: CueBatch, masks, labels, gt, all_classes) -> None:  # noqa: ANN001
    """Where one method's masks lie relative to the cue (one accumulator for every figure)."""
    import torch

    k, fl, st = cb.k, cb.field, cb.stripes
    objk = (gt[:, k] == 1).float()
    h = cb.has.float()[:, None, None]
    lk = cb.lacks.float()[:, None, None]
    sk = masks[:, k]
    if cb.region is not None:  # images with the class: its mask on the exact cue pixels
        reg = cb.region.float() * h
        cm.add("k_cue", sk, reg)
        cm.add("k_mass_cue", sk * cb.region.float(), h)
        cm.add("k_mass_object", sk * objk, h)
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
        s_plain = attr(cb.plain_all, [k])[:, 0]
        s_planted = attr(cb.planted, all_classes)
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


def cue_report(cue_class: str, cm: CueMeter, probe: CueMeter, reliance: CueMeter) -> dict:
    """The ``spurious_cue`` entry of one method."""
    return {
        "class": cue_class, "images": int(round(reliance.s.get("with/w", 0.0))),
        "mask_share_on_cue": cm.share("k_mass_cue", "k_mass"),
        "mask_share_on_object": cm.share("k_mass_object", "k_mass"),
        "cue_coverage": cm.mean("k_cue"),
        "uniform_mask_share_on_cue": reliance.mean("cue_pixels"),
        "classifier_prob_with_cue": reliance.mean("with"),
        "classifier_prob_without_cue": reliance.mean("without"),
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
    }


def print_cue(e: dict) -> None:
    c = e["class"]
    print(f"  spurious cue ({c}, {e['images']} images): {e['mask_share_on_cue']:.3f} of the mask on the "
          f"cue, {e['mask_share_on_object']:.3f} on the object; cue coverage {e['cue_coverage']:.3f} "
          f"(a uniform mask would put {e['uniform_mask_share_on_cue']:.3f} on the cue); classifier "
          f"p({c}) {e['classifier_prob_with_cue']:.3f} with the cue, "
          f"{e['classifier_prob_without_cue']:.3f} with it removed")
    km, kn, om, ca = e["class_mask"], e["class_mask_cue_removed"], e["other_present_masks"], e["cue_alone"]
    print(f"  hatched background ({e['hatched_background_fraction']:.3f} of the image): mean {c} mask "
          f"{km['mean_on_hatched_background']:.3f} (stripes {km['mean_on_stripes']:.3f}, object "
          f"{km['mean_on_object']:.3f}; {km['share_on_hatched_background']:.3f} of its mass); cue removed: "
          f"{kn['mean_on_background']:.3f} (object {kn['mean_on_object']:.3f}); other present classes' masks "
          f"{om['mean_on_hatched_background']:.3f} (their objects {om['mean_on_object']:.3f}; "
          f"{om['share_on_hatched_background']:.3f} of their mass)")
    print(f"  cue alone (images without {c}): classifier p({c}) "
          f"{ca['classifier_prob_without_cue']:.3f} -> {ca['classifier_prob_with_cue']:.3f} with the cue "
          f"planted; mean {c} mask on the background {ca['class_mask_mean_on_background_without_cue']:.3f}"
          f" -> {ca['class_mask_mean_on_hatched_background']:.3f} "
          f"({ca['class_mask_share_on_hatched_background']:.3f} of its mass); absent classes' masks there "
          f"{ca['absent_classes_masks_mean_on_hatched_background']:.3f}")


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


def format_per_class(name: str, res: dict, class_names: list[str]) -> str:
    w = max(8, max(len(c) for c in class_names) + 1)
    keys = ("iou", "mae", "own", "leak", "absent")
    lines = [f"per class ({name}): own mask vs own ground truth; leak = on other labelled objects",
             f"{'class':<{w}}" + "".join(f"{k:>9}" for k in keys)]
    for i, c in enumerate(class_names):
        lines.append(f"{c:<{w}}" + "".join(f"{res['per_class'][k][i]:>9.3f}" for k in keys))
    lines.append(f"{'mean':<{w}}" + "".join(f"{res[k]:>9.3f}" for k in keys))
    return "\n".join(lines)


class MethodMeters:
    """Every accumulator of one method: merged-mask metrics, per-class metrics, Table 1, cue."""

    def __init__(self, logits_fn, num_classes: int, matrix: bool) -> None:  # noqa: ANN001
        from wysiwyc.metrics.segmentation import ClassMaskingMeter, PerClassMeter, SegmentationMeter

        self.seg = SegmentationMeter(logits_fn)
        self.per_class = PerClassMeter(num_classes)
        self.matrix = ClassMaskingMeter(logits_fn, num_classes) if matrix else None
        self.cue = CueMeter()
        self.seconds = 0.0


def evaluate(model, full, ds, attributions: dict, args, cue_class: str | None):  # noqa: ANN001, ANN201
    """Run every method over ``ds``; returns (baseline meters, method meters)."""
    import torch
    from tqdm.auto import tqdm

    from wysiwyc.data import make_loader
    from wysiwyc.metrics.segmentation import (ClassMaskingMeter, SegmentationMeter, aggregate, aggregate_gt,
                                              trivial_masks)

    device, C = next(model.parameters()).device, model.spec.num_classes
    base = {r: SegmentationMeter(model.classifier) for r in BASELINE_ROWS}
    # Table 1 of the ground-truth class masks: what perfect masks score with this classifier
    gt_matrix = ClassMaskingMeter(model.classifier, C) if not args.no_matrix else None
    meters = {m: MethodMeters(model.classifier, C, not args.no_matrix) for m in attributions}
    probe, reliance = CueMeter(), CueMeter()
    all_classes, seen = list(range(C)), 0
    for images, labels, gt in tqdm(make_loader(ds, args.batch_size), desc="quality", disable=args.no_progress):
        images, labels, gt = images.to(device), labels.to(device), gt.to(device)
        with torch.no_grad():
            x = model.norm(images)
        g, valid = aggregate_gt(gt, labels)
        for r, mk in trivial_masks(g).items():
            base[r].update(x, mk, g, valid, labels)
        if gt_matrix is not None:
            gt_matrix.update(x, (gt == 1).to(x.dtype), labels)
        cb = None
        if cue_class is not None:
            cb = CueBatch(full, full.class_names.index(cue_class), seen, images, labels, device)
            probe_classifier(probe, reliance, model, cb, images)
        for m, attr in attributions.items():
            mm = meters[m]
            t0 = time.perf_counter()
            masks = attr(images, all_classes)  # (B,C,H,W): every class, for the per-class metrics too
            mm.seconds += time.perf_counter() - t0
            mm.seg.update(x, aggregate(masks, labels), g, valid, labels)
            mm.per_class.update(masks, gt, labels)
            if mm.matrix is not None:
                mm.matrix.update(x, masks, labels)
            if cb is not None:
                measure_cue(mm.cue, attr, cb, masks, labels, gt, all_classes)
        seen += images.shape[0]
    return base, meters, probe, reliance, gt_matrix


def method_entry(m: str, mm: MethodMeters, n: int, class_names: list[str]) -> dict:
    """One method's JSON entry (and its printed tables)."""
    from wysiwyc.metrics.segmentation import matrix_goal

    entry = {**mm.seg.result(), "seconds_per_image_all_classes": mm.seconds / n}
    pc = mm.per_class.result()
    entry["per_class"] = {**pc, "class_names": class_names}
    print(format_per_class(m, pc, class_names))
    if mm.matrix is not None:
        res = mm.matrix.result()
        goal = matrix_goal(res)
        entry["class_matrix"] = {**res, "class_names": class_names, "goal": goal}
        print(format_matrix(m, res, class_names))
        print(f"  diagonal/none min {goal['diag_min']:.3f} (goal ≥ 0.8: {goal['diag_ok']}); "
              f"off-diagonal/none max {goal['offdiag_max']:.3f}, mean {goal['offdiag_mean']:.3f} "
              f"(goal < 0.2: {goal['offdiag_ok']})")
    return entry


def to_markdown(report: dict, command: str) -> str:
    """The report's tables in Markdown: merged masks (with the trivial rows), per class, Table 1."""
    lines = [f"# Attribution quality: {report['data']} {report['split']}, {report['images']} images", "",
             f"Model `{report['model']}` ({report['kind']}). Command: `{command}`", "",
             "| masks | acc ↑ | IoU ↑ | Sal ↓ | MAE ↓ |", "|---|---|---|---|---|"]
    rows = {**{f"trivial {k}": v for k, v in report["baselines"].items()}, **report["methods"]}
    lines += [f"| {n} | " + " | ".join(f"{r[k]:.3f}" for k in ("acc", "iou", "sal", "mae")) + " |"
              for n, r in rows.items()]
    entries: list = list(report["methods"].items())
    if "ground_truth_class_matrix" in report:
        entries.append(("ground-truth class masks (reference)", {"class_matrix": report["ground_truth_class_matrix"]}))
    for m, e in entries:
        names = (e.get("per_class") or e["class_matrix"])["class_names"]
        if "per_class" not in e:
            lines += _matrix_markdown(m, e["class_matrix"], names)
            continue
        pc = e["per_class"]
        keys = ("iou", "mae", "own", "leak", "absent")
        lines += ["", f"## {m}: per class (own mask vs own ground truth; leak = on the other labelled objects; "
                      "absent = an unlabelled class's mask on the labelled objects)", "",
                  "| class | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {c} | " + " | ".join(f"{pc['per_class'][k][i]:.3f}" for k in keys) + " |"
                  for i, c in enumerate(names)]
        lines.append("| **mean** | " + " | ".join(f"**{pc[k]:.3f}**" for k in keys) + " |")
        if "class_matrix" in e:
            lines += _matrix_markdown(m, e["class_matrix"], names)
    return "\n".join(lines) + "\n"


def _matrix_markdown(name: str, cm: dict, names: list[str]) -> list[str]:
    goal = cm["goal"]
    lines = ["", f"## {name}: Table 1 (softmax probability of the target class, row, under each class's "
                 "mask, column, thresholded at 0.1…0.9; none = unmasked probability, the rest as ratios to it)", "",
             "| target | none | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for i, c in enumerate(names):
        none = max(cm["none"][i], 1e-12)
        lines.append(f"| {c} | {cm['none'][i]:.3f} | " + " | ".join(f"{v / none:.2f}" for v in cm["matrix"][i]) + " |")
    return lines + ["", f"Diagonal min {goal['diag_min']:.3f} (goal ≥ 0.8); off-diagonal max "
                        f"{goal['offdiag_max']:.3f} (goal ≤ 0.3), mean {goal['offdiag_mean']:.3f} (goal ≤ 0.2)."]


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from torch.utils.data import Subset

    from wysiwyc.attribution import build_method
    from wysiwyc.data import build_dataset, check_classes, dataset_kwargs, parse_data_arg
    from wysiwyc.devices import resolve_device
    from wysiwyc.fileio import atomic_path, check_writable
    from wysiwyc.metrics.segmentation import matrix_goal
    from wysiwyc.models.fused import load_model

    for out in (args.json, args.md):
        if out:
            check_writable(out)
    model = load_model(args.model, device=resolve_device(args.device))
    spec = model.spec
    methods = parse_methods(args.methods, spec.kind)
    attributions = {name: build_method(name, model) for name in methods}
    name, _ = parse_data_arg(args.data)
    spurious = bool(spec.extra.get("spurious", False)) if args.spurious == "auto" else args.spurious == "on"
    full = build_dataset(args.data, args.split, tuple(spec.image_size), **dataset_kwargs(args.data, None, spurious, args.seed))
    check_classes(list(full.class_names), spec.class_names, args.model)
    n = len(full) if args.limit is None else min(args.limit, len(full))
    if n <= 0:
        raise UserError("--limit must be positive")
    cue_class = getattr(getattr(full, "renderer", None), "spurious_class", None) if name == "shapes" and spurious else None

    base, meters, probe, reliance, gt_matrix = evaluate(model, full, Subset(full, range(n)), attributions, args,
                                                         cue_class)
    rows = {**{r: base[r].result() for r in BASELINE_ROWS}, **{m: meters[m].seg.result() for m in methods}}
    print(f"{args.data} {args.split}: {n} images, model {args.model} ({spec.kind}, {spec.head_arch or spec.classifier_arch})")
    print(format_table(rows))
    report: dict = {"model": args.model, "kind": spec.kind, "data": args.data, "split": args.split, "images": n,
                    "spurious": spurious, "baselines": {r: rows[r] for r in BASELINE_ROWS}, "methods": {}}
    if gt_matrix is not None:
        res = gt_matrix.result()
        report["ground_truth_class_matrix"] = {**res, "class_names": spec.class_names, "goal": matrix_goal(res)}
        print(format_matrix("ground-truth class masks", res, spec.class_names))
    for m in methods:
        entry = method_entry(m, meters[m], n, spec.class_names)
        if cue_class is not None:
            entry["spurious_cue"] = cue_report(cue_class, meters[m].cue, probe, reliance)
            print_cue(entry["spurious_cue"])
        report["methods"][m] = entry
    if args.json:
        with atomic_path(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump(report, f, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
        print(f"wrote {args.json}")
    if args.md:
        command = "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
        with atomic_path(args.md) as tmp:
            with open(tmp, "w") as f:
                f.write(to_markdown(report, command))
        print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
