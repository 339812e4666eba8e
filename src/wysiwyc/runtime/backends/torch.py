"""The torch backend (``.pt`` checkpoints): the only backend that imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import require
from ..imageops import frames_to_batch
from ...formats import DEFAULT_TOP_K, MANY_CLASSES
from .base import Backend, ClassMasks, ModelError, group_by_shape, register_backend

@register_backend("torch")
class TorchBackend(Backend):
    """A wysiwyc checkpoint run by torch (the only backend that imports it).

    On CUDA the whole batch path stays on the GPU: frames are uploaded as uint8, resized
    and scaled there, the model runs in fp16 (``fp16=None`` means "on CUDA"), and the
    shown masks are upsampled there before one copy back.

    A plain classifier checkpoint (e.g. one brought in with ``train/wrap_classifier.py``)
    runs with the training-free ReciproCAM head; a model with more than
    :data:`~wysiwyc.formats.MANY_CLASSES` classes computes the masks of each image's top-k
    classes only (k = max(``top_k``, :data:`~wysiwyc.formats.DEFAULT_TOP_K`)).

    Args:
        path: a wysiwyc checkpoint.
        device: ``auto`` (CUDA when available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        fp16: run the model in half precision (CUDA only).
        threads: torch intra-op threads on the CPU.
        top_k: the most classes a frame shows (``--top-k``).
    """

    def __init__(self, path: Path, device: str = "auto", fp16: bool | None = None,
                 threads: int | None = None, top_k: int = DEFAULT_TOP_K, **_: Any) -> None:
        super().__init__(path)
        self.device_choice, self.fp16_choice, self.threads = device, fp16, threads
        self.top_k = max(int(top_k), DEFAULT_TOP_K)

    def _open(self) -> None:
        torch = require("torch", "torch", ".pt models (or export one with export/to_onnx.py)")
        from ...models.fused import TopKModel, load_model

        self.torch = torch
        device = self.device_choice
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ModelError("--device cuda asked for, but torch sees no CUDA GPU")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.device = torch.device(device)
        self.masks_on_device = self.device.type == "cuda"
        self._pinned: Any = None  # CUDA: the reused pinned uint8 buffer frames are uploaded from
        self._upload_done: Any = None
        model = _with_head(load_model(self.path, device=self.device))
        self.spec = model.spec
        if self.spec.num_classes > MANY_CLASSES:
            model = TopKModel(model, min(self.top_k, self.spec.num_classes))
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

    def _run(self, x: Any) -> tuple[Any, ...]:
        torch = self.torch
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        with torch.inference_mode():
            outs = self.model(x.to(self.device, self.dtype))
        if len(outs) == 3:  # the top-k classes travel as numpy: the pipeline looks them up per frame
            return outs[0].float(), outs[1].cpu().numpy(), outs[2]
        return outs[0].float(), outs[1]

    def probabilities(self, logits: Any) -> np.ndarray:
        fn = self.torch.softmax if self.spec.activation == "softmax" else None
        return (fn(logits, dim=1) if fn else self.torch.sigmoid(logits)).cpu().numpy()

    def _select(self, masks: Any, i: int, classes: list[int]) -> Any:
        """Image ``i``'s masks of ``classes`` (K,h,w) on the device (empty where not computed)."""
        if not isinstance(masks, ClassMasks):
            return masks[i, classes]
        out = masks.masks.new_zeros(len(classes), *masks.masks.shape[-2:])
        for k, c in enumerate(classes):
            slot = masks.slot(i, c)
            if slot is not None:
                out[k] = masks.masks[i, slot]
        return out

    def masks_for(self, masks: Any, i: int, classes: list[int], size: tuple[int, int]) -> np.ndarray:
        torch = self.torch
        if not classes:
            return np.empty((0, *size), np.float32)
        with torch.inference_mode():
            sel = self._select(masks, i, classes)[None].float()
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
                sel = self._select(masks, i, classes)[None].float()
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

    def raw_masks(self, masks: Any) -> Any:
        if isinstance(masks, ClassMasks):
            return ClassMasks(masks.masks.float().cpu().numpy(), masks.classes)
        return masks.float().cpu().numpy()

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, Any]:
        logits, masks = self.infer(images)
        return logits.cpu().numpy(), self.raw_masks(masks)


def _with_head(model: Any) -> Any:
    """``model``, or, for a plain classifier, the classifier with the training-free ReciproCAM head."""
    if model.head is not None:
        return model
    from ...models.fused import FREE_HEADS

    return FREE_HEADS.lookup("reciprocam")(model)
