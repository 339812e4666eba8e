#!/usr/bin/env python
"""Attribution quality and latency on one dataset split: the side-by-side report of every
method, or the paper-1 quality tables of one checkpoint.

**The report** (default) writes ``<out>/<name>.md`` and ``.csv`` (one row per method),
``<name>.png`` (quality vs latency) and ``<name>_gallery.png`` (all methods' masks on the
same images, ``bench/gallery.py``'s ``methods`` layout).

Per method, masks of ALL classes are computed once per image and scored by
* paper 1 (``wysiwyc.metrics.segmentation``, as the quality tables below): acc, iou, sal,
  mae on the masks of the true classes merged by max, and the class-specific masking matrix
  (reported as min diagonal / max and mean off-diagonal ratio to the unmasked probability);
* per class: each true class's own mask against its own ground truth (IoU, its mean and
  minimum over classes), ``own`` (mean mask on the class's object) and ``leak`` (mean mask on
  the other true classes' objects);
* paper 3 (SISE) and paper 2 (mask predictor) and RISE (``wysiwyc.metrics.localization``):
  EBPG, mIoU of the top 20 %, Bbox, M_I and the pointing game on every (image, true class)
  pair with a non-empty ground-truth mask; Drop% / Increase% (top 15 %), M_F (Δ = 1/32),
  deletion and insertion AUC (32 steps) for each image's most confident true class;
* the parameter-randomisation sanity check (Spearman ρ between maps on the trained and on
  a re-initialised classifier, first ``--sanity-limit`` images; lower = more model-dependent).

Latency is measured here too, on the same model and device: median over repeats of one
image (batch 1) for the top-1 class and for all classes. ``pytest bench --benchmark-only``
gives the full latency tables.

Slow methods can be run on the first ``--slow-limit`` images; the .md states the image
count of every row. Settings are always the methods' (papers') defaults.

**The quality tables** (``--quality``; ``--quality-json`` / ``--quality-md`` write them,
and nothing else) as in paper 1 (Stalder et al.): Table 2 and Table 1 of the checkpoint's
own method (``--methods`` for others; any registered method plugs in). ``acc``, ``iou``,
``sal``, ``mae`` on the masks of each image's true classes merged by pixel-wise max, with
the trivial baselines 0, 0.5, 1 and the ground truth as rows; per class (each class's own
mask against its own ground truth: ``iou``, ``mae``, ``own``, ``leak``, and ``absent`` = an
unlabelled class's mask on the labelled objects); and the class-specific masking matrix of
Table 1 (softmax probability of each target class under each class's mask thresholded at
0.1 … 0.9), with its diagonal and off-diagonal relative to the unmasked probability.

``--cue-probe`` (``shapes`` with the planted cue: a model trained with ``--spurious``, or
``--spurious on``) adds to the quality tables where the biased class's mask lies: on the
hatch stripes, on the hatched background (the stripes and the gaps between them — the
stripes are drawn near the dataset's mean colour, ≈0 after normalisation, so a mask cannot
remove them, only the background contrast that makes them visible), on its object; the
same for the masks of the other classes present (the control) and for the biased class's
mask on the same images with the cue removed; and the classifier's reliance on the cue —
p(biased class) with the cue removed from its images, and with the cue planted alone on
images without the class (where the biased class's mask should then light the hatched
background).

Examples::

    python bench/report.py --name shapes_test --slow-limit 20
    python bench/report.py --model src/wysiwyc/assets/shapes_explainer.pt --data shapes --split test \
        --quality-json bench/results/shapes_explainer_quality.json \
        --quality-md bench/results/shapes_explainer_quality.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)
from _methods import BENCH_METHODS, SLOW, parse_methods
from gallery import draw_canvas, methods_rows

from wysiwyc.errors import UserError, cli_main
from wysiwyc.scripting import add_device_arg

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "src" / "wysiwyc" / "assets"
ORDER = BENCH_METHODS
COLUMNS = ("method", "images", "ms_top1", "ms_all", "acc", "iou", "sal", "mae", "class_iou", "class_iou_min",
           "own", "leak", "ebpg", "miou20", "bbox", "drop", "increase", "m_f", "m_i", "pointing", "deletion",
           "insertion", "sanity_rho", "matrix_diag_min", "matrix_off_max", "matrix_off_mean")
HEADERS = {"ms_top1": "ms/img top-1", "ms_all": "ms/img all C", "miou20": "mIoU20", "m_f": "M_F", "m_i": "M_I",
           "pointing": "PG", "deletion": "Del↓", "insertion": "Ins↑", "sanity_rho": "rand ρ",
           "matrix_diag_min": "T1 diag", "matrix_off_max": "T1 off max", "matrix_off_mean": "T1 off mean",
           "class_iou": "IoU/class", "class_iou_min": "min IoU/class", "own": "own", "leak": "leak↓",
           "drop": "Drop%↓", "increase": "Incr%"}
BASELINE_ROWS = ("0", "0.5", "1", "G.T.")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Quality + latency report of all attribution methods, or the paper-1 "
                                            "quality tables of one checkpoint.", add_help=add_help)
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled shapes explainer)")
    p.add_argument("--extra-models", default=None,
                   help="report: comma-separated mask_predictor / rtis checkpoints of the same classifier, "
                        "reported beside --model (default: the bundled ones that exist)")
    p.add_argument("--data", default="shapes", help="shapes | voc:ROOT | coco:ROOT | folder:DIR")
    p.add_argument("--split", default="test")
    p.add_argument("--spurious", choices=("auto", "on", "off"), default="auto",
                   help="shapes: planted cue in the data (auto: as the model was trained)")
    p.add_argument("--seed", type=int, default=0, help="shapes: dataset seed")
    p.add_argument("--methods", default=None,
                   help="comma-separated (default: the report: every registered method that applies; the "
                        "quality tables: the method named like the checkpoint's kind)")
    p.add_argument("--limit", type=int, default=None, help="images for every method (default: the whole split)")
    p.add_argument("--slow-limit", type=slow_limits, default={},
                   help=f"report: images for {', '.join(SLOW)}: N for each, or per method, e.g. "
                        "'100,sise=1000,rise=200' (a bare N is the default; stated in the report)")
    p.add_argument("--slow-all-classes", action="store_true",
                   help=f"report: {', '.join(SLOW)}: masks of all classes, not only the true ones (Table 1 "
                        "columns; a GPU's budget)")
    p.add_argument("--no-matrix", action="store_true", help="skip the class-specific masking matrix (Table 1)")
    p.add_argument("--sanity-limit", type=int, default=8, help="report: images for the randomisation check")
    p.add_argument("--latency-repeats", type=int, default=5, help="report: repeats of the fast methods' latency")
    p.add_argument("--batch-size", type=int, default=None, help="default 25 (report), 50 (quality tables)")
    p.add_argument("--gallery", type=int, default=6, help="report: images in the gallery")
    p.add_argument("--name", default="shapes_test", help="report: file name stem of its outputs")
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"), help="report: output folder")
    p.add_argument("--machine", default=None, help="report: machine description")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    q = p.add_argument_group("quality tables (instead of the report)")
    q.add_argument("--quality", action="store_true", help="print the paper-1 quality tables, write no report")
    q.add_argument("--quality-json", default=None, help="write the quality tables as JSON here (implies --quality)")
    q.add_argument("--quality-md", default=None, help="write the quality tables as Markdown here (implies --quality)")
    q.add_argument("--cue-probe", action="store_true",
                   help="shapes with the planted cue: where each mask lies relative to the cue, and the "
                        "classifier's reliance on it (implies --quality)")
    p.add_argument("--no-progress", action="store_true")
    add_device_arg(p)
    return p


# --- one method's scores (the report and the quality tables) --------------------------------------


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


class MethodScores:
    """Every accumulator of one method (see the module doc): paper 1 (merged masks, per
    class, Table 1 when ``matrix``), the localisation and causal metrics and the sanity
    check of the report, and the quality tables' cue meter and attribution time."""

    def __init__(self, model, matrix: bool) -> None:  # noqa: ANN001
        from wysiwyc.metrics.segmentation import ClassMaskingMeter, PerClassMeter, SegmentationMeter

        C = model.spec.num_classes
        self.model, self.C, self.matrix = model, C, matrix
        self.seg, self.mat = SegmentationMeter(model.classifier), ClassMaskingMeter(model.classifier, C)
        self.per_class = PerClassMeter(C)
        self.loc: dict[str, list[float]] = {k: [] for k in ("ebpg", "miou20", "bbox", "m_i")}
        self.pg_hits: list = []
        self.pg_cls: list = []
        self.causal: dict[str, list[float]] = {k: [] for k in ("drop", "increase", "m_f", "deletion", "insertion")}
        self.rho: list[float] = []
        self.cue = CueMeter()
        self.seconds = 0.0

    def prob_fn(self, images):  # noqa: ANN001, ANN201
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.model.classify(images))

    def paper1(self, x, labels, gt, masks) -> None:  # noqa: ANN001
        """Paper 1's scores of one batch: ``x`` the normalised images, ``masks`` (B,C,H,W)."""
        import torch

        from wysiwyc.metrics.segmentation import aggregate, aggregate_gt

        with torch.no_grad():
            g, valid = aggregate_gt(gt, labels)
            self.seg.update(x, aggregate(masks, labels), g, valid, labels)
            self.per_class.update(masks, gt, labels)
            if self.matrix:
                self.mat.update(x, masks, labels)

    def update(self, images, labels, gt, masks):  # noqa: ANN001, ANN201
        """Score one batch (every metric); returns the logits restricted to the true classes (B,C)."""
        import torch

        from wysiwyc.metrics import localization as L

        with torch.no_grad():
            self.paper1(self.model.norm(images), labels, gt, masks)
            b_idx, c_idx = torch.nonzero((labels > 0) & (gt == 1).flatten(2).any(2), as_tuple=True)
            if b_idx.numel():
                s, region = masks[b_idx, c_idx], gt[b_idx, c_idx] == 1
                self.loc["ebpg"] += L.ebpg(s, region).tolist()
                self.loc["miou20"] += L.miou_top(s, region, 0.2).tolist()
                self.loc["bbox"] += L.bbox_score(s, region).tolist()
                self.loc["m_i"] += L.m_i(s, region).tolist()
                self.pg_hits.append(L.pointing_hits(s, region).cpu())
                self.pg_cls.append(c_idx.cpu())
            logit = self.model.classify(images).masked_fill(labels == 0, -math.inf)
            has = labels.sum(1) > 0
            if has.any():
                self._causal(images[has], masks[has], logit.argmax(1)[has])
        return logit

    def _causal(self, imgs, masks, cls) -> None:  # noqa: ANN001
        """Drop/Increase, M_F, deletion and insertion for each image's most confident true class."""
        from wysiwyc.metrics import localization as L

        s = masks.gather(1, cls.view(-1, 1, 1, 1).expand(-1, 1, *masks.shape[-2:]))[:, 0]
        drop, inc = L.drop_increase(self.prob_fn, imgs, s, cls)
        ins = L.insertion_curve(self.prob_fn, imgs, s, cls, steps=32)
        dele = L.deletion_curve(self.prob_fn, imgs, s, cls, steps=32)
        self.causal["drop"] += drop.tolist()
        self.causal["increase"] += inc.tolist()
        self.causal["m_f"] += L.m_f_from_curve(ins).tolist()
        self.causal["insertion"] += L.auc(ins).tolist()
        self.causal["deletion"] += L.auc(dele).tolist()

    def row(self, name: str, seen: int) -> dict:
        """The report's row of this method."""
        import torch

        from wysiwyc.metrics import localization as L
        from wysiwyc.metrics.segmentation import matrix_goal

        res = self.mat.result()
        goal = matrix_goal(res)
        pres = [r for r, c in zip(goal["diag_ratio"], res["count"]) if c > 0]
        offs = [r for r, c in zip(goal["offdiag_max_ratio"], res["count"]) if c > 0]
        segr, pc = self.seg.result(), self.per_class.result()
        return {"method": name, "images": seen,
                **{k: segr[k] for k in ("acc", "iou", "sal", "mae")},
                "class_iou": pc["iou"], "class_iou_min": pc["iou_min"], "own": pc["own"], "leak": pc["leak"],
                **{k: 100 * _nanmean(v) if k != "m_i" else _nanmean(v) for k, v in self.loc.items()},
                **{k: _nanmean(v) for k, v in self.causal.items()},
                "pointing": L.pointing_accuracy(torch.cat(self.pg_hits), torch.cat(self.pg_cls), self.C)
                if self.pg_hits else math.nan,
                "sanity_rho": _nanmean(self.rho), "matrix_diag_min": min(pres) if pres else math.nan,
                "matrix_off_max": max(offs) if offs else math.nan,
                "matrix_off_mean": goal["offdiag_mean"] if self.matrix else math.nan}

    def quality_entry(self, name: str, n: int, class_names: list[str]) -> dict:
        """This method's entry of the quality tables (and its printed per-class and Table 1 tables)."""
        from wysiwyc.metrics.segmentation import matrix_goal

        entry = {**self.seg.result(), "seconds_per_image_all_classes": self.seconds / n}
        pc = self.per_class.result()
        entry["per_class"] = {**pc, "class_names": class_names}
        print(format_per_class(name, pc, class_names))
        if self.matrix:
            res = self.mat.result()
            goal = matrix_goal(res)
            entry["class_matrix"] = {**res, "class_names": class_names, "goal": goal}
            print(format_matrix(name, res, class_names))
            print(f"  diagonal/none min {goal['diag_min']:.3f} (goal ≥ 0.8: {goal['diag_ok']}); "
                  f"off-diagonal/none max {goal['offdiag_max']:.3f}, mean {goal['offdiag_mean']:.3f} "
                  f"(goal < 0.2: {goal['offdiag_ok']})")
        return entry


