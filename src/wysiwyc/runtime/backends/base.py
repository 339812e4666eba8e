"""The backend base class and registry: the file decides — ``.pt`` torch, ``.onnx`` ONNX Runtime,
``.engine`` TensorRT (one module each in this package).

Every backend holds the model's :class:`~wysiwyc.spec.ModelSpec` and splits a batch
into the runtime's timed stages:

* ``preprocess(frames)`` — frames (H,W,3) uint8 RGB of any size -> the model input
  (B,3,h,w) in [0,1] at the spec's size (numpy here; a torch tensor on the GPU for the
  CUDA torch backend);
* ``infer(x)`` -> ``(logits (B,C), masks (B,C,h,w))`` in the backend's own array type;
* ``probabilities(logits)`` -> (B,C) float32 numpy (the spec's activation: sigmoid for
  a multi-label classifier, softmax for a single-label one);
* ``masks_for(masks, i, classes, size)`` -> (K,H,W) float32 numpy in [0,1]: image ``i``'s
  masks of the chosen classes, upsampled to the display size. Only the shown classes
  are upsampled, and on CUDA this happens on the GPU.

A many-class model's graph returns masks for each image's top-k classes only
(``logits, classes (B,K), masks (B,K,h,w)``); its backends hand those on as
:class:`ClassMasks`, which every method above reads like the full (B,C,h,w) masks (a class
outside an image's top k gets an empty mask).

``backend(images (B,3,h,w) float32 numpy) -> (logits, masks)`` numpy is the plain call
used for parity checks. :func:`open_backend` finds the file's format by its suffix in
:data:`wysiwyc.formats.FORMATS` and the class for that format in :data:`BACKENDS` (whose
modules are imported on the first lookup); only the torch backend imports torch.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserError
from ...formats import format_for, known_files
from ...registry import Registry
from ...spec import ModelSpec
from ..imageops import frames_to_batch, resize, sigmoid, softmax

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_MODEL_STEM = "shapes_explainer"


class ModelError(UserError):
    """The model file cannot be used by the runtime (missing, foreign, mismatched)."""


class ClassMasks:
    """Masks of some classes per image: ``masks`` (B,K,h,w) and ``classes`` (B,K), the class
    index of each mask (numpy, or torch tensors in the torch backend)."""

    def __init__(self, masks: Any, classes: Any) -> None:
        self.masks, self.classes = masks, classes
        self.shape = (masks.shape[0], None, *masks.shape[2:])

    def slot(self, i: int, c: int) -> int | None:
        """Where image ``i``'s mask of class ``c`` is, or ``None`` when it was not computed."""
        hits = np.nonzero(np.asarray(self.classes[i]).reshape(-1) == c)[0]
        return int(hits[0]) if len(hits) else None

    def __getitem__(self, i: int) -> "ClassMasks":
        return ClassMasks(self.masks[i], self.classes[i])


