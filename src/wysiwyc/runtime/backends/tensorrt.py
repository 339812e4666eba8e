"""The TensorRT backend (``.engine``) and its engine runner.

Stdlib-only at import time: the torch-free runtime imports this module. ``tensorrt`` (the
``[trt]`` extra) and ``cuda-python`` are imported inside the functions that need them.
The engine's sidecar is checked against the machine first (:mod:`wysiwyc.sidecar`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserError, require
from ...formats import GRAPHS
from ...sidecar import check_engine_sidecar, cuda_check, cudart, current_machine
from .base import Backend, register_backend

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
        self.trt, self.cudart = trt, cudart()
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
        self.stream = cuda_check(self.cudart.cudaStreamCreate())
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
                cuda_check(self.cudart.cudaFree(ptr))
            ptr = cuda_check(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return int(ptr)

    def _pinned_alloc(self, nbytes: int) -> tuple[int, Any]:
        """Page-locked host memory of ``nbytes``: (pointer, uint8 numpy view of it)."""
        import ctypes

        import numpy as np

        ptr = int(cuda_check(self.cudart.cudaMallocHost(nbytes)))
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
        cuda_check(cudart.cudaMemcpyAsync(ptr, staged.ctypes.data, staged.nbytes, h2d, stream))
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
            cuda_check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, d2h, stream))
        # the one host wait of the piece: afterwards the outputs are in host memory
        cuda_check(cudart.cudaStreamSynchronize(stream))
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


@register_backend("engine")
class TensorRTBackend(Backend):
    """A serialized TensorRT engine built by ``export/to_tensorrt.py``.

    The engine's sidecar ``X.engine.json`` must match this machine (TensorRT version,
    GPU compute capability), else a :class:`~wysiwyc.errors.UserError` says how to rebuild.
    """

    def __init__(self, path: Path, **_: Any) -> None:
        super().__init__(path)

    def _open(self) -> None:
        machine = current_machine()
        sidecar = check_engine_sidecar(self.path, **machine)
        self.spec = sidecar["spec"]
        self.engine = TensorRTEngine(self.path)
        self.name = f"tensorrt {machine.get('trt_version', '')} on {machine.get('gpu_name', 'GPU')}"

    def _close(self) -> None:
        self.engine.close()

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.engine(np.ascontiguousarray(x, np.float32))
