#!/usr/bin/env python
"""Train an Explainer (Stalder et al.) for a frozen classifier checkpoint.

``--loss rtis`` trains the same network with Dabkowski & Gal's loss instead: the RTIS
baseline as the Explainer paper built it (checkpoint kind ``rtis``).

The output checkpoint (kind ``explainer``) embeds the classifier, so export and runtime
need only this one file. Settings can come from ``--config FILE.json`` whose keys are the
flag names (``entropy-regularizer`` or ``entropy_regularizer``; keys starting with ``_`` are comments); flags
given on the command line win.

Example (the bundled demo Explainer)::

    python train/train_explainer.py --config train/configs/shapes_unet.json \
        -o src/wysiwyc/assets/shapes_explainer.pt
"""

from __future__ import annotations

import argparse
from typing import Any
import json
import sys
import time

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import cli_main
from wysiwyc.scripting import add_head_training_args, add_run_args, fields_from_args, parse_with_config


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train an Explainer for a frozen classifier.", add_help=add_help)
    add_head_training_args(p, epochs=20, batch_size=16, lr=1e-5,
                           lr_help="Adam learning rate (paper: 1e-5 VGG16, 1e-4 ResNet50)")
    p.add_argument("--arch", default="unet",
                   help="explainer: unet | classifier_unet | lraspp_mobilenet_v3 | deeplabv3_resnet50")
    p.add_argument("--width", type=int, default=16, help="unet: channels of the first level; classifier_unet: stem")
    p.add_argument("--encoder-init", choices=("classifier", "random"), default="classifier",
                   help="classifier_unet: start the encoder from the classifier's block weights, or at random")
    p.add_argument("--levels", type=int, default=4, help="unet: resolution levels")
    p.add_argument("--backbone-weights", default=None, help="local torchvision backbone weights file")
    p.add_argument("--mask-init", type=float, default=None,
                   help="start every mask at this value (output bias logit(v)); default: the layer's own init")
    p.add_argument("--targets", choices=("labels", "predicted"), default="labels",
                   help="target classes: ground-truth labels (paper) or the classifier's own predictions (sigmoid ≥ "
                        "--threshold; a softmax classifier's top-1 class), which need no labels: any images will do")
    p.add_argument("--threshold", type=float, default=0.5, help="--targets predicted: sigmoid threshold")
    p.add_argument("--loss", choices=("paper", "rtis"), default="paper",
                   help="paper: the Explainer loss (kind explainer); rtis: Dabkowski & Gal's loss on the same "
                        "net, the RTIS baseline (kind rtis)")
    p.add_argument("--rtis-area", type=float, default=8.0, help="rtis: area weight (mean (m+5e-4)^0.3)")
    p.add_argument("--rtis-smooth", type=float, default=0.5, help="rtis: smoothness weight")
    p.add_argument("--rtis-preserve", type=float, default=0.3, help="rtis: preserver weight")
    p.add_argument("--rtis-destroy", type=float, default=1.0, help="rtis: destroyer weight")
    # loss weights: the names and defaults of the authors' code (VGG16, VOC-2007)
    p.add_argument("--entropy-regularizer", type=float, default=1.0, help="weight of the negative entropy of F((1-m)x)")
    p.add_argument("--mask-variation-regularizer", type=float, default=1.0, help="weight of TV(m) + TV(n)")
    p.add_argument("--mask-area-constraint-regularizer", type=float, default=1.0,
                   help="weight of the per-class area bounds, summed over the label classes")
    p.add_argument("--mask-total-area-regularizer", type=float, default=0.1, help="weight of A(m)")
    p.add_argument("--ncmask-total-area-regularizer", type=float, default=0.3, help="weight of A(n)")
    p.add_argument("--class-mask-min-area", type=float, default=0.05, help="area bound a of each class mask")
    p.add_argument("--class-mask-max-area", type=float, default=0.3, help="area bound b of each class mask")
    p.add_argument("--nontarget-reduce", choices=("max", "mean"), default="max",
                   help="A(n) over the max of the non-target channels (authors) or their mean")
    p.add_argument("--class-absent-samples", type=int, default=None,
                   help="per-class term: absent classes drawn per image (default: all)")
    p.add_argument("--class-warmup-steps", type=int, default=0,
                   help="per-class term: off for this many steps, then ramped up linearly over as many")
    p.add_argument("--class-regularizer", type=float, default=0.0,
                   help="weight of the per-class term (not in the paper; 0 = off)")
    p.add_argument("--class-term", choices=("remove", "keep"), default="remove",
                   help="per-class term: remove (F((1-s_c)x) loses class c only) or keep (F(s_c x) shows c only)")
    p.add_argument("--min-delta", type=float, default=1e-3, help="early stopping min improvement of val loss")
    add_run_args(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags; ``--config`` values become defaults so explicit flags override them."""
    return parse_with_config(get_args_parser(), argv)


def build_head(args: argparse.Namespace, cspec: Any, classifier: Any, data_name: str,
               size: tuple[int, int]) -> tuple[Any, Any]:
    """The head's spec (the classifier's with the Explainer's fields) and the untrained head,
    initialised as the flags ask."""
    from wysiwyc.models.explainer import (head_from_spec, init_encoder_from_classifier, init_mask_bias,
                                          load_backbone_weights)

    kind = "rtis" if args.loss == "rtis" else "explainer"
    arch_extra = {"unet": {"width": args.width, "levels": args.levels},
                  "classifier_unet": {"width": args.width, "classifier_arch": cspec.classifier_arch}}.get(args.arch, {})
    extra: dict = {"explainer": arch_extra}
    if data_name == "shapes":
        extra["spurious"] = bool(args.spurious)
    spec = cspec.with_head(kind, args.arch, "sigmoid", extra, image_size=size, dataset=data_name)
    head = head_from_spec(spec)
    if args.backbone_weights:
        print(f"loaded {load_backbone_weights(head, args.backbone_weights)} backbone tensors")
    if args.arch == "classifier_unet" and args.encoder_init == "classifier":
        print(f"encoder: {init_encoder_from_classifier(head, classifier)} tensors from the classifier")
    if args.mask_init is not None:
        init_mask_bias(head, args.mask_init, spec.num_classes)
    return spec, head


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.models.explanandum import classifier_state
    from wysiwyc.data import make_loader
    from wysiwyc.training.explainer import ExplainerTask
    from wysiwyc.training.rtis import RTISTask
    from wysiwyc.distributed import finish
    from wysiwyc.training.setup import HeadDataConfig, fit_scale, prepare_head_training
    from wysiwyc.training.losses import ExplainerLossWeights, RTISLossWeights
    from wysiwyc.training import FitConfig, Trainer

    setup = prepare_head_training(HeadDataConfig(**fields_from_args(HeadDataConfig, args)))
    out, device, cspec, classifier = setup.out, setup.device, setup.cspec, setup.classifier
    name, size, train_ds, val_ds = setup.data_name, setup.size, setup.train_ds, setup.val_ds

    spec, head = build_head(args, cspec, classifier, name, size)
    weights = ExplainerLossWeights(**fields_from_args(ExplainerLossWeights, args))
    if args.loss == "rtis":
        weights = RTISLossWeights(area=args.rtis_area, smooth=args.rtis_smooth, preserve=args.rtis_preserve,
                                  destroy=args.rtis_destroy)
        task = RTISTask(head, classifier, spec.mean, spec.std, weights, targets=args.targets,
                        threshold=args.threshold)
    else:
        task = ExplainerTask(head, classifier, spec.mean, spec.std, weights, targets=args.targets,
                             threshold=args.threshold, activation=spec.activation, bgr=spec.channel_order == "bgr")
    scale, fit_kw = fit_scale(args, setup.ctx)
    cfg = FitConfig(epochs=args.epochs, monitor="val_loss", mode="min", patience=args.patience,
                    min_delta=args.min_delta, max_steps_per_epoch=args.steps_per_epoch, **fit_kw)
    t0 = time.time()
    trainer = Trainer(task, make_loader(train_ds, args.batch_size, shuffle=True, workers=args.workers, drop_last=True,
                                        shard=setup.ctx, seed=args.seed),
                      make_loader(val_ds, 128, workers=args.workers, shard=setup.ctx), cfg, device,
                      resume_path=str(out) + ".last.pt", resume=args.resume, dist=setup.ctx)
    result = trainer.fit()
    if not setup.ctx.is_main:  # rank 0 writes the checkpoint
        finish()  # waits for rank 0's checkpoint, then leaves the group
        return 0
    task.load_state_dict(result.best_state)
    metrics = {**result.best_metrics, "best_epoch": result.best_epoch, **result.throughput,
               "stopped_early": result.stopped_early,
               "train_seconds": round(time.time() - t0, 1)}
    config = dict(vars(args))
    config["argv"] = sys.argv[1:] if argv is None else list(argv)
    config["loss_weights"] = weights.to_dict()
    config["scale"] = scale.to_dict()
    save_checkpoint(out, spec, classifier_state(classifier), head.state_dict(), train=config, metrics=metrics)
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}))
    print(f"wrote {out}")
    finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
