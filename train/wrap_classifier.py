#!/usr/bin/env python
"""Bring a classifier you already have into wysiwyc: a checkpoint every stage takes.

    python train/wrap_classifier.py torchvision:mobilenet_v2 --weights mobilenet_v2.pth \
        --classes imagenet --activation softmax -o mobilenet_v2.pt
    python train/wrap_classifier.py timm:resnet18 --weights resnet18.pth --classes imagenet --activation softmax -o r18.pt
    python train/wrap_classifier.py mypackage.models:build_net --weights net.pt --classes classes.txt \
        --activation sigmoid --image-size 320 -o net.pt
    python train/wrap_classifier.py scripted.pt --classes classes.txt --activation softmax -o net.pt   # TorchScript

The model keeps its weights, its own top and class count. The checkpoint records what the
runtime needs — input size, mean/std, channel order, output activation, class names — and
the feature blocks found by one dry run (or named with ``--blocks``). Then:
``export/to_onnx.py OUT.pt --head reciprocam`` (no training), ``train/train_explainer.py
--classifier OUT.pt --data folder:DIR``, ``runtime-explain --model OUT.pt``.
"""

from __future__ import annotations

import argparse
import sys

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import cli_main
from wysiwyc.scripting import add_preprocessing_args, image_size_arg, preprocessing_from_args
from wysiwyc.spec import ACTIVATIONS


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Wrap an existing classifier as a wysiwyc checkpoint.", add_help=add_help)
    p.add_argument("model", help="torchvision:NAME | timm:NAME | package.module:function | a TorchScript file")
    p.add_argument("--weights", default=None, help="a local state-dict file for the model (not for TorchScript)")
    p.add_argument("--classes", required=True, help="a text file with one class name per line, in logit order, "
                                                    "or 'imagenet' for the 1000 ImageNet-1k names")
    p.add_argument("--activation", required=True, choices=ACTIVATIONS,
                   help="how the model's logits become probabilities: softmax (one label per image) or "
                        "sigmoid (multi-label)")
    p.add_argument("--image-size", type=int, nargs="+", default=[224], metavar="H [W]", help="input size (224)")
    add_preprocessing_args(p)
    p.add_argument("--blocks", default=None,
                   help="comma-separated module names to read features from, shallow to deep (default: found)")
    p.add_argument("-o", "--output", required=True, help="the checkpoint to write (.pt)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.fileio import check_writable
    from wysiwyc.models.explanandum import wrap_classifier

    out = check_writable(args.output)
    mean, std, bgr = preprocessing_from_args(args)
    size = image_size_arg(args.image_size, (224, 224))
    blocks = [b.strip() for b in args.blocks.split(",") if b.strip()] if args.blocks else None
    spec, state, clf = wrap_classifier(args.model, args.classes, args.activation, args.weights, size, mean, std,
                                       bgr, blocks)
    train = {"argv": sys.argv[1:] if argv is None else list(argv), "wrapped": args.model, "weights": args.weights}
    save_checkpoint(out, spec, state, train=train)
    print(f"{spec.classifier_arch}: {spec.num_classes} classes ({args.activation}) at {size[0]}x{size[1]}")
    if clf.block_names:
        chans = clf.block_channels(size)
        print("feature blocks: " + ", ".join(f"{n} ({chans[n]} ch)" for n in clf.block_names))
    else:
        print("no feature maps (a transformer or a TorchScript model): ReciproCAM reads the token grid of a ViT; "
              "a TorchScript model is explained by a trained Explainer")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
