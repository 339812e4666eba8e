#!/usr/bin/env python
"""Latency at the papers' scale: ms per image at 224 px on ResNet-50 and VGG16.

    python bench/paper_scale.py                      # the full suite: hours on a 2-core CPU
    python bench/paper_scale.py --tiny --out-dir /tmp/ps   # the same code path in seconds
    python bench/paper_scale.py --classifiers torchvision:mobilenet_v2 --weights torchvision:mobilenet_v2=W.pth \
        --methods classifier,reciprocam,gradcam --top1-only gradcam --merge   # a user's ImageNet model

For each classifier (zoo archs: untrained weights, 20 classes — latency does not depend on
the weights; a user model route such as ``torchvision:NAME``: its own classes, with
``--weights ARCH=PATH`` when given), batch 1, one random image per call:

* the classifier alone, through torch and ONNX Runtime fp32 (the yardstick: every entry's
  ``× classifier`` is its time over this one's on the same backend);
* the Explainer heads ``deeplabv3_resnet50`` and ``lraspp_mobilenet_v3`` fused with the
  classifier, through torch and through ONNX Runtime fp32 (the product's export and the
  runtime's session, :mod:`_methods`);
* the mask predictor (fused, torch);
* Grad-CAM, Grad-CAM++, Score-CAM, SISE, RISE, Extremal Perturbation (torch, papers'
  default settings) and ReciproCAM (torch and its fused ONNX export);

each for the top-1 class and for all classes. Fast entries: median of ``--repeats`` calls
after one warm-up; slow ones (Score-CAM, SISE, RISE, EP): one call. Writes
``latency_paper_scale_cpu.csv`` (classifier, method, head_arch, backend, classes,
ms_per_image, image_size, rounds, settings, command) and ``latency_paper_scale_cpu.md`` (per
classifier, each entry's ratio to each Explainer through torch) into ``--out-dir``.

``--tiny`` swaps in ``small_cnn`` at 32 px, one repeat and the reduced settings of the slow
methods (labelled), to test the script, not to measure.

The same entries and runners are a pytest-benchmark case, :func:`test_paper_scale`
(``pytest bench --benchmark-only --paper-scale``; ``bench/conftest.py`` collects this file
and skips the case without ``--paper-scale``): one group per classifier and class scope, so
the run's end summary gives each entry's ms per image and its ratio to the
``deeplabv3_resnet50`` Explainer (torch). Slow methods run one round.
"""

from __future__ import annotations

import argparse
import csv
import io
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import _path  # noqa: F401  (checkout src/ on sys.path)
from _methods import REDUCED_SETTINGS, SLOW

from wysiwyc.errors import UserError, cli_main
from wysiwyc.fileio import atomic_path
from wysiwyc.formats import DEFAULT_TOP_K, MANY_CLASSES

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIERS = ("resnet50", "vgg16")
HEADS = ("deeplabv3_resnet50", "lraspp_mobilenet_v3")
METHODS = ("classifier", "explainer", "mask_predictor", "reciprocam", "gradcam", "gradcam++", "scorecam", "sise",
           "rise", "extremal")
NUM_CLASSES = 20
BENCH_SIZE = 224  # image side of the pytest-benchmark case


