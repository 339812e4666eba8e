"""ONNX -> TensorRT engine, its machine sidecar, and a minimal engine runner.

Stdlib-only at import time: the torch-free runtime imports :func:`current_machine`,
:func:`check_engine_sidecar` and :class:`TensorRTEngine` from here. ``tensorrt`` (the
``[trt]`` extra) and ``cuda-python`` are imported inside the functions that need them.

Building (:func:`build_engine`) follows the documented Python API and branches on the
TensorRT major version:

* **TensorRT 10** — ``Builder.create_network(flags)``, ``OnnxParser.parse_from_file``,
  ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``, one
  ``IOptimizationProfile`` for the dynamic ``images`` batch, ``build_serialized_network``
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/python-api-docs.html).
  An fp16 or int8 ONNX (``export/to_onnx.py --precision fp16|int8``) is built *strongly
  typed* (``1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the graph's own types
  and QDQ nodes decide the precision. ``--fp16`` on an fp32 ONNX uses the weakly typed
  ``BuilderFlag.FP16`` (deprecated since 10.12, still honoured by 10.x).
* **TensorRT 11** — every network is strongly typed (the flag is accepted and ignored,
  and the precision builder flags are gone:
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html),
  so fp16 must already be in the ONNX and ``--fp16`` on an fp32 ONNX is refused with the
  export command to run instead.
* int8 always comes from the ONNX's QDQ nodes (static, symmetric, per-channel — what
  ``export/to_onnx.py --precision int8`` writes). Calibrator-based implicit quantisation
  is deprecated in TensorRT 10 and removed in 11, so it is not offered.

Engines only run on the TensorRT version and GPU architecture they were built for, so
every engine gets a sidecar ``X.engine.json`` (TensorRT version, GPU name, compute
capability, spec, precision, batch profile, source hashes) that the runtime checks first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import UserError, require
from ..fileio import atomic_path
from ..formats import FORMATS, plan_engine_build

SIDECAR_FORMAT = "wysiwyc-engine"


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    return Path(f"{engine}.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def trt_major(version: str) -> int:
    return int(str(version).split(".")[0])


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


# -- build --------------------------------------------------------------------------------
def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The wysiwyc ``metadata_props`` of an ONNX file (raises UserError for a non-ONNX file)."""
    onnx = require("onnx", "export", "reading the ONNX model")
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"{path} is not an ONNX model ({type(exc).__name__})") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if "wysiwyc.spec" not in meta:
        raise UserError(f"{path} has no wysiwyc spec in its metadata: export it with "
                        "`python export/to_onnx.py CHECKPOINT.pt`")
    return meta


def plan_precision(onnx_precision: str, fp16: bool, int8: bool, major: int) -> tuple[bool, str]:
    """(strongly_typed, precision) of the build, or a UserError for an impossible request.

    The rules are the table :data:`wysiwyc.formats.ENGINE_BUILDS`; this maps the
    ``--fp16`` / ``--int8`` flags onto it.
    """
    if fp16 and int8:
        raise UserError("choose one of --fp16 and --int8")
    build = plan_engine_build(onnx_precision, "fp16" if fp16 else "int8" if int8 else None, major)
    return build.strongly_typed, build.precision


