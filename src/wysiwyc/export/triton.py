"""A Triton Inference Server model repository from a fused wysiwyc export.

``export/to_triton.py MODEL -o REPO/`` writes ``REPO/NAME/``::

    REPO/NAME/config.pbtxt      the model configuration (Triton's ModelConfig, text format)
    REPO/NAME/labels.txt        the class names, one per line (label_filename of ``logits``)
    REPO/NAME/1/model.onnx      --backend onnxruntime, or python (+ 1/model.py)
    REPO/NAME/1/model.plan      --backend tensorrt (an .engine built by to_tensorrt.py)

The configuration is read off the model, never guessed: the inputs, outputs, data types
and dims come from the ONNX graph (an engine's from its source ONNX, named by its sidecar,
else from the spec), ``max_batch_size`` from the graph's batch dimension (a dynamic one:
``--max-batch-size``; a fixed one N: 0 and the full shape, so the client sends exactly N)
or from the engine's optimisation profile. The wysiwyc spec travels in the config's
``parameters`` (key ``wysiwyc.spec``, the JSON string), so a client needs the server's
address and the model's name and nothing else (:mod:`wysiwyc.runtime.backends.triton`).

Backends:

* ``onnxruntime`` — Triton's ONNX Runtime backend; ``--trt-accelerator`` adds its TensorRT
  execution accelerator (GPU instances only; fp16, or int8 for an int8 export);
* ``tensorrt`` — a serialized engine (``model.plan``), GPU instances only;
* ``python`` — ONNX Runtime inside Triton's Python backend (:data:`PYTHON_MODEL`), the CPU
  fallback that every Triton build can load (its Python needs ``onnxruntime`` and ``numpy``).

The repository is written into a temporary folder beside ``REPO/NAME`` and renamed into
place, so a failed export leaves nothing half-written. :class:`LocalServer` runs the
``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships (with its Python backend)
on such a repository, on 127.0.0.1: what the tests and ``bench/experiments/triton_scale.py``
use. Stdlib-only at import time; ``onnx`` (or ``onnxruntime``) is imported to read a graph.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..formats import GRAPHS, MANY_CLASSES, TOPK_OUTPUTS
from ..modelfile import (GRAPH_KEY, PRECISION_KEY, SPEC_KEY, load_onnx, metadata_props, onnx_metadata,
                         ort_probe, spec_from_metadata)
from ..spec import ModelSpec

BACKENDS = ("onnxruntime", "tensorrt", "python")
KINDS = ("KIND_CPU", "KIND_GPU")
DEFAULT_MAX_BATCH = 16
# Triton's dynamic batcher waits at most this long for more requests to join a batch
DEFAULT_QUEUE_DELAY_US = 500
LABELS_FILE = "labels.txt"
# the backend -> the file its version folder holds
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.onnx"}
# ONNX TensorProto element types / ONNX Runtime type strings -> Triton data types
ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32",
              3: "TYPE_INT8", 2: "TYPE_UINT8", 9: "TYPE_BOOL"}
ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64",
             "tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32", "tensor(int8)": "TYPE_INT8",
             "tensor(uint8)": "TYPE_UINT8", "tensor(bool)": "TYPE_BOOL"}
# the precision of the ONNX (its wysiwyc.precision) -> the TensorRT accelerator's precision_mode
# (an fp32 graph may run in fp16, as the runtime's TensorRT provider does)
TRT_PRECISION_MODES = {"fp32": "FP16", "fp16": "FP16", "int8": "INT8"}


@dataclass
class TritonOptions:
    """What ``to_triton.py`` was asked for (its flags of the same names)."""

    backend: str | None = None  # None: by suffix (.onnx onnxruntime, .engine tensorrt)
    name: str | None = None  # None: the model file's stem
    version: int = 1
    max_batch_size: int | None = None  # None: the engine's profile maximum, else DEFAULT_MAX_BATCH
    dynamic_batching: bool = True
    preferred_batch_sizes: list[int] | None = None
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    kind: str | None = None  # None: KIND_GPU for TensorRT, else KIND_CPU
    trt_accelerator: bool = False
    threads: int | None = None
    force: bool = False


@dataclass
class Tensor:
    """One input or output of the model config: ``dims`` without the batch dimension when
    ``max_batch_size`` > 0 (Triton's convention)."""

    name: str
    data_type: str
    dims: list[int]
    label_filename: str | None = None


@dataclass
class ModelPlan:
    """Everything ``config.pbtxt`` and the version folder hold."""

    name: str
    backend: str
    max_batch_size: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    spec: ModelSpec
    model_file: Path
    kind: str
    instances: int = 1
    dynamic_batching: dict[str, Any] | None = None  # preferred_batch_size, max_queue_delay_microseconds
    parameters: dict[str, str] = field(default_factory=dict)
    accelerator: dict[str, str] | None = None  # the TensorRT accelerator's parameters
    extra_files: list[Path] = field(default_factory=list)  # an ONNX's external-data files


# -- reading the model -------------------------------------------------------------------------
def graph_io(path: Path, proto: Any = None) -> tuple[dict[str, tuple[str, list[int]]],
                                                      dict[str, tuple[str, list[int]]]]:
    """(inputs, outputs) of an ONNX graph, in graph order: name -> (Triton data type, shape),
    a symbolic dimension as -1. From ``proto`` when the caller has loaded it, else read with
    ``onnx`` (weights not loaded), else ONNX Runtime."""
    if proto is None:
        if importlib.util.find_spec("onnx") is None:
            return _ort_io(path)
        proto = load_onnx(path)

    def one(v: Any) -> tuple[str, list[int]]:
        t = v.type.tensor_type
        dims = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
        return ONNX_TYPES.get(t.elem_type, f"elem_type {t.elem_type}"), dims

    weights = {i.name for i in proto.graph.initializer}
    return ({v.name: one(v) for v in proto.graph.input if v.name not in weights},
            {v.name: one(v) for v in proto.graph.output})


def _ort_io(path: Path) -> tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]]]:
    sess = ort_probe(path)

    def one(v: Any) -> tuple[str, list[int]]:
        return ORT_TYPES.get(v.type, v.type), [d if isinstance(d, int) and d > 0 else -1 for d in v.shape]

    return {v.name: one(v) for v in sess.get_inputs()}, {v.name: one(v) for v in sess.get_outputs()}


