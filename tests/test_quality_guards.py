"""Quality guards: the bundled demo models keep the quality their committed reports state.

Every model runs on one fixed slice: the first :data:`SLICE` images of the ``shapes`` test
split at 64 px (seed 0, no planted cue), the split ``bench/results/shapes_test.md`` scores
(its first 1000 images). The numbers are the report's, from the same metric functions:

* classifier: ``map`` and ``label_acc`` of :func:`wysiwyc.metrics.classification.multilabel_metrics`;
* ``iou``: the report's "iou" — continuous IoU of the true classes' masks merged by max
  against the merged ground truth (:func:`~wysiwyc.metrics.segmentation.aggregate`,
  :func:`~wysiwyc.metrics.segmentation.segmentation_scores`, as ``SegmentationMeter``),
  averaged over the images with a label;
* ``class_iou``, ``class_iou_min``, ``leak``: the report's "IoU/class", "min IoU/class" and
  "leak" (:class:`~wysiwyc.metrics.segmentation.PerClassMeter`, over the masks of all classes).

Each bound is the value measured on the slice with a margin of 0.01 (``measured`` keeps the
slice value; the report's 1000-image value is in the comment): a model that lost quality fails,
while a numerical difference between machines (1e-6) does not.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from _helpers import ROOT

ASSETS = ROOT / "src" / "wysiwyc" / "assets"
SLICE = 500
BATCH = 100
MARGIN = 0.01


@dataclass(frozen=True)
class Bound:
    """``value >= floor`` (or ``value <= ceiling``); ``measured`` is the slice's value."""

    measured: float
    floor: float | None = None
    ceiling: float | None = None

    def fails(self, value: float) -> bool:
        return not ((self.floor is None or value >= self.floor) and (self.ceiling is None or value <= self.ceiling))

    def __str__(self) -> str:
        return f">= {self.floor:.4f}" if self.floor is not None else f"<= {self.ceiling:.4f}"


def at_least(measured: float) -> Bound:
    return Bound(measured, floor=measured - MARGIN)


def at_most(measured: float) -> Bound:
    return Bound(measured, ceiling=measured + MARGIN)


# measured on the slice (the same values in torch and through ONNX Runtime, to 1e-7)
GUARDS: dict[str, dict[str, Bound]] = {
    # checkpoint's own test metrics (1000 images): mAP 0.998, label accuracy 0.984
    "classifier": {"map": at_least(0.9973), "label_acc": at_least(0.9833)},
    # report: IoU 0.852, IoU/class 0.773, min IoU/class 0.751, leak 0.048
    "explainer": {"iou": at_least(0.8525), "class_iou": at_least(0.7707), "class_iou_min": at_least(0.7460),
                  "leak": at_most(0.0505)},
    # report: IoU 0.362, IoU/class 0.286, min IoU/class 0.264, leak 0.198
    "mask_predictor": {"iou": at_least(0.3621), "class_iou": at_least(0.2860), "class_iou_min": at_least(0.2649),
                       "leak": at_most(0.2029)},
    # report: IoU 0.541, IoU/class 0.281, leak 0.644 (its min IoU/class, 0.002, has nothing to guard)
    "rtis": {"iou": at_least(0.5362), "class_iou": at_least(0.2800), "leak": at_most(0.6474)},
}

Run = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


def failures(name: str, values: dict[str, float]) -> list[str]:
    """The guards of ``name`` that ``values`` break, as ``metric value (bound)``; empty = it passes."""
    return [f"{k} {values[k]:.4f} (guard {b})" for k, b in GUARDS[name].items() if b.fails(values[k])]


