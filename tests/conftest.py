"""Shared fixtures: tiny seeded checkpoints and their export, built once per session.

They are read-only: a test that changes a model writes its own copy under ``tmp_path``.
Plain helpers (``load_script``, ``ROOT``, ``CLASSES``) are in ``_helpers.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import CLASSES


def make_classifier(path: Path, size: int = 32) -> Path:
    """A seeded (0), untrained small_cnn classifier checkpoint for the six shapes classes."""
    import torch

    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.spec import ModelSpec

    torch.manual_seed(0)
    clf = build_classifier("small_cnn", len(CLASSES))
    save_checkpoint(path, ModelSpec(class_names=list(CLASSES), image_size=(size, size)),
                    clf.state_dict())
    return path


def make_explainer(path: Path, size: int = 32) -> Path:
    """A seeded (0), untrained U-Net (width 4, 2 levels) Explainer + small_cnn checkpoint."""
    import torch

    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.models.explainer import head_from_spec
    from wysiwyc.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(class_names=list(CLASSES), image_size=(size, size), kind="explainer", head_arch="unet",
                     mask_kind="sigmoid", extra={"explainer": {"width": 4, "levels": 2}})
    clf = build_classifier("small_cnn", len(CLASSES)).eval()
    save_checkpoint(path, spec, clf.state_dict(), head=head_from_spec(spec).state_dict())
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`make_classifier` at 32 px."""
    return make_classifier(tmp_path_factory.mktemp("tiny_classifier") / "clf.pt")


@pytest.fixture(scope="session")
def tiny_explainer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`make_explainer` at 32 px."""
    return make_explainer(tmp_path_factory.mktemp("tiny_explainer") / "tiny_explainer.pt")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_explainer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fp32 fused-graph ONNX export of ``tiny_explainer`` (dynamic batch)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    export_checkpoint(tiny_explainer, out, ExportOptions())
    return out