def external_data_files(path: Path, proto: Any = None) -> list[Path]:
    """The files an ONNX keeps its large weights in (``location`` of external tensors), which
    travel with it; ``[]`` without ``onnx`` (then nothing can be external-data-aware).
    ``proto``: the loaded ONNX when the caller has it."""
    try:
        import onnx
    except ImportError:
        return []
    if proto is None:
        proto = load_onnx(path)
    names = {e.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
             for e in t.external_data if e.key == "location"}
    return [path.parent / n for n in sorted(names)]


def _check_fused_io(src: Path, ins: dict[str, Any], outs: dict[str, Any], spec: ModelSpec) -> None:
    """The graph is the fused one the runtime reads: ``images`` (B,3,H,W) at the spec's size in,
    ``logits, masks`` or ``logits, classes, masks`` out."""
    names = list(outs)
    if names == list(GRAPHS["masks"].outputs):
        raise UserError(f"{src} is a masks-only graph (--graph masks); Triton serves the fused graph: "
                        "export with --graph fused (the default)")
    if list(ins) != ["images"] or names not in (list(GRAPHS["fused"].outputs), list(TOPK_OUTPUTS)):
        raise UserError(f"{src}: expected input 'images' and outputs 'logits', 'masks' (or 'logits', 'classes', "
                        f"'masks'), got {list(ins)} -> {names}; export it with `python export/to_onnx.py`")
    shape = ins["images"][1]
    if len(shape) != 4 or shape[1] != 3:
        raise UserError(f"{src}: input 'images' has shape {shape}, expected (B,3,H,W)")
    hw = tuple(shape[2:4])
    if all(d > 0 for d in hw) and hw != tuple(spec.image_size):
        raise UserError(f"{src}: graph input is {hw[0]}x{hw[1]} but its spec says "
                        f"{spec.image_size[0]}x{spec.image_size[1]}; re-export the model")


