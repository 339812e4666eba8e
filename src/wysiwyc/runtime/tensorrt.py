"""Running TensorRT engines: the machine check, the engine's sidecar, and the engine runner.

Stdlib-only at import time: the torch-free runtime imports this module. ``tensorrt`` (the
``[trt]`` extra) and ``cuda-python`` are imported inside the functions that need them.
The build lives in :mod:`wysiwyc.export.tensorrt`, which writes the sidecar this module
reads.

Engines only run on the TensorRT version and GPU architecture they were built for, so
every engine has a sidecar ``X.engine.json`` (TensorRT version, GPU name, compute
capability, spec, precision, batch profile, source hashes) that is checked first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import UserError, require
from ..formats import FORMATS, GRAPHS

SIDECAR_FORMAT = "wysiwyc-engine"


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    return Path(f"{engine}.json")


# -- the machine --------------------------------------------------------------------------
def _cudart() -> Any:
    """cuda-python's runtime module (its import path moved in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise UserError("cuda-python is not installed (needed to run TensorRT engines): "
                            "pip install 'wysiwyc[trt]'") from exc
    return cudart


def _cuda_check(result: Any) -> Any:
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
        cudart = _cudart()
        prop = _cuda_check(cudart.cudaGetDeviceProperties(device))
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


