#!/usr/bin/env python
"""Training throughput for 1 and N processes at the same global batch, side by side in one run.

Each case runs a training script for real (``torchrun`` for N > 1) and reads the steps/s and
images/s its checkpoint records (training phase only; validation excluded). One process
uses every core through torch's threads; N processes get ``OMP_NUM_THREADS = cores / N``
each, so every case has the whole machine.

Example (the committed CPU table)::

    python bench/experiments/train_scaling.py --md bench/results/train_scaling_cpu.md

On a GPU machine, ``--device cuda --nproc 1 2 4 8 --amp off auto`` adds the mixed-precision
cases.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _path  # noqa: F401  (checkout src/ and bench/ on sys.path)

from wysiwyc.errors import UserError, cli_main

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "classifier": ["train/train_classifier.py", "--data", "shapes", "--train-length", "{n}", "--val-length", "64",
                   "--test-length", "32"],
    "explainer": ["train/train_explainer.py", "--config", "train/configs/shapes_explainer.json",
                  "--classifier", "src/wysiwyc/assets/shapes_classifier.pt", "--train-length", "{n}",
                  "--val-length", "64", "--steps-per-epoch", "1000000"],
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Training steps/s and images/s for 1 and N processes.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trainers", nargs="+", default=list(SCRIPTS), choices=list(SCRIPTS))
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    p.add_argument("--global-batch", type=int, default=64, help="the same for every process count")
    p.add_argument("--images", type=int, default=2048, help="training images per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", nargs="+", default=["off"], help="precision modes to compare (CUDA: off auto)")
    p.add_argument("--md", default=None, help="write a Markdown table here (and .json beside it)")
    return p


def _machine(device: str) -> str:
    import torch
    from _methods import cpu_name

    where = f"{os.cpu_count()}-core {cpu_name()}"
    if device.startswith("cuda") and torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name(0)} ×{torch.cuda.device_count()}, {where}"
    return f"{where}; torch {torch.__version__}"


def run_case(trainer: str, nproc: int, args: argparse.Namespace, amp: str, out: Path) -> dict:
    """Train once and return the checkpoint's throughput record."""
    if args.global_batch % nproc:
        raise UserError(f"--global-batch {args.global_batch} is not divisible by {nproc} processes")
    cmd = [a.format(n=args.images) for a in SCRIPTS[trainer]]
    cmd += ["--epochs", str(args.epochs), "--batch-size", str(args.global_batch // nproc), "--device", args.device,
            "--amp", amp, "--patience", str(args.epochs), "--no-progress", "-o", str(out)]
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if nproc > 1 and not args.device.startswith("cuda"):
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    r = subprocess.run(launch + cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{trainer} with {nproc} processes failed:\n{r.stderr[-3000:]}")
    import torch

    m = torch.load(out, map_location="cpu", weights_only=False)["metrics"]
    return {"trainer": trainer, "nproc": nproc, "amp": amp, "global_batch": args.global_batch,
            "steps_per_s": m["steps_per_s"], "images_per_s": m["samples_per_s"]}


def to_markdown(rows: list[dict], machine: str, argv: list[str]) -> str:
    lines = [f"# Training throughput, 1 vs N processes ({machine})", "",
             f"`python bench/experiments/train_scaling.py {' '.join(argv)}` — the same global batch for every "
             "process count; "
             "training phase only. `speed-up` is images/s over the 1-process case of the same trainer and precision.",
             "", "| trainer | processes | amp | global batch | steps/s | images/s | speed-up |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(b for b in rows if b["trainer"] == r["trainer"] and b["amp"] == r["amp"] and b["nproc"] == rows[0]["nproc"])
        lines.append(f"| {r['trainer']} | {r['nproc']} | {r['amp']} | {r['global_batch']} | {r['steps_per_s']:.2f} | "
                     f"{r['images_per_s']:.1f} | {r['images_per_s'] / base['images_per_s']:.2f}× |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from tqdm.auto import tqdm

    cases = [(t, a, n) for t in args.trainers for a in args.amp for n in args.nproc]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (trainer, amp, nproc) in enumerate(tqdm(cases, desc="train scaling")):
            rows.append(run_case(trainer, nproc, args, amp, Path(tmp) / f"{i}.pt"))
            tqdm.write(json.dumps(rows[-1]))
    machine = _machine(args.device)
    md = to_markdown(rows, machine, sys.argv[1:] if argv is None else list(argv))
    print(md)
    if args.md:
        from wysiwyc.fileio import atomic_path

        with atomic_path(args.md) as t:
            Path(t).write_text(md)
        with atomic_path(Path(args.md).with_suffix(".json")) as t:
            Path(t).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
