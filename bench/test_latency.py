"""Latency of every attribution method on the same classifier, resolution and device.

Run: ``pytest bench --benchmark-only`` (add ``--benchmark-columns=min,mean,median,rounds``
for a compact table). pytest-benchmark prints one table per group; the numbers in
parentheses are the ratios to the fastest entry of that group. Groups:

* ``<device> | batch 1 | top-1 class``  — per-image latency, explaining the predicted class;
* ``<device> | batch 1 | all classes``  — masks for all C classes (the Explainer's native
  output; CAMs/SISE/EP pay once per class, RISE/Score-CAM share their passes);
* ``<device> | batch 16 | top-1 class`` — one call on 16 images, for the methods that share
  passes across a batch (Explainer, Grad-CAM, Grad-CAM++, EP); divide by 16 for the
  per-image cost (``extra_info.per_image_ms`` in ``--benchmark-json``).

The Explainer runs through torch and through ONNX Runtime (fp32 and static QDQ int8, exported
and opened by :mod:`_methods` exactly as ``test_onnx_precision.py`` does) on the CPU. The
classifier alone (``classifier``: logits only, torch and ONNX Runtime fp32) is every
table's yardstick: what explaining costs on top of classifying (its limit is 1.0×). Slow
methods (RISE, EP, SISE, Score-CAM) run a fixed small number of rounds (pedantic mode)
because one call takes seconds to minutes.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _methods import DEFAULT_SETTINGS, REDUCED_SETTINGS  # noqa: E402

METHODS = ["classifier", "classifier[onnxruntime-fp32]", "explainer", "explainer[onnxruntime-fp32]",
           "explainer[onnxruntime-int8]", "reciprocam", "gradcam", "gradcam++", "scorecam", "sise", "rise", "extremal"]
BATCHED = {"classifier", "classifier[onnxruntime-fp32]", "explainer", "explainer[onnxruntime-fp32]",
           "explainer[onnxruntime-int8]", "reciprocam", "gradcam", "gradcam++", "extremal"}
SLOW_ROUNDS = {"rise": 1, "extremal": 1, "sise": 3, "scorecam": 3}
CPU_HEAVY = {("extremal", "all classes"), ("extremal", 16)}  # minutes on 2 cores: --bench-full


def _ort_session(model, side: int, precision: str, tmp: Path, source: Path | None = None):  # noqa: ANN001, ANN202
    """The open ONNX backend (``.session``) of the product's own export of the bench model
    (:mod:`_methods`, shared with ``test_onnx_precision.py``: same file, same session). A
    checkpoint source is exported as is; an architecture-name model is saved first."""
    from _methods import export_onnx, open_session

    from wysiwyc.checkpoint import save_checkpoint

    if source is not None and model.spec.kind != "classifier":
        ckpt = Path(source)
    else:
        ckpt = tmp / "bench.pt"
        save_checkpoint(ckpt, model.spec, model.classifier.state_dict(), model.head.state_dict())
    return open_session(export_onnx(ckpt, tmp / f"bench.{precision}.onnx", precision, (side, side)))


_SESSIONS: dict = {}


def _classifier_session(model, side: int, tmp: Path):  # noqa: ANN001, ANN202
    """An ONNX Runtime session (the runtime's options) of the bench model's classifier alone:
    the product's logits-only export of a plain classifier checkpoint."""
    from dataclasses import replace

    import onnxruntime as ort
    from _methods import export_onnx

    from wysiwyc.checkpoint import save_checkpoint
    from wysiwyc.runtime.backends.onnxruntime import session_options

    ckpt = tmp / "classifier.pt"
    save_checkpoint(ckpt, replace(model.spec, kind="classifier", head_arch=None, mask_kind=None),
                    model.classifier.state_dict())
    path = export_onnx(ckpt, tmp / "classifier.onnx", "fp32", (side, side))
    return ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])