@dataclass
class Row:
    """One measured entry (a row of the CSV)."""

    classifier: str
    method: str
    head_arch: str
    backend: str
    classes: str  # "top-1" | "all"
    ms_per_image: float
    image_size: int
    rounds: int
    settings: str
    command: str = ""  # the run that measured it (a suite built in parts with --merge has several)
    machine: str = ""  # where that run measured it


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Paper-scale latency (224 px, ResNet-50 / VGG16).", add_help=add_help)
    p.add_argument("--classifiers", default=",".join(CLASSIFIERS),
                   help="comma-separated classifier archs or user model routes (torchvision:NAME, timm:NAME)")
    p.add_argument("--weights", action="append", default=[], metavar="ARCH=PATH",
                   help="a local weights file for a user model route (repeatable)")
    p.add_argument("--heads", default=",".join(HEADS), help="comma-separated Explainer architectures")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of the fast entries (median)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime entries")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--tiny", action="store_true", help="small_cnn, 32 px, 1 repeat, reduced slow methods (a test)")
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--top1-only", default="",
                   help="comma-separated slow methods measured for the top-1 class only (EP optimises one "
                        "class per run: all classes cost 20 runs)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (writes latency_paper_scale_gpu.* on cuda)")
    p.add_argument("--machine", default=None, help="machine description for the table (default: detected)")
    p.add_argument("--record-as", default=None, metavar="COMMAND",
                   help="the command recorded for this run's rows (default: this command line)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows already in the output CSV that this run does not measure (measure a "
                        "suite in parts)")
    return p


