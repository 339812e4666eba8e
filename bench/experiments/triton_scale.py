#!/usr/bin/env python
"""Many runtimes, one Triton server: aggregate FPS and p95 latency for 1, 2 and 4
``runtime-explain`` processes, with Triton's dynamic batching on and off, in one run.

    python bench/experiments/triton_scale.py                         # a local server (nvidia-pytriton)
    python bench/experiments/triton_scale.py --server 10.0.0.7:8001  # a remote one (started by you)

Without ``--server`` it writes two entries of the bundled demo export with
``export/to_triton.py --backend python`` — ``shapes_explainer_db`` (dynamic batching, the
default queue delay) and ``shapes_explainer_nodb`` (``--no-dynamic-batching``) — and runs the
``tritonserver`` binary of the ``nvidia-pytriton`` wheel on them on 127.0.0.1
(:class:`wysiwyc.export.triton.LocalServer`). With ``--server HOST:PORT`` (gRPC) it starts
nothing and uses the models ``--models ON OFF`` of that server (write them with
``to_triton.py MODEL.onnx -o REPO/ --name shapes_explainer_db`` and ``... --name
shapes_explainer_nodb --no-dynamic-batching``, any backend).

Each case starts N processes at once, each ``runtime-explain --model triton://... --source
demo --max-frames F --no-show`` (one buffered demo stream per process, undrawn: the server
is what is measured). Per case: the aggregate FPS (every frame over the span from the first
run's start to the last run's end, so process start-up is left out), the worst process's p95
end-to-end and infer latency, and the server's mean batch size over the case (Triton's
inference count / execution count, from its statistics). One process on the local ONNX
Runtime (no server) is the yardstick. Writes ``OUT.md`` and ``OUT.json`` (default
``bench/results/triton_cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)

from wysiwyc.errors import UserError, cli_main, require
from wysiwyc.fileio import atomic_path

ROOT = Path(__file__).resolve().parents[2]
DEMO_ONNX = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.onnx"
DEFAULT_OUT = ROOT / "bench" / "results" / "triton_cpu"
MODELS = ("shapes_explainer_db", "shapes_explainer_nodb")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="runtime-explain processes against one Triton server.", add_help=add_help)
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="a running server's gRPC address (default: start a local one)")
    p.add_argument("--models", nargs=2, default=list(MODELS), metavar=("ON", "OFF"),
                   help="the server's models with dynamic batching on and off")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="runtime processes per case")
    p.add_argument("--frames", type=int, default=2000, help="frames per process")
    p.add_argument("--batch", type=int, default=8, help="runtime-explain --batch")
    p.add_argument("--inflight", type=int, default=2, help="runtime-explain --triton-inflight")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output path without suffix (.md and .json are written)")
    return p


def run_processes(model: str, n: int, frames: int, batch: int, inflight: int, folder: Path) -> list[dict[str, Any]]:
    """Start ``n`` runtime-explain processes on ``model`` at once; their summaries."""
    procs = []
    for i in range(n):
        summary = folder / f"summary_{i}.json"
        cmd = [sys.executable, str(ROOT / "runtime" / "explain.py"), "--model", model, "--source", "demo",
               "--seed", str(i), "--max-frames", str(frames), "--batch", str(batch), "--no-show",
               "--status-every", "0", "--summary", str(summary)]
        if model.startswith("triton://"):
            cmd += ["--triton-inflight", str(inflight)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env),
                      summary))
    out = []
    for proc, summary in procs:
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise UserError(f"runtime-explain exited {proc.returncode}: {err.strip().splitlines()[-1:]}")
        data = json.loads(summary.read_text())
        data["ended_at"] = summary.stat().st_mtime  # the summary is written when the run ends
        out.append(data)
    return out


def server_counts(url: str, model: str) -> tuple[int, int]:
    """(inferences, executions) of ``model`` so far: their ratio is the mean batch the server ran."""
    grpc = require("tritonclient.grpc", "triton", "the Triton scale figures")
    with grpc.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def case(label: str, model: str, n: int, args: argparse.Namespace, url: str | None) -> dict[str, Any]:
    """One row: ``n`` processes on ``model`` (a triton:// URL or a local file)."""
    name = model.rsplit("/", 1)[-1]
    before = server_counts(url, name) if url else (0, 0)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sums = run_processes(model, n, args.frames, args.batch, args.inflight, Path(tmp))
    wall = time.perf_counter() - t0
    after = server_counts(url, name) if url else (0, 0)
    inf, exe = after[0] - before[0], after[1] - before[1]
    # all frames over the span the runs covered together (a run starts its summary's seconds
    # before the summary was written): process start-up, model loading included, is left out
    span = max(s["ended_at"] for s in sums) - min(s["ended_at"] - s["seconds"] for s in sums)
    frames = sum(s["frames"] for s in sums)
    row = {"case": label, "processes": n, "frames": frames, "fps": round(frames / span, 1),
           "per_process_fps": [s["fps"] for s in sums], "span_s": round(span, 2), "wall_s": round(wall, 1),
           "p95_end_to_end_ms": round(max(s["latency_ms"]["end_to_end"]["p95"] for s in sums), 1),
           "p95_infer_ms": round(max(s["latency_ms"]["infer"]["p95"] for s in sums), 1),
           "server_mean_batch": round(inf / exe, 2) if exe else None, "backend": sums[0]["model"]["backend"]}
    print(f"{label:<28} {n} process(es): {row['fps']:7.1f} FPS, p95 e2e {row['p95_end_to_end_ms']:6.1f} ms"
          + (f", server batch {row['server_mean_batch']}" if row["server_mean_batch"] else ""), file=sys.stderr)
    return row


def markdown(rep: dict[str, Any]) -> str:
    lines = ["# Many runtimes, one Triton server (CPU)", "",
             f"`python bench/experiments/triton_scale.py` — {rep['server']}; each process one buffered `--demo` "
             f"stream, {rep['frames']} frames, `--batch {rep['batch']}`, `--triton-inflight {rep['inflight']}`, "
             f"undrawn; {rep['machine']}.", "",
             "| case | processes | aggregate FPS | p95 end-to-end (ms) | p95 infer (ms) | server mean batch |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rep["rows"]:
        batch = "—" if r["server_mean_batch"] is None else f"{r['server_mean_batch']:.2f}"
        lines.append(f"| {r['case']} | {r['processes']} | {r['fps']:.1f} | {r['p95_end_to_end_ms']:.1f} | "
                     f"{r['p95_infer_ms']:.1f} | {batch} |")
    lines += ["", "Aggregate FPS: every process's frames over the span from the first run's start to the last "
              "run's end (process start-up and model loading left out). Latencies: the "
              "worst process's p95; end to end from the batch's preprocessing to its render (a buffered source's "
              "decode-ahead wait excluded); infer: the wait for the server's answer (the request is sent when the "
              "batch is ready). Server mean batch: Triton's inference count / execution count over the case.", ""]
    return "\n".join(lines)


def local_server(tmp: Path, models: list[str]) -> Any:
    """The demo export as ``models`` (dynamic batching on, off) on a local tritonserver."""
    from wysiwyc.export.triton import LocalServer, TritonOptions, write_repository

    repo = tmp / "repo"
    for name, batching in zip(models, (True, False)):
        write_repository(DEMO_ONNX, repo, TritonOptions(backend="python", name=name, dynamic_batching=batching))
    server = LocalServer(repo)
    server.start()
    if not server.wait_ready(120):
        log = server.log_tail()
        server.close()
        raise UserError(f"the local tritonserver did not load the models:\n{log}")
    return server


def measure(args: argparse.Namespace, url: str, where: str) -> dict[str, Any]:
    on, off = args.models
    rows = [case("local ONNX Runtime (no server)", str(DEMO_ONNX), 1, args, None)]
    for label, model in (("Triton, dynamic batching", on), ("Triton, no dynamic batching", off)):
        for n in args.processes:
            rows.append(case(label, f"triton://{url}/{model}", n, args, url))
    return {"server": where, "frames": args.frames, "batch": args.batch, "inflight": args.inflight, "rows": rows,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads (server and clients share them), "
                       f"Python {platform.python_version()}"}


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.frames < 1 or not args.processes or min(args.processes) < 1:
        raise UserError("--frames and --processes must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.server is None:
            server = local_server(Path(tmp), list(args.models))
            url = server.grpc_url
            where = "a local tritonserver (nvidia-pytriton's binary), Python backend, 1 CPU instance"
        else:
            url, where = args.server, f"the Triton server at {args.server}"
        try:
            rep = measure(args, url, where)
        finally:
            if server is not None:
                server.close()
    out = Path(args.out)
    with atomic_path(out.with_suffix(".json")) as p:
        Path(p).write_text(json.dumps(rep, indent=2) + "\n")
    with atomic_path(out.with_suffix(".md")) as p:
        Path(p).write_text(markdown(rep))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
