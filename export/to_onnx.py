#!/usr/bin/env python
"""Export a wysiwyc checkpoint to a parity-checked ONNX file.

    python export/to_onnx.py src/wysiwyc/assets/shapes_explainer.pt -o shapes_explainer.onnx
    python export/to_onnx.py src/wysiwyc/assets/shapes_classifier.pt --head reciprocam   # ReciproCAM head
    python export/to_onnx.py classifier.onnx --head reciprocam --classes imagenet --activation softmax

An ``.onnx`` classifier (input (B,3,H,W), logits (B,C)) gets the ReciproCAM head inserted
into its own graph, without torch (:mod:`wysiwyc.export.onnx_insert`): ``--classes`` and
``--activation`` say what its outputs are, ``--mean/--std/--no-normalize/--bgr`` how it
takes its input; the parity check runs the fused graph against the classifier itself.

Without ``-o`` the file goes to the current directory as ``CHECKPOINT-STEM[_HEAD].onnx``;
an existing file is only replaced with ``--force``, and a file inside the installed
``wysiwyc`` package (its bundled assets) only with an explicit ``-o`` and ``--force`` —
its report then goes to the current directory, never into the package.

After export: onnx.checker, then ONNX Runtime (CPU) against torch on real images of the
checkpoint's data; ``OUT.report.json`` holds the numbers. Past a tolerance the .onnx is
removed and the command exits 1. int8 is static QDQ (symmetric, per-channel) calibrated on
``--calib DATA`` (default: the checkpoint's dataset).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main
from wysiwyc.formats import DEFAULT_TOP_K, FORMATS, GRAPH_ALIASES, GRAPHS, MANY_CLASSES, PRECISIONS
from wysiwyc.scripting import add_preprocessing_args, image_size_arg, preprocessing_from_args
from wysiwyc.spec import ACTIVATIONS

ONNX = FORMATS["onnx"]


def _default_tolerances(key: str, precisions: tuple[str, ...]) -> str:
    """``fp16 0.99, int8 0.95`` (or ``0.99`` for one precision): the table's defaults of one
    tolerance, for --help."""
    vals = [f"{PRECISIONS[p].tolerances[key]:g}" for p in precisions]
    return vals[0] if len(vals) == 1 else ", ".join(f"{p} {v}" for p, v in zip(precisions, vals))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a checkpoint to ONNX with a parity check.", add_help=add_help)
    p.add_argument("checkpoint", help="explainer, mask-predictor or classifier checkpoint (.pt), or a classifier "
                                      ".onnx (with --head reciprocam, --classes and --activation)")
    p.add_argument("-o", "--output", default=None,
                   help="output .onnx (default: ./CHECKPOINT-STEM.onnx, ./STEM_HEAD.onnx with --head)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--head", default=None,
                   help="training-free attribution head in place of the checkpoint's: reciprocam")
    # no argparse choices: an unknown precision is reported by check_options, like every other misuse
    p.add_argument("--precision", default="fp32", help=" | ".join(ONNX.precisions))
    p.add_argument("--calib", default=None, help="int8 calibration data: shapes | voc:ROOT | coco:ROOT | folder:DIR")
    p.add_argument("--calib-samples", type=int, default=128, help="int8 calibration images")
    p.add_argument("--graph", choices=ONNX.graphs + tuple(GRAPH_ALIASES), default="fused", metavar="GRAPH",
                   help="; ".join(f"{g}: {GRAPHS[g].help}" for g in ONNX.graphs))
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help=f"fused graph: masks of each image's K best classes only, outputs logits, classes (B,K), "
                        f"masks (B,K,H,W) (default: every class up to {MANY_CLASSES} classes, else {DEFAULT_TOP_K}; "
                        "0: every class)")
    p.add_argument("--reciprocam-layer", default=None, metavar="MODULE",
                   help="--head reciprocam: the block whose output is masked (default: the deepest feature block, "
                        "or a ViT's last encoder block); for an .onnx classifier a tensor name (default: the last "
                        "4-D tensor before global pooling)")
    p.add_argument("--parity-data", default=None, metavar="DATA",
                   help="images for the parity check: shapes | voc:ROOT | coco:ROOT | folder:DIR (default: the "
                        "checkpoint's dataset; random images when it has none)")
    p.add_argument("--opset", type=int, default=20)
    p.add_argument("--batch", default="dynamic", help="N or dynamic (default)")
    p.add_argument("--image-size", type=int, nargs="+", default=None, metavar="H [W]",
                   help="input size (default: the checkpoint's; an .onnx classifier's static input, else 224)")
    p.add_argument("--parity-samples", type=int, default=32, help="images for the parity check")
    p.add_argument("--tol-mask-abs", type=float, default=None,
                   help=f"fp32: max abs mask diff (default {_default_tolerances('masks_max_abs_diff', ('fp32',))})")
    p.add_argument("--tol-mask-iou", type=float, default=None,
                   help=f"min mask IoU (default {_default_tolerances('mask_iou', ('fp16', 'int8'))})")
    p.add_argument("--tol-label-agreement", type=float, default=None,
                   help=f"int8: min label agreement (default {_default_tolerances('label_agreement', ('int8',))})")
    add_onnx_classifier_args(p)
    return p


def add_onnx_classifier_args(p: argparse.ArgumentParser) -> None:
    """The flags that describe an .onnx classifier (a checkpoint has all this in its spec)."""
    g = p.add_argument_group("an .onnx classifier")
    g.add_argument("--classes", default=None, help="a text file with one class name per line, in logit order, "
                                                   "or 'imagenet' for the 1000 ImageNet-1k names (required)")
    g.add_argument("--activation", default=None, help=f"how its logits become probabilities: "
                                                      f"{' | '.join(ACTIVATIONS)} (required)")
    add_preprocessing_args(g)


def say(msg: str) -> None:
    """Progress on stderr (the export and the parity check take seconds to minutes)."""
    print(f"to_onnx: {msg}", file=sys.stderr, flush=True)


def package_dir() -> Path:
    """The folder of the imported ``wysiwyc`` package (site-packages in a regular install)."""
    import wysiwyc

    return Path(wysiwyc.__file__).resolve().parent


def output_paths(ckpt: Path, output: str | None, head: str | None, force: bool) -> tuple[Path, Path]:
    """(the .onnx to write, its report .json).

    Default: ``./STEM.onnx`` (``./STEM_HEAD.onnx`` with a head) in the current directory.
    The report sits next to the .onnx, except for a file inside the package, whose report
    goes to the current directory.

    Raises:
        UserError: the file exists and ``force`` is off; or it lies inside the package and
            was not named with ``-o`` and ``--force``.
    """
    out = Path(output) if output else Path.cwd() / f"{ckpt.stem}{'_' + head if head else ''}.onnx"
    inside = out.resolve().is_relative_to(package_dir())
    if inside and not (output and force):
        raise UserError(f"{out} is inside the installed wysiwyc package; write elsewhere with -o "
                        "(refreshing a bundled asset takes an explicit -o and --force)")
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it or -o another path")
    report = Path.cwd() / f"{out.name}.report.json" if inside else Path(f"{out}.report.json")
    return out, report


def tolerances(args: argparse.Namespace) -> dict[str, float]:
    """The precision's parity bounds (:data:`~wysiwyc.formats.PRECISIONS`), with the ``--tol-*``
    flags given."""
    tol = dict(PRECISIONS[args.precision].tolerances)
    for key, flag in (("masks_max_abs_diff", args.tol_mask_abs), ("mask_iou", args.tol_mask_iou),
                      ("label_agreement", args.tol_label_agreement)):
        if flag is not None:
            tol[key] = flag
    return tol


def dataset_images(data: str, split: str, n: int, size: tuple[int, int]) -> Any:
    """``n`` images (N,3,H,W) in [0,1] of a dataset split."""
    import torch

    from wysiwyc.data import build_dataset, dataset_kwargs

    ds = build_dataset(data, split, size, **dataset_kwargs(data, n))
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])


def top_k(flag: int | None, num_classes: int, graph: str, kind: str) -> int | None:
    """The ``--top-k`` of the fused graph: ``None`` (every class) or K."""
    if graph != "fused" or kind == "classifier":
        if flag:
            raise UserError("--top-k applies to the fused graph of a model with an attribution head")
        return None
    if flag is None:
        return None if num_classes <= MANY_CLASSES else DEFAULT_TOP_K
    if flag == 0 or flag >= num_classes:
        return None
    if flag < 0:
        raise UserError(f"--top-k must be ≥ 0, got {flag}")
    return flag


def parity_images(data: str, n: int, size: tuple[int, int]) -> Any:
    """``n`` test images of ``data``; random ones (said on stderr) when there is none here."""
    import torch

    if data:
        try:
            return dataset_images(data, "test", n, size)
        except UserError as exc:  # real data not on this machine: fall back to random images, say so
            print(f"warning: {exc}; parity on random images", file=sys.stderr)
    else:
        print("to_onnx: no dataset recorded for this model: parity on random images (--parity-data for real ones)",
              file=sys.stderr)
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(0))


def is_onnx_classifier(path: str) -> bool:
    """Whether the positional input is an .onnx classifier (the torch-free route)."""
    return Path(path).suffix.lower() == ".onnx"


def refuse_onnx_flags(args: argparse.Namespace) -> None:
    """A checkpoint's spec has its class names and preprocessing: their flags are for .onnx.

    Raises:
        UserError: one of them given with a checkpoint.
    """
    given = [f for f, v in (("--classes", args.classes), ("--activation", args.activation), ("--mean", args.mean),
                            ("--std", args.std), ("--no-normalize", args.no_normalize), ("--bgr", args.bgr)) if v]
    if given:
        raise UserError(f"{given[0]} describes an .onnx classifier; a checkpoint's spec has it already")


def onnx_spec(args: argparse.Namespace, src: Path) -> Any:
    """The :class:`~wysiwyc.spec.ModelSpec` of an .onnx classifier from the flags (input size:
    ``--image-size``, else the graph's when static, else 224).

    Raises:
        UserError: a flag missing or one that does not apply to an .onnx classifier.
    """
    from wysiwyc.export.onnx_insert import read_classifier
    from wysiwyc.spec import ModelSpec, read_class_names

    if args.head != "reciprocam":
        raise UserError("an .onnx classifier takes --head reciprocam (the head inserted into its graph)")
    if not args.classes or args.activation not in ACTIVATIONS:
        raise UserError(f"an .onnx classifier needs --classes FILE|imagenet and --activation "
                        f"{'|'.join(ACTIVATIONS)} (what its outputs are)")
    mean, std, bgr = preprocessing_from_args(args)
    for flag, bad in (("--precision", args.precision != "fp32"), ("--graph", args.graph != "fused"),
                      ("--batch", args.batch != "dynamic"), ("--calib", args.calib),
                      ("--parity-data", args.parity_data)):
        if bad:
            raise UserError(f"{flag} does not apply to an .onnx classifier (fp32 fused graph, dynamic batch, "
                            "parity on random images)")
    names = read_class_names(args.classes)
    size = image_size_arg(args.image_size, read_classifier(src).input_size or (224, 224))
    return ModelSpec(class_names=names, image_size=size, mean=mean, std=std, classifier_arch="onnx", dataset="",
                     activation=args.activation, channel_order="bgr" if bgr else "rgb")


def finish(report: dict[str, Any], tol: dict[str, float], failed: list[str], out: Path, report_path: Path) -> int:
    """Write the parity report; past a tolerance remove the export (exit 1), else say what
    was written (exit 0)."""
    report.update({"tolerances": tol, "passed": not failed, "onnx": str(out), "size_bytes": out.stat().st_size})
    write_report(report_path, report)
    print(" ".join(f"{k}={v:.3g}" for k, v in report.items() if isinstance(v, float)))
    if failed:
        out.unlink()
        print(f"parity check FAILED ({'; '.join(failed)}): removed {out}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({report['size_bytes'] / 1e6:.2f} MB) and {report_path}")
    return 0


def write_report(path: Path, payload: dict[str, Any]) -> None:
    """The parity report as JSON, written atomically."""
    import json

    from wysiwyc.fileio import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, sort_keys=True))


def onnx_classifier_main(args: argparse.Namespace) -> int:
    """``CLASSIFIER.onnx --head reciprocam``: insert the head into the graph, check the fused
    graph's logits against the classifier's own on random images, write the report. No torch."""
    from wysiwyc.export.onnx_insert import (LOGITS_TOLERANCE, parity_failures, parity_report, plan_reciprocam,
                                            write_fused)

    src = Path(args.checkpoint)
    out, report_path = output_paths(src, args.output, args.head, args.force)
    spec = onnx_spec(args, src)
    k = top_k(args.top_k, spec.num_classes, "fused", "reciprocam")
    plan = plan_reciprocam(src, spec, args.reciprocam_layer, k)  # a misuse is one line, before any progress
    n, h, w = plan.nhw
    say(f"inserting ReciproCAM into {src} at feature map {plan.feature!r} ({n}x{h}x{w}; {spec.num_classes} "
        f"classes{f', top {k}' if k else ''}) ...")
    meta = write_fused(plan, out)
    say(f"parity check against {src} on {args.parity_samples} random images ...")
    try:
        report = parity_report(out, src, spec, args.parity_samples)
    except UserError:
        out.unlink(missing_ok=True)
        raise
    tol = {"logits_max_abs_diff": LOGITS_TOLERANCE}
    report.update({"precision": "fp32", "source": str(src), **meta})
    return finish(report, tol, parity_failures(report, LOGITS_TOLERANCE), out, report_path)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if is_onnx_classifier(args.checkpoint):
        return onnx_classifier_main(args)  # torch is never imported on this route
    refuse_onnx_flags(args)

    from wysiwyc.export.onnx_export import (ExportOptions, check_options, check_tolerances, export_model,
                                            export_onnx, parity_report)
    from wysiwyc.fileio import file_sha256

    ckpt = Path(args.checkpoint)
    out, report_path = output_paths(ckpt, args.output, args.head, args.force)
    dynamic = args.batch == "dynamic"
    if not dynamic and not args.batch.isdigit():
        raise UserError(f"--batch must be a number or 'dynamic', got {args.batch!r}")
    if args.graph in GRAPH_ALIASES:
        print(f"warning: --graph {args.graph} is deprecated, use --graph {GRAPH_ALIASES[args.graph]}",
              file=sys.stderr)
    opts = ExportOptions(precision=args.precision, opset=args.opset, dynamic_batch=dynamic,
                         batch=2 if dynamic else int(args.batch),
                         image_size=image_size_arg(args.image_size, None), graph=args.graph,  # type: ignore[arg-type]
                         head=args.head)
    check_options(opts)  # a misuse is one line, before any progress line
    settings = {"layer": args.reciprocam_layer} if args.reciprocam_layer else {}
    model = export_model(ckpt, args.head, **settings)  # the checkpoint is read here, once
    spec = model.spec
    opts.top_k = top_k(args.top_k, spec.num_classes, opts.graph, spec.kind)
    size = opts.image_size or spec.image_size
    calib = None
    if args.precision == "int8":
        data = args.calib or spec.dataset
        say(f"loading {args.calib_samples} int8 calibration images of {data} ...")
        # calibrate on the train split, check parity on the test split
        calib = dataset_images(data, "train", args.calib_samples, size).numpy()
    say(f"exporting {ckpt} ({args.precision}, graph {opts.graph}{', head ' + args.head if args.head else ''}) "
        f"to {out} ...")
    t0 = time.perf_counter()
    meta = export_onnx(model, out, opts, file_sha256(ckpt), calib_images=calib)
    say(f"exported in {time.perf_counter() - t0:.1f} s; parity check against torch ...")
    n = args.parity_samples if dynamic else opts.batch
    images = parity_images(args.parity_data or spec.dataset, n, size)
    report = parity_report(model, out, images, opts.top_k)
    tol = tolerances(args)
    report.update({"precision": args.precision, **meta})
    return finish(report, tol, check_tolerances(report, tol), out, report_path)


if __name__ == "__main__":
    sys.exit(main())
