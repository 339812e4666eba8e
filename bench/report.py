#!/usr/bin/env python
"""One run, one report: quality and latency of every attribution method side by side.

Writes ``<out>/<name>.md`` and ``.csv`` (one row per method), ``<name>.png`` (quality vs
latency) and ``<name>_gallery.png`` (all methods' masks on the same images).

Per method, masks of ALL classes are computed once per image and scored by
* paper 1 (``wysiwyc.metrics.segmentation``, as ``bench/quality.py``): acc, iou, sal, mae on
  the masks of the true classes merged by max, and the class-specific masking matrix
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

Example::

    python bench/report.py --name shapes_test --slow-limit 20
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import statistics
import time
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)
from _methods import BENCH_METHODS, SLOW

from wysiwyc.errors import UserError, cli_main
from wysiwyc.scripting import add_device_arg

ROOT = Path(__file__).resolve().parent.parent
ORDER = BENCH_METHODS
COLUMNS = ("method", "images", "ms_top1", "ms_all", "acc", "iou", "sal", "mae", "class_iou", "class_iou_min",
           "own", "leak", "ebpg", "miou20", "bbox", "drop", "increase", "m_f", "m_i", "pointing", "deletion",
           "insertion", "sanity_rho", "matrix_diag_min", "matrix_off_max", "matrix_off_mean")
HEADERS = {"ms_top1": "ms/img top-1", "ms_all": "ms/img all C", "miou20": "mIoU20", "m_f": "M_F", "m_i": "M_I",
           "pointing": "PG", "deletion": "Del↓", "insertion": "Ins↑", "sanity_rho": "rand ρ",
           "matrix_diag_min": "T1 diag", "matrix_off_max": "T1 off max", "matrix_off_mean": "T1 off mean",
           "class_iou": "IoU/class", "class_iou_min": "min IoU/class", "own": "own", "leak": "leak↓", "drop": "Drop%↓", "increase": "Incr%"}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Quality + latency report of all attribution methods.", add_help=add_help)
    p.add_argument("--model", default=None, help="explainer checkpoint (default: the bundled shapes explainer)")
    p.add_argument("--extra-models", default=None,
                   help="comma-separated mask_predictor / rtis checkpoints of the same classifier, "
                        "reported beside --model (default: the bundled ones that exist)")
    p.add_argument("--data", default="shapes")
    p.add_argument("--split", default="test")
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method that applies)")
    p.add_argument("--limit", type=int, default=None, help="images for every method (default: the whole split)")
    p.add_argument("--slow-limit", type=slow_limits, default={},
                   help=f"images for {', '.join(SLOW)}: N for each, or per method, e.g. "
                        "'100,sise=1000,rise=200' (a bare N is the default; stated in the report)")
    p.add_argument("--slow-all-classes", action="store_true",
                   help=f"{', '.join(SLOW)}: masks of all classes, not only the true ones (Table 1 columns; a GPU's budget)")
    p.add_argument("--sanity-limit", type=int, default=8, help="images for the randomisation check")
    p.add_argument("--latency-repeats", type=int, default=5, help="repeats of the fast methods' latency")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--gallery", type=int, default=6, help="images in the gallery")
    p.add_argument("--name", default="shapes_test")
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--machine", default=None, help="machine description for the report")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    add_device_arg(p)
    return p


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


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


class MethodScores:
    """Every accumulator of one method in the report (see the module doc)."""

    def __init__(self, model, all_classes_scored: bool) -> None:  # noqa: ANN001
        from wysiwyc.metrics.segmentation import ClassMaskingMeter, PerClassMeter, SegmentationMeter

        C = model.spec.num_classes
        self.model, self.C, self.all_classes_scored = model, C, all_classes_scored
        self.seg, self.mat = SegmentationMeter(model.classifier), ClassMaskingMeter(model.classifier, C)
        self.per_class = PerClassMeter(C)
        self.loc: dict[str, list[float]] = {k: [] for k in ("ebpg", "miou20", "bbox", "m_i")}
        self.pg_hits: list = []
        self.pg_cls: list = []
        self.causal: dict[str, list[float]] = {k: [] for k in ("drop", "increase", "m_f", "deletion", "insertion")}
        self.rho: list[float] = []

    def prob_fn(self, images):  # noqa: ANN001, ANN201
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.model.classify(images))

    def update(self, images, labels, gt, masks):  # noqa: ANN001, ANN201
        """Score one batch; returns the logits restricted to the true classes (B,C)."""
        import torch

        from wysiwyc.metrics import localization as L
        from wysiwyc.metrics.segmentation import aggregate, aggregate_gt

        with torch.no_grad():
            x = self.model.norm(images)
            g, valid = aggregate_gt(gt, labels)
            self.seg.update(x, aggregate(masks, labels), g, valid, labels)
            self.per_class.update(masks, gt, labels)
            if self.all_classes_scored:
                self.mat.update(x, masks, labels)
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
                "matrix_off_mean": goal["offdiag_mean"] if self.all_classes_scored else math.nan}


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
    sc = MethodScores(model, all_scored)
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


def write_gallery(ds, gallery: dict[str, dict], idx: list[int], class_names: list[str], path: Path) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in gallery if gallery[m]]
    fig, axes = plt.subplots(len(idx), 2 + len(methods), figsize=(1.6 * (2 + len(methods)), 1.7 * len(idx)),
                             squeeze=False)
    for r, i in enumerate(idx):
        img, labels, gt = ds[i]
        present = [c for c in range(len(class_names)) if labels[c] > 0]
        c = present[0] if present else 0
        axes[r, 0].imshow(img.permute(1, 2, 0).numpy())
        axes[r, 0].set_title(f"#{i} {class_names[c]}", fontsize=7)
        axes[r, 1].imshow((gt[c] == 1).numpy(), cmap="gray", vmin=0, vmax=1)
        if r == 0:
            axes[r, 1].set_title("G.T.", fontsize=7)
        for k, m in enumerate(methods):
            ax = axes[r, 2 + k]
            if i in gallery[m]:
                ax.imshow(gallery[m][i][c].numpy(), cmap="jet", vmin=0, vmax=1)
            else:
                ax.text(0.5, 0.5, "not run\n(--slow-limit)", ha="center", va="center", fontsize=6, transform=ax.transAxes)
            if r == 0:
                ax.set_title(m, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
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
        assets = ROOT / "src" / "wysiwyc" / "assets"
        paths = [str(assets / n) for n in ASSET_EXTRAS if (assets / n).is_file() and str(assets / n) != model_path]
        if Path(model_path).parent != assets:
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
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (r[k] if not isinstance(r[k], float) or not math.isnan(r[k]) else "") for k in COLUMNS})


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import torch
    from torch.utils.data import Subset

    from wysiwyc.data import build_dataset, check_classes, dataset_kwargs
    from wysiwyc.devices import resolve_device
    from wysiwyc.fileio import atomic_path, check_writable
    from wysiwyc.models.fused import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{args.name}{k}" for k in (".md", ".csv", ".png", "_gallery.png")}
    for p in paths.values():
        check_writable(p)
    model_path = args.model or str(ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.pt")
    if not Path(model_path).is_file():
        raise UserError(f"no such checkpoint: {model_path}")
    device = resolve_device(args.device)
    model = load_model(model_path, device=device)
    spec = model.spec
    methods, owner = select_methods(args, model, model_path, device)
    full = build_dataset(args.data, args.split, tuple(spec.image_size),
                         **dataset_kwargs(args.data, None, bool(spec.extra.get("spurious", False)), 0))
    check_classes(list(full.class_names), spec.class_names, model_path)
    n_all = len(full) if args.limit is None else min(args.limit, len(full))
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
    for key, write in ((".csv", lambda p: write_csv(rows, p)), (".png", lambda p: write_chart(rows, p)),
                       ("_gallery.png", lambda p: write_gallery(full, gallery, gallery_idx, spec.class_names, p))):
        with atomic_path(paths[key]) as tmp:
            write(Path(tmp))
    md = report_markdown(args, rows, model, model_path, owner, n_all, len(full), machine,
                         (time.time() - t_start) / 60, paths)
    with atomic_path(paths[".md"]) as tmp:
        Path(tmp).write_text(md)
    for p in paths.values():
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
