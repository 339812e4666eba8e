"""The one way the bench exports a checkpoint to ONNX and opens it: what the product does.

``bench/test_latency.py`` (ONNX Runtime next to the other methods) and
``bench/test_onnx_precision.py`` (each export precision of a checkpoint) both call
:func:`export_onnx` and :func:`open_session`, so an int8 figure means the same file in the
same session in both groups:

* export: :func:`wysiwyc.export.onnx_export.export_checkpoint`, int8 calibrated on the first
  :data:`CALIB_IMAGES` images of the train split of the checkpoint's dataset at the export
  size (what ``export/to_onnx.py --precision int8`` does);
* session: the runtime's :class:`~wysiwyc.runtime.backends.OnnxBackend` on the CPU provider
  (``ORT_ENABLE_ALL``, ONNX Runtime's default thread count), so the bench times what
  ``runtime-explain`` runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CALIB_IMAGES = 128


def calibration_images(dataset: str, size: tuple[int, int], n: int = CALIB_IMAGES) -> Any:
    """float32 numpy (n,3,H,W) in [0,1]: the first ``n`` train-split images of ``dataset``."""
    import torch

    from wysiwyc.data import build_dataset, dataset_kwargs

    ds = build_dataset(dataset, "train", size, **dataset_kwargs(dataset, n))
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))]).numpy()


def export_onnx(ckpt: str | os.PathLike[str], out: str | os.PathLike[str], precision: str,
                image_size: tuple[int, int] | None = None, head: str | None = None) -> Path:
    """Export ``ckpt`` (fused graph, dynamic batch) at ``precision`` to ``out``; returns ``out``."""
    from wysiwyc.checkpoint import load_checkpoint
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

    spec = load_checkpoint(ckpt)["spec_obj"]
    size = tuple(image_size or spec.image_size)
    calib = calibration_images(spec.dataset, size) if precision == "int8" else None
    export_checkpoint(ckpt, out, ExportOptions(precision=precision, image_size=size, head=head), calib)
    return Path(out)


def open_session(path: str | os.PathLike[str]) -> Any:
    """The runtime's open ONNX backend for ``path`` on the CPU provider; ``.session`` is its
    ONNX Runtime session (the backend owns it: keep the backend alive while timing)."""
    from wysiwyc.runtime.backends import open_backend

    return open_backend(path, provider="cpu")
