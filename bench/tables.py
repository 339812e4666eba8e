#!/usr/bin/env python
"""What the benchmarks measured, in text: Markdown tables from ``--benchmark-json`` files and
the end-of-run summary of ``pytest bench --benchmark-only``.

One subcommand per benchmark file::

    pytest bench/test_latency.py --benchmark-only --benchmark-json=lat.json
    python bench/tables.py latency lat.json -o bench/results/latency_cpu.md --title "2-core CPU"

    pytest bench/test_onnx_precision.py --benchmark-only --benchmark-json out/onnx_precision.json
    python bench/tables.py onnx_precision out/onnx_precision.json [-o bench/results/onnx_precision_cpu.md]

    pytest bench/test_runtime_fps.py --benchmark-only --benchmark-json out/runtime_fps.json
    python bench/tables.py runtime_fps out/runtime_fps.json -o bench/results/runtime_fps_cpu.md

* ``latency``: one table per pytest-benchmark group (device | batch | scope), one row per
  method: median and minimum time per call, per-image time, rounds, settings, and the ratio
  of each method's per-image time to the Explainer's (torch) in the same group — every
  number of a table comes from the same run on the same machine.
* ``onnx_precision``: one row per export precision: file size, median ms at batch 1, ms per
  image at batch 16 (median of the batch-16 call / 16), and the parity numbers against
  torch, plus a line naming the machine, ONNX Runtime version and date of the run.
* ``runtime_fps``: one row per runtime case: FPS (frames / wall time of the whole run),
  end-to-end p50 / p95 and the inference p50 per batch in ms, the backend the runtime
  reported, and a line naming the machine and date of the run.

Without ``-o`` the table is printed. The summary (:func:`summary_lines`: per group, each
entry's ms per image and its ratio to the group's Explainer, runtime cases in frames per
second) is pure, so it is tested without running a benchmark; ``bench/conftest.py`` feeds
it pytest-benchmark's results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main
from wysiwyc.fileio import atomic_path

REFERENCE = "explainer"
PRECISIONS = ("fp32", "fp16", "int8")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="pytest-benchmark JSON -> Markdown tables.", add_help=add_help)
    sub = p.add_subparsers(dest="kind", required=True, metavar="{latency,onnx_precision,runtime_fps,models}")
    lat = sub.add_parser("latency", help="bench/test_latency.py: one table per group, ratios to the Explainer")
    lat.add_argument("json", nargs="+", help="pytest-benchmark JSON file(s) of bench/test_latency.py")
    lat.add_argument("--title", default="Latency", help="heading of the document")
    prec = sub.add_parser("onnx_precision", help="bench/test_onnx_precision.py: latency and parity per precision")
    prec.add_argument("json", help="--benchmark-json output of bench/test_onnx_precision.py")
    fps = sub.add_parser("runtime_fps", help="bench/test_runtime_fps.py: end-to-end FPS per case")
    fps.add_argument("json", help="--benchmark-json output of bench/test_runtime_fps.py")
    models = sub.add_parser("models", help="checkpoints: their networks' sizes and the metrics they record")
    models.add_argument("checkpoints", nargs="+", help="wysiwyc checkpoints (.pt)")
    for s in (lat, prec, fps, models):
        s.add_argument("-o", "--output", default=None, help="write the Markdown here (default: print)")
    return p


def load(path: str | Path) -> dict[str, Any]:
    """The payload of a ``--benchmark-json`` file.

    Raises:
        UserError: the file is missing or not JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"benchmark JSON not found: {p}")
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise UserError(f"{p} is not JSON ({exc})") from exc


def machine(payload: dict[str, Any]) -> tuple[str, str, Any]:
    """(machine, CPU name, CPU thread count) from pytest-benchmark's ``machine_info``."""
    m = payload.get("machine_info", {})
    cpu = m.get("cpu", {}).get("brand_raw") or m.get("processor") or m.get("machine", "?")
    return m.get("machine", "?"), cpu, m.get("cpu", {}).get("count", "?")


def write(text: str, output: str | None) -> None:
    """Print ``text``, or write it to ``output`` atomically."""
    if not output:
        print(text)
        return
    with atomic_path(Path(output)) as tmp:
        Path(tmp).write_text(text)
    print(f"wrote {output}")