# --- the report -----------------------------------------------------------------------------------


def _latency(attr, image, classes, repeats: int) -> float:  # noqa: ANN001
    import torch

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        attr(image, classes)
        if image.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _true_class_masks(attr, images, labels, C: int):  # noqa: ANN001, ANN202
    """(B,C,H,W) masks of each image's true classes only (zeros elsewhere). Images with the
    same number k of true classes go in one call, so what a slow method shares across a
    batch (EP's optimisation, RISE's masked passes) is shared and no pair is padded: EP's
    cost grows with the (image, class) pairs, and padding each image to the batch's largest
    k would give it 100 slots for the 57 pairs of the first 25 test images."""
    import torch

    masks = images.new_zeros(images.shape[0], C, *images.shape[-2:])
    present = labels > 0
    counts = present.sum(1)
    for k in sorted(set(counts.tolist()) - {0}):
        rows = torch.nonzero(counts == k).flatten()
        # each row's true classes in ascending order: a stable sort puts the Trues first
        cls = torch.argsort(present[rows].int(), dim=1, descending=True, stable=True)[:, :k]
        masks[rows.view(-1, 1), cls] = attr(images[rows], cls)
    return masks


def slow_limits(value: str) -> dict[str, int]:
    """``'100,sise=1000'`` -> {scorecam: 100, sise: 1000, rise: 100, extremal: 100}; a slow
    method neither named nor given a bare default runs on every image."""
    out: dict[str, int] = {}
    default = None
    for part in filter(None, (v.strip() for v in value.split(","))):
        name, _, n = part.rpartition("=")
        if name and name not in SLOW:
            raise argparse.ArgumentTypeError(f"{name!r} is not one of the slow methods ({', '.join(SLOW)})")
        try:
            count = int(n)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{n!r} is not a number of images") from None
        if name:
            out[name] = count
        else:
            default = count
    return {m: out.get(m, default) for m in SLOW if out.get(m, default) is not None}


