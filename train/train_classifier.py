#!/usr/bin/env python
"""Train or fine-tune a multi-label classifier (the explanandum) and write a checkpoint.

Example (the bundled demo classifier)::

    python train/train_classifier.py --data shapes --epochs 8 -o src/wysiwyc/assets/shapes_classifier.pt

Runs unchanged as N processes (``torchrun --standalone --nproc_per_node N train/train_classifier.py …``):
``--batch-size`` is then per process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import cli_main
from wysiwyc.scripting import add_run_args, image_size_arg


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a multi-label classifier.", add_help=add_help)
    p.add_argument("--data", default="shapes", help="shapes | voc:ROOT | coco:ROOT | folder:DIR")
    p.add_argument("--arch", default="small_cnn", help="classifier architecture (registry name)")
    p.add_argument("--weights", default=None, help="local torchvision weights file for the backbone")
    p.add_argument("--pretrained", action="store_true", help="download torchvision weights (needs internet)")
    p.add_argument("--frozen-backbone", action="store_true", help="train only the classification head")
    p.add_argument("--image-size", type=int, nargs="+", default=None, help="H [W] (default: 64 for shapes, 224 otherwise)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=3, help="early stopping patience (epochs)")
    p.add_argument("--train-length", type=int, default=None, help="shapes: number of training images")
    p.add_argument("--val-length", type=int, default=None, help="shapes: number of validation images")
    p.add_argument("--test-length", type=int, default=None, help="shapes: number of test images")
    add_run_args(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.metrics.classification import multilabel_metrics
    from wysiwyc.training.classifier import ClassifierTask, predict
    from wysiwyc.data import build_dataset, dataset_kwargs, make_loader, parse_data_arg
    from wysiwyc.fileio import check_writable
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.spec import ModelSpec
    from wysiwyc.devices import seed_everything
    from wysiwyc.distributed import finish, init_distributed
    from wysiwyc.training import FitConfig, Trainer
    from wysiwyc.training.setup import fit_scale

    out = check_writable(args.output)
    ctx = init_distributed(args.device, args.dist_timeout)
    device = ctx.device
    seed_everything(args.seed)
    name, _ = parse_data_arg(args.data)
    size = image_size_arg(args.image_size, (64, 64) if name == "shapes" else (224, 224))
    kw = lambda n: dataset_kwargs(args.data, n, args.spurious, args.seed)  # noqa: E731
    train_ds = build_dataset(args.data, "train", size, **kw(args.train_length))
    val_ds = build_dataset(args.data, "val", size, **kw(args.val_length))
    classes = list(train_ds.class_names)
    model = build_classifier(args.arch, len(classes), weights=args.weights, pretrained=args.pretrained)
    spec = ModelSpec(class_names=classes, image_size=size, classifier_arch=args.arch, kind="classifier",
                     dataset=name,
                     extra={"spurious": bool(args.spurious)} if name == "shapes" else {})
    task = ClassifierTask(model, spec.mean, spec.std, frozen_backbone=args.frozen_backbone)
    scale, fit_kw = fit_scale(args, ctx)
    cfg = FitConfig(epochs=args.epochs, cosine=True, monitor="val_map", mode="max",
                    patience=args.patience, min_delta=1e-4, **fit_kw)
    t0 = time.time()
    trainer = Trainer(task, make_loader(train_ds, args.batch_size, shuffle=True, workers=args.workers,
                                        shard=ctx, seed=args.seed),
                      make_loader(val_ds, 256, workers=args.workers, shard=ctx), cfg, device,
                      resume_path=str(out) + ".last.pt", resume=args.resume, dist=ctx)
    result = trainer.fit()
    train_seconds = time.time() - t0
    if not ctx.is_main:  # rank 0 scores the test split and writes the checkpoint
        finish()  # waits for rank 0's checkpoint, then leaves the group
        return 0
    task.load_state_dict(result.best_state)

    test_ds = build_dataset(args.data, "test", size, **kw(args.test_length))
    logits, labels = predict(model, task.norm, make_loader(test_ds, 256), device)
    test = {f"test_{k}": v for k, v in multilabel_metrics(logits, labels).items()}
    metrics = {**result.best_metrics, **test, "best_epoch": result.best_epoch, **result.throughput,
               "train_seconds": round(train_seconds, 1)}
    config = {k: v for k, v in vars(args).items()}
    config["argv"] = sys.argv[1:] if argv is None else list(argv)
    config["scale"] = scale.to_dict()
    save_checkpoint(out, spec, model.state_dict(), train=config, metrics=metrics)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}))
    print(f"wrote {out}")
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
