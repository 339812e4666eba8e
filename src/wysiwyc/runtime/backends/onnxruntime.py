"""The ONNX Runtime backend (``.onnx``), its TensorRT-provider options and IOBinding runner.

Stdlib and numpy only at import time; ``onnxruntime`` is imported when a model is opened.

* :class:`OnnxBackend` — a session on the best installed provider (TensorRT → CUDA → CPU).
* :func:`tensorrt_provider_options` — one function builds the TensorRT provider's options
  (https://onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html):
  the precision the model allows, the engine (and timing) cache folder, so an engine is
  built once per model, shape range and GPU instead of at every start, and one
  optimisation profile spanning the runtime's batch range (:func:`~..batching.batch_plan`),
  so a new batch size does not rebuild the engine either.
* :class:`BoundRunner` — runs a session through ``IOBinding``: the input is copied into
  a buffer on the session's device that is allocated once per shape and bound once, the
  outputs are bound on that device (allocated once per shape too) and copied to the host
  once per batch. It works with every provider; on the CPU it is only a parity path, on
  CUDA it is what avoids ONNX Runtime's per-call device allocations and staging copies.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import require
from ...formats import GRAPHS, TOPK_OUTPUTS, plan_batch_profile
from ...modelfile import PRECISION_KEY, spec_from_metadata
from .base import Backend, ModelError, available_cores, register_backend

# precision of the ONNX (its ``wysiwyc.precision``) -> the TensorRT precision flags:
# an fp32 graph may run in fp16 (TensorRT keeps layers that need it in fp32); an fp16
# export is fp16 already; an int8 export's QDQ nodes need int8 mode, and fp16 for the
# layers between them
TRT_PRECISION_FLAGS: dict[str, dict[str, bool]] = {
    "fp32": {"trt_fp16_enable": True},
    "fp16": {"trt_fp16_enable": True},
    "int8": {"trt_fp16_enable": True, "trt_int8_enable": True},
}


def user_cache_dir(app: str = "wysiwyc") -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / app


def default_trt_cache() -> Path:
    """Where the TensorRT provider keeps its engines unless ``--trt-cache`` says otherwise."""
    return user_cache_dir() / "tensorrt"


def _shape(batch: int, image_shape: tuple[int, int, int]) -> str:
    return "images:" + "x".join(str(v) for v in (batch, *image_shape))


def tensorrt_provider_options(precision: str, image_shape: tuple[int, int, int],
                              batch_range: tuple[int, int, int], static_batch: int | None = None,
                              cache_dir: str | os.PathLike[str] | None = None,
                              fp16: bool | None = None) -> dict[str, str]:
    """The ``TensorrtExecutionProvider`` options for a wysiwyc ONNX.

    Args:
        precision: the ONNX's ``wysiwyc.precision`` (``fp32``, ``fp16``, ``int8``).
        image_shape: (3, H, W) of the ``images`` input.
        batch_range: (min, opt, max) batch sizes the run uses (:func:`~..batching.batch_plan`).
        static_batch: the graph's fixed batch size, if it has one: the profile is then N/N/N
            (:func:`~wysiwyc.formats.plan_batch_profile`; the backend pads to N).
        cache_dir: engine cache folder (``None``: :func:`default_trt_cache`).
        fp16: ``False`` keeps an fp32 graph in fp32; ``None`` lets the precision decide.

    Returns:
        option name -> value, all strings (what ``InferenceSession(providers=[(name, opts)])``
        takes).
    """
    flags = dict(TRT_PRECISION_FLAGS.get(precision, TRT_PRECISION_FLAGS["fp32"]))
    if fp16 is False and precision == "fp32":
        flags["trt_fp16_enable"] = False
    cache = Path(cache_dir) if cache_dir is not None else default_trt_cache()
    opts: dict[str, Any] = {
        **flags,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        # the timing cache speeds up building the engine for another shape or model
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
    }
    lo, opt, hi = plan_batch_profile(static_batch, None if static_batch else tuple(batch_range))
    if static_batch is None:
        # explicit profile shapes: one engine covers every batch size of the run (without
        # them the provider rebuilds whenever a larger batch arrives)
        opts.update(trt_profile_min_shapes=_shape(lo, image_shape), trt_profile_opt_shapes=_shape(opt, image_shape),
                    trt_profile_max_shapes=_shape(hi, image_shape))
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in opts.items()}


def session_providers(names: list[str], tensorrt_options: dict[str, str] | None) -> list[Any]:
    """The ``providers`` argument of ``InferenceSession``: the provider names, best first,
    the TensorRT one as ``(name, options)`` when it is among them."""
    return [(n, tensorrt_options) if n == "TensorrtExecutionProvider" and tensorrt_options is not None else n
            for n in names]


def session_options(ort: Any, threads: int | None = None) -> Any:
    """The runtime's ``SessionOptions``: every graph optimisation, ``threads`` intra-op
    threads (``None``: one per core), no spinning. Benchmarks that time a graph the runtime
    does not run (the classifier alone) use the same."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spin by default, holding a core the pipeline's other stages
    # (capture, render, encode) need: on 2 cores that halved the end-to-end rate.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


