"""Insert the ReciproCAM head into a user's ONNX classifier: an ONNX classifier in, the
fused graph out, without torch (stdlib, numpy and ``onnx``; ONNX Runtime for the check).

In: ``classifier.onnx`` with one input (B,3,H,W) float, normalised the way the model was
trained, and the logits (B,C) as its first output. Out: the graph the runtime runs, input
``images`` (B,3,H,W) RGB in [0,1], outputs ``logits`` (B,C) and ``masks`` (B,C,H,W) in
[0,1] (with top-k: ``logits``, ``classes`` (B,K) int64, ``masks`` (B,K,H,W)), the batch
dynamic and the wysiwyc spec in ``metadata_props``. It is what
:meth:`wysiwyc.attribution.reciprocam.ReciproCAMHead.fused_forward` does to a torch
classifier, written in ONNX ops::

    images -> [flip to BGR] -> Sub mean -> Div std -> the classifier ... -> F (B,N,h,w)
    Concat([F, mosaic(F) (B·P,N,h,w)], axis 0) -> the classifier's own tail -> (B·(1+P),C)
    rows [:B] = logits; rows [B:] -> score -> (B,C,h,w) -> min-max -> [top-k]
        -> Resize to (H,W) (bilinear, half_pixel) -> Clip 0..1 = masks

F is the last 4-D tensor that feeds global pooling, or the one named. The tail after F
must treat rows independently (pooling and linear layers do); a tail that also reads a
tensor from before F (a skip connection) is refused. The classifier's opset is kept
(13 or later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, require
from ..fileio import atomic_path, file_sha256
from ..modelfile import SPEC_KEY, onnx_metadata_props
from ..spec import ModelSpec

MIN_OPSET = 13
KERNELS = ("gaussian", "point")
SCORES = ("softmax", "sigmoid", "logit")
# the 3×3 binomial (Gaussian) kernel of the authors' code (as in wysiwyc.attribution.reciprocam)
GAUSSIAN_3X3 = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=np.float32) / 16.0
# node types whose output is the global pooling of a 4-D input
GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")
SPATIAL_REDUCES = ("ReduceMean", "ReduceMax")
WINDOW_POOLS = ("AveragePool", "MaxPool")
# what the new graph names its own tensors and nodes (the classifier's names are kept)
PREFIX = "wysiwyc/"
OWN_NAMES = ("images", "logits", "classes", "masks")
NO_FEATURE = "no 4-D feature tensor before global pooling; name one with --reciprocam-layer"
INT64_MAX = np.iinfo(np.int64).max
# the fused graph's logits against the classifier's own, same runtime: only the batch differs
LOGITS_TOLERANCE = 1e-4


def _onnx() -> Any:
    return require("onnx", "export", "inserting ReciproCAM into an ONNX classifier")


def mosaic_weights(h: int, w: int, kernel: str = "gaussian") -> np.ndarray:
    """Spatial weights (P,h,w) float32, P = h·w: copy p = i·w + j weights position (y,x) by
    ``kernel`` centred at (i,j), cut at the border (``point``: 1 at (i,j) only)."""
    if kernel not in KERNELS:
        raise UserError(f"unknown ReciproCAM kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    k = GAUSSIAN_3X3 if kernel == "gaussian" else np.ones((1, 1), np.float32)
    r = k.shape[0] // 2
    pad = np.zeros((h * w, h + 2 * r, w + 2 * r), np.float32)
    for p in range(h * w):
        i, j = divmod(p, w)
        pad[p, i:i + 2 * r + 1, j:j + 2 * r + 1] = k  # padded frame: (i,j) sits at (i+r, j+r)
    return np.ascontiguousarray(pad[:, r:r + h, r:r + w])


@dataclass
class Classifier:
    """A user's ONNX classifier as read from its file.

    Attributes:
        proto: the ``onnx.ModelProto`` (weights loaded).
        input, output: the image input's name and the logits output's name.
        input_size: (H, W) when the input's spatial size is static, else ``None``.
        input_type, output_type: ``onnx.TensorProto`` element types.
        opset: the default domain's opset.
    """

    proto: Any
    input: str
    output: str
    input_size: tuple[int, int] | None
    input_type: int
    output_type: int
    opset: int


def _dims(value_info: Any) -> list[int | str | None] | None:
    """The dims of a ValueInfo (an int, a symbol or ``None`` each), ``None`` without a shape."""
    t = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def read_classifier(src: str | os.PathLike[str]) -> Classifier:
    """Load ``src`` and find its image input and logits output.

    Raises:
        UserError: a missing file, one that is not ONNX, not one float input (B,3,H,W),
            or an opset before :data:`MIN_OPSET`.
    """
    onnx = _onnx()
    p = Path(src)
    if not p.is_file():
        raise UserError(f"classifier not found: {p}")
    try:
        proto = onnx.load(str(p))
    except Exception as exc:  # protobuf's DecodeError, a missing external-data file, ...
        raise UserError(f"{p} is not an ONNX model ({type(exc).__name__})") from exc
    g = proto.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if not g.node or not g.output or not inputs:
        raise UserError(f"{p} is not an ONNX model (no graph)")
    if any(e.key == SPEC_KEY for e in proto.metadata_props):
        raise UserError(f"{p} is a wysiwyc export already; give the classifier's own .onnx")
    try:
        onnx.checker.check_model(str(p))  # the path: works past protobuf's 2 GB too
    except Exception as exc:  # onnx.checker.ValidationError
        raise UserError(f"{p} fails onnx.checker ({str(exc).strip().splitlines()[0][:200]})") from exc
    if len(inputs) != 1:
        raise UserError(f"{p} has {len(inputs)} inputs; wysiwyc explains image classifiers with one input (B,3,H,W)")
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    dims, etype = _dims(inputs[0]), inputs[0].type.tensor_type.elem_type
    if dims is None or len(dims) != 4 or isinstance(dims[1], int) and dims[1] != 3 or etype not in floats:
        raise UserError(f"{p}: input {inputs[0].name!r} is {_fmt(dims)}, not float images (B,3,H,W)")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise UserError(f"{p} has opset {opset}; re-export the classifier with opset {MIN_OPSET} or later")
    size = (dims[2], dims[3]) if all(isinstance(d, int) and d > 0 for d in dims[2:]) else None
    return Classifier(proto, inputs[0].name, g.output[0].name, size, etype,  # type: ignore[arg-type]
                      g.output[0].type.tensor_type.elem_type, opset)


def _fmt(dims: list[Any] | None) -> str:
    return "(?)" if dims is None else "(" + ",".join("?" if d is None else str(d) for d in dims) + ")"


def tensor_types(clf: Classifier, size: tuple[int, int]) -> dict[str, tuple[int, list[Any] | None]]:
    """name -> (element type, dims) of every tensor, by ONNX shape inference with the input
    fixed to (batch,3,H,W) (stale shapes of the file are dropped first)."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(clf.proto)
    del m.graph.value_info[:]
    inp = next(i for i in m.graph.input if i.name == clf.input)
    shape = inp.type.tensor_type.shape
    del shape.dim[:]
    for d in ("batch", 3, *size):
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and friends
        raise UserError(f"shape inference failed on the classifier ({str(exc).splitlines()[0][:200]})") from exc
    g = m.graph
    out = {t.name: (t.data_type, list(t.dims)) for t in g.initializer}
    for vi in (*g.input, *g.value_info, *g.output):
        out[vi.name] = (vi.type.tensor_type.elem_type, _dims(vi))
    return out


