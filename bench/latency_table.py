#!/usr/bin/env python
"""Turn ``pytest bench/test_latency.py --benchmark-json=FILE`` output into a Markdown table.

One table per pytest-benchmark group (device | batch | scope), one row per method: median
and minimum time per call, per-image time, rounds, settings, and the ratio of each method's
per-image time to the Explainer's (torch) in the same group — every number of a table comes
from the same run on the same machine.

Example::

    pytest bench/test_latency.py --benchmark-only --benchmark-json=lat.json
    python bench/latency_table.py lat.json -o bench/results/latency_cpu.md --title "2-core CPU"
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main
from wysiwyc.fileio import atomic_path

REFERENCE = "explainer"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="pytest-benchmark JSON -> Markdown latency tables.", add_help=add_help)
    p.add_argument("json", nargs="+", help="pytest-benchmark JSON file(s) of bench/test_latency.py")
    p.add_argument("-o", "--output", default=None, help="write the Markdown here (default: print)")
    p.add_argument("--title", default="Latency", help="heading of the document")
    return p


def _ms(seconds: float) -> str:
    ms = 1000 * seconds
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


def tables(runs: list[dict]) -> list[str]:
    """Markdown lines: one table per group, rows sorted by per-image time."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        for b in run.get("benchmarks", []):
            if "method" in b.get("extra_info", {}):
                groups[b["group"]].append(b)
    if not groups:
        raise UserError("no bench/test_latency.py results in the JSON (run it with --benchmark-json)")
    lines: list[str] = []
    for group in sorted(groups):
        rows = groups[group]
        per_image = {id(b): b["stats"]["median"] / b["extra_info"]["batch"] for b in rows}
        ref = next((per_image[id(b)] for b in rows if b["extra_info"]["method"] == REFERENCE), None)
        info = rows[0]["extra_info"]
        lines += [f"### {group}", "",
                  f"{info.get('device_name', info['device'])}; classifier {info['classifier']}, "
                  f"explainer {info.get('head_arch', info.get('explainer_arch', '?'))}, "
                  f"{info['image_size']} px", "",
                  "| method | median ms / call | min ms / call | ms / image | × explainer | rounds | settings |",
                  "|---|---|---|---|---|---|---|"]
        for b in sorted(rows, key=lambda b: per_image[id(b)]):
            e, st = b["extra_info"], b["stats"]
            ratio = f"{per_image[id(b)] / ref:,.1f}×" if ref else "–"
            lines.append(f"| {e['method']} | {_ms(st['median'])} | {_ms(st['min'])} | {_ms(per_image[id(b)])} | "
                         f"{ratio} | {st['rounds']} | {e['settings']} |")
        lines.append("")
    return lines


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    runs = []
    for path in args.json:
        if not Path(path).is_file():
            raise UserError(f"no such file: {path}")
        try:
            runs.append(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not JSON: {exc}") from None
    machine = runs[0].get("machine_info", {})
    head = [f"# {args.title}", "",
            f"- machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
            f"{machine.get('cpu', {}).get('count', '?')} CPU threads, Python {machine.get('python_version', '?')}",
            f"- run: {runs[0].get('datetime', '?')}; pytest-benchmark {runs[0].get('version', '?')}",
            f"- × explainer = per-image time / the Explainer's (torch) per-image time in the same table", ""]
    text = "\n".join(head + tables(runs))
    if args.output:
        with atomic_path(Path(args.output)) as tmp:
            Path(tmp).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
