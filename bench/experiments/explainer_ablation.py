#!/usr/bin/env python
"""Explainer ablation on ``shapes``: every variant trained at the same step budget from the
same seed, then tabulated from the validation metrics its checkpoint records (best epoch):
merged-mask IoU / MAE and the per-class IoU, own, leak and absent values.

Variants (each a set of ``train/train_explainer.py`` flags over one base recipe, so every
row is a committed command): the authors' loss; the earlier double-counted area weights;
the mask start value; the learning rate; the non-target mean; the per-class term; the
classifier-initialised encoder; and their combinations.

Trains what ``--work-dir`` lacks (``--only`` to pick rows; about 5-9 min per row on a
2-core CPU), then writes ``--out``.md and .json.

Example::

    python bench/experiments/explainer_ablation.py --work-dir runs/ablation --out bench/results/explainer_ablation
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)

from wysiwyc.errors import UserError, cli_main

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, str] = {
    "--classifier": "src/wysiwyc/assets/shapes_classifier.pt", "--data": "shapes", "--arch": "unet", "--width": "16",
    "--levels": "4", "--batch-size": "32", "--lr": "0.002", "--mask-init": "0.95", "--epochs": "3",
    "--steps-per-epoch": "150", "--val-length": "300", "--patience": "5", "--seed": "0"}
CUNET = {"--arch": "classifier_unet", "--lr": "0.001"}
CLASS_TERM = {"--class-regularizer": "1", "--class-absent-samples": "1", "--class-warmup-steps": "150"}
# name -> (description, flag overrides of BASE; None drops the flag)
VARIANTS: dict[str, tuple[str, dict[str, str | None]]] = {
    "authors": ("authors' loss (U-Net, masks start at 0.95, lr 2e-3)", {}),
    "double_area": ("earlier double-counted areas: 1.1·A(m), 1.3·A(n)",
                    {"--mask-total-area-regularizer": "1.1", "--ncmask-total-area-regularizer": "1.3"}),
    "init_default": ("authors' loss, default mask start (~0.5)", {"--mask-init": None}),
    "lr_1e-3": ("authors' loss, lr 1e-3", {"--lr": "0.001"}),
    "nontarget_mean": ("authors' loss, A(n) over the mean of the non-target channels", {"--nontarget-reduce": "mean"}),
    "cunet": ("classifier-initialised encoder (classifier_unet, lr 1e-3), authors' loss", CUNET),
    "cunet_keep": ("classifier_unet + per-class term, keep", {**CUNET, **CLASS_TERM, "--class-term": "keep"}),
    "cunet_remove": ("classifier_unet + per-class term, remove (the bundled recipe, shorter)",
                     {**CUNET, **CLASS_TERM, "--class-term": "remove"}),
    "unet_remove": ("U-Net (random init) + per-class term, remove", {**CLASS_TERM, "--class-term": "remove"}),
}
COLUMNS = ("val_iou", "val_mae", "val_class_iou", "val_class_iou_min", "val_own", "val_leak", "val_absent")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Explainer ablation at one step budget.", add_help=add_help)
    p.add_argument("--work-dir", required=True, help="where the variants' checkpoints and logs go")
    p.add_argument("--only", default=None, help=f"comma-separated variants (default all: {', '.join(VARIANTS)})")
    p.add_argument("--no-train", action="store_true", help="only tabulate the checkpoints already there")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    return p


def command(name: str, work: Path) -> list[str]:
    """The train_explainer.py argv of one variant."""
    flags = {**BASE, **VARIANTS[name][1]}
    argv = [t for k, v in flags.items() if v is not None for t in (k, v)]
    return argv + ["--no-progress", "-o", str(work / f"{name}.pt")]


def train(name: str, work: Path) -> None:
    import subprocess

    argv = command(name, work)
    print(f"[{name}] python train/train_explainer.py {' '.join(argv)}", flush=True)
    with open(work / f"{name}.log", "w") as log:
        rc = subprocess.call([sys.executable, str(ROOT / "train" / "train_explainer.py"), *argv], cwd=ROOT,
                             stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        raise UserError(f"variant {name} failed (exit {rc}); see {work / (name + '.log')}")


def row(name: str, work: Path) -> dict | None:
    from wysiwyc.checkpoint import load_checkpoint

    path = work / f"{name}.pt"
    if not path.is_file():
        return None
    m = load_checkpoint(path).metrics
    return {"variant": name, "description": VARIANTS[name][0], "best_epoch": m.get("best_epoch"),
            "train_seconds": m.get("train_seconds"), **{k: m.get(k) for k in COLUMNS},
            "command": "python train/train_explainer.py " + " ".join(command(name, Path("RUNS")))}


def to_markdown(rows: list[dict]) -> str:
    head = ["variant", "merged IoU", "MAE", "IoU/class", "min IoU/class", "own", "leak↓", "absent↓", "s"]
    lines = ["Explainer ablation on shapes: 450 steps of batch 32 (3 epochs × 150), seed 0, bundled classifier;",
             "validation split, 300 images, best epoch by validation loss (per-class term: off for 150 steps,",
             "then ramped over 150). Per class: own mask vs own ground truth;",
             "own / leak = mean mask on the class's object / on the other labelled objects; absent = an",
             "unlabelled class's mask on the labelled objects. Commands in the JSON beside this file.", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        vals = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else "–" for k in COLUMNS]
        lines.append(f"| {r['description']} | " + " | ".join(vals) + f" | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from wysiwyc.fileio import atomic_path

    names = [n.strip() for n in args.only.split(",")] if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    for n in names:
        if not args.no_train and not (work / f"{n}.pt").is_file():
            train(n, work)
    rows = [r for r in (row(n, work) for n in names) if r is not None]
    if not rows:
        raise UserError(f"no trained variant in {work}")
    md = to_markdown(rows)
    print(md)
    if args.out:
        for suffix, text in ((".md", md), (".json", json.dumps({"rows": rows, "base": BASE}, indent=2))):
            with atomic_path(args.out + suffix) as tmp:
                Path(tmp).write_text(text)
        print(f"wrote {args.out}.md, {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
