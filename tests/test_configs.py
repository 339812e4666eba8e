"""Every shipped Explainer config against the authors' files (NN-Explainer,
``src/config_files/explainer_training/explainer_*_training.cfg``; a value a file does not
list is the default of their ``utils/argparser.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {"entropy_regularizer": 1.0, "mask_variation_regularizer": 1.0, "mask_area_constraint_regularizer": 1.0,
            "mask_total_area_regularizer": 0.1, "ncmask_total_area_regularizer": 0.3, "class_mask_min_area": 0.05,
            "class_mask_max_area": 0.3, "lr": 1e-5, "patience": 5, "min_delta": 0.001, "batch_size": 16}
AUTHORS = {
    "voc_vgg16": {},
    "voc_resnet50": {"entropy_regularizer": 3.0, "lr": 1e-4, "mask_area_constraint_regularizer": 0.8,
                     "mask_total_area_regularizer": 0.01},
    "coco_vgg16": {"patience": 2, "lr": 1e-5, "mask_variation_regularizer": 0.3,
                   "mask_area_constraint_regularizer": 0.3, "mask_total_area_regularizer": 0.03,
                   "ncmask_total_area_regularizer": 0.1},
    "coco_resnet50": {"patience": 2, "entropy_regularizer": 3.0, "lr": 1e-5, "mask_total_area_regularizer": 0.01,
                      "mask_variation_regularizer": 0.05, "ncmask_total_area_regularizer": 0.03,
                      "mask_area_constraint_regularizer": 0.1},
}


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_paper_config_matches_the_authors_file(name: str) -> None:
    path = ROOT / "train" / "configs" / f"{name}.json"
    args = load_script("train/train_explainer.py").parse_args(["--config", str(path), "-o", "x.pt"])
    want = {**DEFAULTS, **AUTHORS[name]}
    for key, value in want.items():
        assert getattr(args, key) == pytest.approx(value), f"{name}: {key}"
    assert args.arch == "deeplabv3_resnet50" and tuple(args.image_size) == (224, 224)
    # the project's own options stay at the authors' behaviour
    assert args.nontarget_reduce == "max" and args.class_regularizer == 0.0


@pytest.mark.parametrize("path", sorted((ROOT / "train" / "configs").glob("shapes_*.json")), ids=lambda p: p.stem)
def test_every_shipped_config_parses(path: Path) -> None:
    from wysiwyc.scripting import parse_with_config

    script = "train_mask_predictor" if "mask_predictor" in path.stem else "train_explainer"
    parser = load_script(f"train/{script}.py").get_args_parser()
    args = parse_with_config(parser, ["--config", str(path), "-o", "x.pt"])
    cfg = json.loads(path.read_text())
    for key, value in cfg.items():
        if not key.startswith("_"):
            assert getattr(args, key.replace("-", "_")) == value
