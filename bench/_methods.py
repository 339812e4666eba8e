"""What the bench runs and how: the attribution methods and their settings, the devices, and
the one way a checkpoint is exported to ONNX and opened.

Methods: the report's list and order, the slow ones, the default of a script that explains
one checkpoint (report's quality tables, gallery), and the settings of the latency bench
(the papers' defaults; reduced ones only behind ``--bench-reduced``).

ONNX: ``bench/test_latency.py`` (ONNX Runtime next to the other methods),
``bench/test_onnx_precision.py`` (each export precision of a checkpoint) and
``bench/paper_scale.py`` all call :func:`export_onnx` and :func:`open_session`, so an int8
figure means the same file in the same session everywhere:

* export: :func:`wysiwyc.export.onnx_export.export_checkpoint`, int8 calibrated on the first
  :data:`CALIB_IMAGES` images of the train split of the checkpoint's dataset at the export
  size (what ``export/to_onnx.py --precision int8`` does);
* session: the runtime's :class:`~wysiwyc.runtime.backends.OnnxBackend` on the CPU provider
  (``ORT_ENABLE_ALL``, ONNX Runtime's default thread count), so the bench times what
  ``runtime-explain`` runs.

Imports only the standard library at import time; torch and wysiwyc load inside the
functions that need them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# every method the report (bench/report.py) scores, in table order: the checkpoint heads,
# then the baselines; methods missing from the registry or without their head are skipped
BENCH_METHODS = ("explainer", "mask_predictor", "mask_predictor_refined", "rtis", "reciprocam", "gradcam",
                 "gradcam++", "scorecam", "sise", "rise", "extremal")
# seconds to minutes per image on a CPU: --slow-limit images, true classes only
SLOW = ("scorecam", "sise", "rise", "extremal")

# the papers' defaults live in the methods themselves; reduced ones only behind --bench-reduced
DEFAULT_SETTINGS: dict[str, dict] = {"rise": {}, "extremal": {}, "sise": {}}
REDUCED_SETTINGS: dict[str, dict] = {"rise": {"n_masks": 800}, "extremal": {"iterations": 80}, "sise": {"mu": 0.5}}

CALIB_IMAGES = 128


def default_methods(kind: str) -> list[str]:
    """The method named like the checkpoint's kind (``explainer``, ``mask_predictor``, …).

    Raises:
        UserError: no method has that name.
    """
    from wysiwyc.attribution import available_methods
    from wysiwyc.errors import UserError

    if kind in available_methods():
        return [kind]
    raise UserError(f"checkpoint kind {kind!r} has no default attribution method; pass --methods "
                    f"(one of: {', '.join(available_methods())})")


def parse_methods(value: str | None, kind: str) -> list[str]:
    """``--methods a,b`` -> ["a", "b"]; None -> :func:`default_methods`."""
    if value:
        return [m.strip() for m in value.split(",") if m.strip()]
    return default_methods(kind)


def bench_devices() -> list[str]:
    """The devices the bench can time here: the CPU, and CUDA when torch sees a GPU."""
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def calibration_images(dataset: str, size: tuple[int, int], n: int = CALIB_IMAGES) -> Any:
    """float32 numpy (n,3,H,W) in [0,1]: the first ``n`` train-split images of ``dataset``."""
    import torch

    from wysiwyc.data import build_dataset, dataset_kwargs

    ds = build_dataset(dataset, "train", size, **dataset_kwargs(dataset, n))
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))]).numpy()


def export_onnx(ckpt: str | os.PathLike[str], out: str | os.PathLike[str], precision: str,
                image_size: tuple[int, int] | None = None, head: str | None = None, top_k: int | None = None) -> Path:
    """Export ``ckpt`` (fused graph, dynamic batch; ``top_k``: masks of each image's top-k
    classes only) at ``precision`` to ``out``; returns ``out``."""
    from wysiwyc.checkpoint import load_checkpoint
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

    spec = load_checkpoint(ckpt).spec
    size = tuple(image_size or spec.image_size)
    calib = calibration_images(spec.dataset, size) if precision == "int8" else None
    export_checkpoint(ckpt, out, ExportOptions(precision=precision, image_size=size, head=head, top_k=top_k), calib)
    return Path(out)


def open_session(path: str | os.PathLike[str]) -> Any:
    """The runtime's open ONNX backend for ``path`` on the CPU provider; ``.session`` is its
    ONNX Runtime session (the backend owns it: keep the backend alive while timing)."""
    from wysiwyc.runtime.backends import open_backend

    return open_backend(path, provider="cpu")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the platform's processor string."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_rows(rows: list[dict], command: str, md: str | None, markdown: str, json_path: str | None) -> None:
    """An experiment's result files, each written atomically when asked for: ``markdown`` to
    ``md``, and ``{"command", "rows"}`` as JSON to ``json_path``."""
    import json

    from wysiwyc.fileio import atomic_path

    if md:
        with atomic_path(md) as tmp:
            Path(tmp).write_text(markdown)
    if json_path:
        with atomic_path(json_path) as tmp:
            Path(tmp).write_text(json.dumps({"command": command, "rows": rows}, indent=2))
