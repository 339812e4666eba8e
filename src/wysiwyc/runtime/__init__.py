"""The lean runtime: single-pass attribution on cameras, videos, streams and image folders.

``runtime-explain`` (see :mod:`.cli`) wires these small parts together:

* :mod:`.sources` — frames from a camera, a video file, a URL, an image folder or the
  synthetic ``--demo`` stream; :mod:`.reader` runs each in a thread: live sources keep
  only the newest frame, files decode ahead and drop nothing;
* :mod:`.backends` — ``open_backend(path)`` picks torch (``.pt``), ONNX Runtime
  (``.onnx``) or TensorRT (``.engine``) from the file, one module each; every backend
  maps frames to class probabilities and masks, and is a context manager
  (open / infer / close);
* :mod:`.overlay` — per-class heat overlays with labels and probabilities;
* :mod:`.batching` — one model batch from several streams (newest frame of each live
  stream, files in turn), and the run's batch plan;
* :mod:`.pipeline` — the capture → preprocess → infer → postprocess → render stages, each
  in its own thread, with per-stage timings kept in bounded memory (:mod:`.stats`), and
  its outputs (window, video file, masks, JSON lines, summary, the :mod:`.serve` web view).

Importing this package, or running an ONNX / TensorRT model, never imports torch (only
the torch backend does, and only when it opens a ``.pt`` file) nor :mod:`wysiwyc.export`.
A test holds us to that.
"""
