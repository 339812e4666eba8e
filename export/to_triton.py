#!/usr/bin/env python
"""Write a Triton Inference Server model repository from a fused wysiwyc export.

    python export/to_triton.py src/wysiwyc/assets/shapes_explainer.onnx -o repo/               # onnxruntime
    python export/to_triton.py shapes_explainer.onnx -o repo/ --backend python               # CPU fallback
    python export/to_triton.py shapes_explainer.onnx -o repo/ --kind KIND_GPU --trt-accelerator --instances 2
    python export/to_triton.py shapes_explainer.engine -o repo/                              # tensorrt
    tritonserver --model-repository=repo      # then: runtime-explain --model triton://HOST:8001/shapes_explainer

Writes ``REPO/NAME/config.pbtxt``, ``REPO/NAME/labels.txt`` and ``REPO/NAME/1/`` (the model;
``model.py`` too for the python backend). Inputs, outputs and dims are read from the graph,
``max_batch_size`` from its batch dimension or the engine's profile, and the wysiwyc spec
goes into the config's ``parameters`` (``wysiwyc.spec``), so a client needs nothing else.
An existing ``REPO/NAME`` is replaced only with ``--force``; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import cli_main
from wysiwyc.export.triton import BACKENDS, DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, KINDS, TritonOptions


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write a Triton model repository from a fused wysiwyc export.",
                                add_help=add_help)
    p.add_argument("model", help="a fused-graph .onnx from export/to_onnx.py, or an .engine from to_tensorrt.py")
    p.add_argument("-o", "--output", required=True, metavar="REPO", help="the model repository folder")
    # no argparse choices: an unknown backend or kind is one line like every other misuse
    p.add_argument("--backend", default=None,
                   help=f"{' | '.join(BACKENDS)} (default: onnxruntime for .onnx, tensorrt for .engine)")
    p.add_argument("--name", default=None, help="the model's name on the server (default: the file's stem)")
    p.add_argument("--version", type=int, default=1, help="the version folder (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing REPO/NAME")
    p.add_argument("--max-batch-size", type=int, default=None, metavar="N",
                   help=f"largest batch the server forms (default: an engine's profile maximum, else "
                        f"{DEFAULT_MAX_BATCH}; a fixed-batch graph: 0)")
    p.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                   help="each request runs alone (default: Triton's dynamic batcher joins requests)")
    p.add_argument("--preferred-batch-size", type=int, nargs="+", default=None, metavar="N",
                   help="batch sizes the dynamic batcher aims for (default: none; an engine: its profile's OPT)")
    p.add_argument("--queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US, metavar="US",
                   help=f"longest wait for more requests to join a batch (default {DEFAULT_QUEUE_DELAY_US})")
    p.add_argument("--instances", type=int, default=1, metavar="N", help="model instances (default 1)")
    p.add_argument("--kind", default=None, help=f"{' | '.join(KINDS)} (default: KIND_GPU for tensorrt and "
                                                "--trt-accelerator, else KIND_CPU)")
    p.add_argument("--trt-accelerator", action="store_true",
                   help="onnxruntime backend on GPU: TensorRT execution accelerator (fp16; int8 for an int8 export)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="onnxruntime and python backends: intra-op threads per instance (default: the runtime's)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from wysiwyc.export.triton import describe, write_repository

    opts = TritonOptions(backend=args.backend, name=args.name, version=args.version,
                         max_batch_size=args.max_batch_size, dynamic_batching=args.dynamic_batching,
                         preferred_batch_sizes=args.preferred_batch_size, queue_delay_us=args.queue_delay_us,
                         instances=args.instances, kind=args.kind, trt_accelerator=args.trt_accelerator,
                         threads=args.threads, force=args.force)
    plan = write_repository(args.model, args.output, opts)
    print(describe(plan, Path(args.output) / plan.name))
    if plan.backend == "python":
        print("note: the python backend runs ONNX Runtime in the server's Python: it needs numpy and "
              "onnxruntime there (docs/serving.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
