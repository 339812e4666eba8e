"""ONNX -> TensorRT engine and its machine sidecar.

Stdlib-only at import time; ``tensorrt`` (the ``[trt]`` extra) is imported inside the
functions that need it. The sidecar format and the machine probe are
:mod:`wysiwyc.sidecar` (shared with the runtime, which runs engines in
:mod:`wysiwyc.runtime.backends.tensorrt`).

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
The precision rules are the table :data:`wysiwyc.formats.ENGINE_BUILDS`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import UserError, require
from ..fileio import atomic_path, file_sha256
from ..formats import FORMATS, plan_batch_profile, plan_engine_build
from ..modelfile import GRAPH_KEY, PRECISION_KEY, SOURCE_KEY, load_onnx, onnx_metadata, spec_from_metadata
from ..sidecar import current_machine, write_sidecar


def trt_major(version: str) -> int:
    return int(str(version).split(".")[0])


# -- build --------------------------------------------------------------------------------
def _load_onnx(path: Path) -> Any:
    """The ONNX proto without external weights (raises UserError for a missing/non-ONNX file)."""
    require("onnx", "export", "reading the ONNX model")
    return load_onnx(path)


def onnx_static_batch(path: Path) -> int | None:
    """The fixed batch size of the ONNX's ``images`` input (``to_onnx --batch N``), or
    ``None`` when the batch dimension is symbolic (dynamic)."""
    for inp in _load_onnx(path).graph.input:
        if inp.name == "images":
            dim = inp.type.tensor_type.shape.dim[0]
            # a dynamic axis has dim_param ("batch") and dim_value 0
            return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None
    return None


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
                 int8: bool = False, batch: tuple[int, int, int] | None = None,
                 workspace_gib: float = 2.0) -> dict[str, Any]:
    """Build ``out`` (+ ``out.json`` sidecar) from a wysiwyc ONNX export. Returns the sidecar.

    Args:
        onnx_path: a fused-graph ONNX from ``export/to_onnx.py`` (input ``images``).
        out: the ``.engine`` path; written atomically, sidecar last.
        fp16, int8: requested precision (see :func:`plan_precision`).
        batch: (min, opt, max) of the optimisation profile for the batch dimension;
            ``None``: :data:`~wysiwyc.formats.DEFAULT_BATCH_PROFILE`, or N N N for a
            static-batch ONNX (see :func:`~wysiwyc.formats.plan_batch_profile`).
        workspace_gib: builder workspace limit in GiB.
    """
    src = Path(onnx_path)
    meta, batch = _check_request(src, batch, workspace_gib)
    spec = spec_from_metadata(meta, src)
    machine = current_machine()  # raises UserError without tensorrt / GPU
    import tensorrt as trt

    major = trt_major(trt.__version__)
    strongly_typed, precision = plan_precision(meta.get(PRECISION_KEY, "fp32"), fp16, int8, major)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, parser = _parse_onnx(trt, builder, logger, src, strongly_typed and major == 10)
    h, w = spec.image_size
    config = _builder_config(trt, builder, precision, strongly_typed, workspace_gib, (3, h, w), batch)
    t0 = time.time()
    # build_serialized_network -> IHostMemory | None (build_engine was removed in 10.0)
    plan = builder.build_serialized_network(network, config)
    del parser  # kept alive until the build: the network may use weights the parser owns
    if plan is None:
        raise UserError(f"TensorRT failed to build an engine from {src} (see the log above)")
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(bytes(plan))
    lo, opt, hi = batch
    sidecar = write_sidecar(out, machine, spec, graph=meta.get(GRAPH_KEY, "fused"), precision=precision,
                            strongly_typed=strongly_typed, batch={"min": lo, "opt": opt, "max": hi},
                            workspace_gib=workspace_gib, source_onnx=str(src), source_onnx_sha256=file_sha256(src),
                            source_checkpoint_sha256=meta.get(SOURCE_KEY), build_seconds=round(time.time() - t0, 1))
    return sidecar


def _check_request(src: Path, batch: tuple[int, int, int] | None,
                   workspace_gib: float) -> tuple[dict[str, str], tuple[int, int, int]]:
    """The ONNX's wysiwyc metadata and the batch profile to build, after checking what can
    be checked without TensorRT: the file, its graph, the profile and the workspace."""
    meta = onnx_metadata(src)
    spec_from_metadata(meta, src)  # "not a wysiwyc model" before anything else
    graph = meta.get(GRAPH_KEY, "fused")
    if graph not in FORMATS["engine"].graphs:
        # TensorRTEngine and the runtime read images -> (logits, masks); a masks-only or
        # logits-only graph would build and then fail at the first frame
        raise UserError(f"{src} is a {graph!r} graph; engines are built from the fused graph: "
                        "`python export/to_onnx.py CKPT` (without --graph masks)")
    profile = plan_batch_profile(onnx_static_batch(src), batch)
    if not workspace_gib > 0:
        raise UserError(f"--workspace must be > 0 GiB, got {workspace_gib}")
    return meta, profile


def _parse_onnx(trt: Any, builder: Any, logger: Any, src: Path, strongly_typed_flag: bool) -> tuple[Any, Any]:
    """A network parsed from ``src``, and its parser (keep it alive until the build).

    ``strongly_typed_flag``: pass ``STRONGLY_TYPED`` at creation (TensorRT 10).
    """
    flags = 0
    if strongly_typed_flag:
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
    return network, parser


def _builder_config(trt: Any, builder: Any, precision: str, strongly_typed: bool, workspace_gib: float,
                    image_shape: tuple[int, int, int], batch: tuple[int, int, int]) -> Any:
    """The builder config: workspace limit, the weakly typed fp16 flag when planned, and one
    optimisation profile for ``images`` (B,3,H,W) with B in ``batch`` (min, opt, max)."""
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
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    profile.set_shape("images", (lo, *image_shape), (opt, *image_shape), (hi, *image_shape))
    config.add_optimization_profile(profile)
    return config
