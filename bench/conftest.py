"""pytest options and fixtures for the latency bench (``pytest bench --benchmark-only``).

Options:
  --bench-classifier  a checkpoint (.pt) — default the bundled shapes explainer (or the
                      bundled shapes classifier with an untrained U-Net head while the
                      explainer asset is missing) — or a classifier architecture name
                      (``resnet50``…) for an untrained paper-scale model (latency only).
  --bench-size        input side in pixels (default: the checkpoint's image size).
  --bench-explainer   explainer architecture for an architecture-name classifier (default
                      deeplabv3_resnet50, the Explainer paper's; unet, lraspp_mobilenet_v3).
  --bench-reduced     reduced settings for the slow methods (RISE 800 masks, EP 80
                      iterations, SISE μ=0.5); every such benchmark is labelled REDUCED.
  --bench-full        also run the multi-minute cases on the CPU (EP for all classes,
                      batch-16 EP); on CUDA they always run.
  --bench-devices     comma-separated subset of ``cpu,cuda`` (default: CPU always, CUDA too
                      when available).
  --paper-scale       also run the paper-scale cases of ``bench/paper_scale.py`` (ResNet-50 /
                      VGG16 at 224 px, tens of minutes to hours on a CPU); skipped by default.
                      That script is collected beside the ``test_*.py`` files: its benchmark
                      case lives next to the suite it times.
  --bench-seconds     seconds per concurrent-stream case of ``test_runtime_fps.py``
                      (default 20; 1 makes a smoke run of a few seconds per case).
  --bench-repeats     runs of each 1- and 4-stream case of ``test_runtime_fps.py``, each
                      paired with its own model-alone yardstick (default 3): the row is the
                      run with the median ratio, and the range of the ratios is shown.

Reading a run: each case's name is printed before it runs (as ``-v`` does; ``-q`` turns
that off), and the run ends with a short summary (:func:`tables.summary_lines`): per group,
each method's ms per image and its ratio to the Explainer, the runtime cases in FPS.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "bench"))

from _methods import REDUCED_SETTINGS, bench_devices  # noqa: E402

ASSETS = ROOT / "src" / "wysiwyc" / "assets"
BENCH = ROOT / "bench"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("wysiwyc bench")
    g.addoption("--bench-classifier", default=None, help="checkpoint .pt or classifier arch name")
    g.addoption("--bench-size", type=int, default=None, help="input side in pixels")
    g.addoption("--bench-explainer", default="deeplabv3_resnet50",
                help="explainer architecture for an architecture-name --bench-classifier")
    g.addoption("--bench-reduced", action="store_true", help="reduced settings for RISE/EP/SISE (labelled)")
    g.addoption("--bench-full", action="store_true", help="run multi-minute CPU cases too")
    g.addoption("--bench-devices", default=None, help="comma-separated subset of cpu,cuda (default: all present)")
    g.addoption("--paper-scale", action="store_true",
                help="run the paper-scale suite too (ResNet-50/VGG16 at 224 px; hours on a CPU)")
    g.addoption("--bench-seconds", type=float, default=20.0,
                help="test_runtime_fps.py concurrent-stream cases: seconds per case (1 for a smoke run)")
    g.addoption("--bench-repeats", type=int, default=3,
                help="test_runtime_fps.py 1- and 4-stream cases: paired runs per case (the median is reported)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench/paper_scale.py`` as a test module (its name is not ``test_*.py``)."""
    # a path named on the command line is collected by pytest itself: a second Module would
    # run every case twice
    if file_path == BENCH / "paper_scale.py" and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config: pytest.Config) -> None:
    # progress: a case can take minutes, so name each one before it runs (pytest's -v)
    if config.option.verbose == 0:
        config.option.verbose = 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--paper-scale"):
        return
    skip = pytest.mark.skip(reason="paper-scale suite: pass --paper-scale")
    for item in items:
        if item.get_closest_marker("paper_scale"):
            item.add_marker(skip)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    """The short summary after pytest-benchmark's tables (printed with or without -s)."""
    from tables import entry_from_benchmark, summary_lines

    session = getattr(config, "_benchmarksession", None)
    entries = [e for b in getattr(session, "benchmarks", []) if (e := entry_from_benchmark(b)) is not None]
    if not entries:
        return
    terminalreporter.section("wysiwyc bench summary", sep="=")
    for line in summary_lines(entries):
        terminalreporter.write_line(line)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``device`` from --bench-devices (default: CPU, and CUDA when available)."""
    if "device" not in metafunc.fixturenames:
        return
    present = bench_devices()
    chosen = metafunc.config.getoption("--bench-devices")
    devices = [d.strip() for d in chosen.split(",") if d.strip()] if chosen else present
    missing = [d for d in devices if d not in present]
    if missing:
        raise pytest.UsageError(f"--bench-devices: {', '.join(missing)} not available here (have {', '.join(present)})")
    metafunc.parametrize("device", devices)


def default_checkpoint() -> Path:
    for name in ("shapes_explainer.pt", "shapes_classifier.pt"):
        if (ASSETS / name).is_file():
            return ASSETS / name
    raise pytest.UsageError("no bundled shapes model in src/wysiwyc/assets; pass --bench-classifier")


def build_bench_model(source: str | None, size: int | None, device: str,  # noqa: ANN201
                      head_arch: str = "deeplabv3_resnet50"):
    """A FusedModel with an explainer head (untrained if the checkpoint has none) and its image size."""
    from wysiwyc.models.classifiers import build_classifier, freeze
    from wysiwyc.models.explainer import head_from_spec
    from wysiwyc.models.fused import FusedModel, load_model
    from wysiwyc.spec import ModelSpec

    path = Path(source) if source else default_checkpoint()
    if path.suffix == ".pt" or path.is_file():
        model = load_model(path)
    else:  # an architecture name: untrained weights are fine for latency
        torch.manual_seed(0)
        spec = ModelSpec(class_names=[f"c{i}" for i in range(20)], image_size=(size or 224,) * 2,
                         classifier_arch=str(source), kind="explainer", head_arch=head_arch)
        model = FusedModel(spec, freeze(build_classifier(str(source), 20)))
    if model.head is None:
        torch.manual_seed(0)
        model.head = head_from_spec(model.spec).eval()
    side = size or model.spec.image_size[0]
    return model.to(device).eval(), side


@pytest.fixture(scope="session")
def bench_config(request: pytest.FixtureRequest) -> dict:
    opt = request.config.getoption
    source = opt("--bench-classifier")
    ckpt = Path(source) if source and Path(source).is_file() else None if source else default_checkpoint()
    return {"source": source, "checkpoint": ckpt, "size": opt("--bench-size"), "explainer": opt("--bench-explainer"),
            "reduced": opt("--bench-reduced"), "full": opt("--bench-full")}


_MODELS: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def bench_model(bench_config: dict):  # noqa: ANN201
    def get(device: str):  # noqa: ANN202
        if device not in _MODELS:
            _MODELS[device] = build_bench_model(bench_config["source"], bench_config["size"], device,
                                               bench_config["explainer"])
        return _MODELS[device]

    return get


def pytest_report_header(config: pytest.Config) -> list[str]:
    gpu = f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""
    lines = [f"wysiwyc bench: devices {', '.join(bench_devices())}{gpu}; torch {torch.__version__}; "
             f"{os.cpu_count()} CPU threads"]
    if config.getoption("--bench-reduced", default=False):
        lines.append("wysiwyc bench: REDUCED settings for the slow methods: "
                     + ", ".join(f"{k} {v}" for k, v in REDUCED_SETTINGS.items()))
    else:
        lines.append("wysiwyc bench: the papers' default settings for every method")
    return lines
