#!/usr/bin/env python
"""Train a mask predictor with a distribution controller (paper 2) for a frozen classifier.

Two stages (see :mod:`wysiwyc.training.mask_predictor`): the feature filter's class
embeddings (``--filter-epochs``), then the generator with the classification loss only
(``--epochs``, Adam, step decay). The checkpoint (kind ``mask_predictor``) embeds its
classifier; export, runtime and ``bench/report.py --quality`` take it like an Explainer checkpoint.

Example (the bundled demo mask predictor)::

    python train/train_mask_predictor.py --config train/configs/shapes_mask_predictor.json \\
        -o src/wysiwyc/assets/shapes_mask_predictor.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import cli_main
from wysiwyc.scripting import add_head_training_args, add_run_args, fields_from_args, parse_with_config


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a mask predictor for a frozen classifier.", add_help=add_help)
    # paper 2: Adam, lr 1e-2, batch 64, 10 generator epochs
    add_head_training_args(p, epochs=10, batch_size=64, lr=1e-2, lr_help="Adam learning rate (paper: 1e-2)")
    p.add_argument("--width", type=int, default=64, help="decoder channels")
    p.add_argument("--controller", choices=("custom", "basic"), default="custom",
                   help="distribution controller: sigmoid(eta*z)^h (custom) or relu (basic)")
    p.add_argument("--eta", type=float, default=1.5, help="custom controller η")
    p.add_argument("--h", type=float, default=2.5, help="custom controller h")
    p.add_argument("--targets", choices=("predicted", "labels"), default="predicted",
                   help="classes to explain: the classifier's predictions (paper) or the labels")
    p.add_argument("--threshold", type=float, default=0.5, help="--targets predicted: sigmoid threshold")
    p.add_argument("--blur-sigma", type=float, default=None,
                   help="σ in px of the blurred alternative image (default: paper 2's, scaled, ≥ 2)")
    p.add_argument("--filter-epochs", type=int, default=1, help="stage 1: feature-filter epochs (0 skips)")
    p.add_argument("--lr-step-epochs", type=int, default=3, help="halve the learning rate every N epochs (paper: 3)")
    add_run_args(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_with_config(get_args_parser(), argv)
    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.models.explanandum import classifier_state
    from wysiwyc.data import make_loader
    from wysiwyc.distributed import finish
    from wysiwyc.training.setup import HeadDataConfig, fit_scale, prepare_head_training
    from wysiwyc.training.mask_predictor import MaskPredictorTask
    from wysiwyc.models.mask_predictor import head_from_spec
    from wysiwyc.training import FitConfig, Trainer

    setup = prepare_head_training(HeadDataConfig(**fields_from_args(HeadDataConfig, args)))
    out, device, cspec, classifier = setup.out, setup.device, setup.cspec, setup.classifier
    name, size, train_ds, val_ds = setup.data_name, setup.size, setup.train_ds, setup.val_ds

    extra: dict = {"mask_predictor": {"width": args.width, "eta": args.eta, "h": args.h}}
    if name == "shapes":
        extra["spurious"] = bool(args.spurious)
    spec = cspec.with_head("mask_predictor", "mask_predictor", args.controller, extra, image_size=size, dataset=name)
    head = head_from_spec(spec)
    ctx = setup.ctx
    scale, fit_kw = fit_scale(args, ctx)
    train_loader = make_loader(train_ds, args.batch_size, shuffle=True, workers=args.workers, drop_last=True,
                               shard=ctx, seed=args.seed)
    val_loader = make_loader(val_ds, 128, workers=args.workers, shard=ctx)
    t0 = time.time()
    history = {}
    stages = [("filter", args.filter_epochs, None), ("generator", args.epochs, args.lr_step_epochs)]
    for stage, epochs, step in stages:
        if epochs <= 0:
            continue
        if ctx.is_main:
            print(f"stage {stage}: {epochs} epoch(s)", flush=True)
        task = MaskPredictorTask(head, classifier, spec.mean, spec.std, stage=stage, targets=args.targets,
                                 threshold=args.threshold, blur_sigma=args.blur_sigma, activation=spec.activation,
                                 bgr=spec.channel_order == "bgr")
        cfg = FitConfig(epochs=epochs, monitor="val_loss", mode="min", patience=args.patience,
                        max_steps_per_epoch=args.steps_per_epoch, lr_step_epochs=step, **fit_kw)
        # a finished stage keeps its resume file until the checkpoint is written, so a run
        # resumed in a later stage does not train the earlier ones again
        result = Trainer(task, train_loader, val_loader, cfg, device, resume_path=f"{out}.{stage}.last.pt",
                         resume=args.resume, dist=ctx, keep_finished=stage != stages[-1][0]).fit()
        task.load_state_dict(result.best_state)
        history[stage] = {**result.best_metrics, "best_epoch": result.best_epoch, **result.throughput}
    if not ctx.is_main:  # rank 0 writes the checkpoint
        finish()  # waits for rank 0's checkpoint, then leaves the group
        return 0
    metrics = {**history.get("generator", history.get("filter", {})), "train_seconds": round(time.time() - t0, 1),
               "stages": history}
    config = dict(vars(args))
    config["argv"] = sys.argv[1:] if argv is None else list(argv)
    config["scale"] = scale.to_dict()
    save_checkpoint(out, spec, classifier_state(classifier), head.cpu().state_dict(), train=config,
                    metrics=metrics)
    for stage, _, _ in stages:
        Path(f"{out}.{stage}.last.pt").unlink(missing_ok=True)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items() if k != "stages"}))
    print(f"wrote {out}")
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