def _as_masks(outputs: tuple[Any, ...]) -> tuple[Any, Any]:
    """``(logits, masks)`` or ``(logits, classes, masks)`` -> ``(logits, masks or ClassMasks)``."""
    if len(outputs) == 3:
        logits, classes, masks = outputs
        return logits, ClassMasks(masks, classes)
    return outputs[0], outputs[1]


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
        concurrent_runs: batches :meth:`infer` may run at once from different threads (1:
            one at a time; a CPU ONNX Runtime session opened with ``runs=2`` takes two).
        masks_on_device: :meth:`infer`'s masks stay on a GPU (the pipeline then takes a whole
            batch's shown masks at once, with one wait for the device).
        is_open: between :meth:`open` and :meth:`close`.
    """

    name = "backend"
    spec: ModelSpec

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.fixed_batch: int | None = None
        self.concurrent_runs = 1
        self.masks_on_device = False
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
        """``(logits (B,C), masks)`` of a batch x (B,3,h,w) from :meth:`preprocess`: masks
        (B,C,h,w), or :class:`ClassMasks` for a top-k graph."""
        if not self.is_open:
            raise RuntimeError(f"{type(self).__name__} is not open: call open() or use it in a with block")
        return _as_masks(self._run_padded(x))

    def _run_padded(self, x: Any) -> tuple[Any, ...]:
        """:meth:`_run` on any batch size: a static-batch model runs in pieces, padded."""
        n = x.shape[0]
        if self.fixed_batch is None or n == self.fixed_batch:
            return tuple(self._run(x))
        if n > self.fixed_batch:
            outs = [self._run_padded(x[i:i + self.fixed_batch]) for i in range(0, n, self.fixed_batch)]
            return tuple(np.concatenate(parts) for parts in zip(*outs))
        pad = np.concatenate([x, np.repeat(x[-1:], self.fixed_batch - n, axis=0)])
        return tuple(o[:n] for o in self._run(pad))

    def probabilities(self, logits: Any) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float32)
        return softmax(logits) if self.spec.activation == "softmax" else sigmoid(logits)

    def masks_for(self, masks: Any, i: int, classes: list[int], size: tuple[int, int]) -> np.ndarray:
        h, w = size
        if not isinstance(masks, ClassMasks) and tuple(masks.shape[-2:]) == (h, w):  # at model resolution
            return np.clip(np.asarray(masks[i, classes], dtype=np.float32), 0.0, 1.0)
        out = np.zeros((len(classes), h, w), dtype=np.float32)
        for k, c in enumerate(classes):
            if isinstance(masks, ClassMasks):
                slot = masks.slot(i, c)
                if slot is None:  # outside this image's top k: nothing was computed
                    continue
                m = masks.masks[i, slot]
            else:
                m = masks[i, c]
            out[k] = resize(np.asarray(m, dtype=np.float32), (h, w))
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

    def raw_masks(self, masks: Any) -> Any:
        """All masks (B,C,h,w) as float32 numpy at model resolution (for ``--save-masks``); a
        top-k graph's as :class:`ClassMasks` of numpy arrays."""
        if isinstance(masks, ClassMasks):
            return ClassMasks(np.asarray(masks.masks, dtype=np.float32), np.asarray(masks.classes))
        return np.asarray(masks, dtype=np.float32)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, masks = self.infer(images)
        return np.asarray(logits, dtype=np.float32), self.raw_masks(masks)

    def _run(self, x: Any) -> tuple[Any, Any]:
        raise NotImplementedError


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def group_by_shape(frames: list[np.ndarray]) -> list[tuple[tuple[int, ...], list[int]]]:
    """Frames grouped by shape, in order of first appearance: [(shape, [indices])], so a
    batch is uploaded as one block per frame size instead of one copy per frame."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, f in enumerate(frames):
        groups.setdefault(tuple(f.shape), []).append(k)
    return list(groups.items())


# format (a key of wysiwyc.formats.FORMATS) -> its backend class
BACKENDS: Registry[type[Backend]] = Registry("backend", plugins=(
    "wysiwyc.runtime.backends.onnxruntime", "wysiwyc.runtime.backends.tensorrt", "wysiwyc.runtime.backends.torch",
    "wysiwyc.runtime.backends.triton", "wysiwyc.runtime.backends.openvino",
))
# a model served by Triton Inference Server (--model triton://HOST:PORT/NAME), not a file
TRITON_SCHEME = "triton://"
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
        path: ``.pt`` / ``.onnx`` / ``.engine``, or ``triton://HOST:PORT/NAME`` (a model on a
            Triton server: the ``triton`` backend); ``None`` = the bundled demo model.
        options: backend options (``device``, ``fp16``, ``provider``, ``threads``);
            each backend takes the ones it understands.

    Raises:
        ModelError: missing file, unknown suffix, or a model the runtime cannot use.
    """
    if isinstance(path, str) and path.lower().startswith(TRITON_SCHEME):
        return BACKENDS["triton"](path, **options).open()
    p = Path(path) if path is not None else default_model()
    if not p.is_file():
        raise ModelError(f"model not found: {p}")
    fmt = format_for(p)
    if fmt is None or fmt.argument not in BACKENDS:
        raise ModelError(f"{p}: unknown model type {p.suffix!r}; use {known_files()}")
    # an .onnx export runs on ONNX Runtime unless OpenVINO is asked for (--provider openvino)
    name = "openvino" if fmt.argument == "onnx" and options.get("provider") == "openvino" else fmt.argument
    return BACKENDS[name](p, **options).open()


def describe_model(path: str | os.PathLike[str] | None, backend: Backend) -> dict[str, Any]:
    """What ran, for the summary JSON."""
    return {"path": str(path if path is not None else default_model()), "backend": backend.name,
            "kind": backend.spec.kind, "classes": list(backend.spec.class_names),
            "input_size": list(backend.input_size)}

