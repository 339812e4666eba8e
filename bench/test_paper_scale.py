"""The paper-scale latency suite as benchmarks (``pytest bench --benchmark-only --paper-scale``).

The same entries and runners as ``bench/paper_scale.py`` (ResNet-50 and VGG16 at 224 px,
untrained, 20 classes; the Explainer heads ``deeplabv3_resnet50`` and ``lraspp_mobilenet_v3``
through torch and ONNX Runtime fp32, the mask predictor, ReciproCAM and the baselines),
one group per classifier and class scope, so the end summary gives each entry's ms per
image and its ratio to the ``deeplabv3_resnet50`` Explainer (torch). Slow methods run one
round. Skipped unless ``--paper-scale``: hours on a CPU.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_scale as ps  # noqa: E402

pytestmark = pytest.mark.paper_scale
ENTRIES = ps.entries(list(ps.METHODS), list(ps.HEADS), onnx=True)
SIZE = 224
_MODELS: dict[str, dict] = {}


def _models(arch: str) -> dict:
    if arch not in _MODELS:
        _MODELS.clear()  # one classifier's models at a time (VGG16 + two heads: GBs)
        _MODELS[arch] = ps.build_models(arch, list(ps.HEADS), SIZE, True)
    return _MODELS[arch]


@pytest.mark.parametrize("classes", ["top-1", "all"])
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.label for e in ENTRIES])
@pytest.mark.parametrize("arch", ps.CLASSIFIERS)
def test_paper_scale(benchmark, arch, entry, classes):
    import torch

    models = _models(arch)
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top1 = models["classifier"].classify(x).argmax(1, keepdim=True)
    cls = top1 if classes == "top-1" else torch.arange(ps.NUM_CLASSES).view(1, -1)
    fn, settings = ps.make_runner(entry, models, cls, x, Path(tempfile.mkdtemp(prefix="wysiwyc-ps-")), reduced=False)
    benchmark.group = f"paper scale | cpu | {arch} {SIZE}px | batch 1 | {classes}"
    # the summary's reference is the entry named "explainer": the paper's DeepLabV3 head, torch
    name = "explainer" if entry == ps.Entry("explainer", "deeplabv3_resnet50") else entry.label
    benchmark.extra_info.update({"method": name, "batch": 1, "classes": classes, "classifier": arch,
                                 "head_arch": entry.head_arch, "backend": entry.backend, "settings": settings})
    if entry.slow:
        benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    else:
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
