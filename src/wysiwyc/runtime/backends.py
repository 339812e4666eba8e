"""Inference backends: the file decides — ``.pt`` torch, ``.onnx`` ONNX Runtime, ``.engine`` TensorRT.

Every backend holds the model's :class:`~wysiwyc.spec.ModelSpec` and splits a batch
into the runtime's timed stages:

* ``preprocess(frames)`` — frames (H,W,3) uint8 RGB of any size -> the model input
  (B,3,h,w) in [0,1] at the spec's size (numpy here; a torch tensor on the GPU for the
  CUDA torch backend);
* ``infer(x)`` -> ``(logits (B,C), masks (B,C,h,w))`` in the backend's own array type;
* ``probabilities(logits)`` -> (B,C) float32 numpy (sigmoid: every model here is
  multi-label);
* ``masks_for(masks, i, classes, size)`` -> (K,H,W) float32 numpy in [0,1]: image ``i``'s
  masks of the chosen classes, upsampled to the display size. Only the shown classes
  are upsampled, and on CUDA this happens on the GPU.

``backend(images (B,3,h,w) float32 numpy) -> (logits, masks)`` numpy is the plain call
used for parity checks. :func:`open_backend` finds the file's format by its suffix in
:data:`wysiwyc.formats.FORMATS` and the class for that format in :data:`BACKENDS`; only
:class:`TorchBackend` imports torch.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, require
from ..formats import GRAPHS, format_for, known_files
from ..registry import Registry
from ..spec import ModelSpec
from .imageops import frames_to_batch, resize, sigmoid
from .onnxrt import DEVICE_TYPES, BoundRunner, default_trt_cache, session_providers, tensorrt_provider_options

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_MODEL_STEM = "shapes_explainer"


class ModelError(UserError):
    """The model file cannot be used by the runtime (missing, foreign, mismatched)."""


class Backend:
    """Base backend: numpy pre/post-processing around a model that subclasses load and run.

    The lifecycle is Polygraphy's runner shape: the constructor only records the model file
    and options, :meth:`open` loads the model (and sets :attr:`spec`), :meth:`infer` runs it,
    :meth:`close` frees it. A backend is a context manager, and :func:`open_backend` returns
    it already open, so both of these work::

        with open_backend("model.onnx") as be:  # closed when the block ends, however it ends
            logits, masks = be.infer(be.preprocess(frames))

        be = open_backend("model.onnx")  # closed by be.close()

    Subclasses implement :meth:`_open` (load, set ``spec`` and ``name``), :meth:`_run` and,
    when they hold resources, :meth:`_close`.

    Attributes:
        path: the model file.
        spec: the model spec (class names, input size, ...), once open.
        name: what really runs, e.g. ``onnxruntime CPUExecutionProvider``.
        fixed_batch: the batch size a static-shape model requires, or ``None``.
        is_open: between :meth:`open` and :meth:`close`.
    """

    name = "backend"
    spec: ModelSpec

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.fixed_batch: int | None = None
        self.is_open = False

    # -- lifecycle ------------------------------------------------------------------
    def open(self) -> "Backend":
        """Load the model; a no-op when already open. Returns ``self``."""
        if not self.is_open:
            self._open()
            self.is_open = True
        return self

    def close(self) -> None:
        """Free the model; a no-op when not open. ``spec`` and ``name`` stay readable."""
        if self.is_open:
            self.is_open = False
            self._close()

    def __enter__(self) -> "Backend":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.spec.image_size[0]), int(self.spec.image_size[1])

    # -- stages ---------------------------------------------------------------------
    def preprocess(self, frames: list[np.ndarray]) -> Any:
        return frames_to_batch(frames, self.input_size)

    def infer(self, x: Any) -> tuple[Any, Any]:
        """``(logits (B,C), masks (B,C,h,w))`` of a batch x (B,3,h,w) from :meth:`preprocess`."""
        if not self.is_open:
            raise RuntimeError(f"{type(self).__name__} is not open: call open() or use it in a with block")
        n = x.shape[0]
        if self.fixed_batch is None or n == self.fixed_batch:
            return self._run(x)
        if n > self.fixed_batch:
            outs = [self.infer(x[i:i + self.fixed_batch]) for i in range(0, n, self.fixed_batch)]
            return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        pad = np.concatenate([x, np.repeat(x[-1:], self.fixed_batch - n, axis=0)])
        logits, masks = self._run(pad)
        return logits[:n], masks[:n]

    def probabilities(self, logits: Any) -> np.ndarray:
        return sigmoid(np.asarray(logits, dtype=np.float32))

    def masks_for(self, masks: Any, i: int, classes: list[int], size: tuple[int, int]) -> np.ndarray:
        h, w = size
        out = np.empty((len(classes), h, w), dtype=np.float32)
        for k, c in enumerate(classes):
            out[k] = resize(np.asarray(masks[i, c], dtype=np.float32), (h, w))
        return np.clip(out, 0.0, 1.0, out=out)

    def masks_for_batch(self, masks: Any, picks: list[tuple[list[int], tuple[int, int]]]) -> list[np.ndarray]:
        """:meth:`masks_for` for every image of a batch at once: ``picks[i]`` = (classes,
        (H, W)) of image ``i``. A device backend upsamples them all and then waits for the
        device once, instead of once per frame."""
        return [self.masks_for(masks, i, classes, size) for i, (classes, size) in enumerate(picks)]

    def synchronize(self) -> None:
        """Wait until the device has finished the work queued so far (the infer stage calls
        it once per batch, so the device time is measured as inference, not as whatever
        stage touches the results first). Host backends return at once."""

    def raw_masks(self, masks: Any) -> np.ndarray:
        """All masks (B,C,h,w) as float32 numpy at model resolution (for ``--save-masks``)."""
        return np.asarray(masks, dtype=np.float32)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, masks = self.infer(images)
        return np.asarray(logits, dtype=np.float32), self.raw_masks(masks)

    def _run(self, x: Any) -> tuple[Any, Any]:
        raise NotImplementedError


def group_by_shape(frames: list[np.ndarray]) -> list[tuple[tuple[int, ...], list[int]]]:
    """Frames grouped by shape, in order of first appearance: [(shape, [indices])], so a
    batch is uploaded as one block per frame size instead of one copy per frame."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, f in enumerate(frames):
        groups.setdefault(tuple(f.shape), []).append(k)
    return list(groups.items())


