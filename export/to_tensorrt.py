#!/usr/bin/env python
"""Build a TensorRT engine from a wysiwyc ONNX export (needs the ``[trt]`` extra and a GPU).

    python export/to_onnx.py ckpt.pt --precision fp16 -o model_fp16.onnx
    python export/to_tensorrt.py model_fp16.onnx -o model.engine --batch 1 1 8

Writes ``OUT.engine`` and its sidecar ``OUT.engine.json`` (TensorRT version, GPU,
compute capability, spec, precision, batch profile); the runtime refuses an engine whose
sidecar does not match the machine. Precision rules per TensorRT major version are in
:mod:`wysiwyc.export.tensorrt`. Without TensorRT or without a GPU: one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import cli_main
from wysiwyc.formats import FORMATS

ENGINE, ONNX = FORMATS["engine"], FORMATS["onnx"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Build a TensorRT engine from a wysiwyc ONNX model.", add_help=add_help)
    p.add_argument("onnx", help=f"a {'/'.join(ENGINE.graphs)}-graph {ONNX.suffix} written by {ONNX.command}")
    p.add_argument("-o", "--output", default=None,
                   help=f"output {ENGINE.suffix} (default: ONNX path with {ENGINE.suffix})")
    p.add_argument("--fp16", action="store_true", help="half precision (TensorRT 11: export the ONNX in fp16 instead)")
    p.add_argument("--int8", action="store_true", help="int8 from the ONNX's QDQ nodes (export with --precision int8)")
    p.add_argument("--batch", type=int, nargs=3, default=None, metavar=("MIN", "OPT", "MAX"),
                   help="optimisation profile of the batch dimension (default 1 1 16; a static-batch ONNX "
                        "from to_onnx.py --batch N: N N N)")
    p.add_argument("--workspace", type=float, default=2.0, help="builder workspace limit in GiB")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from wysiwyc.export.tensorrt import build_engine
    from wysiwyc.fileio import check_writable
    from wysiwyc.modelfile import read_spec

    src = Path(args.onnx)
    read_spec(src)  # bad input fails before TensorRT is even needed
    out = check_writable(args.output or src.with_suffix(ENGINE.suffix))
    side = build_engine(src, out, fp16=args.fp16, int8=args.int8, batch=tuple(args.batch) if args.batch else None,
                        workspace_gib=args.workspace)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {side['precision']}, TensorRT "
          f"{side['tensorrt_version']}, {side['gpu_name']} sm {side['compute_capability']}) and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
