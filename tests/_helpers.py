"""Shared test helpers: load a stage script as a module, build a tiny Explainer checkpoint."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["stripes", "checks", "dots", "grid", "rings", "zigzag"]


def load_script(rel: str) -> ModuleType:
    """Import a stage script such as ``export/to_onnx.py`` (its folder on sys.path while it loads)."""
    path = ROOT / rel
    spec = importlib.util.spec_from_file_location("wysiwyc_script_" + rel.replace("/", "_")[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    finally:
        sys.path.pop(0)
    return mod


def tiny_explainer(path: Path, classes: list[str] | None = None, size: int = 32) -> Path:
    """A seeded, untrained U-Net (width 4, 2 levels) Explainer + small_cnn checkpoint."""
    import torch

    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.models.explainer import head_from_spec
    from wysiwyc.spec import ModelSpec

    names = list(classes or CLASSES)
    torch.manual_seed(0)
    spec = ModelSpec(class_names=names, image_size=(size, size), kind="explainer", head_arch="unet",
                     mask_kind="sigmoid", extra={"explainer": {"width": 4, "levels": 2}})
    clf = build_classifier("small_cnn", len(names)).eval()
    save_checkpoint(path, "explainer", spec, clf.state_dict(), head=head_from_spec(spec).state_dict())
    return path