# format (a key of wysiwyc.formats.FORMATS) -> its backend class
BACKENDS: Registry[type[Backend]] = Registry("backend")
register_backend = BACKENDS.register


def default_model() -> Path:
    """The bundled demo Explainer: its ONNX export when ONNX Runtime is installed (no torch
    needed), else the ``.pt`` checkpoint."""
    onnx_path = ASSETS / f"{DEMO_MODEL_STEM}.onnx"
    if onnx_path.is_file() and importlib.util.find_spec("onnxruntime") is not None:
        return onnx_path
    return ASSETS / f"{DEMO_MODEL_STEM}.pt"


def open_backend(path: str | os.PathLike[str] | None = None, **options: Any) -> Backend:
    """Open a model file with the backend its suffix names; the backend comes back open
    (close it, or use it in a ``with`` block).

    Args:
        path: ``.pt`` / ``.onnx`` / ``.engine``; ``None`` = the bundled demo model.
        options: backend options (``device``, ``fp16``, ``provider``, ``threads``);
            each backend takes the ones it understands.

    Raises:
        ModelError: missing file, unknown suffix, or a model the runtime cannot use.
    """
    p = Path(path) if path is not None else default_model()
    if not p.is_file():
        raise ModelError(f"model not found: {p}")
    fmt = format_for(p)
    if fmt is None or fmt.argument not in BACKENDS:
        raise ModelError(f"{p}: unknown model type {p.suffix!r}; use {known_files()}")
    return BACKENDS[fmt.argument](p, **options).open()


# -- ONNX Runtime ------------------------------------------------------------------------
PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}