def evaluate_method(name: str, model, ds, args, device, gallery_idx: list[int]) -> tuple[dict, dict]:  # noqa: ANN001
    """Scores of one method on dataset ``ds`` -> (row dict, gallery masks {index: (C,H,W)})."""
    import torch
    from tqdm.auto import tqdm

    from wysiwyc.attribution import build_method
    from wysiwyc.data import make_loader
    from wysiwyc.metrics import localization as L

    attr = build_method(name, model)
    C = model.spec.num_classes
    slow = name in SLOW
    # slow methods score only the true classes (the all-class cost, EP: 6x, is out of a CPU's budget)
    all_scored = not slow or args.slow_all_classes
    sc = MethodScores(model, matrix=all_scored and not args.no_matrix)
    sanity_limit = min(args.sanity_limit, 1) if not all_scored else args.sanity_limit
    rand_attr, gallery, seen = None, {}, 0
    for images, labels, gt in tqdm(make_loader(ds, args.batch_size), desc=name, disable=args.no_progress):
        images, labels, gt = images.to(device), labels.to(device), gt.to(device)
        masks = attr(images, list(range(C))) if all_scored else _true_class_masks(attr, images, labels, C)
        logit = sc.update(images, labels, gt, masks)
        has = labels.sum(1) > 0
        if seen < sanity_limit and has.any():
            rand_attr = rand_attr or build_method(name, L.randomized_copy(model, seed=0))
            take = torch.nonzero(has).flatten()[: sanity_limit - seen]
            cls_t = logit.argmax(1)[take].view(-1, 1)
            sc.rho += L.spearman(attr(images[take], cls_t)[:, 0], rand_attr(images[take], cls_t)[:, 0]).tolist()
        gallery.update({seen + j: masks[j].cpu() for j in range(images.shape[0]) if seen + j in gallery_idx})
        seen += images.shape[0]
    row = sc.row(name, seen)
    row["ms_top1"], row["ms_all"] = method_latency(attr, ds, model, device, args, slow, list(range(C)))
    return row, gallery