# provider -> the OrtValue device type its tensors live on
DEVICE_TYPES = {"TensorrtExecutionProvider": "cuda", "CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


class BoundRunner:
    """``runner(x (B,3,H,W)) -> [output arrays]`` through a session's ``IOBinding``.

    The input buffer and the output buffers live on the session's device (``cuda`` for the
    CUDA and TensorRT providers), are allocated once per batch size and bound once; each
    call copies the batch in (one host→device copy), runs, and copies every output out
    (one device→host copy each). The outputs come back as arrays the caller owns: the
    pipeline keeps batch *n*'s outputs while batch *n+1* runs, so the bound buffers are
    never handed out.

    Args:
        session: an ``onnxruntime.InferenceSession``.
        ort: the ``onnxruntime`` module.
        outputs: output names, in the order they are returned.
        device_type: ``cpu`` or ``cuda`` (default: from the session's first provider).
        device_id: the device's number.
    """

    def __init__(self, session: Any, ort: Any, outputs: tuple[str, ...], input_name: str = "images",
                 device_type: str | None = None, device_id: int = 0) -> None:
        self.session, self.ort, self.outputs, self.input_name = session, ort, tuple(outputs), input_name
        self.device_type = device_type or DEVICE_TYPES.get(session.get_providers()[0], "cpu")
        self.device_id = int(device_id)
        self.binding = session.io_binding()
        self._input: Any = None  # OrtValue, reused while the batch size stays
        self._outputs: dict[str, Any] = {}  # name -> OrtValue, bound once the shapes are known
        self.allocations = 0  # buffers allocated so far (they are reused, so this stays small)

    def _alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        self.allocations += 1
        return self.ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device_type, self.device_id)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._input is None or tuple(self._input.shape()) != x.shape:
            self._input = self._alloc(x.shape, np.float32)
            self.binding.bind_ortvalue_input(self.input_name, self._input)
            self._outputs = {}  # new batch size: new output shapes
            self.binding.clear_binding_outputs()
            for name in self.outputs:  # this once, ONNX Runtime allocates them on the device
                self.binding.bind_output(name, self.device_type, self.device_id)
        self._input.update_inplace(x)  # into the bound buffer (on CUDA: the host→device copy)
        self.session.run_with_iobinding(self.binding)
        if not self._outputs:
            # from now on the outputs go into fixed buffers: no allocation per call
            got = self.binding.get_outputs()
            self._outputs = {name: got[k] for k, name in enumerate(self.outputs)}
            self.allocations += len(self._outputs)
            self.binding.clear_binding_outputs()
            for name, value in self._outputs.items():
                self.binding.bind_ortvalue_output(name, value)
        # copy_outputs_to_cpu copies device buffers out; a CPU OrtValue's numpy() is a view
        # of the bound buffer, which the next call overwrites, so it is copied too
        if self.device_type == "cpu":
            return [np.array(self._outputs[name].numpy(), copy=True) for name in self.outputs]
        return list(self.binding.copy_outputs_to_cpu())


PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}


def _providers(available: list[str], provider: str | None) -> list[str]:
    """The execution providers to try, best first, for ``--provider`` (``auto``: every
    installed one of TensorRT, CUDA, CPU)."""
    if provider in (None, "auto"):
        return [PROVIDERS[k] for k in ("tensorrt", "cuda", "cpu") if PROVIDERS[k] in available]
    if provider not in PROVIDERS:
        raise ModelError(f"unknown provider {provider!r}; choose from auto, {', '.join(PROVIDERS)}")
    if PROVIDERS[provider] not in available:
        raise ModelError(f"ONNX Runtime provider {PROVIDERS[provider]} is not available here "
                         f"(installed: {', '.join(available)}); for GPU providers install "
                         "'wysiwyc[gpu]' instead of 'wysiwyc[cpu]'")
    return [PROVIDERS[provider]]