@pytest.fixture(scope="module")
def shapes_slice() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N,3,64,64) in [0,1], labels (N,6), ground truth (N,6,64,64)) of the slice."""
    from wysiwyc.data import build_dataset, dataset_kwargs

    ds = build_dataset("shapes", "test", 64, **dataset_kwargs("shapes"))
    assert len(ds) == 1000  # the whole split, as the report builds it; the slice is its head
    items = [ds[i] for i in range(SLICE)]
    return tuple(torch.stack([it[j] for it in items]) for j in range(3))  # type: ignore[return-value]


def measure(run: Run, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """The guarded numbers of one model on ``data``; ``run(images) -> (logits, masks or None)``."""
    from wysiwyc.metrics.classification import multilabel_metrics
    from wysiwyc.metrics.segmentation import PerClassMeter, aggregate, aggregate_gt, segmentation_scores

    images, labels, gt = data
    outs = [run(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]
    values = multilabel_metrics(torch.cat([o[0] for o in outs]), labels)
    if outs[0][1] is None:
        return values
    masks = torch.cat([o[1] for o in outs]).float()
    g, valid = aggregate_gt(gt, labels)
    labelled = labels.sum(1) > 0
    values["iou"] = float(segmentation_scores(aggregate(masks, labels), g, valid)["iou"][labelled].mean())
    per_class = PerClassMeter(labels.shape[1])
    per_class.update(masks, gt, labels)
    pc = per_class.result()
    values.update(class_iou=pc["iou"], class_iou_min=pc["iou_min"], leak=pc["leak"])
    return values


def torch_run(path: Path, masks: bool = True) -> Run:
    from wysiwyc.models.fused import load_model

    model = load_model(path)

    @torch.no_grad()
    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not masks:
            return model.classify(images), None
        return model(images)

    return run


def onnx_run(path: Path) -> Run:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "masks"]

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, masks = session.run(None, {"images": images.numpy()})
        return torch.from_numpy(logits), torch.from_numpy(masks)

    return run


# --------------------------------------------------------------------------- the guards
def test_bundled_classifier_keeps_its_label_accuracy_and_map(shapes_slice) -> None:  # noqa: ANN001
    from wysiwyc.checkpoint import load_checkpoint

    values = measure(torch_run(ASSETS / "shapes_classifier.pt", masks=False), shapes_slice)
    assert failures("classifier", values) == []
    # the test metrics the checkpoint records (whole split) agree with what it does on the slice
    recorded = load_checkpoint(ASSETS / "shapes_classifier.pt").metrics
    assert recorded["test_map"] == pytest.approx(values["map"], abs=MARGIN)
    assert recorded["test_label_acc"] == pytest.approx(values["label_acc"], abs=MARGIN)


def test_bundled_explainer_keeps_its_quality(shapes_slice) -> None:  # noqa: ANN001
    values = measure(torch_run(ASSETS / "shapes_explainer.pt"), shapes_slice)
    assert failures("explainer", values) == []
    assert failures("classifier", values) == []  # the classifier it embeds


def test_bundled_explainer_onnx_keeps_its_quality(shapes_slice) -> None:  # noqa: ANN001
    values = measure(onnx_run(ASSETS / "shapes_explainer.onnx"), shapes_slice)
    assert failures("explainer", values) == []
    assert failures("classifier", values) == []


def test_bundled_explainer_onnx_is_the_export_of_the_bundled_checkpoint() -> None:
    """A replaced .pt (or .onnx) without a fresh export breaks this link."""
    onnx = pytest.importorskip("onnx")
    from wysiwyc.fileio import file_sha256

    meta = {p.key: p.value for p in onnx.load(str(ASSETS / "shapes_explainer.onnx"), load_external_data=False)
            .metadata_props}
    assert meta["wysiwyc.source_sha256"] == file_sha256(ASSETS / "shapes_explainer.pt")
    assert meta["wysiwyc.precision"] == "fp32" and meta["wysiwyc.graph"] == "fused"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_predictor", "rtis"])
def test_bundled_baseline_heads_keep_their_quality(name: str, shapes_slice) -> None:  # noqa: ANN001
    values = measure(torch_run(ASSETS / f"shapes_{name}.pt"), shapes_slice)
    assert failures(name, values) == []


@pytest.mark.parametrize("name", ["explainer", "mask_predictor", "rtis"])
def test_the_committed_report_meets_the_same_guards(name: str) -> None:
    """The report's 1000-image rows (bench/results/shapes_test.csv) pass the slice's guards:
    the guards and the committed numbers describe the same models."""
    with open(ROOT / "bench" / "results" / "shapes_test.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["method"] == name)
    assert int(row["images"]) == 1000
    assert failures(name, {k: float(row[k]) for k in GUARDS[name]}) == []


# --------------------------------------------------------------------------- the guard bites
def degraded_copy(src: Path, dest: Path, std: float, seed: int = 0) -> Path:
    """``src`` with Gaussian noise of ``std`` added to every parameter of its attribution head."""
    from wysiwyc.checkpoint import load_checkpoint, save_checkpoint
    from wysiwyc.models.fused import load_model

    ckpt = load_checkpoint(src)
    model = load_model(ckpt)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))
    return save_checkpoint(dest, ckpt.spec, ckpt.classifier, model.head.state_dict(), ckpt.train, ckpt.metrics)


def test_a_degraded_explainer_fails_the_guard(shapes_slice, tmp_path: Path) -> None:  # noqa: ANN001
    """The bundled Explainer with noise of std 0.05 on its head's weights, written as a
    checkpoint in its place, fails the explainer guard (on the slice it falls to IoU 0.47,
    IoU/class 0.35, min IoU/class 0.08; noise of 0.02 already gives 0.80 / 0.71 / 0.65)."""
    bad = degraded_copy(ASSETS / "shapes_explainer.pt", tmp_path / "shapes_explainer.pt", std=0.05)
    values = measure(torch_run(bad), shapes_slice)
    broken = failures("explainer", values)
    assert {f.split()[0] for f in broken} >= {"iou", "class_iou", "class_iou_min"}, broken
    assert values["iou"] < GUARDS["explainer"]["iou"].measured - 0.1
    assert failures("classifier", values) == []  # the classifier it embeds is untouched
