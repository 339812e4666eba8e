"""What each model file format can hold and run: the one capability table of export and runtime.

One row per format, after the Ultralytics exporter's format table: the name, the argument
that selects it, the file suffix, the devices that run it, the precisions and graphs it
can hold, the command that writes it and the flags that command takes. Next to it: per
precision, the parity bounds an ONNX export must meet against torch; per graph, its
outputs and the checkpoint kinds that have it; and the precision rules of a TensorRT build.

``export/to_onnx.py``, ``export/to_tensorrt.py`` and the runtime (which picks its backend
by suffix) all read these tables. Stdlib-only: the torch-free runtime imports it, and it
lives at the package root so that the runtime needs nothing from :mod:`wysiwyc.export`.

=========  =========  =========  ====  ====  ==================  ================
Format     Argument   Suffix     CPU   GPU   Precisions          Graphs
=========  =========  =========  ====  ====  ==================  ================
PyTorch    torch      .pt        yes   yes   fp32, fp16 (CUDA)   fused
ONNX       onnx       .onnx      yes   yes   fp32, fp16, int8    fused, masks
TensorRT   engine     .engine    no    yes   fp32, fp16, int8    fused
=========  =========  =========  ====  ====  ==================  ================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath

from .errors import UserError
from .spec import FREE_KINDS, KINDS


@dataclass(frozen=True)
class Graph:
    """A graph an export can hold.

    Attributes:
        name: the ``--graph`` value.
        outputs: output names, in order (input is always ``images`` (B,3,H,W) in [0,1]).
        kinds: checkpoint kinds that have this graph.
        help: one line for ``--help``.
    """

    name: str
    outputs: tuple[str, ...]
    kinds: tuple[str, ...]
    help: str


GRAPHS: dict[str, Graph] = {g.name: g for g in (
    # a plain classifier's fused graph has the logits only
    Graph("fused", ("logits", "masks"), KINDS + FREE_KINDS,
          "classifier + attribution in one graph (logits, masks)"),
    # the Explainer (and RTIS) sees only the image, so its network exports alone; a mask
    # predictor reads the classifier's features and has no such graph
    Graph("masks", ("masks",), ("explainer", "rtis"),
          "the attribution network alone, images -> masks (Explainer and RTIS checkpoints)"),
)}
# the fused graph of a many-class model: masks for each image's top-k classes only
TOPK_OUTPUTS = ("logits", "classes", "masks")
# above this many classes an export keeps the top-k masks (DEFAULT_TOP_K) unless told otherwise
MANY_CLASSES = 32
DEFAULT_TOP_K = 5

# old --graph spellings, accepted with a deprecation notice
GRAPH_ALIASES: dict[str, str] = {"explainer": "masks"}


@dataclass(frozen=True)
class Precision:
    """A numeric precision and the parity bounds of an ONNX export in it against torch.

    Attributes:
        name: ``fp32``, ``fp16`` or ``int8``.
        tolerances: ``*_max_abs_diff`` are upper bounds, the others (``mask_iou``,
            ``label_agreement``) lower bounds; see
            :func:`wysiwyc.export.onnx_export.check_tolerances`.
    """

    name: str
    tolerances: Mapping[str, float]


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    # fp32 must reproduce torch; reduced precisions are held to the masks' overlap instead
    # of their values, and int8 also to the thresholded labels (its logits move most)
    Precision("fp32", {"masks_max_abs_diff": 1e-4, "mask_iou": 0.0, "label_agreement": 0.0}),
    Precision("fp16", {"masks_max_abs_diff": float("inf"), "mask_iou": 0.99, "label_agreement": 0.0}),
    Precision("int8", {"masks_max_abs_diff": float("inf"), "mask_iou": 0.95, "label_agreement": 0.99}),
)}


@dataclass(frozen=True)
class Format:
    """One model file format.

    Attributes:
        name: display name.
        argument: the key of :data:`FORMATS` (and of the runtime's backend registry).
        suffix: the file suffix that selects it.
        noun: how messages name such a file.
        cpu, gpu: the devices that run it.
        precisions: the precisions it can hold (or, for ``.pt``, run in).
        graphs: the :data:`GRAPHS` it can hold.
        command: the command that writes it.
        flags: that command's options.
        precision_flags: the command's flags that ask for each precision.
    """

    name: str
    argument: str
    suffix: str
    noun: str
    cpu: bool
    gpu: bool
    precisions: tuple[str, ...]
    graphs: tuple[str, ...]
    command: str
    flags: tuple[str, ...] = ()
    precision_flags: Mapping[str, str] = field(default_factory=dict)


FORMATS: dict[str, Format] = {f.argument: f for f in (
    Format("PyTorch", "torch", ".pt", "a .pt checkpoint", cpu=True, gpu=True, precisions=("fp32", "fp16"),
           graphs=("fused",), command="train/train_*.py"),
    Format("ONNX", "onnx", ".onnx", "an .onnx export", cpu=True, gpu=True, precisions=("fp32", "fp16", "int8"),
           graphs=("fused", "masks"), command="export/to_onnx.py",
           flags=("--precision", "--calib", "--calib-samples", "--graph", "--opset", "--batch", "--image-size",
                  "--parity-samples", "--tol-mask-abs", "--tol-mask-iou", "--tol-label-agreement"),
           precision_flags={"fp32": "", "fp16": "--precision fp16", "int8": "--precision int8 --calib DATA"}),
    # engines are built from the fused graph only: the runtime reads images -> (logits, masks)
    Format("TensorRT", "engine", ".engine", "a TensorRT .engine", cpu=False, gpu=True,
           precisions=("fp32", "fp16", "int8"), graphs=("fused",), command="export/to_tensorrt.py",
           flags=("--fp16", "--int8", "--batch", "--workspace"),
           precision_flags={"fp32": "", "fp16": "--fp16", "int8": "--int8"}),
)}


def format_for(path: str | PurePath) -> Format | None:
    """The format a file's suffix names (case-insensitive), or ``None``."""
    suffix = PurePath(path).suffix.lower()
    return next((f for f in FORMATS.values() if f.suffix == suffix), None)


def known_files() -> str:
    """``a .pt checkpoint, an .onnx export or a TensorRT .engine``: the formats, for messages."""
    nouns = [f.noun for f in FORMATS.values()]
    return f"{', '.join(nouns[:-1])} or {nouns[-1]}"


@dataclass(frozen=True)
class EngineBuild:
    """How TensorRT builds an engine for one (ONNX precision, build flag) pair.

    Attributes:
        precision: the engine's precision.
        strongly_typed: the graph's own types (and QDQ nodes) decide the precision;
            otherwise the weakly typed ``BuilderFlag.FP16`` does.
        max_trt_major: the last TensorRT major version that can build it (``None``: all).
    """

    precision: str
    strongly_typed: bool = True
    max_trt_major: int | None = None


# (the ONNX's precision, the precision flag of export/to_tensorrt.py or None) -> the build.
# A pair not listed is refused. int8 always comes from the ONNX's QDQ nodes (calibrator
# int8 is deprecated in TensorRT 10 and removed in 11); TensorRT 11 has no weakly typed
# networks, so fp16 there must already be in the ONNX.
ENGINE_BUILDS: dict[tuple[str, str | None], EngineBuild] = {
    ("fp32", None): EngineBuild("fp32"),
    ("fp32", "fp16"): EngineBuild("fp16", strongly_typed=False, max_trt_major=10),
    ("fp16", None): EngineBuild("fp16"),
    ("fp16", "fp16"): EngineBuild("fp16"),
    ("int8", None): EngineBuild("int8"),
    ("int8", "int8"): EngineBuild("int8"),
}


def plan_engine_build(onnx_precision: str, flag: str | None, trt_major: int) -> EngineBuild:
    """Look a TensorRT build up in :data:`ENGINE_BUILDS`.

    Args:
        onnx_precision: the ONNX's ``wysiwyc.precision``.
        flag: the precision asked for with a build flag (``fp16``, ``int8``) or ``None``.
        trt_major: the TensorRT major version.

    Raises:
        UserError: a pair not in the table, or one this TensorRT cannot build; the message
            says which export to run instead.
    """
    onnx_cmd = f"python {FORMATS['onnx'].command} CKPT"
    build = ENGINE_BUILDS.get((onnx_precision, flag))
    if build is None and flag == "int8":
        raise UserError(f"--int8 needs an ONNX with QDQ nodes: export it with "
                        f"`{onnx_cmd} {FORMATS['onnx'].precision_flags['int8']}` (calibrator-based "
                        "int8 is deprecated in TensorRT 10 and removed in 11)")
    if build is None:
        raise UserError(f"{FORMATS['engine'].precision_flags.get(flag or '', flag)} asked for, "
                        f"but this ONNX is {onnx_precision}")
    if build.max_trt_major is not None and trt_major > build.max_trt_major:
        raise UserError(f"TensorRT {trt_major} builds strongly typed networks: the precision comes from the ONNX; "
                        f"export with `{onnx_cmd} {FORMATS['onnx'].precision_flags[build.precision]}` "
                        f"and build without {FORMATS['engine'].precision_flags[build.precision]}")
    return build


DEFAULT_BATCH_PROFILE = (1, 1, 16)


def plan_batch_profile(static_batch: int | None, requested: tuple[int, int, int] | None = None,
                       flag: str = "--batch") -> tuple[int, int, int]:
    """The (min, opt, max) batch sizes of a TensorRT optimisation profile for ``images``.

    A static-batch ONNX (``export/to_onnx.py --batch N``) can only be built for exactly N,
    so its profile is N/N/N (the runtime pads or chunks to N); a dynamic one takes the
    requested profile, else :data:`DEFAULT_BATCH_PROFILE`.

    Args:
        static_batch: the ONNX's fixed batch dimension, ``None`` when dynamic.
        requested: the profile asked for (``None``: the default).
        flag: the option named in error messages.

    Raises:
        UserError: a profile that is not 1 ≤ MIN ≤ OPT ≤ MAX, or one other than N N N for a
            static-batch ONNX.
    """
    if static_batch is not None:
        fixed = (int(static_batch),) * 3
        if requested is not None and tuple(requested) != fixed:
            n = fixed[0]
            raise UserError(f"{flag} {' '.join(map(str, requested))}: this ONNX has a fixed batch of {n} "
                            f"(exported with --batch {n}), so its engine is built for {n} {n} {n}; leave out "
                            f"{flag}, or export with a dynamic batch")
        return fixed
    lo, opt, hi = (int(v) for v in (requested or DEFAULT_BATCH_PROFILE))
    if not 1 <= lo <= opt <= hi:
        raise UserError(f"{flag} needs 1 ≤ MIN ≤ OPT ≤ MAX, got {lo} {opt} {hi}")
    return lo, opt, hi