def _const_ints(name: str, graph: Any) -> list[int] | None:
    """The values of an int initializer or ``Constant`` output, ``None`` if not constant."""
    onnx = _onnx()
    for t in graph.initializer:
        if t.name == name:
            return [int(v) for v in onnx.numpy_helper.to_array(t).ravel()]
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return [int(v) for v in onnx.numpy_helper.to_array(a.t).ravel()]
                if a.name in ("value_ints", "value_int"):
                    return list(a.ints) or [a.i]
    return None


def _pooled(node: Any, graph: Any, types: dict[str, tuple[int, list[Any] | None]]) -> str | None:
    """The 4-D input that ``node`` pools over all of (h,w), else ``None``."""
    if not node.input or node.op_type not in GLOBAL_POOLS + SPATIAL_REDUCES + WINDOW_POOLS:
        return None
    x = node.input[0]
    dims = types.get(x, (0, None))[1]
    if dims is None or len(dims) != 4:
        return None
    attrs = {a.name: a for a in node.attribute}
    if node.op_type in SPATIAL_REDUCES:
        axes = list(attrs["axes"].ints) if "axes" in attrs else (
            _const_ints(node.input[1], graph) if len(node.input) > 1 and node.input[1] else None)
        return x if axes is not None and sorted(a % 4 for a in axes) == [2, 3] else None
    if node.op_type in WINDOW_POOLS:
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        return x if kernel == dims[2:] and not any(pads) else None
    return x