def _runner(name: str, device: str, bench_model, reduced: bool, source: Path | None = None):  # noqa: ANN001, ANN202
    """A callable (images, classes) -> masks for a bench entry."""
    from wysiwyc.attribution import build_method

    model, side = bench_model(device)
    if name == "classifier":
        def alone(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:  # noqa: ARG001 - logits only
            with torch.no_grad():
                return model.classify(images)

        return alone
    if name == "classifier[onnxruntime-fp32]":
        if device != "cpu":
            pytest.skip("ONNX Runtime runs on the CPU provider here")
        if "classifier" not in _SESSIONS:
            _SESSIONS["classifier"] = _classifier_session(model, side, Path(tempfile.mkdtemp(prefix="wysiwyc-bench-")))
        alone = _SESSIONS["classifier"]
        return lambda images, classes: torch.from_numpy(alone.run(None, {"images": images.numpy()})[0])
    if name.startswith("explainer[onnxruntime"):
        if device != "cpu":
            pytest.skip("ONNX Runtime runs on the CPU provider here")
        precision = name.split("-")[-1].rstrip("]")
        if precision not in _SESSIONS:
            tmp = Path(tempfile.mkdtemp(prefix="wysiwyc-bench-"))
            _SESSIONS[precision] = _ort_session(model, side, precision, tmp, source)
        sess = _SESSIONS[precision].session

        def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            _, masks = sess.run(None, {"images": images.numpy()})
            masks = torch.from_numpy(masks)
            return masks.gather(1, classes[:, :, None, None].expand(-1, -1, *masks.shape[-2:]))

        return run
    settings = (REDUCED_SETTINGS if reduced else DEFAULT_SETTINGS).get(name, {})
    return build_method(name, model, **settings)


@pytest.mark.parametrize("scope", ["top-1 class", "all classes"])
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("method", METHODS)
def test_latency(benchmark, bench_config, bench_model, method, batch, scope, device):  # device: conftest
    if batch > 1 and method not in BATCHED:
        pytest.skip(f"{method} loops over images; batch 16 = 16 x batch 1")
    if batch > 1 and scope == "all classes":
        pytest.skip("batch 16 is measured for the top-1 class only")
    heavy = (method, scope) in CPU_HEAVY or (method, batch) in CPU_HEAVY
    if device == "cpu" and heavy and not bench_config["full"]:
        pytest.skip("minutes on a CPU; pass --bench-full")
    reduced = bench_config["reduced"] and method in REDUCED_SETTINGS
    model, side = bench_model(device)
    run = _runner(method, device, bench_model, bench_config["reduced"], bench_config["checkpoint"])
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, side, side, generator=gen).to(device)
    c = model.spec.num_classes
    with torch.no_grad():
        top1 = model.classify(images).argmax(1, keepdim=True)
    classes = top1 if scope == "top-1 class" else torch.arange(c, device=device).expand(batch, c)

    def call() -> torch.Tensor:
        out = run(images, classes)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"{device} | batch {batch} | {scope}" + (" | REDUCED settings" if bench_config["reduced"] else "")
    benchmark.extra_info.update({"method": method, "batch": batch, "scope": scope, "device": device,
                                 "image_size": side, "classifier": model.spec.classifier_arch,
                                 "head_arch": model.spec.head_arch,
                                 "settings": "reduced" if reduced else "paper defaults",
                                 "device_name": torch.cuda.get_device_name(images.device) if device == "cuda"
                                 else f"{os.cpu_count()}-thread CPU, torch {torch.get_num_threads()} threads"})
    if method in SLOW_ROUNDS:
        out = benchmark.pedantic(call, rounds=SLOW_ROUNDS[method], iterations=1, warmup_rounds=0)
    else:
        out = benchmark(call)
    # what was timed is what the entry promises: the logits, or masks of the asked classes in [0,1]
    if method.startswith("classifier"):
        assert out.shape == (batch, c) and torch.allclose(out.float(), model.classify(images).float(), atol=1e-4)
    else:
        assert out.shape == (batch, classes.shape[1], side, side)
        assert 0 <= float(out.min()) <= float(out.max()) <= 1 and float(out.flatten(2).std(-1).max()) > 0
    stats = benchmark.stats.stats if hasattr(benchmark.stats, "stats") else benchmark.stats
    benchmark.extra_info["per_image_ms"] = 1000 * stats.median / batch
