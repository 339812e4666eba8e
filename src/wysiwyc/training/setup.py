"""What every attribution-head training script does first: load the frozen classifier and
the train/val data it is explained on (Explainer, RTIS and mask-predictor scripts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..data import build_dataset, check_classes, dataset_kwargs, parse_data_arg
from ..fileio import check_writable
from ..models.explanandum import classifier_from_spec
from ..scripting import image_size_arg
from ..devices import seed_everything
from ..distributed import DistContext, init_distributed
from .fit import RunScale, run_scale
from ..spec import ModelSpec


@dataclass
class HeadDataConfig:
    """Where the classifier and data come from, for a head-training run.

    Attributes:
        output: the checkpoint to write; classifier: the classifier checkpoint path.
        data: ``shapes`` | ``voc:ROOT`` | ``coco:ROOT`` | ``folder:DIR``.
        image_size: ``None`` = the classifier's, else one side or (H, W).
        device: ``auto`` | ``cpu`` | ``cuda[:N]``; seed: for every RNG.
        spurious: shapes only, the planted cue; train_length, val_length: dataset sizes (None = default).
        dist_timeout: minutes a torchrun rank waits for a silent peer.
        targets: ``labels`` (the data's classes must be the classifier's) or ``predicted``
            (the classifier's own predictions: any images will do).
    """

    output: str
    classifier: str
    data: str = "shapes"
    image_size: Any = None
    device: str = "auto"
    seed: int = 0
    spurious: bool = False
    train_length: int | None = None
    val_length: int | None = None
    dist_timeout: float = 30.0
    targets: str = "labels"


@dataclass
class HeadSetup:
    """The pieces a head-training script needs.

    Attributes:
        out: the checked output path; device: where to train; ctx: this process's torchrun rank.
        cspec: the classifier's spec; classifier: the explanandum (weights loaded).
        data_name: ``shapes``, ``voc``…; size: (H, W) of the training images.
        train_ds, val_ds: the datasets (classes checked against the classifier's).
    """

    out: Path
    device: torch.device
    cspec: ModelSpec
    classifier: torch.nn.Module
    data_name: str
    size: tuple[int, int]
    train_ds: Any
    val_ds: Any
    ctx: DistContext


def prepare_head_training(args: HeadDataConfig) -> HeadSetup:
    """Join the torchrun job if any, check the output, seed, load ``args.classifier`` and build
    the train/val datasets.

    Raises:
        UserError: unwritable output, a missing or non-classifier checkpoint, a bad
            dataset, or classes that do not match the classifier's.
    """
    out = check_writable(args.output)
    ctx = init_distributed(args.device, args.dist_timeout)
    seed_everything(args.seed)
    ckpt = load_checkpoint(args.classifier, kinds=("classifier",))
    cspec = ckpt.spec
    classifier = classifier_from_spec(cspec, ckpt.classifier)
    name, _ = parse_data_arg(args.data)
    size = image_size_arg(args.image_size, tuple(cspec.image_size))

    def kw(n: int | None) -> dict[str, Any]:
        return dataset_kwargs(args.data, n, args.spurious, args.seed)

    train_ds = build_dataset(args.data, "train", size, **kw(args.train_length))
    val_ds = build_dataset(args.data, "val", size, **kw(args.val_length))
    if args.targets == "labels":  # the classifier's own predictions need no labels in its classes
        check_classes(list(train_ds.class_names), cspec.class_names, args.classifier)
    return HeadSetup(out, ctx.device, cspec, classifier, name, size, train_ds, val_ds, ctx)


def fit_scale(args: Any, ctx: DistContext) -> tuple[RunScale, dict[str, Any]]:
    """The run's :class:`RunScale` (printed) and the :class:`FitConfig` fields every training
    script takes from the shared flags (``lr`` scaled, accumulation, precision, compile, seed)."""
    scale = run_scale(ctx, args.batch_size, args.accumulate, args.lr, args.lr_scaling, args.amp)
    if ctx.is_main:
        print(scale.describe(), flush=True)
    return scale, {"lr": scale.lr, "accumulate": args.accumulate, "amp": args.amp, "compile": args.compile,
                   "seed": args.seed, "progress": not args.no_progress}