def spec_from_metadata(meta: dict[str, str], path: Path) -> ModelSpec:
    """The spec stored by ``export/to_onnx.py`` in an ONNX file's ``metadata_props``."""
    raw = meta.get("wysiwyc.spec")
    if not raw:
        raise ModelError(f"{path} has no wysiwyc spec in its metadata: export it with "
                         "`python export/to_onnx.py CHECKPOINT.pt`")
    try:
        return ModelSpec.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: malformed wysiwyc spec in its metadata ({exc})") from exc


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
    (:class:`~.onnxrt.BoundRunner`: device buffers allocated once per batch size, one copy
    in and one copy out per batch), and the TensorRT provider gets the options of
    :func:`~.onnxrt.tensorrt_provider_options` (fp16 where the model allows, an engine
    cache folder, one profile over the run's batch range).

    Args:
        path: an ``.onnx`` file written by ``export/to_onnx.py``.
        provider: ``auto`` | ``tensorrt`` | ``cuda`` | ``cpu``.
        threads: intra-op threads (``None``: ONNX Runtime's default, one per core).
        iobinding: run through IOBinding (``None``: on the CUDA and TensorRT providers).
        trt_cache: the TensorRT provider's engine cache folder (``None``: the user cache dir).
        batch_range: (min, opt, max) batch sizes the run uses, for the TensorRT profile.
        fp16: ``False`` keeps an fp32 model in fp32 on the TensorRT provider.
    """

    def __init__(self, path: Path, provider: str = "auto", threads: int | None = None,
                 iobinding: bool | None = None, trt_cache: str | os.PathLike[str] | None = None,
                 batch_range: tuple[int, int, int] = (1, 8, 8), fp16: bool | None = None, **_: Any) -> None:
        super().__init__(path)
        self.provider_choice, self.threads = provider, threads
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
        return tensorrt_provider_options(meta.get("wysiwyc.precision", "fp32"), tuple(shape[1:4]), self.batch_range,
                                         static_batch=static, cache_dir=cache, fp16=self.fp16_choice)

    def _open(self) -> None:
        ort = require("onnxruntime", "cpu", ".onnx models (use [gpu] for CUDA/TensorRT)")
        names = _providers(ort.get_available_providers(), self.provider_choice)
        if "TensorrtExecutionProvider" in names:
            self.trt_options = self._tensorrt_options(ort)
        providers = session_providers(names, self.trt_options)
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spin by default, holding a core the pipeline's other stages
        # (capture, render, encode) need: on 2 cores that halved the end-to-end rate.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = self._session(ort, opts, providers)
        self.spec = spec_from_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime {self.provider}"
        self._check_graph(self.path)
        bind = self.iobinding_choice
        if bind is None:
            bind = DEVICE_TYPES.get(self.provider, "cpu") != "cpu"
        self.runner = BoundRunner(self.session, ort, ("logits", "masks")) if bind else None
        if self.runner is not None:
            self.name += " (IOBinding)"

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
        if outs == list(GRAPHS["explainer"].outputs):
            raise ModelError(f"{path} is an Explainer-only graph (--graph explainer) without the classifier; "
                             "the runtime needs the fused graph: export with --graph fused (the default)")
        if [i.name for i in ins] != ["images"] or outs[:2] != list(GRAPHS["fused"].outputs):
            raise ModelError(f"{path}: expected input 'images' and outputs 'logits', 'masks' (got "
                             f"{[i.name for i in ins]} -> {outs}); export an Explainer or mask-predictor "
                             "checkpoint with `python export/to_onnx.py`")
        shape = ins[0].shape
        hw = tuple(shape[2:4])
        if all(isinstance(d, int) for d in hw) and hw != self.input_size:
            raise ModelError(f"{path}: graph input is {hw[0]}x{hw[1]} but its spec says "
                             f"{self.input_size[0]}x{self.input_size[1]}; re-export the model")
        if isinstance(shape[0], int):
            self.fixed_batch = int(shape[0])

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.runner is not None:
            logits, masks = self.runner(x)
        else:
            logits, masks = self.session.run(["logits", "masks"], {"images": np.ascontiguousarray(x, np.float32)})
        if logits.shape[1] != self.spec.num_classes:
            raise ModelError(f"model returns {logits.shape[1]} classes but its spec names "
                             f"{self.spec.num_classes}; re-export the model")
        return logits, masks


# -- TensorRT ---------------------------------------------------------------------------
@register_backend("engine")
class TensorRTBackend(Backend):
    """A serialized TensorRT engine built by ``export/to_tensorrt.py``.

    The engine's sidecar ``X.engine.json`` must match this machine (TensorRT version,
    GPU compute capability), else a :class:`~wysiwyc.errors.UserError` says how to rebuild.
    """

    def __init__(self, path: Path, **_: Any) -> None:
        super().__init__(path)

    def _open(self) -> None:
        from .tensorrt import TensorRTEngine, check_engine_sidecar, current_machine

        machine = current_machine()
        sidecar = check_engine_sidecar(self.path, **machine)
        self.spec = ModelSpec.from_dict(sidecar["spec"])
        self.engine = TensorRTEngine(self.path)
        self.name = f"tensorrt {machine.get('trt_version', '')} on {machine.get('gpu_name', 'GPU')}"

    def _close(self) -> None:
        self.engine.close()

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.engine(np.ascontiguousarray(x, np.float32))


# -- torch ------------------------------------------------------------------------------
@register_backend("torch")
class TorchBackend(Backend):
    """A wysiwyc checkpoint run by torch (the only backend that imports it).

    On CUDA the whole batch path stays on the GPU: frames are uploaded as uint8, resized
    and scaled there, the model runs in fp16 (``fp16=None`` means "on CUDA"), and the
    shown masks are upsampled there before one copy back.

    Args:
        path: an explainer / mask_predictor (or rtis) checkpoint.
        device: ``auto`` (CUDA when available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        fp16: run the model in half precision (CUDA only).
        threads: torch intra-op threads on the CPU.
    """

    def __init__(self, path: Path, device: str = "auto", fp16: bool | None = None,
                 threads: int | None = None, **_: Any) -> None:
        super().__init__(path)
        self.device_choice, self.fp16_choice, self.threads = device, fp16, threads

    def _open(self) -> None:
        torch = require("torch", "torch", ".pt models (or export one with export/to_onnx.py)")
        from ..models.fused import load_model

        self.torch = torch
        device = self.device_choice
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ModelError("--device cuda asked for, but torch sees no CUDA GPU")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.device = torch.device(device)
        self._pinned: Any = None  # CUDA: the reused pinned uint8 buffer frames are uploaded from
        self._upload_done: Any = None
        model = load_model(self.path, kinds=("explainer", "mask_predictor", "rtis"), device=self.device)
        self.spec = model.spec
        fp16 = self.fp16_choice
        self.fp16 = self.device.type == "cuda" if fp16 is None else bool(fp16)
        if self.fp16 and self.device.type != "cuda":
            raise ModelError("--fp16 needs CUDA (half precision on the CPU is slower, not faster)")
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.model = model.to(dtype=self.dtype)
        gpu = f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else ""
        self.name = f"torch {torch.__version__} {self.device}{gpu}{' fp16' if self.fp16 else ''}"

    def preprocess(self, frames: list[np.ndarray]) -> Any:
        torch = self.torch
        if self.device.type != "cuda":
            return torch.from_numpy(frames_to_batch(frames, self.input_size))
        h, w = self.input_size
        if self._upload_done is not None:
            self._upload_done.synchronize()  # once per batch, and long done by now
        # the batch goes through one pinned host buffer, reused and grown only for a larger
        # batch: the uploads are real asynchronous copies, with no host wait per frame
        total = sum(f.nbytes for f in frames)
        if self._pinned is None or self._pinned.numel() < total:
            self._pinned = torch.empty(total, dtype=torch.uint8, pin_memory=True)
        out: list[Any] = [None] * len(frames)
        offset = 0
        for shape, idx in group_by_shape(frames):  # one upload per frame size (usually one per batch)
            n = len(idx) * int(np.prod(shape))
            host = self._pinned[offset:offset + n].view(len(idx), *shape)
            offset += n
            np.stack([frames[k] for k in idx], out=host.numpy())
            t = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            if tuple(t.shape[-2:]) != (h, w):
                t = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
            for j, k in enumerate(idx):
                out[k] = t[j:j + 1]
        # the next batch refills the pinned buffers: its copies must have left them first
        self._upload_done = torch.cuda.Event()
        self._upload_done.record(torch.cuda.current_stream(self.device))
        return torch.cat(out).div_(255.0)

    def _close(self) -> None:
        self._pinned = self._upload_done = None
        self.model = None  # the weights go with the last reference (on CUDA, back to torch's cache)

    def _run(self, x: Any) -> tuple[Any, Any]:
        torch = self.torch
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        with torch.inference_mode():
            logits, masks = self.model(x.to(self.device, self.dtype))
        return logits.float(), masks

    def probabilities(self, logits: Any) -> np.ndarray:
        return self.torch.sigmoid(logits).cpu().numpy()

    def masks_for(self, masks: Any, i: int, classes: list[int], size: tuple[int, int]) -> np.ndarray:
        torch = self.torch
        if not classes:
            return np.empty((0, *size), np.float32)
        with torch.inference_mode():
            sel = masks[i, classes][None].float()
            if tuple(sel.shape[-2:]) != tuple(size):
                sel = torch.nn.functional.interpolate(sel, size=size, mode="bilinear", align_corners=False)
            return sel[0].clamp(0, 1).cpu().numpy()

    def masks_for_batch(self, masks: Any, picks: list[tuple[list[int], tuple[int, int]]]) -> list[np.ndarray]:
        if self.device.type != "cuda":
            return super().masks_for_batch(masks, picks)
        torch = self.torch
        hosts = []
        with torch.inference_mode():
            for i, (classes, size) in enumerate(picks):
                if not classes:
                    hosts.append(torch.empty((0, *size)))
                    continue
                sel = masks[i, classes][None].float()
                if tuple(sel.shape[-2:]) != tuple(size):
                    sel = torch.nn.functional.interpolate(sel, size=size, mode="bilinear", align_corners=False)
                host = torch.empty(sel.shape[1:], dtype=torch.float32, pin_memory=True)
                host.copy_(sel[0].clamp_(0, 1), non_blocking=True)
                hosts.append(host)
            torch.cuda.current_stream(self.device).synchronize()  # the batch's one wait
        return [h.numpy() for h in hosts]

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.current_stream(self.device).synchronize()

    def raw_masks(self, masks: Any) -> np.ndarray:
        return masks.float().cpu().numpy()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, masks = self.infer(images)
        return logits.cpu().numpy(), self.raw_masks(masks)


def describe_model(path: str | os.PathLike[str] | None, backend: Backend) -> dict[str, Any]:
    """What ran, for the summary JSON."""
    return {"path": str(path if path is not None else default_model()), "backend": backend.name,
            "kind": backend.spec.kind, "classes": list(backend.spec.class_names),
            "input_size": list(backend.input_size)}