def method_latency(attr, ds, model, device, args, slow: bool, all_classes: list[int]) -> tuple[float, float]:  # noqa: ANN001
    """Median ms on the first image (batch 1): top-1 class and all classes (NaN for a slow
    method's all-class run unless ``--slow-all-classes``; `pytest bench` measures those)."""
    import torch

    img = ds[0][0][None].to(device)
    with torch.no_grad():
        top = model.classify(img).argmax(1, keepdim=True)
    reps = 1 if slow else args.latency_repeats
    if not slow:
        attr(img, top)  # warm-up (allocator); the slow methods' one run dwarfs it
    ms_top1 = _latency(attr, img, top, reps)
    ms_all = _latency(attr, img, [all_classes], reps) if not slow or args.slow_all_classes else math.nan
    return ms_top1, ms_all


def _fmt(v: object, key: str) -> str:
    """One cell of the report: ints as is, NaN as a dash, ms with 1 decimal, scores with 2 or 3."""
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if key.startswith("ms_"):
        return f"{v:,.1f}" if v < 1e4 else f"{v:,.0f}"
    if key in ("acc", "iou", "mae", "deletion", "insertion", "sanity_rho", "matrix_diag_min", "matrix_off_max",
               "matrix_off_mean", "class_iou", "class_iou_min", "own", "leak"):
        return f"{v:.3f}"
    return f"{v:.2f}"