def find_feature(graph: Any, types: dict[str, tuple[int, list[Any] | None]], feature: str | None = None
                 ) -> tuple[str, tuple[int, int, int]]:
    """The feature map F (its name and (N,h,w)): ``feature``, else the last 4-D tensor that
    feeds global pooling (GlobalAveragePool, ReduceMean over (h,w), an AveragePool whose
    kernel is the whole map, ...).

    Raises:
        UserError: none found, an unknown or non-4-D tensor, one that is the graph input,
            or one whose (h,w) is not static or is 1×1.
    """
    if feature is None:
        found = [x for x in (_pooled(n, graph, types) for n in graph.node) if x is not None]
        if not found:
            raise UserError(NO_FEATURE)
        feature = found[-1]
    produced = {o for n in graph.node for o in n.output}
    if feature not in produced:
        near = [n for n in produced if len((types.get(n, (0, None))[1] or [])) == 4]
        hint = f"; 4-D tensors: {', '.join(near[-5:])}" if near else ""
        raise UserError(f"no tensor {feature!r} computed by the classifier{hint}")
    dims = types.get(feature, (0, None))[1]
    if dims is None or len(dims) != 4:
        raise UserError(f"tensor {feature!r} is {_fmt(dims)}, not a 4-D feature map (B,N,h,w)")
    n, h, w = dims[1:]
    if not all(isinstance(d, int) and d > 0 for d in (n, h, w)):
        raise UserError(f"feature map {feature!r} is {_fmt(dims)}: its channels and (h,w) must be static")
    if h * w < 2:
        raise UserError(f"feature map {feature!r} is 1x1: ReciproCAM needs a spatial map; name an earlier tensor")
    return feature, (n, h, w)


def _tensor_kinds(graph: Any) -> dict[str, str]:
    """name -> ``const`` (weights and what is computed from them alone), ``shape`` (from a
    ``Shape``/``Size`` and constants) or ``data`` (depends on the input's values)."""
    kinds = {t.name: "const" for t in graph.initializer}
    kinds.update({i.name: "data" for i in graph.input if i.name not in kinds})
    for node in graph.node:
        ins = {kinds.get(i, "data") for i in node.input if i}
        kind = "shape" if node.op_type in ("Shape", "Size") else (
            "const" if ins <= {"const"} else "shape" if ins <= {"const", "shape"} else "data")
        kinds.update({o: kind for o in node.output})
    return kinds


def check_tail(graph: Any, feature: str, output: str) -> None:
    """Refuse a tail (the nodes after ``feature``) that would not run on B·(1+P) rows: one
    that also reads a tensor computed from the image before ``feature`` (a skip
    connection), or logits that do not depend on ``feature``.

    Raises:
        UserError: either case.
    """
    kinds = _tensor_kinds(graph)
    tail = {feature}
    for node in graph.node:  # ONNX nodes are in topological order
        if not any(i in tail for i in node.input):
            continue
        before = [i for i in node.input if i and i not in tail and kinds.get(i) == "data"]
        if before:
            raise UserError(f"the layers after {feature!r} also read {before[0]!r}, computed before it "
                            "(a skip connection): name a later tensor with --reciprocam-layer")
        tail.update(node.output)
    if output not in tail:
        raise UserError(f"the logits do not depend on {feature!r}: name a tensor before the classifier's top")


