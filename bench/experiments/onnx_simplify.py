#!/usr/bin/env python
"""Does offline graph simplification help the exported model? Node counts and CPU latency.

    python bench/experiments/onnx_simplify.py            # the bundled demo Explainer, fp32
    python bench/experiments/onnx_simplify.py --model X.onnx --batch 1 16 --out bench/results/simplify.json

Variants of the same fp32 ONNX (each written next to the others in a temp folder):

* ``export``     — ``export/to_onnx.py`` as is (the dynamo exporter's own graph);
* ``onnxsim``    — onnx-simplifier (``onnxsim.simplify``; constant folding + onnxoptimizer passes),
  if importable;
* ``onnxslim``   — onnxslim (pattern fusion + constant folding), if importable;
* ``ort-basic``  — ONNX Runtime's offline optimisation at ``ORT_ENABLE_BASIC``
  (``SessionOptions.optimized_model_filepath``); basic level only uses standard ONNX ops, so
  the file stays portable (extended/all levels write ORT-internal fused ops).

Every variant is loaded the way the runtime loads it (``ORT_ENABLE_ALL`` at session
creation, CPU provider, default threads) and timed on the same random images; rounds of the
variants are interleaved so background load on a shared machine hits them alike. Reported:
node count and op histogram delta, file size, session-creation time, median / p90 latency
per batch size, and the max abs difference of the outputs to the unmodified export.

Result on the bundled demo Explainer (fp32, 64 px; onnxsim 0.8.1, onnxslim 0.1.98,
onnxruntime 1.31.1, 2-core x86_64, 2026-11-22, 200 interleaved rounds): every variant has
the same 64 nodes and the same op histogram as the export — the dynamo exporter already
folds BatchNorm and constants — onnxsim/onnxslim only shrink the file 4.40 -> 4.30 MB
(duplicate initialisers), and median latency is unchanged within noise at batch 1 and 16
(ONNX Runtime applies ORT_ENABLE_ALL at load anyway). So ``export/to_onnx.py`` applies no
simplification and adds no dependency; rerun this script when the exporter or model changes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)

from wysiwyc.errors import UserError, cli_main, require

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.pt"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Measure offline ONNX graph simplification.", add_help=add_help)
    p.add_argument("--model", default=None, help="an .onnx export (default: export the bundled demo Explainer, fp32)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="batch sizes to time (default 1 16)")
    p.add_argument("--rounds", type=int, default=300, help="timed runs per variant and batch size")
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    return p


def _ops(proto: Any) -> Counter:
    return Counter(n.op_type for n in proto.graph.node)


def _variants(src: Path, tmp: Path) -> dict[str, Path]:
    """name -> path of every simplification that can be made on this machine."""
    import onnx
    import onnxruntime as ort

    out = {"export": src}
    try:
        import onnxsim

        model, ok = onnxsim.simplify(onnx.load(str(src)))
        if ok:
            out["onnxsim"] = tmp / "onnxsim.onnx"
            onnx.save(model, str(out["onnxsim"]))
    except ImportError:
        print("onnxsim not importable: skipped", file=sys.stderr)
    try:
        import onnxslim

        out["onnxslim"] = tmp / "onnxslim.onnx"
        onnx.save(onnxslim.slim(onnx.load(str(src))), str(out["onnxslim"]))
    except ImportError:
        print("onnxslim not importable: skipped", file=sys.stderr)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp / "ort_basic.onnx")
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    out["ort-basic"] = tmp / "ort_basic.onnx"
    return out


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(src: Path, batches: list[int], rounds: int) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxruntime as ort

    tmp = Path(tempfile.mkdtemp(prefix="wysiwyc-simplify-"))
    variants = _variants(src, tmp)
    base_ops = _ops(onnx.load(str(src)))
    sessions, result = {}, {}
    for name, path in variants.items():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the runtime loads it
        t0 = time.perf_counter()
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - t0
        ops = _ops(onnx.load(str(path)))
        delta = {k: ops[k] - base_ops[k] for k in set(ops) | set(base_ops) if ops[k] != base_ops[k]}
        result[name] = {"nodes": sum(ops.values()), "op_delta_vs_export": delta,
                        "size_mb": round(path.stat().st_size / 1e6, 3), "session_create_ms": round(1000 * load_s, 1)}
    h, w = (int(d) for d in sessions["export"].get_inputs()[0].shape[2:])
    for b in batches:
        x = np.random.default_rng(0).random((b, 3, h, w), dtype=np.float32)
        ref = sessions["export"].run(None, {"images": x})
        times: dict[str, list[float]] = {n: [] for n in sessions}
        for name, s in sessions.items():  # warm-up, and the outputs must agree
            got = s.run(None, {"images": x})
            result[name][f"max_abs_diff_b{b}"] = float(max(np.abs(g - r).max() for g, r in zip(got, ref)))
            for _ in range(10):
                s.run(None, {"images": x})
        for _ in range(rounds):  # interleaved so machine load hits every variant alike
            for name, s in sessions.items():
                times[name].append(_timed(lambda s=s: s.run(None, {"images": x})))
        for name, ts in times.items():
            ts.sort()
            result[name][f"b{b}_median_ms"] = round(1000 * statistics.median(ts), 3)
            result[name][f"b{b}_p90_ms"] = round(1000 * ts[int(0.9 * len(ts))], 3)
    return {"model": str(src), "onnxruntime": ort.__version__, "onnx": onnx.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpu_threads": __import__("os").cpu_count(), "rounds": rounds, "variants": result}


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    require("onnxruntime", "cpu", "this measurement")
    require("onnx", "export", "this measurement")
    if args.model:
        src = Path(args.model)
        if not src.is_file():
            raise UserError(f"ONNX model not found: {src}")
    else:
        from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

        src = Path(tempfile.mkdtemp(prefix="wysiwyc-simplify-src-")) / "shapes_explainer.onnx"
        export_checkpoint(DEMO, src, ExportOptions(precision="fp32"))
    rep = measure(src, args.batch, args.rounds)
    cols = ["nodes", "size_mb", "session_create_ms"] + [f"b{b}_{k}" for b in args.batch for k in ("median_ms", "p90_ms")]
    print("variant    " + " ".join(f"{c:>18}" for c in cols) + "  op delta")
    for name, r in rep["variants"].items():
        print(f"{name:<10} " + " ".join(f"{r[c]:>18}" for c in cols) + f"  {r['op_delta_vs_export']}")
    if args.out:
        from wysiwyc.fileio import atomic_path

        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(json.dumps(rep, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