def median_ms(fn: Callable[[], object], rounds: int, warmup: bool, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall milliseconds of ``rounds`` calls of ``fn`` (after one untimed call if
    ``warmup``); ``sync`` waits for queued device work (CUDA) before each clock read."""
    if warmup:
        fn()
    times = []
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def machine_name(device: str, threads: int | None) -> str:
    """``NVIDIA H100 80GB HBM3`` on CUDA, else the CPU model, core count and torch threads."""
    import os
    import platform

    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core {cpu}, {threads or torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def stem(device: str) -> str:
    return "latency_paper_scale_" + ("gpu" if device.startswith("cuda") else "cpu")


def base_classifier(arch: str, size: int, weights: str | None = None):  # noqa: ANN201
    """(the frozen classifier, its spec): a zoo arch untrained with :data:`NUM_CLASSES` classes,
    or a user model route with its own classes (and ``weights`` when given)."""
    import torch

    from wysiwyc.models.classifiers import build_classifier, freeze
    from wysiwyc.models.explanandum import is_foreign, wrap_classifier
    from wysiwyc.spec import ModelSpec

    torch.manual_seed(0)
    if is_foreign(arch):
        spec, _, clf = wrap_classifier(arch, "imagenet", "softmax", weights, (size, size))
        return freeze(clf), spec
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    return freeze(build_classifier(arch, NUM_CLASSES)), ModelSpec(class_names=names, image_size=(size, size),
                                                                  classifier_arch=arch)


def build_models(arch: str, heads: list[str], size: int, want_mask_predictor: bool, weights: str | None = None) -> dict:
    """{"classifier": FusedModel without a head, head_arch: fused Explainer, "mask_predictor": ...},
    seeded, eval mode, sharing one classifier (:func:`base_classifier`)."""
    from wysiwyc.models.explainer import head_from_spec as explainer_head
    from wysiwyc.models.fused import FusedModel
    from wysiwyc.models.mask_predictor import head_from_spec as mask_predictor_head
    from wysiwyc.spec import ModelSpec

    clf, base = base_classifier(arch, size, weights)
    models = {"classifier": FusedModel(base, clf).eval()}
    for h in heads:
        spec = ModelSpec(**{**asdict(base), "kind": "explainer", "head_arch": h, "mask_kind": "sigmoid"})
        models[h] = FusedModel(spec, clf, explainer_head(spec).eval()).eval()
    if want_mask_predictor:
        spec = ModelSpec(**{**asdict(base), "kind": "mask_predictor", "head_arch": "mask_predictor"})
        models["mask_predictor"] = FusedModel(spec, clf, mask_predictor_head(spec).eval()).eval()
    return models


def onnx_runner(model, tmp: Path, head: str | None = None, alone: bool = False) -> Callable:  # noqa: ANN001
    """(images) -> outputs through ONNX Runtime fp32 of ``model`` saved and exported as the
    product does (``head``: a training-free head added at export; a many-class model's
    export keeps the top-k masks, as ``export/to_onnx.py`` does by default). ``alone``: the
    classifier's logits-only graph, in a session with the runtime's options."""
    from _methods import export_onnx, open_session

    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.formats import DEFAULT_TOP_K, MANY_CLASSES
    from wysiwyc.models.explanandum import classifier_state

    name = "alone" if alone else head or model.spec.head_arch
    ckpt = tmp / f"{model.spec.classifier_arch.replace(':', '_')}_{name}.pt"
    save_checkpoint(ckpt, model.spec, classifier_state(model.classifier),
                    None if head or alone else model.head.state_dict())
    top_k = DEFAULT_TOP_K if model.spec.num_classes > MANY_CLASSES and not alone else None
    path = export_onnx(ckpt, ckpt.with_suffix(".onnx"), "fp32", head=head, top_k=top_k)
    if alone:
        import onnxruntime as ort

        from wysiwyc.runtime.backends.onnxruntime import session_options

        session = ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x.cpu().numpy()})
    backend = open_session(path)

    def run(x) -> object:  # noqa: ANN001
        return backend.session.run(None, {"images": x.cpu().numpy()})

    run.backend = backend  # keep the session alive as long as the runner
    return run


@dataclass(frozen=True)
class Entry:
    """One thing to time: a method, the Explainer head it uses (``-`` for none), a backend."""

    method: str
    head_arch: str = "-"
    backend: str = "torch"

    @property
    def slow(self) -> bool:
        return self.method in SLOW

    @property
    def label(self) -> str:
        """``explainer[lraspp_mobilenet_v3]``, ``reciprocam[onnxruntime-fp32]``, ``gradcam``."""
        parts = [p for p in (self.head_arch, self.backend) if p not in ("-", "torch")]
        return self.method + "".join(f"[{p}]" for p in parts)


def entries(methods: list[str], heads: list[str], onnx: bool) -> list[Entry]:
    """The suite's entries in table order.

    Raises:
        UserError: an unknown method.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    out: list[Entry] = []
    for m in methods:
        if m == "explainer":
            for h in heads:
                out += [Entry(m, h)] + ([Entry(m, h, "onnxruntime-fp32")] if onnx else [])
        else:
            ort_too = onnx and m in ("reciprocam", "classifier")
            out += [Entry(m)] + ([Entry(m, "-", "onnxruntime-fp32")] if ort_too else [])
    return out


def make_runner(entry: Entry, models: dict, classes, x, tmp: Path, reduced: bool):  # noqa: ANN001, ANN201
    """(a no-argument callable that explains ``x`` for ``classes`` (1,K), its settings label).

    ONNX entries are exported once per models dict (cached in it: all classes come from one
    graph)."""
    from wysiwyc.attribution import build_method

    if entry.backend == "onnxruntime-fp32":
        if entry.label not in models:
            head = "reciprocam" if entry.method == "reciprocam" else None
            model = models["classifier"] if head or entry.method == "classifier" else models[entry.head_arch]
            models[entry.label] = onnx_runner(model, tmp, head=head, alone=entry.method == "classifier")
        run = models[entry.label]
        return (lambda: run(x)), "paper defaults"
    if entry.method == "classifier":  # the yardstick: logits only
        return (lambda m=models["classifier"]: _no_grad(m.classify, x)), "-"
    if entry.method == "explainer":  # one fused pass gives every class's mask
        return (lambda m=models[entry.head_arch]: _no_grad(m, x)), "paper defaults"
    settings = REDUCED_SETTINGS.get(entry.method, {}) if reduced else {}
    model = models["mask_predictor"] if entry.method == "mask_predictor" else models["classifier"]
    method = build_method(entry.method, model, **settings)
    label = "reduced " + ", ".join(f"{k}={v}" for k, v in settings.items()) if settings else "paper defaults"
    return (lambda: method(x, classes)), label


def measure(args: argparse.Namespace, say: Callable[[str], None] = print,
            on_row: Callable[[list[Row]], None] = lambda rows: None) -> list[Row]:
    """Every entry of the suite, in order; ``say`` gets one progress line per entry and
    ``on_row`` the rows so far after each (so a stopped run keeps what it measured)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    todo = entries(methods, heads, not args.no_onnx)
    rows: list[Row] = []
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    tmp = Path(tempfile.mkdtemp(prefix="wysiwyc-paper-scale-"))
    weights = dict(w.split("=", 1) for w in args.weights)
    for arch in [a.strip() for a in args.classifiers.split(",") if a.strip()]:
        models = build_models(arch, heads if "explainer" in methods else [], args.size, "mask_predictor" in methods,
                              weights.get(arch))
        models = {k: m.to(device) for k, m in models.items()}
        with torch.no_grad():
            top1 = models["classifier"].classify(x).argmax(1, keepdim=True)
        top1_only = {m.strip() for m in args.top1_only.split(",") if m.strip()}
        n_classes = models["classifier"].spec.num_classes
        for entry in todo:
            scopes = [("top-1", top1), ("all", torch.arange(n_classes).view(1, -1))]
            if entry.method == "classifier":  # logits only: no class to explain
                scopes = [("-", top1)]
            elif entry.backend != "torch" and n_classes > MANY_CLASSES:  # the export's top-k graph, whatever is asked
                scopes = [(f"top-{DEFAULT_TOP_K} graph", top1)]
            for classes, cls in scopes:
                if classes == "all" and entry.method in top1_only:
                    continue
                fn, settings = make_runner(entry, models, cls, x, tmp, args.tiny)
                fn = checked(fn)
                rounds = 1 if entry.slow else args.repeats
                try:
                    ms = median_ms(fn, rounds, warmup=not entry.slow, sync=sync)
                except UserError as exc:  # e.g. a CAM on a transformer, which has no feature maps
                    say(f"{arch} {entry.label}: not measured ({exc})")
                    break
                check_output(fn.last, entry)
                rows.append(Row(arch, entry.method, entry.head_arch, entry.backend, classes, ms, args.size, rounds,
                                settings))
                say(f"{arch} {entry.label} {classes}: {ms:.1f} ms/img ({rounds} round(s))")
                on_row(rows)
    return rows


def checked(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn``, keeping its last output (``.last``) for :func:`check_output`."""
    def run() -> object:
        run.last = fn()  # type: ignore[attr-defined]
        return run.last  # type: ignore[attr-defined]

    run.last = None  # type: ignore[attr-defined]
    return run


def check_output(out: object, entry: Entry) -> None:
    """What was timed is what the entry promises: finite logits for the classifier alone,
    masks in [0, 1] for everything else (the last array of the outputs).

    Raises:
        AssertionError: otherwise (a broken path must not report a fast number).
    """
    import numpy as np

    arrays = out if isinstance(out, (tuple, list)) else (out,)
    last = arrays[-1]
    a = np.asarray(last.detach().float().cpu() if hasattr(last, "detach") else last, dtype=np.float64)
    assert a.size and np.isfinite(a).all(), f"{entry.label}: non-finite output"
    if entry.method != "classifier":
        assert 0.0 <= a.min() and a.max() <= 1.0, f"{entry.label}: masks outside [0, 1]"


def read_rows(path: Path) -> list[Row]:
    """The rows of an existing CSV (none when it is missing)."""
    if not path.is_file():
        return []
    with path.open() as f:
        return [Row(**{**r, "ms_per_image": float(r["ms_per_image"]), "image_size": int(r["image_size"]),
                       "rounds": int(r["rounds"]), "machine": r.get("machine") or ""}) for r in csv.DictReader(f)]


def _no_grad(model, x):  # noqa: ANN001, ANN202
    import torch

    with torch.no_grad():
        return model(x)


def markdown(rows: list[Row], command: str, machine: str = "", device: str = "cpu") -> str:
    """Per classifier: one table, every entry with its ratio to each Explainer (torch, same
    classes). The header lists the commands that measured the rows (``command`` for rows
    that name none) and what the suite leaves out."""
    where = "GPU" if device.startswith("cuda") else "CPU"
    runs = list(dict.fromkeys((r.command or command, r.machine or machine) for r in rows)) or [(command, machine)]
    lines = [f"# Latency at paper scale ({where}, batch 1, ms per image)", ""]
    machines = list(dict.fromkeys(m for _, m in runs if m))
    if len(machines) == 1:
        lines.append(f"Machine: {machines[0]}.")
    if len(runs) == 1:
        lines.append(f"Command: `{runs[0][0]}`.")
    else:
        lines += ["Built in parts (`--merge` keeps the rows a run does not re-measure)"
                  + (", each run on the machine named after it; compare rows of one run only:" if len(machines) > 1
                     else ":"), "", "```"]
        lines += [f"{c}    # {m}" if len(machines) > 1 and m else c for c, m in runs]
        lines.append("```")
    lines += ["", f"Zoo classifiers: untrained weights (latency does not depend on them), {NUM_CLASSES} classes; "
              "a user model route (e.g. torchvision:mobilenet_v2): its own classes (masks of the top 5 in the "
              "ONNX export, as `export/to_onnx.py` does for many classes). × HEAD = this entry's time / that "
              "Explainer's (torch, same classes); × classifier = this entry's time / the classifier alone on the "
              "same backend (the physical limit of an explanation that needs the classifier's own pass is 1.0×).",
              *_coverage(rows), ""]
    order = {m: i for i, m in enumerate(METHODS)}
    for arch in dict.fromkeys(r.classifier for r in rows):
        mine = sorted((r for r in rows if r.classifier == arch), key=lambda r: order.get(r.method, len(order)))
        refs = {(r.head_arch, r.classes): r.ms_per_image for r in mine
                if r.method == "explainer" and r.backend == "torch"}
        heads = list(dict.fromkeys(h for h, _ in refs))
        alone = {r.backend: r.ms_per_image for r in mine if r.method == "classifier"}
        cols = [f"× {h}" for h in heads] + (["× classifier"] if alone else [])
        lines += [f"## {arch}, {mine[0].image_size} px", "",
                  "| method | head | backend | classes | ms/img | " + "".join(f"{c} | " for c in cols)
                  + "rounds | settings |",
                  "|---|---|---|---|---|" + "---|" * len(cols) + "---|---|"]
        for r in mine:
            ratios = [f"{r.ms_per_image / refs[(h, r.classes)]:.2f}" if refs.get((h, r.classes)) else "" for h in heads]
            if alone:
                ratios.append(f"{r.ms_per_image / alone[r.backend]:.2f}" if alone.get(r.backend) else "")
            lines.append(f"| {r.method} | {r.head_arch} | {r.backend} | {r.classes} | {r.ms_per_image:.1f} | "
                         + "".join(f"{v} | " for v in ratios) + f"{r.rounds} | {r.settings} |")
        lines.append("")
    return "\n".join(lines)


def _coverage(rows: list[Row]) -> list[str]:
    """Lines naming the slow methods measured for the top-1 class only and the methods a
    classifier lacks."""
    out = []
    slow = [m for m in SLOW if any(r.method == m for r in rows)]
    top1 = [m for m in slow if not any(r.method == m and r.classes == "all" for r in rows)]
    if slow:
        only = ("" if not top1 else ", for the top-1 class only" if top1 == slow
                else f"; {', '.join(top1)} for the top-1 class only")
        out.append(f"Slow methods ({', '.join(slow)}) ran one round{only}.")
    for arch in dict.fromkeys(r.classifier for r in rows):
        missing = [m for m in METHODS if not any(r.classifier == arch and r.method == m for r in rows)]
        if missing:
            out.append(f"Not measured on {arch}: {', '.join(missing)}.")
    return out


def write(rows: list[Row], out_dir: Path, command: str, machine: str = "", device: str = "cpu") -> tuple[Path, Path]:
    """Write the CSV and the Markdown atomically (rows that name no command get ``command``);
    returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / f"{stem(device)}.csv", out_dir / f"{stem(device)}.md"
    rows = [replace(r, command=r.command or command, machine=r.machine or machine) for r in rows]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(Row.__dataclass_fields__))
    w.writeheader()
    for r in rows:
        w.writerow({**asdict(r), "ms_per_image": f"{r.ms_per_image:.3f}"})
    with atomic_path(csv_path) as tmp:
        Path(tmp).write_text(buf.getvalue())
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(markdown(rows, command, machine, device))
    return csv_path, md_path


_BENCH_MODELS: dict[str, dict] = {}


def _bench_models(arch: str) -> dict:
    """The models of ``arch`` at :data:`BENCH_SIZE`, built once per classifier."""
    if arch not in _BENCH_MODELS:
        _BENCH_MODELS.clear()  # one classifier's models at a time (VGG16 + two heads: GBs)
        _BENCH_MODELS[arch] = build_models(arch, list(HEADS), BENCH_SIZE, True)
    return _BENCH_MODELS[arch]


def pytest_generate_tests(metafunc) -> None:  # noqa: ANN001 - pytest's Metafunc
    """pytest: :func:`test_paper_scale` for every classifier, entry and class scope, each
    marked ``paper_scale`` (run with ``--paper-scale``)."""
    import pytest

    if metafunc.definition.name != "test_paper_scale":
        return
    todo = entries(list(METHODS), list(HEADS), onnx=True)
    metafunc.parametrize("arch", [pytest.param(a, marks=pytest.mark.paper_scale) for a in CLASSIFIERS])
    metafunc.parametrize("entry", todo, ids=[e.label for e in todo])
    metafunc.parametrize("classes", ["top-1", "all"])


def test_paper_scale(benchmark, arch: str, entry: Entry, classes: str) -> None:  # noqa: ANN001 - pytest fixture
    """pytest-benchmark: one entry of the suite at 224 px, batch 1."""
    import torch

    models = _bench_models(arch)
    x = torch.rand(1, 3, BENCH_SIZE, BENCH_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top1 = models["classifier"].classify(x).argmax(1, keepdim=True)
    cls = top1 if classes == "top-1" else torch.arange(NUM_CLASSES).view(1, -1)
    fn, settings = make_runner(entry, models, cls, x, Path(tempfile.mkdtemp(prefix="wysiwyc-ps-")), reduced=False)
    benchmark.group = f"paper scale | cpu | {arch} {BENCH_SIZE}px | batch 1 | {classes}"
    # the summary's reference is the entry named "explainer": the paper's DeepLabV3 head, torch
    name = "explainer" if entry == Entry("explainer", "deeplabv3_resnet50") else entry.label
    benchmark.extra_info.update({"method": name, "batch": 1, "classes": classes, "classifier": arch,
                                 "head_arch": entry.head_arch, "backend": entry.backend, "settings": settings})
    fn = checked(fn)
    if entry.slow:
        benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    else:
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    check_output(fn.last, entry)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.tiny:
        args.classifiers, args.size, args.repeats = "small_cnn", 32, 1
    command = args.record_as or shlex.join(["python", "bench/paper_scale.py", *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.out_dir)
    mine = {a.strip() for a in args.classifiers.split(",")}
    measured = {m.strip() for m in args.methods.split(",")}
    kept = [replace(r, command=r.command or "(an earlier run)") for r in read_rows(out / f"{stem(args.device)}.csv")
            if r.classifier not in mine or r.method not in measured] if args.merge else []
    machine = args.machine or machine_name(args.device, args.threads)
    rows = measure(args, say=lambda s: print(s, flush=True),
                   on_row=lambda rows: write(kept + rows, out, command, machine, args.device))
    for p in write(kept + rows, out, command, machine, args.device):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
