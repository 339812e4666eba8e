"""The lean runtime: single-pass attribution on cameras, videos, streams and image folders.

``runtime-explain`` (see :mod:`.cli`) wires four small parts together:

* :mod:`.sources` — frames from a camera, a video file, a network stream, an image folder
  or the synthetic ``--demo`` stream; live sources keep only the newest frame, files
  decode ahead and drop nothing;
* :mod:`.backends` — ``open_backend(path)`` picks torch (``.pt``), ONNX Runtime
  (``.onnx``) or TensorRT (``.engine``, run by :mod:`.tensorrt`) from the file; every
  backend maps frames to class probabilities and masks, and is a context manager
  (open / infer / close);
* :mod:`.overlay` — per-class heat overlays with labels and probabilities;
* :mod:`.pipeline` — the capture → preprocess → infer → postprocess → render loop with
  per-stage timings, and its outputs (window, video file, masks, JSON lines, summary).

Importing this package, or running an ONNX / TensorRT model, never imports torch (only
the torch backend does, and only when it opens a ``.pt`` file) nor :mod:`wysiwyc.export`.
A test holds us to that.
"""
