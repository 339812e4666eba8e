#!/usr/bin/env python
"""The README's runtime FPS table from one ``bench/test_runtime_fps.py`` run.

    pytest bench/test_runtime_fps.py --benchmark-only --benchmark-json out/runtime_fps.json
    python bench/runtime_fps_table.py out/runtime_fps.json -o bench/results/runtime_fps_cpu.md

One row per case: FPS (frames / wall time of the whole run), end-to-end p50 / p95 and the
inference p50 per batch in ms, the backend the runtime reported, and a line naming the
machine and date of the run.
"""

from __future__ import annotations

import argparse
import sys

import _benchjson
import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Markdown table of runtime FPS.", add_help=add_help)
    p.add_argument("json", help="--benchmark-json output of bench/test_runtime_fps.py")
    p.add_argument("-o", "--output", default=None, help="write the Markdown here (default: print)")
    return p


def table(payload: dict) -> str:
    """The Markdown table (+ a machine line) from a pytest-benchmark JSON payload.

    Raises:
        UserError: no runtime FPS case in the payload.
    """
    rows = [b for b in payload.get("benchmarks", []) if "fps" in b.get("extra_info", {})]
    if not rows:
        raise UserError("no test_runtime_fps results in this JSON (run it with --benchmark-json)")
    lines = ["| case | backend | frames | FPS | model-only FPS | FPS / model-only | end-to-end p50 / p95 ms "
             "| infer p50 ms (per batch) | dropped |",
             "|---|---|---|---|---|---|---|---|---|"]

    def opt(e: dict, key: str, fmt: str) -> str:
        return format(e[key], fmt) if key in e else "–"

    for b in rows:
        e = b["extra_info"]
        lines.append(f"| {b['name']} | {e['backend']} | {e['frames']} | {e['fps']:.1f} | "
                     f"{opt(e, 'model_only_fps', '.1f')} | {opt(e, 'ratio', '.2f')} | "
                     f"{e['e2e_p50_ms']:.1f} / {e['e2e_p95_ms']:.1f} | {e['infer_p50_ms']:.1f} | {opt(e, 'dropped', 'd')} |")
    machine, cpu, threads = _benchjson.machine(payload)
    lines += ["", f"Measured {payload.get('datetime', '?')[:10]} on {machine} ({cpu}, "
              f"{threads} CPU threads), python {payload.get('machine_info', {}).get('python_version', '?')}."]
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    text = table(_benchjson.load(args.json))
    _benchjson.emit(text, args.output, "Runtime FPS, end to end (`runtime-explain` pipeline on the --demo stream)",
                    "`pytest bench/test_runtime_fps.py --benchmark-only --benchmark-json X`, "
                    f"then `python bench/runtime_fps_table.py X -o {args.output}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
