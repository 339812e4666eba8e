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
from ..models.classifiers import build_classifier
from ..scripting import image_size_arg
from ..devices import resolve_device, seed_everything
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


@dataclass
class HeadSetup:
    """The pieces a head-training script needs.

    Attributes:
        out: the checked output path; device: where to train.
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


def prepare_head_training(args: HeadDataConfig) -> HeadSetup:
    """Check the output, seed, load ``args.classifier`` and build the train/val datasets.

    Raises:
        UserError: unwritable output, a missing or non-classifier checkpoint, a bad
            dataset, or classes that do not match the classifier's.
    """
    out = check_writable(args.output)
    device = resolve_device(args.device)
    seed_everything(args.seed)
    ckpt = load_checkpoint(args.classifier, kinds=("classifier",))
    cspec: ModelSpec = ckpt["spec_obj"]
    classifier = build_classifier(cspec.classifier_arch, cspec.num_classes)
    classifier.load_state_dict(ckpt["classifier"])
    name, _ = parse_data_arg(args.data)
    size = image_size_arg(args.image_size, tuple(cspec.image_size))

    def kw(n: int | None) -> dict[str, Any]:
        return dataset_kwargs(args.data, n, args.spurious, args.seed)

    train_ds = build_dataset(args.data, "train", size, **kw(args.train_length))
    val_ds = build_dataset(args.data, "val", size, **kw(args.val_length))
    check_classes(list(train_ds.class_names), cspec.class_names, args.classifier)
    return HeadSetup(out, device, cspec, classifier, name, size, train_ds, val_ds)