# --- latency (bench/test_latency.py) --------------------------------------------------------------


def _latency_ms(seconds: float) -> str:
    ms = 1000 * seconds
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


def latency_tables(runs: list[dict]) -> list[str]:
    """Markdown lines: one table per group, rows sorted by per-image time.

    Raises:
        UserError: no latency case in the runs.
    """
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
        # the classifier alone on the same backend: torch, or ONNX Runtime for the [onnxruntime-*] entries
        alone = {backend: per_image[id(b)] for b in rows for backend in ("torch", "onnxruntime")
                 if b["extra_info"]["method"] == ("classifier" if backend == "torch" else "classifier[onnxruntime-fp32]")}
        info = rows[0]["extra_info"]
        lines += [f"### {group}", "",
                  f"{info.get('device_name', info['device'])}; classifier {info['classifier']}, "
                  f"explainer {info.get('head_arch', info.get('explainer_arch', '?'))}, "
                  f"{info['image_size']} px", "",
                  "| method | median ms / call | min ms / call | ms / image | × explainer | × classifier | rounds "
                  "| settings |",
                  "|---|---|---|---|---|---|---|---|"]
        for b in sorted(rows, key=lambda b: per_image[id(b)]):
            e, st = b["extra_info"], b["stats"]
            ratio = f"{per_image[id(b)] / ref:,.1f}×" if ref else "–"
            yard = alone.get("onnxruntime" if "[onnxruntime" in e["method"] else "torch")
            vs_clf = f"{per_image[id(b)] / yard:,.2f}×" if yard else "–"
            lines.append(f"| {e['method']} | {_latency_ms(st['median'])} | {_latency_ms(st['min'])} | "
                         f"{_latency_ms(per_image[id(b)])} | {ratio} | {vs_clf} | {st['rounds']} | {e['settings']} |")
        lines.append("")
    return lines


def latency_document(runs: list[dict], title: str) -> str:
    """The latency document: the machine and run of the first JSON, then :func:`latency_tables`."""
    m = runs[0].get("machine_info", {})
    head = [f"# {title}", "",
            f"- machine: {m.get('cpu', {}).get('brand_raw', m.get('processor', '?'))}, "
            f"{m.get('cpu', {}).get('count', '?')} CPU threads, Python {m.get('python_version', '?')}",
            f"- run: {runs[0].get('datetime', '?')}; pytest-benchmark {runs[0].get('version', '?')}",
            "- × explainer = per-image time / the Explainer's (torch) per-image time in the same table",
            "- × classifier = per-image time / the classifier alone's on the same backend (torch, or ONNX Runtime "
            "for the onnxruntime entries) in the same table: what explaining costs on top of classifying; the "
            "limit of a method that needs the classifier's own pass is 1.0×", ""]
    return "\n".join(head + latency_tables(runs))


# --- ONNX precision (bench/test_onnx_precision.py) ------------------------------------------------


def onnx_precision_table(payload: dict) -> str:
    """Markdown rows, one per precision, and the machine line, from a pytest-benchmark JSON payload.

    Raises:
        UserError: no precision case in the payload.
    """
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
    for prec in [p for p in PRECISIONS if p in rows] + [p for p in rows if p not in PRECISIONS]:
        r, par = rows[prec], rows[prec]["parity"]
        lines.append(f"| {prec} | {r['size_mb']:.2f} | {r.get('b1', float('nan')):.2f} "
                     f"| {r.get('b16', float('nan')):.2f} "
                     f"| {par['logits_max_abs_diff']:.1e} | {par['masks_max_abs_diff']:.1e} "
                     f"| {par['mask_iou']:.3f} | {100 * par['label_agreement']:.1f} % |")
    name, cpu, threads = machine(payload)
    n_images = int(next(iter(rows.values()))["parity"].get("n_images", 0))
    lines += ["", f"Measured {payload.get('datetime', '?')[:10]} on {name} ({cpu}, {threads} cores), "
              f"onnxruntime {ort_version}, python {payload.get('machine_info', {}).get('python_version', '?')}; "
              f"parity on {n_images} shapes test images."]
    return "\n".join(lines)