@register_backend("onnx")
class OnnxBackend(Backend):
    """ONNX Runtime. Providers are tried TensorRT -> CUDA -> CPU among those installed
    (``provider`` forces one); :attr:`name` reports the provider the session really uses.

    On the CUDA and TensorRT providers the session runs through IOBinding
    (:class:`BoundRunner`: device buffers allocated once per batch size, one copy
    in and one copy out per batch), and the TensorRT provider gets the options of
    :func:`tensorrt_provider_options` (fp16 where the model allows, an engine
    cache folder, one profile over the run's batch range).

    Args:
        path: an ``.onnx`` file written by ``export/to_onnx.py``.
        provider: ``auto`` | ``tensorrt`` | ``cuda`` | ``cpu``.
        threads: intra-op threads, all runs together (``None``: one per core); at most this
            many runs go at once.
        runs: batches the pipeline keeps in flight at once (:attr:`concurrent_runs`). On the
            CPU provider each of ``runs`` concurrent runs gets ``threads // runs`` intra-op
            threads: a run split over every core stalls whenever another stage of the
            pipeline (drawing, encoding) takes one of them — its threads meet at a barrier
            after every operator — while single-threaded runs side by side never wait for
            each other. The device providers run one batch at a time.
        iobinding: run through IOBinding (``None``: on the CUDA and TensorRT providers).
        trt_cache: the TensorRT provider's engine cache folder (``None``: the user cache dir).
        batch_range: (min, opt, max) batch sizes the run uses, for the TensorRT profile.
        fp16: ``False`` keeps an fp32 model in fp32 on the TensorRT provider.
    """

    def __init__(self, path: Path, provider: str = "auto", threads: int | None = None,
                 iobinding: bool | None = None, trt_cache: str | os.PathLike[str] | None = None,
                 batch_range: tuple[int, int, int] = (1, 8, 8), fp16: bool | None = None, runs: int = 1,
                 **_: Any) -> None:
        super().__init__(path)
        self.provider_choice, self.threads, self.runs = provider, threads, max(1, int(runs))
        self.iobinding_choice, self.trt_cache, self.fp16_choice = iobinding, trt_cache, fp16
        self.batch_range = batch_range
        self.runner: BoundRunner | None = None
        self.trt_options: dict[str, str] | None = None

    def _tensorrt_options(self, ort: Any) -> dict[str, str]:
        """The TensorRT provider's options; the model's precision and batch dimension are read
        from a CPU session that is not optimised (cheap: nothing is built)."""
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        probe = self._session(ort, so, ["CPUExecutionProvider"])
        meta = probe.get_modelmeta().custom_metadata_map
        shape = probe.get_inputs()[0].shape
        static = int(shape[0]) if isinstance(shape[0], int) else None
        cache = Path(self.trt_cache) if self.trt_cache is not None else default_trt_cache()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(f"cannot create the TensorRT engine cache {cache}: {exc.strerror}; "
                             "choose another with --trt-cache DIR") from exc
        return tensorrt_provider_options(meta.get(PRECISION_KEY, "fp32"), tuple(shape[1:4]), self.batch_range,
                                         static_batch=static, cache_dir=cache, fp16=self.fp16_choice)

    def _open(self) -> None:
        ort = require("onnxruntime", "cpu", ".onnx models (use [gpu] for CUDA/TensorRT)")
        names = _providers(ort.get_available_providers(), self.provider_choice)
        if "TensorrtExecutionProvider" in names:
            self.trt_options = self._tensorrt_options(ort)
        providers = session_providers(names, self.trt_options)
        threads = self.threads
        if names[0] == "CPUExecutionProvider" and self.runs > 1:
            total = threads or available_cores()
            runs = min(self.runs, total)  # never more threads than --threads (or the cores)
            if runs > 1:
                threads, self.concurrent_runs = max(1, total // runs), runs
        self.session = self._session(ort, session_options(ort, threads), providers)
        self.spec = spec_from_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime {self.provider}"
        self._check_graph(self.path)
        bind = self.iobinding_choice
        if bind is None:
            bind = DEVICE_TYPES.get(self.provider, "cpu") != "cpu"
        self.runner = BoundRunner(self.session, ort, self.outputs) if bind else None
        if self.runner is not None:  # its bound buffers serve one run at a time
            self.name += " (IOBinding)"
            self.concurrent_runs = 1

    def _session(self, ort: Any, opts: Any, providers: list[Any]) -> Any:
        try:
            return ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path} is not a loadable ONNX model ({first[:200]})") from exc

    def _close(self) -> None:
        self.runner = None
        self.session = None  # ONNX Runtime frees the session with its last reference

    def _check_graph(self, path: Path) -> None:
        ins = self.session.get_inputs()
        outs = [o.name for o in self.session.get_outputs()]
        if outs == list(GRAPHS["masks"].outputs):
            raise ModelError(f"{path} is a masks-only graph (--graph masks) without the classifier; "
                             "the runtime needs the fused graph: export with --graph fused (the default)")
        if [i.name for i in ins] != ["images"] or outs not in (list(GRAPHS["fused"].outputs), list(TOPK_OUTPUTS)):
            raise ModelError(f"{path}: expected input 'images' and outputs 'logits', 'masks' (or 'logits', "
                             f"'classes', 'masks') (got {[i.name for i in ins]} -> {outs}); export a model with "
                             "an attribution head with `python export/to_onnx.py`")
        self.outputs = tuple(outs)
        shape = ins[0].shape
        hw = tuple(shape[2:4])
        if all(isinstance(d, int) for d in hw) and hw != self.input_size:
            raise ModelError(f"{path}: graph input is {hw[0]}x{hw[1]} but its spec says "
                             f"{self.input_size[0]}x{self.input_size[1]}; re-export the model")
        if isinstance(shape[0], int):
            self.fixed_batch = int(shape[0])

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.runner is not None:
            outs = self.runner(x)
        else:
            outs = self.session.run(list(self.outputs), {"images": np.ascontiguousarray(x, np.float32)})
        if outs[0].shape[1] != self.spec.num_classes:
            raise ModelError(f"model returns {outs[0].shape[1]} classes but its spec names "
                             f"{self.spec.num_classes}; re-export the model")
        return tuple(outs)