def build_engine(onnx_path: str | os.PathLike[str], out: str | os.PathLike[str], *, fp16: bool = False,
                 int8: bool = False, batch: tuple[int, int, int] = (1, 1, 16),
                 workspace_gib: float = 2.0) -> dict[str, Any]:
    """Build ``out`` (+ ``out.json`` sidecar) from a wysiwyc ONNX export. Returns the sidecar.

    Args:
        onnx_path: a fused-graph ONNX from ``export/to_onnx.py`` (input ``images``).
        out: the ``.engine`` path; written atomically, sidecar last.
        fp16, int8: requested precision (see :func:`plan_precision`).
        batch: (min, opt, max) of the optimisation profile for the batch dimension.
        workspace_gib: builder workspace limit in GiB.
    """
    src = Path(onnx_path)
    meta = read_onnx_metadata(src)
    spec = json.loads(meta["wysiwyc.spec"])
    graph = meta.get("wysiwyc.graph", "fused")
    if graph not in FORMATS["engine"].graphs:
        # TensorRTEngine and the runtime read images -> (logits, masks); a masks-only or
        # logits-only graph would build and then fail at the first frame
        raise UserError(f"{src} is a {graph!r} graph; engines are built from the fused graph: "
                        "`python export/to_onnx.py CKPT` (without --graph explainer)")
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise UserError(f"--batch needs 1 ≤ MIN ≤ OPT ≤ MAX, got {lo} {opt} {hi}")
    if not workspace_gib > 0:
        raise UserError(f"--workspace must be > 0 GiB, got {workspace_gib}")
    machine = current_machine()  # raises UserError without tensorrt / GPU
    import tensorrt as trt

    major = trt_major(trt.__version__)
    strongly_typed, precision = plan_precision(meta.get("wysiwyc.precision", "fp32"), fp16, int8, major)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and major == 10:
        # 10.x: opt in per network, `1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`;
        # EXPLICIT_BATCH is ignored (always explicit batch)
        # https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    # 11.x: strongly typed is always on; STRONGLY_TYPED is "retained for API compatibility
    # but ignored", so no flag is passed
    # https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # OnnxParser.parse_from_file reads the model (and any external data) from its path
    # https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/parsers/Onnx/pyOnnx.html
    if not parser.parse_from_file(str(src)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {src}: {errors[:400]}")
    config = builder.create_builder_config()
    # IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes) replaced
    # max_workspace_size in 8.4 and is unchanged in 10 and 11
    # https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/BuilderConfig.html
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16" and not strongly_typed:
        # 10.x only (plan_precision refuses it on 11): weak typing, deprecated since 10.12
        # (https://docs.nvidia.com/deeplearning/tensorrt/latest/getting-started/release-notes-10/10.12.0.html),
        # BuilderFlag.FP16 removed in 11 (https://docs.nvidia.com/deeplearning/tensorrt/latest/api/
        # migration/tensorrt-10x-to-11x-python-api-reference.html)
        config.set_flag(trt.BuilderFlag.FP16)
    # int8 never needs a flag here: the QDQ nodes of a --precision int8 export are explicit
    # quantisation, which strongly typed networks take from the graph as they are
    h, w = (int(v) for v in spec["image_size"])
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (lo, 3, h, w), (opt, 3, h, w), (hi, 3, h, w))
    config.add_optimization_profile(profile)
    t0 = time.time()
    # build_serialized_network -> IHostMemory | None (build_engine was removed in 10.0)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT failed to build an engine from {src} (see the log above)")
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(bytes(plan))
    sidecar = {"format": SIDECAR_FORMAT, "tensorrt_version": machine["trt_version"],
               "gpu_name": machine["gpu_name"], "compute_capability": machine["compute_capability"],
               "spec": spec, "kind": meta.get("wysiwyc.kind", spec.get("kind")),
               "graph": meta.get("wysiwyc.graph", "fused"), "precision": precision, "strongly_typed": strongly_typed,
               "batch": {"min": lo, "opt": opt, "max": hi}, "workspace_gib": workspace_gib,
               "source_onnx": str(src), "source_onnx_sha256": _sha256(src),
               "source_checkpoint_sha256": meta.get("wysiwyc.source_sha256"),
               "build_seconds": round(time.time() - t0, 1)}
    with atomic_path(sidecar_path(out)) as tmp:
        Path(tmp).write_text(json.dumps(sidecar, indent=2))
    return sidecar


# -- run ----------------------------------------------------------------------------------
class TensorRTEngine:
    """Run a wysiwyc engine: ``engine(images (B,3,H,W) float32) -> (logits (B,C), masks (B,C,H,W))``.

    TensorRT 10+ name-based I/O (``set_input_shape``, ``set_tensor_address``,
    ``execute_async_v3``; https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
    tensorrt-8x-to-10x-python-api-patterns.html) with device buffers from cuda-python,
    reallocated only when the batch size changes.
    """

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
        if "images" not in self.names or not {"logits", "masks"} <= set(self.names):
            raise UserError(f"{path}: expected tensors images -> logits, masks; found {self.names}")
        # the fp16/int8 exports keep float32 I/O (keep_io_types), but honour whatever the engine says
        self.input_dtype = trt.nptype(self.engine.get_tensor_dtype("images"))
        # (min, opt, max) shapes of profile 0, for a readable error on an out-of-profile batch
        self.profile = [tuple(s) for s in self.engine.get_tensor_profile_shape("images", 0)]
        self.stream = _cuda_check(self.cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda_check(self.cudart.cudaFree(ptr))
            ptr = _cuda_check(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return int(ptr)

    def __call__(self, images: Any) -> tuple[Any, Any]:
        """Run the engine on ``images`` (B,3,H,W) float32 in [0,1], B inside the build profile.

        Returns:
            ``(logits (B,C), masks (B,C,H,W))`` float32 numpy arrays (host copies).
        """
        import numpy as np

        trt, cudart = self.trt, self.cudart
        x = np.ascontiguousarray(images, dtype=self.input_dtype)
        # set_input_shape returns False for a shape outside every optimisation profile
        if not self.context.set_input_shape("images", tuple(x.shape)):
            lo, _, hi = self.profile
            raise UserError(f"input {tuple(x.shape)} is outside the engine's profile {lo} .. {hi}; rebuild with "
                            "python export/to_tensorrt.py MODEL.onnx --batch MIN OPT MAX")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = int(self.stream)  # cudaStream_t -> the raw handle execute_async_v3 expects
        ptr = self._device("images", x.nbytes)
        _cuda_check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, stream))
        self.context.set_tensor_address("images", ptr)
        outs = {}
        for name in ("logits", "masks"):
            # output shapes are known once every input shape is set
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            outs[name] = (host, self._device(name, host.nbytes))
            self.context.set_tensor_address(name, outs[name][1])
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log above)")
        for host, dev in outs.values():
            _cuda_check(cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, d2h, stream))
        _cuda_check(cudart.cudaStreamSynchronize(stream))
        return outs["logits"][0].astype(np.float32, copy=False), outs["masks"][0].astype(np.float32, copy=False)

    def __del__(self) -> None:
        try:
            for ptr, _ in getattr(self, "_buffers", {}).values():
                self.cudart.cudaFree(ptr)
            if getattr(self, "stream", None) is not None:
                self.cudart.cudaStreamDestroy(self.stream)
        except Exception:  # interpreter shutdown: the CUDA context may already be gone
            pass