def _tensors(io: dict[str, tuple[str, list[int]]], batched: bool, spec: ModelSpec) -> list[Tensor]:
    """Config tensors of a graph's inputs or outputs (the batch dimension dropped when
    ``batched``; the spec's size for an image dimension the graph leaves symbolic)."""
    out = []
    for name, (dtype, shape) in io.items():
        if not dtype.startswith("TYPE_"):
            raise UserError(f"tensor {name!r} has a data type Triton cannot serve ({dtype})")
        dims = list(shape[1:] if batched else shape)
        if name in ("images", "masks") and len(dims) >= 2:
            dims[-2:] = [d if d > 0 else int(s) for d, s in zip(dims[-2:], spec.image_size)]
        out.append(Tensor(name, dtype, dims, LABELS_FILE if name == "logits" else None))
    return out


def plan_onnx(src: Path, opts: TritonOptions, backend: str) -> ModelPlan:
    """The plan for an ``.onnx`` export served by ``onnxruntime`` or ``python``.

    Raises:
        UserError: not a wysiwyc fused export, or options it cannot take.
    """
    # One parse of the file serves the metadata, the graph's inputs/outputs and its external data.
    proto = load_onnx(src) if importlib.util.find_spec("onnx") is not None else None
    meta = metadata_props(proto) if proto is not None else onnx_metadata(src)
    spec = spec_from_metadata(meta, src)
    if meta.get(GRAPH_KEY, "fused") != "fused":
        raise UserError(f"{src} is a {meta[GRAPH_KEY]!r} graph; Triton serves the fused graph: export with "
                        "--graph fused (the default)")
    ins, outs = graph_io(src, proto)
    _check_fused_io(src, ins, outs, spec)
    static = ins["images"][1][0]
    if static > 0 and opts.max_batch_size is not None:
        raise UserError(f"--max-batch-size: {src} has a fixed batch of {static} (exported with --batch "
                        f"{static}), so Triton serves it with max_batch_size 0 and batches of exactly {static}; "
                        "leave out --max-batch-size, or export with a dynamic batch")
    max_batch = 0 if static > 0 else (opts.max_batch_size or DEFAULT_MAX_BATCH)
    plan = ModelPlan(name="", backend=backend, max_batch_size=max_batch, inputs=_tensors(ins, max_batch > 0, spec),
                     outputs=_tensors(outs, max_batch > 0, spec), spec=spec, model_file=src,
                     kind=opts.kind or ("KIND_GPU" if opts.trt_accelerator else "KIND_CPU"),
                     extra_files=external_data_files(src, proto))
    if opts.trt_accelerator:
        plan.accelerator = {"precision_mode": TRT_PRECISION_MODES.get(meta.get(PRECISION_KEY, "fp32"), "FP16"),
                            "max_workspace_size_bytes": str(2 << 30), "trt_engine_cache_enable": "1",
                            "trt_engine_cache_path": "/tmp/triton_trt_cache"}
    return plan