def write_chart(rows: list[dict], path: Path) -> None:
    """The report's figure: IoU, EBPG and insertion AUC against the top-1 latency, one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, key, label in zip(axes, ("iou", "ebpg", "insertion"),
                              ("IoU (paper 1) ↑", "EBPG % (SISE paper) ↑", "insertion AUC (RISE) ↑")):
        for r in rows:
            if not math.isnan(r[key]):
                ax.scatter(r["ms_top1"], r[key], s=40)
                ax.annotate(r["method"], (r["ms_top1"], r[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency per image, top-1 class (ms, log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("quality vs latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


OWN = {"explainer": ("explainer",), "rtis": ("rtis",), "mask_predictor": ("mask_predictor", "mask_predictor_refined")}
ASSET_EXTRAS = ("shapes_mask_predictor.pt", "shapes_rtis.pt")


def extra_models(value: str | None, model_path: str, model, device) -> list:  # noqa: ANN001
    """Load the --extra-models checkpoints; each must explain the very same classifier."""
    import torch

    from wysiwyc.models.fused import load_model

    if value is None:
        paths = [str(ASSETS / n) for n in ASSET_EXTRAS if (ASSETS / n).is_file() and str(ASSETS / n) != model_path]
        if Path(model_path).parent != ASSETS:
            paths = []  # the bundled extras explain the bundled classifier only
    else:
        paths = [p.strip() for p in value.split(",") if p.strip()]
    ref = model.classifier.state_dict()
    out = []
    for p in paths:
        m = load_model(p, kinds=("explainer", "mask_predictor", "rtis"), device=device)
        same = m.classifier.state_dict()
        if same.keys() != ref.keys() or any(not torch.equal(same[k], ref[k]) for k in ref):
            raise UserError(f"{p} explains a different classifier than {model_path}")
        m.path = p
        out.append(m)
    return out


def own_methods(model, extras: list) -> dict:  # noqa: ANN001
    """method name -> the FusedModel whose head it runs (single-pass methods of each checkpoint)."""
    owner = {}
    for m in [model, *extras]:
        for name in OWN.get(m.spec.kind, ()):
            owner.setdefault(name, m)
    return owner


def select_methods(args, model, model_path: str, device) -> tuple[list[str], dict]:  # noqa: ANN001
    """(method names in report order, {method: the model that owns it})."""
    from wysiwyc.attribution import available_methods

    owner = own_methods(model, extra_models(args.extra_models, model_path, model, device))
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else [
        m for m in ORDER if m in available_methods() and (m not in OWN or m in owner)]
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(available_methods())}")
    return methods, owner


def report_markdown(args, rows: list[dict], model, model_path: str, owner: dict, n_all: int, n_split: int,
                    machine: str, minutes: float, paths: dict) -> str:  # noqa: ANN001
    """The report's Markdown: settings, the table, the column legend, the figures."""
    import torch

    spec, device_type = model.spec, next(model.parameters()).device.type
    others = sorted({m_.spec.kind: getattr(m_, "path", "") for m_ in owner.values() if m_ is not model}.items())
    lines = [
        f"# Attribution report: {args.name}",
        "",
        f"- models: `{Path(model_path).name}` ({spec.kind})" + "".join(f", `{Path(p).name}` ({k})" for k, p in others)
        + f"; classifier {spec.classifier_arch}, {spec.image_size[0]}x{spec.image_size[1]} px, {spec.num_classes} classes",
        f"- data: `{args.data}` split `{args.split}` (whole split = {n_split} images); "
        + ("every method on the whole split" if args.limit is None and not args.slow_limit else
           f"subset: the first {n_all} images for every method"
           + "".join(f", {m} on the first {min(n, n_all)}" for m, n in args.slow_limit.items())
           + f" ({device_type.upper()} budget; settings stay the papers' "
           "defaults); the `images` column gives each row's count"),
        f"- machine: {machine}, torch {torch.__version__}, device {device_type}; latency = median of one "
        "image (batch 1), measured inside this run",
        "- every method at its paper's default settings (RISE 8000 masks 7x7 p=0.5; EP areas "
        "[0.025,0.05,0.1,0.2], 800 iterations; SISE μ=0; Score-CAM all channels of the last block)",
        (f"- {', '.join(SLOW)}: masks of all classes, like every other method" if args.slow_all_classes else
         f"- {', '.join(SLOW)}: masks of the true classes only, so their Table 1 columns are empty, "
         "their randomisation check uses 1 image, and their all-class latency is left to `pytest bench`"),
        f"- wall time of the run: {minutes:.1f} min",
        "",
        "| " + " | ".join(HEADERS.get(k, k) for k in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_fmt(r[k], k) for k in COLUMNS) + " |" for r in rows]
    lines += [
        "",
        "Columns: acc/iou/sal/mae — paper 1 (Table 2) on the true classes' masks merged by max; "
        "IoU/class, min IoU/class, own, leak — each true class's own mask against its own ground truth "
        "(mean and worst class; mean mask on its object / on the other true classes' objects); "
        "EBPG, mIoU20 (top 20 %), Bbox (top-|G|), Drop%/Incr% (top 15 %) — SISE paper, in %; "
        "M_F (Δ=1/32, blur substrate) and M_I (PR-AUC vs the class mask) in %, PG = pointing game % "
        "(mask-predictor paper); Del/Ins = RISE deletion / insertion AUC (32 steps); rand ρ = Spearman "
        f"correlation with the maps of a re-initialised classifier (first {args.sanity_limit} images; lower = "
        "depends more on the model); T1 diag / off max / off mean = Table 1 class-specific masking: min "
        "diagonal, max and mean off-diagonal probability ratio to the unmasked image (goal ≥ 0.8 / ≤ 0.3 / "
        "≤ 0.2). Ground truth G is the class's pixel mask. Localisation metrics use every (image, true "
        "class) pair; Drop/Incr/M_F/Del/Ins use each image's most confident true class.",
        "",
        f"![quality vs latency]({paths['.png'].name})",
        "",
        f"![gallery]({paths['_gallery.png'].name})",
        "",
    ]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    """The report's rows as CSV (NaN as an empty cell)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (r[k] if not isinstance(r[k], float) or not math.isnan(r[k]) else "") for k in COLUMNS})




def report_paths(args) -> dict[str, Path]:  # noqa: ANN001
    """The report's files by suffix (``.md``, ``.csv``, ``.png``, ``_gallery.png``), each checked writable."""
    from wysiwyc.fileio import check_writable

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{args.name}{k}" for k in (".md", ".csv", ".png", "_gallery.png")}
    for p in paths.values():
        check_writable(p)
    return paths


