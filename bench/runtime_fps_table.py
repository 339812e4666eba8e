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
import json
import sys
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main
from wysiwyc.fileio import atomic_path


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
    lines = ["| case | backend | frames | FPS | end-to-end p50 / p95 ms | infer p50 ms (per batch) |",
             "|---|---|---|---|---|---|"]
    for b in rows:
        e = b["extra_info"]
        lines.append(f"| {b['name']} | {e['backend']} | {e['frames']} | {e['fps']:.1f} | "
                     f"{e['e2e_p50_ms']:.1f} / {e['e2e_p95_ms']:.1f} | {e['infer_p50_ms']:.1f} |")
    m = payload.get("machine_info", {})
    cpu = m.get("cpu", {}).get("brand_raw") or m.get("processor") or m.get("machine", "?")
    lines += ["", f"Measured {payload.get('datetime', '?')[:10]} on {m.get('machine', '?')} ({cpu}, "
              f"{m.get('cpu', {}).get('count', '?')} CPU threads), python {m.get('python_version', '?')}."]
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    path = Path(args.json)
    if not path.is_file():
        raise UserError(f"benchmark JSON not found: {path}")
    try:
        payload = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not JSON ({exc})") from exc
    text = table(payload)
    if args.output:
        with atomic_path(Path(args.output)) as tmp:
            Path(tmp).write_text("# Runtime FPS, end to end (`runtime-explain` pipeline on the --demo stream)\n\n"
                                 "Command: `pytest bench/test_runtime_fps.py --benchmark-only --benchmark-json X`, "
                                 f"then `python bench/runtime_fps_table.py X -o {args.output}`.\n\n{text}\n")
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
