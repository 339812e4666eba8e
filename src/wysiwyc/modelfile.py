"""Read the model spec from any model file: the one reader of ``.pt``, ``.onnx`` and ``.engine``.

Where each format keeps its :class:`~wysiwyc.spec.ModelSpec`:

* ``.pt`` checkpoint — under ``"spec"`` (:mod:`wysiwyc.checkpoint`; needs torch);
* ``.onnx`` export — ``metadata_props``: ``wysiwyc.spec`` (the spec as JSON),
  ``wysiwyc.precision``, ``wysiwyc.graph`` and ``wysiwyc.source_sha256``
  (:func:`onnx_metadata_props` writes them, :func:`spec_from_metadata` reads the spec);
* ``.engine`` — its sidecar ``X.engine.json`` (:mod:`wysiwyc.sidecar`).

:func:`read_spec` picks the reader by suffix and owns the "not a wysiwyc model" error.
Stdlib-only at import time (the torch-free runtime imports it): torch, onnx and
onnxruntime are imported inside the readers that need them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from .errors import UserError
from .formats import FORMATS, format_for, known_files
from .spec import ModelSpec

SPEC_KEY = "wysiwyc.spec"
PRECISION_KEY = "wysiwyc.precision"
GRAPH_KEY = "wysiwyc.graph"
SOURCE_KEY = "wysiwyc.source_sha256"


class ModelFileError(UserError):
    """The file is not a wysiwyc model (missing, foreign, or without a readable spec)."""


def onnx_metadata_props(spec: ModelSpec, precision: str, graph: str, source_sha256: str) -> dict[str, str]:
    """The ``metadata_props`` an ONNX export carries (the spec once, with its kind)."""
    return {SPEC_KEY: spec.to_json(), PRECISION_KEY: precision, GRAPH_KEY: graph, SOURCE_KEY: source_sha256}


def spec_from_metadata(meta: dict[str, str], path: str | os.PathLike[str]) -> ModelSpec:
    """The spec stored by an export in an ONNX file's ``metadata_props`` (``meta``).

    Raises:
        ModelFileError: no spec, or a malformed one.
    """
    raw = meta.get(SPEC_KEY)
    if not raw:
        raise ModelFileError(f"{path} has no wysiwyc spec in its metadata: export it with "
                             f"`python {FORMATS['onnx'].command} CHECKPOINT.pt`")
    try:
        return ModelSpec.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: malformed wysiwyc spec in its metadata ({exc})") from exc


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An ONNX file's ``metadata_props``, read with ``onnx`` when installed (weights are not
    loaded), else with an unoptimised ONNX Runtime session.

    Raises:
        ModelFileError: a missing file or one that is not ONNX.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model not found: {p}")
    if importlib.util.find_spec("onnx") is None:
        return _ort_metadata(p)
    return metadata_props(load_onnx(p))


def metadata_props(proto: Any) -> dict[str, str]:
    """The ``metadata_props`` of a loaded ONNX proto, as a dict."""
    return {e.key: e.value for e in proto.metadata_props}


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """The ONNX proto of ``path`` without its external weights (``onnx`` must be installed:
    callers without it read through ONNX Runtime instead).

    Raises:
        ModelFileError: a missing file or one that is not ONNX.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model not found: {p}")
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelFileError(f"{p} is not an ONNX model ({type(exc).__name__})") from exc


def ort_probe(p: Path) -> Any:
    """An ONNX Runtime CPU session of ``p`` with no graph optimisation (cheap: for reading its
    metadata and I/O where ``onnx`` is not installed).

    Raises:
        ModelFileError: not a loadable ONNX model.
    """
    from .errors import require

    ort = require("onnxruntime", "cpu", "reading .onnx models")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelFileError(f"{p} is not a loadable ONNX model ({type(exc).__name__})") from exc


def _ort_metadata(p: Path) -> dict[str, str]:
    return dict(ort_probe(p).get_modelmeta().custom_metadata_map)


def read_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """The :class:`~wysiwyc.spec.ModelSpec` of a ``.pt`` checkpoint, an ``.onnx`` export or a
    TensorRT ``.engine`` (from its sidecar; the machine is not checked).

    Raises:
        ModelFileError / UserError: a missing file, an unknown suffix, or a file that is not
            a wysiwyc model.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model not found: {p}")
    fmt = format_for(p)
    if fmt is None:
        raise ModelFileError(f"{p}: unknown model type {p.suffix!r}; use {known_files()}")
    return _READERS[fmt.argument](p)


def _pt_spec(p: Path) -> ModelSpec:
    from .checkpoint import load_checkpoint

    return load_checkpoint(p).spec


def _onnx_spec(p: Path) -> ModelSpec:
    return spec_from_metadata(onnx_metadata(p), p)


def _engine_spec(p: Path) -> ModelSpec:
    from .sidecar import read_sidecar

    spec: ModelSpec = read_sidecar(p)["spec"]
    return spec


_READERS: dict[str, Any] = {"torch": _pt_spec, "onnx": _onnx_spec, "engine": _engine_spec}