def run_report(args, model, model_path: str, full, n_all: int, paths: dict[str, Path]) -> int:  # noqa: ANN001
    """Every method on the first ``n_all`` images of ``full`` (slow ones on fewer); writes ``paths``."""
    import torch
    from torch.utils.data import Subset

    from wysiwyc.fileio import atomic_path

    device = next(model.parameters()).device
    methods, owner = select_methods(args, model, model_path, device)
    gallery_idx = list(range(min(args.gallery, n_all)))
    rows, gallery = [], {}
    t_start = time.time()
    for m in methods:
        n = min(args.slow_limit.get(m, n_all), n_all)
        row, gallery[m] = evaluate_method(m, owner.get(m, model), Subset(full, range(n)), args, device, gallery_idx)
        rows.append(row)
        print(" | ".join(f"{k}={_fmt(row[k], k)}" for k in COLUMNS), flush=True)
    machine = args.machine or (f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
                               if device.type == "cpu" else torch.cuda.get_device_name(device))
    gallery_rows = methods_rows(full, gallery, gallery_idx, model.spec.class_names)
    for key, write in ((".csv", lambda p: write_csv(rows, p)), (".png", lambda p: write_chart(rows, p)),
                       ("_gallery.png", lambda p: draw_canvas(gallery_rows, 2).save(p, format="PNG"))):
        with atomic_path(paths[key]) as tmp:
            write(Path(tmp))
    md = report_markdown(args, rows, model, model_path, owner, n_all, len(full), machine,
                         (time.time() - t_start) / 60, paths)
    with atomic_path(paths[".md"]) as tmp:
        Path(tmp).write_text(md)
    for p in paths.values():
        print(f"wrote {p}")
    return 0