def _engine_io(engine: Path, side: dict[str, Any], spec: ModelSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The engine's inputs and outputs (full shapes, batch -1): from the ONNX it was built from
    when the sidecar's file is still there unchanged, else the fused graph the spec implies."""
    from ..fileio import file_sha256

    onnx_src = Path(str(side.get("source_onnx") or ""))
    if onnx_src.is_file() and file_sha256(onnx_src) == side.get("source_onnx_sha256"):
        ins, outs = graph_io(onnx_src)
        _check_fused_io(onnx_src, ins, outs, spec)
        return ins, outs
    if spec.num_classes > MANY_CLASSES:
        raise UserError(f"{engine}: a {spec.num_classes}-class model may have a top-k graph, and the ONNX it was "
                        f"built from ({onnx_src or 'unknown'}) is not there to tell; put it back where the sidecar "
                        "says, unchanged")
    h, w = (int(v) for v in spec.image_size)
    c = spec.num_classes
    return ({"images": ("TYPE_FP32", [-1, 3, h, w])},
            {"logits": ("TYPE_FP32", [-1, c]), "masks": ("TYPE_FP32", [-1, c, h, w])})


def plan_engine(src: Path, opts: TritonOptions) -> ModelPlan:
    """The plan for a TensorRT ``.engine`` (``tensorrt`` backend): its spec and batch profile
    from the sidecar (:func:`wysiwyc.sidecar.read_sidecar`; the machine is not checked here,
    the server's GPU is what counts).

    Raises:
        UserError: no sidecar, a masks-only engine, a profile Triton cannot use, bad options.
    """
    from ..sidecar import read_sidecar

    side = read_sidecar(src)
    spec: ModelSpec = side["spec"]
    if side.get("graph", "fused") != "fused":
        raise UserError(f"{src} was built from a {side['graph']!r} graph; Triton serves the fused graph")
    if opts.kind == "KIND_CPU":
        raise UserError("--backend tensorrt runs on GPU instances only: leave out --kind KIND_CPU")
    if opts.trt_accelerator or opts.threads:
        raise UserError(f"{'--trt-accelerator' if opts.trt_accelerator else '--threads'} is for the "
                        "onnxruntime backend; an engine is TensorRT already")
    prof = side.get("batch") or {}
    lo, opt, hi = (int(prof.get(k, 1)) for k in ("min", "opt", "max"))
    ins, outs = _engine_io(src, side, spec)
    if lo == hi:  # built for exactly N: Triton must send N
        if opts.max_batch_size is not None:
            raise UserError(f"--max-batch-size: {src} is built for batches of exactly {hi}; leave it out")
        for io in (ins, outs):
            for name, (dtype, shape) in io.items():
                io[name] = (dtype, [hi, *shape[1:]])
        max_batch = 0
    elif lo > 1:
        raise UserError(f"{src}: its profile starts at batch {lo}, and Triton sends any batch from 1; rebuild "
                        f"with `python export/to_tensorrt.py MODEL.onnx --batch 1 {opt} {hi}`")
    else:
        max_batch = opts.max_batch_size or hi
        if max_batch > hi:
            raise UserError(f"--max-batch-size {max_batch} is above the engine's profile maximum {hi}")
    plan = ModelPlan(name="", backend="tensorrt", max_batch_size=max_batch, inputs=_tensors(ins, max_batch > 0, spec),
                     outputs=_tensors(outs, max_batch > 0, spec), spec=spec, model_file=src, kind="KIND_GPU")
    if opts.preferred_batch_sizes is None and max_batch and 1 < opt < max_batch:
        plan.dynamic_batching = {"preferred_batch_size": [opt]}  # the size the engine was tuned for
    return plan


def plan_model(src: str | os.PathLike[str], opts: TritonOptions) -> ModelPlan:
    """Read ``src`` and check ``opts``: the complete :class:`ModelPlan` of its repository entry.

    Raises:
        UserError: a missing file, not a wysiwyc fused export, an unknown backend, a file the
            backend cannot take, options that contradict each other.
    """
    p = Path(src)
    if not p.is_file():
        raise UserError(f"model not found: {p}")
    suffix = p.suffix.lower()
    if suffix not in (".onnx", ".engine"):
        raise UserError(f"{p}: Triton serves an .onnx export or a TensorRT .engine, not {p.suffix or 'this file'}")
    backend = opts.backend or ("tensorrt" if suffix == ".engine" else "onnxruntime")
    if backend not in BACKENDS:
        raise UserError(f"unknown --backend {backend!r}; choose from {', '.join(BACKENDS)}")
    wants = ".engine" if backend == "tensorrt" else ".onnx"
    if suffix != wants:
        raise UserError(f"--backend {backend} takes {'a TensorRT .engine' if wants == '.engine' else 'an .onnx export'}"
                        f", not {p.name}" + ("; use --backend tensorrt" if suffix == ".engine" else ""))
    _check_options(opts, backend)
    plan = plan_engine(p, opts) if backend == "tensorrt" else plan_onnx(p, opts, backend)
    plan.name = model_name(opts.name or p.stem)
    plan.instances = opts.instances
    _batching(plan, opts)
    plan.parameters[SPEC_KEY] = plan.spec.to_json()
    if opts.threads:
        plan.parameters["intra_op_thread_count"] = str(opts.threads)  # the onnxruntime backend's own key
    return plan


def _check_options(opts: TritonOptions, backend: str) -> None:
    if opts.kind is not None and opts.kind not in KINDS:
        raise UserError(f"unknown --kind {opts.kind!r}; choose from {', '.join(KINDS)}")
    if opts.trt_accelerator and backend != "onnxruntime":
        raise UserError(f"--trt-accelerator is an option of the onnxruntime backend, not of {backend}")
    if opts.trt_accelerator and opts.kind == "KIND_CPU":
        raise UserError("--trt-accelerator needs GPU instances: leave out --kind KIND_CPU")
    for flag, val, low in (("--instances", opts.instances, 1), ("--max-batch-size", opts.max_batch_size, 1),
                           ("--queue-delay-us", opts.queue_delay_us, 0), ("--threads", opts.threads, 1),
                           ("--version", opts.version, 1)):
        if val is not None and val < low:
            raise UserError(f"{flag} {val} is out of range (at least {low})")


def _batching(plan: ModelPlan, opts: TritonOptions) -> None:
    """The dynamic batcher, unless turned off or the model takes a fixed batch only."""
    preferred = sorted(set(opts.preferred_batch_sizes or [])) or None
    if not opts.dynamic_batching or plan.max_batch_size == 0:
        if preferred:
            why = "--no-dynamic-batching" if not opts.dynamic_batching else "a fixed-batch model (max_batch_size 0)"
            raise UserError(f"--preferred-batch-size has no dynamic batcher to apply to ({why})")
        plan.dynamic_batching = None
        return
    if preferred and (preferred[0] < 1 or preferred[-1] > plan.max_batch_size):
        raise UserError(f"--preferred-batch-size {' '.join(map(str, preferred))}: each must be in 1.."
                        f"{plan.max_batch_size} (max_batch_size)")
    db: dict[str, Any] = dict(plan.dynamic_batching or {})
    if preferred:
        db["preferred_batch_size"] = preferred
    db["max_queue_delay_microseconds"] = int(opts.queue_delay_us)
    plan.dynamic_batching = db


def model_name(name: str) -> str:
    """A Triton model name (its folder's name: no path separators, not hidden)."""
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name:
        raise UserError(f"--name {name!r}: a model name is a folder name (no '/', not starting with '.')")
    return name


# -- config.pbtxt ------------------------------------------------------------------------------
def pb_string(s: str) -> str:
    """``s`` as a protobuf text-format string literal: quotes, backslashes and control
    characters escaped, non-ASCII as octal UTF-8 bytes (what every text-format parser reads)."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c in "\"\\":
            out.append("\\" + c)
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _tensor_text(t: Tensor) -> str:
    label = f" label_filename: {pb_string(t.label_filename)}" if t.label_filename else ""
    return (f"  {{ name: {pb_string(t.name)} data_type: {t.data_type} "
            f"dims: [ {', '.join(str(d) for d in t.dims)} ]{label} }}")


def config_pbtxt(plan: ModelPlan) -> str:
    """The ``config.pbtxt`` of ``plan`` (Triton's ModelConfig in protobuf text format)."""
    lines = [f"name: {pb_string(plan.name)}", f"backend: {pb_string(plan.backend)}",
             f"max_batch_size: {plan.max_batch_size}"]
    if plan.backend != "python":
        lines.append(f"default_model_filename: {pb_string(MODEL_FILES[plan.backend])}")
    for key, tensors in (("input", plan.inputs), ("output", plan.outputs)):
        lines += [f"{key} [", ",\n".join(_tensor_text(t) for t in tensors), "]"]
    if plan.dynamic_batching is not None:
        db = plan.dynamic_batching
        pref = db.get("preferred_batch_size")
        lines.append("dynamic_batching {" + (f" preferred_batch_size: [ {', '.join(map(str, pref))} ]" if pref else "")
                     + f" max_queue_delay_microseconds: {int(db.get('max_queue_delay_microseconds', 0))} }}")
    lines.append(f"instance_group [ {{ count: {plan.instances} kind: {plan.kind} }} ]")
    if plan.accelerator is not None:
        params = "\n".join(f"      parameters {{ key: {pb_string(k)} value: {pb_string(v)} }}"
                           for k, v in plan.accelerator.items())
        lines += ["optimization { execution_accelerators {", "  gpu_execution_accelerator : [ {",
                  '      name : "tensorrt"', params, "  } ]", "} }"]
    for key, value in plan.parameters.items():
        lines.append(f"parameters {{ key: {pb_string(key)} value: {{ string_value: {pb_string(value)} }} }}")
    return "\n".join(lines) + "\n"


# The Python backend's model (1/model.py): the fused ONNX run by ONNX Runtime in the server's
# Python; every request of a dynamic batch goes through one session run. Written verbatim.
PYTHON_MODEL = '''"""Triton Python-backend model written by wysiwyc's export/to_triton.py.

Runs 1/model.onnx, a fused wysiwyc export (images (B,3,H,W) float RGB in [0,1] -> logits
(B,C), masks (B,C,H,W), or logits, classes (B,K), masks (B,K,H,W)), with ONNX Runtime. The
requests of one dynamic batch are concatenated into one session run and split again. The
server's Python needs numpy and onnxruntime (onnxruntime-gpu for KIND_GPU instances).
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# A Python-backend stub built with a pybind11 older than numpy 2 misreads numpy 2's dtype
# struct: as_numpy() hands over wrong input data and pb_utils.Tensor(name, array) sends
# outputs without data. DLPack passes the buffers without that struct, so with numpy 2 the
# tensors go through it both ways. The stub renames a capsule it consumed to "used_dlpack",
# which numpy's capsule destructor does not know: it reports a ValueError (and leaves the
# freeing to the stub, which does it); that one report is silenced.
DLPACK = int(np.__version__.split(".")[0]) >= 2


def _quiet_capsules(unraisable, _default=sys.unraisablehook):
    if isinstance(unraisable.exc_value, ValueError) and "PyCapsule_GetPointer" in str(unraisable.exc_value):
        return
    _default(unraisable)


if DLPACK:
    sys.unraisablehook = _quiet_capsules


def _array(tensor):
    return np.from_dlpack(tensor) if DLPACK else tensor.as_numpy()


def _tensor(name, array):
    array = np.ascontiguousarray(array)
    return pb_utils.Tensor.from_dlpack(name, array) if DLPACK else pb_utils.Tensor(name, array)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if params.get("intra_op_thread_count"):
            opts.intra_op_num_threads = int(params["intra_op_thread_count"])
        # idle intra-op threads would spin on cores other instances and the server need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.isfile(path):  # the version folder is where this file is
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.onnx")
        self.session = ort.InferenceSession(path, opts, providers=providers)
        self.outputs = [o["name"] for o in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests):
        arrays = [_array(pb_utils.get_input_tensor_by_name(r, "images")) for r in requests]
        if not self.batched:  # a fixed-batch graph: each request is one whole batch
            return [self._run_one(a) for a in arrays]
        sizes = [len(a) for a in arrays]
        try:
            x = np.ascontiguousarray(np.concatenate(arrays) if len(arrays) > 1 else arrays[0], dtype=np.float32)
            outs = self.session.run(self.outputs, {"images": x})
        except Exception as exc:  # a bad request must not take the model down
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]
        return self._respond(outs, sizes)

    def _run_one(self, a):
        try:
            outs = self.session.run(self.outputs, {"images": np.ascontiguousarray(a, dtype=np.float32)})
        except Exception as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
        return self._respond(outs, [len(a)])[0]

    def _respond(self, outs, sizes):
        responses, start = [], 0
        for n in sizes:
            tensors = [_tensor(name, o[start:start + n]) for name, o in zip(self.outputs, outs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self):
        self.session = None
'''


# -- the repository ----------------------------------------------------------------------------
def write_repository(src: str | os.PathLike[str], repo: str | os.PathLike[str], opts: TritonOptions) -> ModelPlan:
    """Write ``repo/NAME/`` for the model ``src`` (see the module doc); returns its plan.

    The entry is built in a temporary folder inside ``repo`` and renamed into place (an
    existing entry is replaced only with ``opts.force``, and only once the new one is
    complete), so an error leaves ``repo`` as it was.

    Raises:
        UserError: everything :func:`plan_model` refuses, an existing entry without ``force``,
            a repository folder that cannot be written.
    """
    plan = plan_model(src, opts)
    bad = [n for n in plan.spec.class_names if "\n" in n or "\r" in n]
    if bad:
        raise UserError(f"class name {bad[0]!r} spans lines; {LABELS_FILE} holds one name per line")
    root = Path(repo)
    dest = root / plan.name
    if (dest.exists() or dest.is_symlink()) and not opts.force:
        raise UserError(f"{dest} exists: add --force to replace it")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{plan.name}.", suffix=".tmp", dir=root))
    except OSError as exc:
        raise UserError(f"cannot write the model repository {root}: {exc.strerror or exc}") from exc
    try:
        _fill(tmp, plan, opts.version)
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan


def _fill(folder: Path, plan: ModelPlan, version: int) -> None:
    """The entry's files: config, labels, the version folder with the model (and model.py)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp makes 0700; a server in a container may run as another user
    (folder / "config.pbtxt").write_text(config_pbtxt(plan), encoding="utf-8")
    (folder / LABELS_FILE).write_text("".join(n + "\n" for n in plan.spec.class_names), encoding="utf-8")
    vdir = folder / str(version)
    vdir.mkdir()
    try:
        shutil.copyfile(plan.model_file, vdir / MODEL_FILES[plan.backend])
        for extra in plan.extra_files:
            shutil.copyfile(extra, vdir / extra.name)
    except OSError as exc:
        raise UserError(f"cannot copy {plan.model_file} into the repository: {exc.strerror or exc}") from exc
    if plan.backend == "python":
        (vdir / "model.py").write_text(PYTHON_MODEL, encoding="utf-8")


def _swap_in(new: Path, dest: Path) -> None:
    """Rename the complete entry ``new`` to ``dest``; an old ``dest`` is moved aside first
    and removed only once the new one is in place (put back if that fails)."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(new, dest)
    except OSError as exc:
        if old is not None:
            os.replace(old, dest)
        raise UserError(f"cannot move the new entry into {dest}: {exc.strerror or exc}") from exc
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def read_config_text(text: str) -> Any:
    """``config.pbtxt`` text -> Triton's own ``ModelConfig`` message (tritonclient ships its
    protobuf module: the ``triton`` extra), so a written config is checked by the schema the
    server uses."""
    from ..errors import require

    require("tritonclient.grpc", "triton", "reading Triton model configs")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


# -- a local server ----------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerStartError(UserError):
    """The local ``tritonserver`` cannot run here (not installed, or it exits before serving)."""


def pytriton_dist() -> tuple[Path, Path, Path]:
    """(the ``tritonserver`` binary, its bundled libraries, the Python-backend stub for this
    Python) inside the installed ``nvidia-pytriton`` wheel, found without importing it.

    Raises:
        ServerStartError: the wheel is not installed, or has no stub for this Python.
    """
    import importlib.util

    found = importlib.util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        raise ServerStartError("nvidia-pytriton is not installed (it ships the tritonserver binary): "
                               "pip install --no-deps nvidia-pytriton")
    pkg = Path(next(iter(found.submodule_search_locations)))
    binary = pkg / "tritonserver" / "bin" / "tritonserver"
    stub = pkg / "tritonserver" / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / \
        "triton_python_backend_stub"
    libs = next((d for d in (pkg.parent / "nvidia_pytriton.libs", pkg / "tritonserver" / "external_libs")
                 if d.is_dir()), pkg.parent / "nvidia_pytriton.libs")
    for need in (binary, stub):
        if not need.is_file():
            raise ServerStartError(f"{need} is missing from nvidia-pytriton (Python {sys.version_info[0]}."
                                   f"{sys.version_info[1]} has no Python-backend stub there?)")
    return binary, libs, stub


class LocalServer:
    """The ``tritonserver`` of the ``nvidia-pytriton`` wheel, run on ``repo`` on 127.0.0.1.

    What the wheel needs and :class:`pytriton.triton.Triton` itself sets up: its bundled
    libraries on ``LD_LIBRARY_PATH``, a backend folder holding the Python-backend stub built
    for this Python, and this Python's ``bin`` first on ``PATH`` so the stub's embedded
    interpreter finds this environment (and its numpy and onnxruntime). Free ports are picked
    unless given; metrics are off unless ``metrics``. The server runs in its own process
    group (the Python-backend stubs are its children), so :meth:`kill` takes them all.

    Example::

        with LocalServer("repo") as server:   # started, all models ready
            url = server.grpc_url            # 127.0.0.1:PORT
    """

    def __init__(self, repo: str | os.PathLike[str], grpc_port: int | None = None, http_port: int | None = None,
                 metrics: bool = False) -> None:
        self.repo = Path(repo).resolve()
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = free_port() if metrics else None
        self.proc: subprocess.Popen | None = None
        self.home = Path(tempfile.mkdtemp(prefix="wysiwyc-tritonserver-"))
        self.log_path = self.home / "server.log"
        self._starts = 0
        self._prefixes: list[str] = []

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _backends(self) -> Path:
        """This server's backend folder: the wheel's Python backend with this Python's stub."""
        binary, _, stub = pytriton_dist()
        dest = self.home / "backends"
        if not dest.is_dir():
            shutil.copytree(binary.parents[1] / "backends", dest, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(stub, dest / "python" / "triton_python_backend_stub")
        return dest

    def _env(self) -> dict[str, str]:
        _, libs, _ = pytriton_dist()
        env = dict(os.environ)
        paths = [str(libs)]
        if sysconfig.get_config_var("Py_ENABLE_SHARED"):  # the stub links libpython: this Python's, not another 3.x
            paths.insert(0, str(sysconfig.get_config_var("LIBDIR")))
        env["LD_LIBRARY_PATH"] = ":".join(paths + [p for p in [env.get("LD_LIBRARY_PATH", "")] if p])
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def command(self) -> list[str]:
        """The ``tritonserver`` command line (a new shared-memory prefix each start: a killed
        server's regions may still be there)."""
        binary, _, _ = pytriton_dist()
        self._starts += 1
        prefix = f"wysiwyc_{os.getpid()}_{id(self) & 0xFFFF:x}_{self._starts}_"
        self._prefixes.append(prefix)
        metrics = ["--allow-metrics=false"] if self.metrics_port is None else [
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}"]
        return [str(binary), f"--model-repository={self.repo}", f"--backend-directory={self._backends()}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}", "--grpc-address=127.0.0.1",
                f"--grpc-port={self.grpc_port}", *metrics, "--exit-on-error=false", "--exit-timeout-secs=5",
                f"--backend-config=python,shm-region-prefix-name={prefix}",
                "--backend-config=python,shm-default-byte-size=8388608",
                "--backend-config=python,shm-growth-byte-size=8388608", "--log-verbose=0"]

    def start(self, timeout_s: float = 60.0) -> "LocalServer":
        """Start the server and wait until it is live (its endpoints answer).

        Raises:
            ServerStartError: the binary is missing, exits, or is not live in ``timeout_s``
                (the message ends with its last log line).
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the server is running already")
        cmd, env = self.command(), self._env()
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, start_new_session=True)
            except OSError as exc:
                raise ServerStartError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from exc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"tritonserver exited with status {self.proc.returncode}: {self.log_tail(1)}")
            if self._health("live"):
                return self
            time.sleep(0.2)
        self.kill()
        raise ServerStartError(f"tritonserver was not live after {timeout_s:.0f} s: {self.log_tail(1)}")

    def _health(self, what: str) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/{what}", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Whether every model of the repository is loaded and ready within ``timeout_s``
        (``False`` at once when the server has exited)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self._health("ready"):
                return True
            time.sleep(0.2)
        return False

    def log_tail(self, lines: int = 20) -> str:
        """The server log's last ``lines`` non-empty lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])

    def kill(self) -> None:
        """SIGKILL the server and its stubs (its process group), as a crash would."""
        self._signal(signal.SIGKILL, 10.0)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (Triton finishes its requests, up to ``--exit-timeout-secs``), then SIGKILL."""
        if not self._signal(signal.SIGTERM, timeout_s):
            self.kill()

    def _signal(self, sig: int, timeout_s: float) -> bool:
        """Send ``sig`` to the server's group; whether it has exited within ``timeout_s``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the group this server leads (start_new_session)
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def close(self) -> None:
        """Stop the server and remove its folder and its shared-memory regions."""
        self.stop()
        for prefix in self._prefixes:
            for f in Path("/dev/shm").glob(prefix + "*"):
                with contextlib.suppress(OSError):
                    f.unlink()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "LocalServer":
        self.start()
        if not self.wait_ready():
            log = self.log_tail()
            self.close()
            raise UserError(f"tritonserver is live but its models are not ready:\n{log}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(plan: ModelPlan, dest: Path) -> str:
    """One line for the user: what was written and how to serve it."""
    db = plan.dynamic_batching
    preferred = db.get("preferred_batch_size") if db else None
    batching = "off" if db is None else (f"max queue delay {db['max_queue_delay_microseconds']} µs"
                                         + (f", preferred {preferred}" if preferred else ""))
    return (f"wrote {dest}/ ({plan.backend} backend, max_batch_size {plan.max_batch_size}, dynamic batching "
            f"{batching}, {plan.instances} × {plan.kind}, {plan.spec.num_classes} classes): serve it with "
            f"`tritonserver --model-repository={dest.parent}`, run it with `runtime-explain --model "
            f"triton://HOST:8001/{plan.name}`")

