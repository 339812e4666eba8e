"""Checkpoint -> parity-checked ONNX.

The fused graph (``--graph fused``) is :class:`wysiwyc.models.fused.FusedModel`: input
``images`` float (B,3,H,W) RGB in [0,1] with normalisation inside, outputs ``logits`` (B,C)
and ``masks`` (B,C,H,W) in [0,1]. A plain classifier checkpoint exports ``logits`` only;
``--graph masks`` exports the attribution network alone (``images`` -> ``masks``) for a
pipeline that already runs the classifier (Explainer and RTIS checkpoints only).
``ExportOptions.head`` (``--head reciprocam``) replaces the checkpoint's head (or adds one
to a plain classifier) by a training-free head of :data:`wysiwyc.models.fused.FREE_HEADS`:
the same fused graph, so the runtime runs it like an Explainer export.
The spec goes into ``metadata_props`` (:func:`wysiwyc.modelfile.onnx_metadata_props`).
The checkpoint is read once: :func:`export_model` builds the model, and the export and the
parity check both take that model.

Choices: torch's dynamo exporter (the default since torch 2.9), traced at batch 2 so the
batch dimension stays dynamic (a size-1 example gets specialised), ``external_data=False``
so small models are one self-contained file. fp16 converts weights and activations with
onnxruntime's float16 converter keeping float32 inputs/outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError, require
from ..fileio import atomic_path, check_writable, file_sha256
from ..formats import FORMATS, GRAPH_ALIASES, GRAPHS, TOPK_OUTPUTS
from ..modelfile import onnx_metadata_props
from ..models.fused import FREE_HEADS, FusedModel, TopKModel, load_model

MIN_OPSET, MAX_OPSET = 17, 23


class _MasksOnly(nn.Module):
    """``--graph masks``: the attribution network alone, images in [0,1] -> masks."""

    def __init__(self, fused: FusedModel) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fused.head.masks(self.fused.norm(images), {})


class _LogitsOnly(nn.Module):
    def __init__(self, fused: FusedModel) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fused.classify(images)


@dataclass
class ExportOptions:
    precision: str = "fp32"
    opset: int = 20
    dynamic_batch: bool = True
    batch: int = 2
    image_size: tuple[int, int] | None = None
    graph: str = "fused"
    head: str | None = None
    top_k: int | None = None  # fused graph: masks of each image's top-k classes only (None: every class)


def export_model(ckpt_path: str | os.PathLike[str], head: str | None = None, **settings: Any) -> FusedModel:
    """The fused model an export of ``ckpt_path`` holds: the checkpoint's own, or with
    ``head`` (a :data:`~wysiwyc.models.fused.FREE_HEADS` name, built with ``settings``) in
    place of its head.

    Raises:
        UserError: a checkpoint that does not load, or an unknown head name.
    """
    model = load_model(ckpt_path)
    return model if head is None else FREE_HEADS.lookup(head)(model, **settings)


def export_onnx(model: FusedModel, out: str | os.PathLike[str], opts: ExportOptions, source_sha256: str,
                calib_images: Any = None) -> dict[str, str]:
    """Export ``model`` to ``out`` (written atomically) as ``opts`` say (checked with
    :func:`check_options` first). Returns the metadata written into the file.

    Args:
        model: the fused model (:func:`export_model`).
        out: the ``.onnx`` path.
        opts: precision, opset, batch, image size and graph.
        source_sha256: the hash of the file the model came from (recorded in the metadata).
        calib_images: (N,3,H,W) float32 numpy in [0,1]; required for int8.
    """
    onnx = require("onnx", "export", "ONNX export")
    check_writable(out)
    spec = model.spec
    h, w = opts.image_size or spec.image_size
    module, outputs = _graph_module(model, opts.graph, opts.top_k)
    example = torch.rand(max(2, opts.batch), 3, h, w)
    dyn = {"images": {0: torch.export.Dim("batch", min=1, max=1024)}} if opts.dynamic_batch else None
    graph = opts.graph if spec.kind != "classifier" else "classifier"
    meta = onnx_metadata_props(spec, opts.precision, graph, source_sha256)
    with atomic_path(out) as tmp:
        prog = torch.onnx.export(module, (example,), input_names=["images"], output_names=outputs,
                                 opset_version=opts.opset, dynamo=True, external_data=False,
                                 dynamic_shapes=(dyn["images"],) if dyn else None, verbose=False)
        proto = prog.model_proto
        if opts.precision == "fp16":
            f16 = require("onnxruntime.transformers.float16", "export", "fp16 conversion")
            proto = f16.convert_float_to_float16(proto, keep_io_types=True)
            _toposort(proto.graph)  # the converter appends its input casts after their consumers
        _set_metadata(proto, meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        if opts.precision == "int8":
            _quantize_in_place(tmp, calib_images, meta)
    return meta


def export_checkpoint(ckpt_path: str | os.PathLike[str], out: str | os.PathLike[str], opts: ExportOptions,
                      calib_images: Any = None) -> dict[str, str]:
    """Check ``opts``, build the model of ``ckpt_path`` (read once) and export it to ``out``
    (:func:`export_onnx`). Returns the metadata written."""
    check_options(opts)
    return export_onnx(export_model(ckpt_path, opts.head), out, opts, file_sha256(ckpt_path), calib_images)


def check_options(opts: ExportOptions) -> None:
    """Refuse a precision, opset or graph the ONNX row of the format table does not allow,
    and an unknown training-free head. An old ``--graph`` spelling
    (:data:`~wysiwyc.formats.GRAPH_ALIASES`) is replaced in ``opts`` by its name.

    Raises:
        UserError: the first such option.
    """
    opts.graph = GRAPH_ALIASES.get(opts.graph, opts.graph)
    if opts.head is not None:
        FREE_HEADS.lookup(opts.head)
        graph = GRAPHS.get(opts.graph)  # an unknown graph is reported below
        if graph is not None and opts.head not in graph.kinds:
            raise UserError(f"--head {opts.head} makes a fused graph (its masks need the classifier): "
                            "drop --graph or use --graph fused")
    fmt = FORMATS["onnx"]
    if opts.precision not in fmt.precisions:
        raise UserError(f"unsupported precision {opts.precision!r}; choose from {', '.join(fmt.precisions)}")
    if not MIN_OPSET <= opts.opset <= MAX_OPSET:
        raise UserError(f"unsupported opset {opts.opset}; use {MIN_OPSET}..{MAX_OPSET}")
    if opts.graph not in fmt.graphs:
        raise UserError(f"unknown graph {opts.graph!r}; choose from {', '.join(fmt.graphs)}")


def _graph_module(model: FusedModel, graph: str, top_k: int | None = None) -> tuple[nn.Module, list[str]]:
    """The module to trace for ``graph`` and its output names (with ``top_k``, the fused
    graph returns ``logits, classes, masks``: :class:`~wysiwyc.models.fused.TopKModel`).

    Raises:
        UserError: the checkpoint's kind has no such graph.
    """
    kind = model.spec.kind
    if kind not in GRAPHS[graph].kinds:
        raise UserError(f"--graph {graph} exports the attribution network alone; a {kind} checkpoint "
                        "has none (a mask predictor reads the classifier's features): use --graph fused")
    if graph == "masks":
        return _MasksOnly(model).eval(), list(GRAPHS[graph].outputs)
    if kind == "classifier":  # a classifier explains nothing: its fused graph is the logits only
        return _LogitsOnly(model).eval(), ["logits"]
    if top_k is not None:
        return TopKModel(model, top_k).eval(), list(TOPK_OUTPUTS)
    return model, list(GRAPHS[graph].outputs)


def _quantize_in_place(path: Path, calib_images: Any, meta: dict[str, str]) -> None:
    """Replace the fp32 ONNX at ``path`` by its int8 QDQ model, keeping the metadata.

    Raises:
        UserError: no calibration images.
    """
    onnx = require("onnx", "export", "ONNX export")
    from .quantize import quantize_int8

    if calib_images is None:
        raise UserError("int8 export needs calibration images (--calib DATA)")
    fp32_tmp = Path(str(path) + ".fp32.onnx")
    os.replace(path, fp32_tmp)
    try:
        quantize_int8(fp32_tmp, path, calib_images)
    finally:
        fp32_tmp.unlink(missing_ok=True)
    qproto = onnx.load(str(path))
    _set_metadata(qproto, meta)  # quantize_static drops metadata_props
    onnx.save(qproto, path)


def _set_metadata(proto: Any, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _toposort(graph: Any) -> None:
    """Reorder ``graph.node`` topologically (stable: original order among ready nodes)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise RuntimeError("ONNX graph has a cycle or a dangling input")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def parity_report(model: FusedModel, onnx_path: str | os.PathLike[str], images: torch.Tensor,
                  top_k: int | None = None) -> dict[str, float]:
    """Compare ONNX Runtime (CPU) with torch (``model``, the one exported, with ``top_k`` as
    exported) on ``images`` (N,3,H,W) in [0,1].

    Returns max abs diff of logits and masks, continuous mask IoU (Σmin/Σmax), the
    agreement of the labels (sigmoid ≥ 0.5, or the top-1 class of a softmax classifier)
    and, for a top-k graph, of the k classes.
    """
    ort = require("onnxruntime", "cpu", "the parity check")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        if top_k is not None:
            t_logits, t_classes, t_masks = TopKModel(model, top_k)(images)
        else:
            t_logits, t_masks = model(images)
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {"images": images.numpy()})))
    rep: dict[str, float] = {"n_images": int(images.shape[0])}
    if "logits" in outs:
        o_logits = torch.from_numpy(outs["logits"]).float()
        rep["logits_max_abs_diff"] = float((o_logits - t_logits).abs().max())
        if model.spec.activation == "softmax":
            rep["label_agreement"] = float((o_logits.argmax(1) == t_logits.argmax(1)).float().mean())
        else:
            rep["label_agreement"] = float(((o_logits > 0) == (t_logits > 0)).float().mean())
    if "classes" in outs:
        rep["class_agreement"] = float((torch.from_numpy(outs["classes"]) == t_classes).float().mean())
    if "masks" in outs:
        o_masks = torch.from_numpy(outs["masks"]).float()
        rep["masks_max_abs_diff"] = float((o_masks - t_masks).abs().max())
        rep["mask_iou"] = float(torch.minimum(o_masks, t_masks).sum() / torch.maximum(o_masks, t_masks).sum().clamp_min(1e-12))
    return rep


def check_tolerances(report: dict[str, float], tol: Mapping[str, float]) -> list[str]:
    """Names of the violated tolerances (``*_max_abs_diff`` are upper bounds, others lower);
    the defaults per precision are :data:`wysiwyc.formats.PRECISIONS`."""
    bad = []
    for key, bound in tol.items():
        if key not in report:
            continue
        val = report[key]
        if (key.endswith("max_abs_diff") and val > bound) or (not key.endswith("max_abs_diff") and val < bound):
            bad.append(f"{key}={val:.6g} (tolerance {bound:g})")
    return bad


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, sort_keys=True))
