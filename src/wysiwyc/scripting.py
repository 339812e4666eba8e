"""Small helpers shared by the thin scripts in train/, export/, runtime/ and bench/ (stdlib-only)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .errors import UserError


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The flags every training script shares: shapes cue, seed, workers, resume, output, device."""
    parser.add_argument("--spurious", action="store_true", help="shapes: plant the background cue for 'dots'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT.last.pt")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("-o", "--output", required=True, help="checkpoint path (.pt)")
    add_device_arg(parser)
    g = parser.add_argument_group("scale (torchrun, accumulation, precision)")
    g.add_argument("--accumulate", type=int, default=1,
                   help="batches per optimisation step; global batch = batch × processes × accumulate (default: 1)")
    g.add_argument("--lr-scaling", choices=("none", "linear", "sqrt"), default="none",
                   help="scale --lr by (processes × accumulate) or its square root (default: none)")
    g.add_argument("--amp", choices=("off", "auto", "bf16", "fp16"), default="off",
                   help="mixed precision: auto = bf16 on CUDA where supported, else fp16 (default: off)")
    g.add_argument("--compile", action="store_true", help="torch.compile the trained network")
    g.add_argument("--dist-timeout", type=float, default=30.0,
                   help="torchrun: minutes a rank waits for a silent peer before failing (default: 30)")


def add_head_training_args(parser: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float,
                           lr_help: str) -> None:
    """Flags shared by the scripts that train an attribution head for a frozen classifier
    (Explainer, RTIS, mask predictor): config, explanandum, data and the schedule."""
    parser.add_argument("--config", default=None, help="JSON file of flag values (CLI flags override)")
    parser.add_argument("--classifier", default="src/wysiwyc/assets/shapes_classifier.pt",
                        help="classifier checkpoint (the explanandum)")
    parser.add_argument("--data", default="shapes", help="shapes | voc:ROOT | coco:ROOT | folder:DIR")
    parser.add_argument("--image-size", type=int, nargs="+", default=None, help="H [W] (default: the classifier's)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="cap on training steps per epoch")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help=lr_help)
    parser.add_argument("--patience", type=int, default=5, help="early stopping patience (epochs)")
    parser.add_argument("--train-length", type=int, default=None, help="shapes: number of training images")
    parser.add_argument("--val-length", type=int, default=None, help="shapes: number of validation images")


def image_size_arg(values: list[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    """``--image-size H W`` or ``--image-size S`` -> (H, W)."""
    if not values:
        return default
    if len(values) == 1:
        return (values[0], values[0])
    return (values[0], values[1])


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags; ``--config FILE.json`` values become defaults so explicit flags win.

    Config keys are flag names (``entropy-regularizer`` or ``entropy_regularizer``); keys starting with ``_``
    are comments. An unknown key or a missing/invalid file is a :class:`UserError`.
    """
    first, _ = parser.parse_known_args(argv)
    if getattr(first, "config", None):
        path = Path(first.config)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from exc
        known = {a.dest for a in parser._actions}
        values = {}
        for key, value in cfg.items():
            if key.startswith("_"):  # "_comment" and friends: notes for humans
                continue
            dest = key.lstrip("-").replace("-", "_")
            if dest not in known or dest in ("config", "help"):
                raise UserError(f"{path}: unknown setting {key!r}")
            values[dest] = value
        parser.set_defaults(**values)
        for action in parser._actions:  # a required flag given by the config is no longer required
            if action.dest in values:
                action.required = False
    return parser.parse_args(argv)


def fields_from_args(cls: type, args: argparse.Namespace) -> dict:
    """The keyword arguments of dataclass ``cls`` taken from the parsed flags of the same
    names (e.g. :class:`wysiwyc.training.setup.HeadDataConfig`, the loss weights)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}


def add_preprocessing_args(p: argparse._ActionsContainer) -> None:
    """``--mean``, ``--std``, ``--no-normalize``, ``--bgr``: how a user's classifier takes its
    input (:func:`preprocessing_from_args` reads them)."""
    p.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="per-channel mean of images in [0,1] (ImageNet's by default)")
    p.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="per-channel std (ImageNet's by default)")
    p.add_argument("--no-normalize", action="store_true", help="the model takes images in [0,1] as they are")
    p.add_argument("--bgr", action="store_true", help="the model expects BGR channel order (mean/std then in BGR)")


def preprocessing_from_args(args: argparse.Namespace) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """(mean, std, bgr) of :func:`add_preprocessing_args`' flags.

    Raises:
        UserError: ``--no-normalize`` together with ``--mean`` or ``--std``.
    """
    from .spec import IMAGENET_MEAN, IMAGENET_STD

    if args.no_normalize and (args.mean or args.std):
        raise UserError("--no-normalize and --mean/--std contradict each other")
    if args.no_normalize:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), bool(args.bgr)
    return tuple(args.mean or IMAGENET_MEAN), tuple(args.std or IMAGENET_STD), bool(args.bgr)