# --- the quality tables ---------------------------------------------------------------------------


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


def quality_pass(model, full, ds, attributions: dict, args, cue_class: str | None) -> dict:  # noqa: ANN001
    """Every method over ``ds``, all in one pass: {"baselines": meters of the trivial rows,
    "gt_matrix": Table 1 of the ground-truth masks (None with --no-matrix), "methods":
    {name: MethodScores}, "probe" / "reliance": the classifier's cue meters}."""
    import torch
    from tqdm.auto import tqdm

    from wysiwyc.data import make_loader
    from wysiwyc.metrics.segmentation import ClassMaskingMeter, SegmentationMeter, aggregate_gt, trivial_masks

    device, C = next(model.parameters()).device, model.spec.num_classes
    base = {r: SegmentationMeter(model.classifier) for r in BASELINE_ROWS}
    # Table 1 of the ground-truth class masks: what perfect masks score with this classifier
    gt_matrix = ClassMaskingMeter(model.classifier, C) if not args.no_matrix else None
    scores = {m: MethodScores(model, matrix=not args.no_matrix) for m in attributions}
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
            sc = scores[m]
            t0 = time.perf_counter()
            masks = attr(images, all_classes)  # (B,C,H,W): every class, for the per-class metrics too
            sc.seconds += time.perf_counter() - t0
            sc.paper1(x, labels, gt, masks)
            if cb is not None:
                measure_cue(sc.cue, attr, cb, masks, labels, gt, all_classes)
        seen += images.shape[0]
    return {"baselines": base, "gt_matrix": gt_matrix, "methods": scores, "probe": probe, "reliance": reliance}


def cue_class_of(args, full, data_name: str, spurious: bool) -> str | None:  # noqa: ANN001
    """The biased class whose cue ``--cue-probe`` measures (None without the option).

    Raises:
        UserError: ``--cue-probe`` on data without the planted cue.
    """
    if not args.cue_probe:
        return None
    cls = getattr(getattr(full, "renderer", None), "spurious_class", None) if data_name == "shapes" else None
    if not spurious or cls is None:
        raise UserError("--cue-probe needs shapes data with the planted cue: a model trained with --spurious, "
                        "or --spurious on")
    return cls