def check_engine_sidecar(engine_path: str | os.PathLike[str], *, trt_version: str, gpu_name: str,
                         compute_capability: str) -> dict[str, Any]:
    """Return the engine's sidecar if the engine can run here, else raise.

    An engine is tied to the exact TensorRT version and to the GPU architecture (compute
    capability) it was built for; a different GPU model of the same architecture runs it.

    Raises:
        UserError: missing engine or sidecar, malformed sidecar, or a version/architecture
            mismatch — the message says how to rebuild.
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
        built_trt, built_cc = str(meta["tensorrt_version"]), str(meta["compute_capability"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{side} is malformed ({exc}); {_rebuild_hint(engine, None)}") from exc
    if built_trt != str(trt_version):
        raise UserError(f"{engine} was built with TensorRT {built_trt}, this machine has {trt_version}; "
                        f"{_rebuild_hint(engine, meta)}")
    if built_cc != str(compute_capability):
        raise UserError(f"{engine} was built for compute capability {built_cc} ({meta.get('gpu_name', '?')}), "
                        f"this GPU is {gpu_name} ({compute_capability}); {_rebuild_hint(engine, meta)}")
    return meta


# -- run ----------------------------------------------------------------------------------
def plan_chunks(n: int, profile: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """How a batch of ``n`` images runs on an engine whose profile is (min, opt, max).

    Returns ``(start, stop, run)`` pieces, in order: images ``start:stop`` run as a batch
    of ``run`` = max(stop - start, min) (a piece below the profile minimum is padded by
    repeating its last image; a static-batch engine N/N/N pads every piece to N). Pieces
    hold at most ``max`` images, so any ``n`` runs.
    """
    lo, _, hi = (int(v) for v in profile)
    return [(start, min(n, start + hi), max(min(n, start + hi) - start, lo)) for start in range(0, n, hi)]


class TensorRTEngine:
    """Run a wysiwyc engine: ``engine(images (B,3,H,W) float32) -> (logits (B,C), masks (B,C,H,W))``.

    TensorRT 10+ name-based I/O (``set_input_shape``, ``set_tensor_address``,
    ``execute_async_v3``; https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
    tensorrt-8x-to-10x-python-api-patterns.html) on its own CUDA stream, with buffers from
    cuda-python that are allocated once and reused:

    * device buffers sized for the profile's maximum batch (grown, never per call);
    * pinned (page-locked, ``cudaMallocHost``) host staging buffers for the input and the
      outputs, so the copies are real asynchronous DMA; grown only when a larger piece
      needs them.

    A batch beyond the profile maximum runs in profile-sized pieces (:func:`plan_chunks`);
    a piece below the minimum is padded. Per piece: one host→device copy, the engine, the
    device→host copies, and **one** stream synchronisation, at the end — so the infer stage
    measures the device time and nothing else waits on the GPU. The results are copied out
    of the staging buffers into fresh arrays, because the pipeline keeps batch *n*'s
    outputs while batch *n+1* runs. :meth:`close` frees everything (``__del__`` is the
    fallback).
    """

    OUTPUTS = GRAPHS["fused"].outputs  # ("logits", "masks"): engines hold the fused graph

    def __init__(self, path: str | os.PathLike[str]) -> None:
        trt = require("tensorrt", "trt", "TensorRT engines")
        if not Path(path).is_file():
            raise UserError(f"engine not found: {path}")
        self.trt, self.cudart = trt, _cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        # Runtime.deserialize_cuda_engine(bytes) -> ICudaEngine | None
        # (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Runtime.html)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise UserError(f"{path}: TensorRT could not deserialize the engine; rebuild it on this machine "
                            f"with python export/to_tensorrt.py MODEL.onnx -o {path}")
        self.context = self.engine.create_execution_context()
        # 10.x name-based I/O: num_io_tensors / get_tensor_name replace the binding indices
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if "images" not in self.names or not set(self.OUTPUTS) <= set(self.names):
            raise UserError(f"{path}: expected tensors images -> logits, masks; found {self.names}")
        # the fp16/int8 exports keep float32 I/O (keep_io_types), but honour whatever the engine says
        self.input_dtype = trt.nptype(self.engine.get_tensor_dtype("images"))
        self.output_dtypes = {n: trt.nptype(self.engine.get_tensor_dtype(n)) for n in self.OUTPUTS}
        # (min, opt, max) shapes of profile 0: the batch range pieces are planned in
        self.profile = [tuple(s) for s in self.engine.get_tensor_profile_shape("images", 0)]
        self.stream = _cuda_check(self.cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._pinned: dict[str, tuple[int, Any]] = {}  # name -> (host pointer, uint8 numpy view)

    @property
    def batch_profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch sizes of the engine's profile."""
        return tuple(int(s[0]) for s in self.profile)  # type: ignore[return-value]

    # -- buffers (grown, never freed per call) --------------------------------------
    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda_check(self.cudart.cudaFree(ptr))
            ptr = _cuda_check(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return int(ptr)

    def _pinned_alloc(self, nbytes: int) -> tuple[int, Any]:
        """Page-locked host memory of ``nbytes``: (pointer, uint8 numpy view of it)."""
        import ctypes

        import numpy as np

        ptr = int(_cuda_check(self.cudart.cudaMallocHost(nbytes)))
        return ptr, np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def _pinned_free(self, ptr: int) -> None:
        self.cudart.cudaFreeHost(ptr)

    def _host(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """A (shape, dtype) numpy view of the pinned staging buffer ``name`` (grown when too small)."""
        import numpy as np

        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr, view = self._pinned.get(name, (0, None))
        if view is None or view.nbytes < nbytes:
            if ptr:
                self._pinned_free(ptr)
            ptr, view = self._pinned_alloc(nbytes)
            self._pinned[name] = (ptr, view)
        return view[:nbytes].view(dtype).reshape(shape)

    # -- run --------------------------------------------------------------------------
    def __call__(self, images: Any) -> tuple[Any, Any]:
        """Run the engine on ``images`` (B,3,H,W) float32 in [0,1], any B >= 1.

        Returns:
            ``(logits (B,C), masks (B,C,H,W))`` float32 numpy arrays (host copies the caller owns).
        """
        import numpy as np

        x = np.asarray(images)
        n = int(x.shape[0])
        results: dict[str, Any] = {}
        for start, stop, run in plan_chunks(n, self.batch_profile):
            staged = self._host("images", (run, *x.shape[1:]), self.input_dtype)
            staged[:stop - start] = x[start:stop]
            staged[stop - start:] = x[stop - 1]  # padding up to the profile minimum
            outs = self._execute(staged)
            for name in self.OUTPUTS:
                if name not in results:
                    results[name] = np.empty((n, *outs[name].shape[1:]), np.float32)
                results[name][start:stop] = outs[name][:stop - start]
        return results["logits"], results["masks"]

    def _execute(self, staged: Any) -> dict[str, Any]:
        """Run one piece whose input is already in the pinned ``images`` buffer; returns the
        outputs as views of their pinned buffers (valid until the next piece)."""
        cudart = self.cudart
        # set_input_shape returns False for a shape outside every optimisation profile
        if not self.context.set_input_shape("images", tuple(staged.shape)):
            lo, _, hi = self.profile
            raise UserError(f"input {tuple(staged.shape)} is outside the engine's profile {lo} .. {hi}; rebuild "
                            "with python export/to_tensorrt.py MODEL.onnx --batch MIN OPT MAX")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = int(self.stream)  # cudaStream_t -> the raw handle execute_async_v3 expects
        hi = self.batch_profile[2]
        # device buffers sized for the profile maximum: allocated once, whatever the pieces
        ptr = self._device("images", staged.nbytes // staged.shape[0] * hi)
        _cuda_check(cudart.cudaMemcpyAsync(ptr, staged.ctypes.data, staged.nbytes, h2d, stream))
        self.context.set_tensor_address("images", ptr)
        outs = {}
        for name in self.OUTPUTS:
            # output shapes are known once every input shape is set
            shape = tuple(self.context.get_tensor_shape(name))
            host = self._host(name, shape, self.output_dtypes[name])
            dev = self._device(name, host.nbytes // shape[0] * hi)
            self.context.set_tensor_address(name, dev)
            outs[name] = (host, dev)
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log above)")
        for host, dev in outs.values():
            _cuda_check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, d2h, stream))
        # the one host wait of the piece: afterwards the outputs are in host memory
        _cuda_check(cudart.cudaStreamSynchronize(stream))
        return {name: host for name, (host, _) in outs.items()}

    def close(self) -> None:
        """Free the execution context, the engine, the device and pinned buffers and the
        CUDA stream (idempotent)."""
        self.context = self.engine = None  # the context first: it uses the engine
        buffers, self._buffers = getattr(self, "_buffers", {}), {}
        pinned, self._pinned = getattr(self, "_pinned", {}), {}
        stream, self.stream = getattr(self, "stream", None), None
        for ptr, _ in buffers.values():
            self.cudart.cudaFree(ptr)
        for ptr, _ in pinned.values():
            self._pinned_free(ptr)
        if stream is not None:
            self.cudart.cudaStreamDestroy(stream)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA context may already be gone
            pass