class _Builder:
    """New nodes and initializers, named under :data:`PREFIX` so no classifier name clashes."""

    def __init__(self, taken: set[str], opset: int) -> None:
        self.onnx = _onnx()
        self.taken, self.opset = taken, opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def name(self, hint: str) -> str:
        base, k = PREFIX + hint, 0
        name = base
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, values: list[int]) -> str:
        return self.const("shape", np.array(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], outputs: list[str] | str | None = None, **attrs: Any) -> str:
        """Add a node; returns its (first) output's name (new unless ``outputs`` names it)."""
        outs = [outputs] if isinstance(outputs, str) else list(outputs or [self.name(op_type.lower())])
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0]

    def reduce(self, op_type: str, x: str, axes: list[int]) -> str:
        """``op_type`` over ``axes``, dims kept (axes became an input in opset 18)."""
        if self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=1)
        return self.op(op_type, [x], axes=axes, keepdims=1)


def _preprocess(b: _Builder, spec: ModelSpec, images: str, x: str, input_type: int) -> None:
    """``images`` (B,3,H,W) RGB in [0,1] -> the classifier's input ``x``: channels flipped
    for a BGR model, then (x - mean) / std, as :class:`wysiwyc.models.classifiers.Normalize`."""
    if spec.channel_order == "bgr":
        images = b.op("Gather", [images, b.ints([2, 1, 0])], axis=1)
    mean = b.const("mean", np.array(spec.mean, np.float32).reshape(1, 3, 1, 1))
    std = b.const("std", np.array(spec.std, np.float32).reshape(1, 3, 1, 1))
    centred = b.op("Sub", [images, mean])
    if input_type == b.onnx.TensorProto.FLOAT:
        b.op("Div", [centred, std], x)
    else:  # an fp16 (or fp64) classifier: normalise in float32, then hand it its own type
        b.op("Cast", [b.op("Div", [centred, std])], x, to=input_type)


def _mosaic(b: _Builder, feat: str, nhw: tuple[int, int, int], kernel: str, elem_type: int) -> str:
    """F (B,N,h,w) -> its B·P masked copies (B·P,N,h,w), image-major, as
    :func:`wysiwyc.attribution.reciprocam.mosaic`: copy p holds F[b,:,p] spread by the kernel."""
    n, h, w = nhw
    p = h * w
    dtype = b.onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    wts = mosaic_weights(h, w, kernel).reshape(1, p, 1, h, w).astype(dtype)
    centre = b.op("Reshape", [feat, b.ints([0, n, p])])  # (B,N,P)
    centre = b.op("Transpose", [centre], perm=[0, 2, 1])  # (B,P,N): the vector each copy spreads
    centre = b.op("Reshape", [centre, b.ints([0, p, n, 1, 1])])
    copies = b.op("Mul", [centre, b.const("mosaic_weights", wts)])  # (B,P,N,h,w)
    return b.op("Reshape", [copies, b.ints([-1, n, h, w])])


def _maps(b: _Builder, scores: str, p: int, c: int, top_k: int | None) -> str:
    """Scores of the copies (B·P,C) -> min-max normalised maps (B,C,P), or (B,K,P) of the
    top-k classes (the ``classes`` output) of ``logits``."""
    maps = b.op("Transpose", [b.op("Reshape", [scores, b.ints([-1, p, c])])], perm=[0, 2, 1])  # (B,C,P)
    if top_k is not None:
        b.op("TopK", ["logits", b.ints([top_k])], [b.name("topk_values"), "classes"], axis=-1, largest=1, sorted=1)
        idx = b.op("Expand", [b.op("Reshape", ["classes", b.ints([0, top_k, 1])]), b.ints([1, 1, p])])
        maps = b.op("GatherElements", [maps, idx], axis=1)  # per-map min-max commutes with the pick
    # wysiwyc.ops.minmax: (x - min) / (max(x - min) + 1e-7) per map
    shifted = b.op("Sub", [maps, b.reduce("ReduceMin", maps, [-1])])
    eps = b.const("eps", np.array(1e-7, np.float32))
    return b.op("Div", [shifted, b.op("Add", [b.reduce("ReduceMax", shifted, [-1]), eps])])