def run_quality(args, model, model_path: str, full, n: int, spurious: bool, command: str) -> int:  # noqa: ANN001
    """The quality tables of the first ``n`` images of ``full``: printed, and written where asked."""
    from torch.utils.data import Subset

    from wysiwyc.attribution import build_method
    from wysiwyc.data import parse_data_arg
    from wysiwyc.metrics.segmentation import matrix_goal

    spec = model.spec
    methods = parse_methods(args.methods, spec.kind)
    attributions = {name: build_method(name, model) for name in methods}
    cue_class = cue_class_of(args, full, parse_data_arg(args.data)[0], spurious)
    res = quality_pass(model, full, Subset(full, range(n)), attributions, args, cue_class)
    rows = {**{r: res["baselines"][r].result() for r in BASELINE_ROWS},
            **{m: res["methods"][m].seg.result() for m in methods}}
    print(f"{args.data} {args.split}: {n} images, model {model_path} ({spec.kind}, "
          f"{spec.head_arch or spec.classifier_arch})")
    print(format_table(rows))
    report: dict = {"model": model_path, "kind": spec.kind, "data": args.data, "split": args.split, "images": n,
                    "spurious": spurious, "baselines": {r: rows[r] for r in BASELINE_ROWS}, "methods": {}}
    if res["gt_matrix"] is not None:
        gtm = res["gt_matrix"].result()
        report["ground_truth_class_matrix"] = {**gtm, "class_names": spec.class_names, "goal": matrix_goal(gtm)}
        print(format_matrix("ground-truth class masks", gtm, spec.class_names))
    for m in methods:
        entry = res["methods"][m].quality_entry(m, n, spec.class_names)
        if cue_class is not None:
            entry["spurious_cue"] = cue_report(cue_class, res["methods"][m].cue, res["probe"], res["reliance"])
            print_cue(entry["spurious_cue"])
        report["methods"][m] = entry
    write_quality(report, args.quality_json, args.quality_md, command)
    return 0


def write_quality(report: dict, json_path: str | None, md_path: str | None, command: str) -> None:
    """The quality tables as JSON (NaN as null) and as Markdown, each where asked."""
    from wysiwyc.fileio import atomic_path

    if json_path:
        with atomic_path(json_path) as tmp:
            with open(tmp, "w") as f:
                json.dump(report, f, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
        print(f"wrote {json_path}")
    if md_path:
        with atomic_path(md_path) as tmp:
            with open(tmp, "w") as f:
                f.write(to_markdown(report, command))
        print(f"wrote {md_path}")


# --- both -----------------------------------------------------------------------------------------


def load_split(args, spec, model_path: str):  # noqa: ANN001, ANN201
    """(the dataset split the model is scored on, whether it carries the planted cue)."""
    from wysiwyc.data import build_dataset, check_classes, dataset_kwargs

    spurious = bool(spec.extra.get("spurious", False)) if args.spurious == "auto" else args.spurious == "on"
    full = build_dataset(args.data, args.split, tuple(spec.image_size),
                         **dataset_kwargs(args.data, None, spurious, args.seed))
    check_classes(list(full.class_names), spec.class_names, model_path)
    return full, spurious


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch

    from wysiwyc.devices import resolve_device
    from wysiwyc.fileio import check_writable
    from wysiwyc.models.fused import load_model

    quality = bool(args.quality or args.quality_json or args.quality_md or args.cue_probe)
    args.batch_size = args.batch_size or (50 if quality else 25)
    if args.threads:
        torch.set_num_threads(args.threads)
    if quality:
        for out in (args.quality_json, args.quality_md):
            if out:
                check_writable(out)
    else:
        paths = report_paths(args)
    model_path = args.model or str(ASSETS / "shapes_explainer.pt")
    if not Path(model_path).is_file():
        raise UserError(f"no such checkpoint: {model_path}")
    model = load_model(model_path, device=resolve_device(args.device))
    full, spurious = load_split(args, model.spec, model_path)
    n = len(full) if args.limit is None else min(args.limit, len(full))
    if n <= 0:
        raise UserError("--limit must be positive")
    if quality:
        command = "python bench/report.py " + " ".join(sys.argv[1:] if argv is None else argv)
        return run_quality(args, model, model_path, full, n, spurious, command)
    return run_report(args, model, model_path, full, n, paths)


if __name__ == "__main__":
    raise SystemExit(main())
