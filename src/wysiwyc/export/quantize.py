"""int8 static quantization of an exported fp32 ONNX graph (the form TensorRT consumes).

QDQ format, symmetric activations and weights, per-channel weights, MinMax calibration over
images of the chosen data (it keeps a higher mask IoU than percentile calibration), 7-bit
weight range (``reduce_range``, see below). The nodes producing the outputs and the layers
right before them (the final sigmoid and the mask-logit convolution; the classifier's last
linear), and every weight-free node between an output and its last weight layer (the mask
predictor's distribution controller), stay in float: quantizing a [0,1] output to 8 bits
costs mask IoU for almost no speed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import require


class ImageCalibrationReader:
    """onnxruntime CalibrationDataReader over a float32 array (N,3,H,W) in [0,1], batch 1..B."""

    def __init__(self, images: np.ndarray, batch: int = 8) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{"images": images[i:i + batch]} for i in range(0, len(images), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax
        pass


def quantize_int8(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                  calib_images: np.ndarray) -> dict[str, Any]:
    """Write an int8 QDQ model of ``fp32_path`` to ``out_path``; returns what was excluded."""
    onnx = require("onnx", "export", "int8 quantization")
    q = require("onnxruntime.quantization", "export", "int8 quantization")
    model = onnx.load(str(fp32_path))
    outputs = {o.name for o in model.graph.output}
    last = [n for n in model.graph.node if set(n.output) & outputs]
    feeding = {i for n in last for i in n.input}
    # the output producers and the layers right before them (the mask logits conv, the head)
    exclude = {n.name for n in model.graph.node if n in last or set(n.output) & feeding}
    # ...and the whole weight-free tail between an output and its last weight layer: the mask
    # predictor's distribution controller (instance norm, sigmoid, pow, resize) divides by a
    # per-map std that int8 rounds to 0 (NaN masks); for the Explainer this adds nothing.
    exclude |= _float_tail(model)

    class _Reader(q.CalibrationDataReader):  # ORT checks the base class
        def __init__(self) -> None:
            self.inner = ImageCalibrationReader(calib_images)

        def get_next(self):  # noqa: ANN201
            return self.inner.get_next()

    q.quantize_static(
        str(fp32_path), str(out_path), _Reader(),
        quant_format=q.QuantFormat.QDQ, per_channel=True,
        activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.MinMax, nodes_to_exclude=sorted(exclude),
        # 7-bit weights: x86 CPUs without VNNI (AVX2) run int8 convs on u8·s8 pairs summed
        # in int16, which saturates with full-range weights and corrupts the logits.
        reduce_range=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return {"excluded_nodes": sorted(exclude), "calibration_images": int(len(calib_images))}


WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _float_tail(model: Any) -> set[str]:
    """Names of the nodes on every path from a graph output back to (and including) the
    nearest weight layer; shape computations (``Shape``) end the walk."""
    producer = {o: n for n in model.graph.node for o in n.output}
    tail: set[str] = set()
    stack = [producer[o.name] for o in model.graph.output if o.name in producer]
    while stack:
        node = stack.pop()
        if node.name in tail:
            continue
        tail.add(node.name)
        if node.op_type in WEIGHT_OPS or node.op_type == "Shape":
            continue
        stack += [producer[i] for i in node.input if i in producer]
    return tail