# --- runtime FPS (bench/test_runtime_fps.py) ------------------------------------------------------


def _spread(e: dict) -> str:
    """`` (lo–hi)``: the range of the ratios of a case's paired runs, when it had several."""
    runs = e.get("ratio_runs") or []
    return f" ({min(runs):.2f}–{max(runs):.2f})" if len(runs) > 1 else ""


def runtime_fps_table(payload: dict) -> str:
    """The Markdown table (+ a machine line) from a pytest-benchmark JSON payload.

    Raises:
        UserError: no runtime FPS case in the payload.
    """
    rows = [b for b in payload.get("benchmarks", []) if "fps" in b.get("extra_info", {})]
    if not rows:
        raise UserError("no test_runtime_fps results in this JSON (run it with --benchmark-json)")
    lines = ["| case | backend | runs | frames | FPS | model-only FPS | FPS / model-only | classifier-alone FPS "
             "| × classifier | end-to-end p50 / p95 ms | infer p50 ms (per batch) | dropped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def opt(e: dict, key: str, fmt: str) -> str:
        return format(e[key], fmt) if key in e else "–"

    for b in rows:
        e = b["extra_info"]
        lines.append(f"| {b['name']} | {e['backend']} | {e.get('runs', 1)} | {e['frames']} | {e['fps']:.1f} | "
                     f"{opt(e, 'model_only_fps', '.1f')} | {opt(e, 'ratio', '.2f')}{_spread(e)} | "
                     f"{opt(e, 'classifier_only_fps', '.1f')} | {opt(e, 'x_classifier', '.2f')} | "
                     f"{e['e2e_p50_ms']:.1f} / {e['e2e_p95_ms']:.1f} | {e['infer_p50_ms']:.1f} | "
                     f"{opt(e, 'dropped', 'd')} |")
    name, cpu, threads = machine(payload)
    repeated = sorted({len(b["extra_info"].get("ratio_runs") or []) for b in rows} - {0, 1})
    if repeated:
        lines += ["", f"A ratio with a range in brackets: the row is the median of {'/'.join(map(str, repeated))} "
                  "runs of the case, each paired with its own model-alone runs (just before and just after it: the "
                  "mean) and classifier-alone run; the range is the runs' ratios."]
    lines += ["", f"Measured {payload.get('datetime', '?')[:10]} on {name} ({cpu}, "
              f"{threads} CPU threads), python {payload.get('machine_info', {}).get('python_version', '?')}."]
    return "\n".join(lines)


def models_document(paths: list[Path]) -> str:
    """What each checkpoint holds: its networks and their parameters (millions, weights only,
    counted on the networks its spec builds), how it was trained (epochs, best epoch,
    seconds) and every metric it records (test split, validation), one table per file."""
    from wysiwyc.checkpoint import load_checkpoint
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.models.fused import build_head

    out = ["# The bundled models: sizes and recorded metrics", "",
           "Command: `python bench/make_results.py --only models` (`python bench/tables.py models "
           f"{' '.join(p.as_posix() for p in paths)} -o FILE`): read from the checkpoints, nothing is re-measured; "
           "`train_seconds` is the training time the checkpoint records.", ""]
    for path in paths:
        ck = load_checkpoint(path)
        spec = ck.spec
        params = {"classifier": sum(t.numel() for t in build_classifier(spec.classifier_arch, spec.num_classes)
                                    .parameters())}
        if ck.head is not None:
            params["head"] = sum(t.numel() for t in build_head(spec).parameters())
        rows = [("kind", spec.kind), ("classifier", spec.classifier_arch),
                ("classifier parameters (M)", f"{params['classifier'] / 1e6:.2f}")]
        if "head" in params:
            rows += [("head", spec.head_arch), ("head parameters (M)", f"{params['head'] / 1e6:.2f}")]
        train = ck.train or {}
        rows += [(k, str(train[k])) for k in ("epochs", "batch_size", "lr", "patience") if train.get(k) is not None]
        rows += [(k, str(round(v, 4)) if isinstance(v, float) else str(v)) for k, v in _flat(ck.metrics or {})]
        out += [f"## {path.name}", "", "| field | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]
    return "\n".join(out).rstrip() + "\n"


def _flat(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested dict's leaves as (``a.b.c``, value), sorted by key."""
    out = []
    for k, v in sorted(d.items()):
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _titled(title: str, kind: str, output: str | None, text: str) -> str:
    """``text`` under ``# title`` and the commands that made it (the file's own provenance)."""
    command = (f"`pytest bench/test_{kind}.py --benchmark-only --benchmark-json X`, "
               f"then `python bench/tables.py {kind} X -o {output}`")
    return f"# {title}\n\nCommand: {command}.\n\n{text}\n"


# --- the end-of-run summary of `pytest bench --benchmark-only` ------------------------------------


@dataclass
class Entry:
    """One measured benchmark.

    Attributes:
        group: its pytest-benchmark group.
        name: the method (latency bench) or the case name.
        median_s: median seconds of one call (one round).
        batch: images per call.
        extra: its ``extra_info`` (``fps`` for runtime cases, ``method``, ``settings`` ...).
    """

    group: str
    name: str
    median_s: float
    batch: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.median_s / max(1, self.batch)


def entry_from_benchmark(bench: Any) -> Entry | None:
    """An :class:`Entry` from a pytest-benchmark ``Metadata`` (``None`` if it has no stats)."""
    stats = getattr(bench, "stats", None)
    if not stats or not getattr(stats, "rounds", 0):
        return None
    extra = dict(bench.extra_info or {})
    name = str(extra.get("method") or bench.name)
    if extra.get("settings") == "reduced":
        name += " (reduced)"
    return Entry(group=str(bench.group or "ungrouped"), name=name, median_s=float(stats.median),
                 batch=int(extra.get("batch", 1) or 1), extra=extra)


def _reference(entries: list[Entry]) -> Entry | None:
    """The group's Explainer: the torch ``explainer`` entry, else ``fp32 batch 1``."""
    for e in entries:
        if e.name == REFERENCE:
            return e
    return next((e for e in entries if e.name == "fp32 batch 1"), None)


def summary_lines(entries: Iterable[Entry]) -> list[str]:
    """The summary: a header, then per group one line per entry, fastest first."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.group, []).append(e)
    lines = ["ms per image = median of one call / batch; × = ratio to the "
             "group's Explainer; runtime cases in frames per second"]
    for group, items in groups.items():
        lines.append(f"{group}:")
        if all("fps" in e.extra for e in items):
            for e in sorted(items, key=lambda e: -float(e.extra["fps"])):
                p50, model = e.extra.get("e2e_p50_ms"), e.extra.get("model_only_fps")
                lines.append(f"  {e.name:<64} {float(e.extra['fps']):8.1f} FPS"
                             + (f" = {float(e.extra['fps']) / float(model):.2f} × model alone ({float(model):.0f})"
                                if model else "")
                             + (f"   end-to-end p50 {float(p50):.1f} ms" if p50 is not None else ""))
            continue
        ref = _reference(items)
        width = max(len(e.name) for e in items)
        for e in sorted(items, key=lambda e: e.ms_per_image):
            ratio = f"{e.ms_per_image / ref.ms_per_image:10.2f}×" if ref and ref.ms_per_image > 0 else ""
            lines.append(f"  {e.name:<{width}} {_summary_ms(e.ms_per_image):>11} ms/img{ratio}")
    return lines


def _summary_ms(v: float) -> str:
    """Milliseconds with 3 significant digits (0.0412, 4.12, 41.2, 412, 41200)."""
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.kind == "latency":
        text = latency_document([load(p) for p in args.json], args.title)
    elif args.kind == "onnx_precision":
        text = onnx_precision_table(load(args.json))
        if args.output:
            text = _titled("ONNX Runtime CPU latency and parity per export precision", args.kind, args.output, text)
    elif args.kind == "models":
        text = models_document([Path(c) for c in args.checkpoints])
    else:
        text = runtime_fps_table(load(args.json))
        if args.output:
            text = _titled("Runtime FPS, end to end (`runtime-explain` pipeline on the --demo stream)", args.kind,
                           args.output, text)
    write(text, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
