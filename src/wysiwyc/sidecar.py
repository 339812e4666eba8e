"""The TensorRT engine sidecar (a file format) and the machine probe it is checked against.

Engines only run on the TensorRT version and GPU architecture they were built for, so
every engine ``X.engine`` has a sidecar ``X.engine.json``: TensorRT version, GPU name,
compute capability, the model spec, graph, precision, batch profile and source hashes.
``export/to_tensorrt.py`` writes it (:func:`write_sidecar`); the runtime checks it
(:func:`check_engine_sidecar`) before it loads the engine; :func:`read_sidecar` reads it
without checking (e.g. for :func:`wysiwyc.modelfile.read_spec`).

Stdlib-only at import time, below both :mod:`wysiwyc.export` and :mod:`wysiwyc.runtime`:
``tensorrt`` (the ``[trt]`` extra) and ``cuda-python`` are imported inside the functions
that need them, and the GPU is identified with cuda-python or ``nvidia-smi``, never torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .errors import UserError, require
from .fileio import atomic_path
from .formats import FORMATS
from .spec import ModelSpec

SIDECAR_FORMAT = "wysiwyc-engine"


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    return Path(f"{engine}.json")


# -- the machine --------------------------------------------------------------------------
def cudart() -> Any:
    """cuda-python's runtime module (its import path moved in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt
        except ImportError as exc:
            raise UserError("cuda-python is not installed (needed to run TensorRT engines): "
                            "pip install 'wysiwyc[trt]'") from exc
    return rt


def cuda_check(result: Any) -> Any:
    """cuda-python calls return ``(err, *values)``; raise on an error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def _gpu_from_nvidia_smi() -> tuple[str, str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in first:
        return None
    name, cap = (s.strip() for s in first.rsplit(",", 1))
    return name, cap


def current_machine(device: int = 0) -> dict[str, str]:
    """``{"trt_version", "gpu_name", "compute_capability"}`` of this machine.

    The GPU name and compute capability come from cuda-python's ``cudaGetDeviceProperties``
    (``cuda-python`` is in the ``[trt]`` extra because the engine runner needs it anyway, and
    it asks the driver for the same device TensorRT will use), else from
    ``nvidia-smi --query-gpu=name,compute_cap`` (driver >= 510). ``torch.cuda`` is never
    used: this runs inside the torch-free runtime. The TensorRT version is
    ``tensorrt.__version__`` — the one that will deserialize the engine.

    Raises:
        UserError: TensorRT is not installed, or there is no CUDA GPU.
    """
    trt = require("tensorrt", "trt", "TensorRT engines")
    gpu: tuple[str, str] | None = None
    try:
        rt = cudart()
        prop = cuda_check(rt.cudaGetDeviceProperties(device))
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        gpu = (name.strip("\x00 "), f"{prop.major}.{prop.minor}")
    except Exception:  # no cuda-python, no driver (cudaErrorInsufficientDriver), no device: ask nvidia-smi
        gpu = _gpu_from_nvidia_smi()
    if gpu is None:
        raise UserError("TensorRT needs an NVIDIA GPU and none was found (no CUDA device, no nvidia-smi)")
    return {"trt_version": str(trt.__version__), "gpu_name": gpu[0], "compute_capability": gpu[1]}


# -- sidecar ------------------------------------------------------------------------------
def _rebuild_hint(engine: Path, sidecar: dict[str, Any] | None) -> str:
    onnx = (sidecar or {}).get("source_onnx") or "MODEL.onnx"
    fmt = FORMATS["engine"]
    flag = fmt.precision_flags.get((sidecar or {}).get("precision", ""), "")
    return f"rebuild it on this machine: python {fmt.command} {onnx}{' ' + flag if flag else ''} -o {engine}"


def read_sidecar(engine_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The engine's sidecar, parsed, with ``spec`` as a :class:`~wysiwyc.spec.ModelSpec`.

    Raises:
        UserError: missing engine or sidecar, or a malformed sidecar (the message says how
            to rebuild).
    """
    engine = Path(engine_path)
    if not engine.is_file():
        raise UserError(f"engine not found: {engine}")
    side = sidecar_path(engine)
    if not side.is_file():
        raise UserError(f"{engine} has no sidecar {side.name}, so it cannot be checked against this "
                        f"machine; {_rebuild_hint(engine, None)}")
    try:
        meta = json.loads(side.read_text())
        if meta.get("format") != SIDECAR_FORMAT or not isinstance(meta.get("spec"), dict):
            raise ValueError("not a wysiwyc engine sidecar")
        for key in ("tensorrt_version", "compute_capability"):
            meta[key] = str(meta[key])
        meta["spec"] = ModelSpec.from_dict(meta["spec"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{side} is malformed ({exc}); {_rebuild_hint(engine, None)}") from exc
    return meta


def check_engine_sidecar(engine_path: str | os.PathLike[str], *, trt_version: str, gpu_name: str,
                         compute_capability: str) -> dict[str, Any]:
    """The engine's sidecar (:func:`read_sidecar`) if the engine can run here, else raise.

    An engine is tied to the exact TensorRT version and to the GPU architecture (compute
    capability) it was built for; a different GPU model of the same architecture runs it.

    Raises:
        UserError: missing engine or sidecar, malformed sidecar, or a version/architecture
            mismatch — the message says how to rebuild.
    """
    engine = Path(engine_path)
    meta = read_sidecar(engine)
    built_trt, built_cc = meta["tensorrt_version"], meta["compute_capability"]
    if built_trt != str(trt_version):
        raise UserError(f"{engine} was built with TensorRT {built_trt}, this machine has {trt_version}; "
                        f"{_rebuild_hint(engine, meta)}")
    if built_cc != str(compute_capability):
        raise UserError(f"{engine} was built for compute capability {built_cc} ({meta.get('gpu_name', '?')}), "
                        f"this GPU is {gpu_name} ({compute_capability}); {_rebuild_hint(engine, meta)}")
    return meta


def write_sidecar(engine_path: str | os.PathLike[str], machine: dict[str, str], spec: ModelSpec,
                  **fields: Any) -> dict[str, Any]:
    """Write ``engine_path``'s sidecar atomically: the machine (:func:`current_machine`), the
    spec, and ``fields`` (graph, precision, batch profile, sources, ...). Returns it as written."""
    sidecar = {"format": SIDECAR_FORMAT, "tensorrt_version": machine["trt_version"],
               "gpu_name": machine["gpu_name"], "compute_capability": machine["compute_capability"],
               "spec": spec.to_dict(), **fields}
    with atomic_path(sidecar_path(engine_path)) as tmp:
        Path(tmp).write_text(json.dumps(sidecar, indent=2))
    return sidecar
