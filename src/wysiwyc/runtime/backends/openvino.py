"""The OpenVINO backend: an ``.onnx`` export run by OpenVINO's CPU plugin (``--provider openvino``).

OpenVINO reads the ONNX file directly. It is a choice, not the default: on this project's
2-core CPU it ran the 64 px demo Explainer 1.2–1.6× faster than ONNX Runtime (2.3–2.4× its
int8 export) and a 224 px MobileNetV2 ReciproCAM graph 0.64–0.67× as fast
(``bench/experiments/ort_vs_openvino.py``, ``bench/results/ort_vs_openvino_cpu.md``).
The plugin is compiled with ``INFERENCE_PRECISION_HINT=f32``, so a CPU with bf16 units
cannot silently run the graph in bf16, and the latency hint. Numpy only at import time;
``openvino`` (the ``openvino`` extra) is imported when a model is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import require
from ...formats import GRAPHS, TOPK_OUTPUTS
from ...modelfile import read_spec
from .base import Backend, ModelError, register_backend


@register_backend("openvino")
class OpenVINOBackend(Backend):
    """An ``.onnx`` export on OpenVINO's CPU plugin.

    Args:
        path: an ``.onnx`` file written by ``export/to_onnx.py`` (the fused graph).
        threads: inference threads (``None``: OpenVINO's choice, one per core).
    """

    def __init__(self, path: Path, threads: int | None = None, **_: Any) -> None:
        super().__init__(path)
        self.threads = threads

    def _open(self) -> None:
        ov = require("openvino", "openvino", "--provider openvino")
        self.spec = read_spec(self.path)
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises its own error types for a foreign file
            raise ModelError(f"{self.path} is not a model OpenVINO can read ({type(exc).__name__})") from exc
        names = [o.get_any_name() for o in model.outputs]
        if names not in (list(GRAPHS["fused"].outputs), list(TOPK_OUTPUTS)):
            raise ModelError(f"{self.path}: expected outputs 'logits', 'masks' (or 'logits', 'classes', 'masks'), "
                             f"got {names}; export the fused graph with `python export/to_onnx.py`")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = tuple(names)
        self.name = f"openvino {ov.__version__.split('-')[0]} CPU"

    def _close(self) -> None:
        self.request = self.compiled = None

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        res = self.request.infer({0: np.ascontiguousarray(x, np.float32)})
        # the request's output buffers are reused by the next call; the pipeline keeps batches
        outs = tuple(np.array(res[self.compiled.output(n)], copy=True) for n in self.outputs)
        if outs[0].shape[1] != self.spec.num_classes:
            raise ModelError(f"model returns {outs[0].shape[1]} classes but its spec names "
                             f"{self.spec.num_classes}; re-export the model")
        return outs
