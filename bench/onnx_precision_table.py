#!/usr/bin/env python
"""The README's precision table from one ``bench/test_onnx_precision.py`` run.

    pytest bench/test_onnx_precision.py --benchmark-only --benchmark-json out/onnx_precision.json
    python bench/onnx_precision_table.py out/onnx_precision.json [-o bench/results/onnx_precision_cpu.md]

Prints a Markdown table: precision, file size, median ms at batch 1, ms per image at batch
16 (median of the batch-16 call / 16), and the parity numbers against torch, plus a line
naming the machine, ONNX Runtime version and date of the run.
"""

from __future__ import annotations

import argparse
import sys

import _benchjson
import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main

ORDER = ("fp32", "fp16", "int8")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Markdown table of ONNX precision latency + parity.", add_help=add_help)
    p.add_argument("json", help="--benchmark-json output of bench/test_onnx_precision.py")
    p.add_argument("-o", "--output", default=None, help="write the Markdown here (default: print)")
    return p


def _fmt_diff(v: float) -> str:
    return f"{v:.1e}"


def table(payload: dict) -> str:
    """Markdown rows, one per precision, from a pytest-benchmark JSON payload."""
    rows: dict[str, dict] = {}
    ort_version = "?"
    for b in payload.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "precision" not in info or "parity" not in info:
            continue
        r = rows.setdefault(info["precision"], {"size_mb": info["size_mb"], "parity": info["parity"]})
        r[f"b{info['batch']}"] = 1000 * b["stats"]["median"] / info["batch"]
        ort_version = info.get("onnxruntime", ort_version)
    if not rows:
        raise UserError("no test_onnx_precision results in this JSON (run it with --benchmark-json)")
    lines = ["| precision | file MB | p50 ms, batch 1 | ms/img, batch 16 | logits max abs diff | masks max abs diff "
             "| mask IoU | label agreement |", "|---|---|---|---|---|---|---|---|"]
    for prec in [p for p in ORDER if p in rows] + [p for p in rows if p not in ORDER]:
        r, par = rows[prec], rows[prec]["parity"]
        lines.append(f"| {prec} | {r['size_mb']:.2f} | {r.get('b1', float('nan')):.2f} | {r.get('b16', float('nan')):.2f} "
                     f"| {_fmt_diff(par['logits_max_abs_diff'])} | {_fmt_diff(par['masks_max_abs_diff'])} "
                     f"| {par['mask_iou']:.3f} | {100 * par['label_agreement']:.1f} % |")
    machine, cpu, threads = _benchjson.machine(payload)
    lines.append("")
    lines.append(f"Measured {payload.get('datetime', '?')[:10]} on {machine} "
                 f"({cpu}, {threads} cores), onnxruntime {ort_version}, "
                 f"python {payload.get('machine_info', {}).get('python_version', '?')}; parity on {int(next(iter(rows.values()))['parity'].get('n_images', 0))} "
                 "shapes test images.")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    text = table(_benchjson.load(args.json))
    _benchjson.emit(text, args.output, "ONNX Runtime CPU latency and parity per export precision",
                    "`pytest bench/test_onnx_precision.py --benchmark-only --benchmark-json X`, "
                    f"then `python bench/onnx_precision_table.py X -o {args.output}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