def _head(b: _Builder, tail: str, grid: tuple[int, int], c: int, size: tuple[int, int],
          top_k: int | None, score: str) -> None:
    """The tail's output (B·(1+P),C) float32 -> graph outputs ``logits`` (rows [:B]),
    [``classes``] and ``masks`` (the copies' scores as maps resized to ``size``)."""
    h, w = grid
    batch = b.op("Gather", [b.op("Shape", ["images"]), b.ints([0])], axis=0)  # (1,): B, dynamic
    axis0 = b.ints([0])
    b.op("Slice", [tail, b.ints([0]), batch, axis0], "logits")
    rows = b.op("Slice", [tail, batch, b.ints([INT64_MAX]), axis0])  # (B·P,C)
    scores = {"softmax": lambda: b.op("Softmax", [rows], axis=-1), "sigmoid": lambda: b.op("Sigmoid", [rows]),
              "logit": lambda: rows}[score]()
    maps = b.op("Reshape", [_maps(b, scores, h * w, c, top_k), b.ints([0, -1, h, w])])  # (B,C|K,h,w)
    lead = b.op("Slice", [b.op("Shape", [maps]), b.ints([0]), b.ints([2])])
    sizes = b.op("Concat", [lead, b.ints(list(size))], axis=0)
    # half_pixel + linear = torch's bilinear with align_corners=False
    up = b.op("Resize", [maps, "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel")
    lo, hi = b.const("zero", np.array(0.0, np.float32)), b.const("one", np.array(1.0, np.float32))
    b.op("Clip", [up, lo, hi], "masks")


def _names(graph: Any) -> set[str]:
    """Every tensor and node name of ``graph`` (and of its subgraphs)."""
    names = {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        names.update((node.name, *node.input, *node.output))
        for a in node.attribute:
            for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
                names |= _names(sub)
    return names


def _rename(graph: Any, old: str, new: str) -> None:
    """Call tensor ``old`` ``new`` everywhere in ``graph`` (subgraphs read outer names too)."""
    for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        if v.name == old:
            v.name = new
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
        for a in node.attribute:
            for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
                _rename(sub, old, new)


def _needs(node: Any) -> set[str]:
    """The tensors a node reads, its subgraphs' outer-scope reads included."""
    names = set(node.input)
    for a in node.attribute:
        for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
            for n in sub.node:
                names |= _needs(n)
    return names


def _replace(field: Any, items: list[Any]) -> None:
    """Set a repeated message field to ``items`` (copied first: they may be its own elements)."""
    copies = []
    for item in items:
        c = type(item)()
        c.CopyFrom(item)
        copies.append(c)
    del field[:]
    field.extend(copies)


def _prune(graph: Any) -> None:
    """Drop the nodes and initializers no graph output needs (the classifier's other outputs)."""
    needed = {o.name for o in graph.output}
    keep = set()
    nodes = list(graph.node)
    for k in range(len(nodes) - 1, -1, -1):
        if any(o in needed for o in nodes[k].output):
            keep.add(k)
            needed |= _needs(nodes[k])
    _replace(graph.node, [n for k, n in enumerate(nodes) if k in keep])
    _replace(graph.initializer, [t for t in graph.initializer if t.name in needed])
    _replace(graph.input, [i for i in graph.input if i.name in needed])


def _splice(clf: Classifier, feat: str, nhw: tuple[int, int, int], feat_type: int, spec: ModelSpec,
            top_k: int | None, kernel: str, score: str) -> Any:
    """The fused graph (see the module doc), made in ``clf.proto`` (changed in place)."""
    onnx = _onnx()
    g, float32 = clf.proto.graph, onnx.TensorProto.FLOAT
    b = _Builder(_names(g), clf.opset)
    x, tail = b.name("classifier_input"), b.name("classifier_logits")
    for old, new in ((clf.input, x), (clf.output, tail)):
        _rename(g, old, new)
        feat = new if feat == old else feat
    for own in OWN_NAMES:  # a classifier tensor with one of the new graph's names is renamed
        if own in b.taken:
            new = b.name(own)
            _rename(g, own, new)
            feat = new if feat == own else feat
    _preprocess(b, spec, "images", x, clf.input_type)
    pre, mark = list(b.nodes), len(b.nodes)
    cat = b.op("Concat", [feat, _mosaic(b, feat, nhw, kernel, feat_type or float32)], axis=0)  # (B·(1+P),N,h,w)
    mosaic_nodes, mark = b.nodes[mark:], len(b.nodes)
    for node in g.node:  # the rest of the classifier now runs on the image rows and the copies
        node.input[:] = [cat if i == feat else i for i in node.input]
    logits = tail if clf.output_type == float32 else b.op("Cast", [tail], to=float32)
    c = spec.num_classes
    _head(b, logits, nhw[1:], c, tuple(spec.image_size), top_k, score)  # type: ignore[arg-type]
    nodes = list(g.node)
    at = next(k for k, n in enumerate(nodes) if feat in n.output)
    _replace(g.node, pre + nodes[:at + 1] + mosaic_nodes + nodes[at + 1:] + b.nodes[mark:])
    g.initializer.extend(b.inits)
    h, w = spec.image_size
    k = c if top_k is None else top_k
    images = onnx.helper.make_tensor_value_info("images", float32, ["batch", 3, h, w])
    _replace(g.input, [images, *(i for i in g.input if i.name != x)])
    outs = [onnx.helper.make_tensor_value_info("logits", float32, ["batch", c])]
    if top_k is not None:
        outs.append(onnx.helper.make_tensor_value_info("classes", onnx.TensorProto.INT64, ["batch", k]))
    outs.append(onnx.helper.make_tensor_value_info("masks", float32, ["batch", k, h, w]))
    _replace(g.output, outs)
    del g.value_info[:]  # the tail's shapes changed (B·(1+P) rows); ONNX Runtime infers them
    _prune(g)
    return clf.proto


def _set_metadata(proto: Any, meta: dict[str, str]) -> None:
    """The wysiwyc metadata in place of any the file had (the classifier's other entries stay)."""
    other = [(e.key, e.value) for e in proto.metadata_props if e.key not in meta and not e.key.startswith("wysiwyc.")]
    del proto.metadata_props[:]
    for k, v in (*other, *meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def num_classes(clf: Classifier, types: dict[str, tuple[int, list[Any] | None]], src: Any) -> int:
    """C of the logits output (B,C).

    Raises:
        UserError: an output that is not 2-D with a static C.
    """
    dims = types.get(clf.output, (0, None))[1]
    if dims is None or len(dims) != 2 or not isinstance(dims[1], int) or dims[1] < 1:
        raise UserError(f"{src} returns {clf.output!r} {_fmt(dims)}, not logits (B,C): wysiwyc explains "
                        "image classifiers")
    return int(dims[1])


@dataclass
class Insertion:
    """A checked plan of :func:`write_fused`: where the head goes and what the file's spec says.

    Attributes:
        clf: the classifier read from ``source``.
        source: its file.
        feature: the tensor whose copies are masked; ``nhw``: its (N,h,w).
        feature_type: its ``onnx.TensorProto`` element type.
        spec: the fused graph's spec (kind ``reciprocam``, arch ``onnx``).
        top_k, kernel, score: as :func:`insert_reciprocam` takes them.
    """

    clf: Classifier
    source: Path
    feature: str
    nhw: tuple[int, int, int]
    feature_type: int
    spec: ModelSpec
    top_k: int | None
    kernel: str
    score: str


def plan_reciprocam(src: str | os.PathLike[str], spec: ModelSpec, feature: str | None = None,
                    top_k: int | None = None, kernel: str = "gaussian", score: str = "softmax") -> Insertion:
    """Read ``src`` and check everything :func:`insert_reciprocam` needs, writing nothing.

    Raises:
        UserError: a file that is not an ONNX classifier, a class-name count other than C,
            no usable feature map (see :func:`find_feature`, :func:`check_tail`).
    """
    if score not in SCORES:
        raise UserError(f"unknown ReciproCAM score {score!r}; choose from {', '.join(SCORES)}")
    mosaic_weights(2, 2, kernel)  # an unknown kernel fails here, before any work
    clf = read_classifier(src)
    size = (int(spec.image_size[0]), int(spec.image_size[1]))
    if clf.input_size is not None and clf.input_size != size:
        raise UserError(f"{src} takes {clf.input_size[0]}x{clf.input_size[1]} images, not {size[0]}x{size[1]}")
    types = tensor_types(clf, size)
    c = num_classes(clf, types, src)
    if spec.num_classes != c:
        raise UserError(f"{src} has {c} outputs but the class names list {spec.num_classes}")
    if top_k is not None and not 1 <= top_k <= c:
        raise UserError(f"--top-k must be 1..{c}, got {top_k}")
    feat, nhw = find_feature(clf.proto.graph, types, feature)
    check_tail(clf.proto.graph, feat, clf.output)
    full = spec.with_head("reciprocam", "reciprocam", score, {"reciprocam": {
        "layer": feat, "kernel": kernel, "score": score}}, classifier_arch="onnx", image_size=size)
    return Insertion(clf, Path(src), feat, nhw, types[feat][0], full, top_k, kernel, score)


def write_fused(plan: Insertion, out: str | os.PathLike[str]) -> dict[str, str]:
    """Splice the head in as ``plan`` says (its classifier is changed in place), run
    ``onnx.checker`` and write ``out`` atomically. Returns the ``metadata_props`` written
    (:func:`wysiwyc.modelfile.onnx_metadata_props`)."""
    onnx = _onnx()
    proto = _splice(plan.clf, plan.feature, plan.nhw, plan.feature_type, plan.spec, plan.top_k, plan.kernel,
                    plan.score)
    meta = onnx_metadata_props(plan.spec, "fp32", "fused", file_sha256(plan.source))
    _set_metadata(proto, meta)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx.checker.ValidationError, or a proto over 2 GB
        raise UserError(f"the fused graph fails onnx.checker ({str(exc).splitlines()[0][:200]})") from exc
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return meta


def insert_reciprocam(src: str | os.PathLike[str], out: str | os.PathLike[str], spec: ModelSpec,
                      feature: str | None = None, top_k: int | None = None, kernel: str = "gaussian",
                      score: str = "softmax") -> dict[str, str]:
    """Write ``out``: the ONNX classifier ``src`` with the ReciproCAM head inside (the
    module doc), checked by ``onnx.checker`` and written atomically; nothing is written on
    an error.

    Args:
        src: the classifier (.onnx): one input (B,3,H,W), logits (B,C) first among its outputs.
        out: the fused .onnx to write.
        spec: the classifier's spec (class names, image size, mean/std, channel order,
            activation); the file's is this with kind ``reciprocam`` and arch ``onnx``.
        feature: the tensor whose copies are masked (default: :func:`find_feature`'s).
        top_k: masks of each image's ``top_k`` best classes only (``None``: every class).
        kernel: ``gaussian`` (authors' code) or ``point``.
        score: ``softmax`` (authors' code), ``sigmoid`` or ``logit``.

    Returns:
        the ``metadata_props`` written (:func:`wysiwyc.modelfile.onnx_metadata_props`).

    Raises:
        UserError: see :func:`plan_reciprocam`.
    """
    return write_fused(plan_reciprocam(src, spec, feature, top_k, kernel, score), out)


def normalise(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """images (B,3,H,W) RGB in [0,1] -> the classifier's input (B,3,H,W) float32, as the fused
    graph does it (channel flip for BGR, then (x - mean) / std in float32)."""
    x = images[:, ::-1] if spec.channel_order == "bgr" else images
    mean = np.array(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(spec.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x.astype(np.float32) - mean) / std)


def _session(ort: Any, path: Any) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def parity_report(fused: str | os.PathLike[str], src: str | os.PathLike[str], spec: ModelSpec, n: int,
                  seed: int = 0, chunk: int = 4) -> dict[str, float]:
    """ONNX Runtime (CPU) on the fused graph and on the classifier ``src`` itself (its input
    normalised in numpy as ``spec`` says) on ``n`` random images (B,3,H,W) in [0,1].

    Returns:
        ``n_images``, ``logits_max_abs_diff``, ``label_agreement`` (top-1 for softmax,
        sigmoid ≥ 0.5 otherwise), ``class_agreement`` (a top-k graph's classes against the
        classifier's top k), ``masks_min``, ``masks_max`` (NaN when a mask is not finite).

    Raises:
        UserError: the fused graph does not run (its tail does not take B·(1+P) rows).
    """
    ort = require("onnxruntime", "cpu", "the parity check")
    fs, cs = _session(ort, fused), _session(ort, src)
    dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(cs.get_inputs()[0].type, np.float32)
    names = [o.name for o in fs.get_outputs()]
    images = np.random.default_rng(seed).random((n, 3, *spec.image_size), dtype=np.float32)
    got: dict[str, list[np.ndarray]] = {k: [] for k in (*names, "reference")}
    for i in range(0, n, chunk):
        x = images[i:i + chunk]
        try:
            outs = fs.run(None, {"images": x})
        except Exception as exc:  # onnxruntime's Fail / RuntimeException
            raise UserError(f"the fused graph does not run ({str(exc).strip().splitlines()[0][:200]}): the layers "
                            "after the feature map must take any batch size; name another with --reciprocam-layer"
                            ) from exc
        for k, v in zip(names, outs):
            got[k].append(v)
        ref = cs.run(None, {cs.get_inputs()[0].name: normalise(x, spec).astype(dtype)})[0]
        got["reference"].append(ref.astype(np.float32))
    res = {k: np.concatenate(v) for k, v in got.items()}
    logits, ref, masks = res["logits"], res["reference"], res["masks"]
    if spec.activation == "softmax":
        agree = logits.argmax(1) == ref.argmax(1)
    else:
        agree = (logits > 0) == (ref > 0)
    rep = {"n_images": n, "logits_max_abs_diff": float(np.abs(logits - ref).max()),
           "label_agreement": float(agree.mean()),
           "masks_min": float(masks.min()) if np.isfinite(masks).all() else float("nan"),
           "masks_max": float(masks.max()) if np.isfinite(masks).all() else float("nan")}
    if "classes" in res:
        k = res["classes"].shape[1]
        rep["class_agreement"] = float((res["classes"] == np.argsort(-ref, axis=1, kind="stable")[:, :k]).mean())
    return rep


def parity_failures(report: dict[str, float], tol_logits: float = LOGITS_TOLERANCE) -> list[str]:
    """What of :func:`parity_report` is out of bounds: logits past ``tol_logits``, masks
    outside [0,1] or not finite."""
    bad = []
    if not report["logits_max_abs_diff"] <= tol_logits:
        bad.append(f"logits_max_abs_diff={report['logits_max_abs_diff']:.6g} (tolerance {tol_logits:g})")
    if not 0.0 <= report["masks_min"] <= report["masks_max"] <= 1.0:
        bad.append(f"masks in [{report['masks_min']:.3g}, {report['masks_max']:.3g}], not within [0, 1]")
    return bad
