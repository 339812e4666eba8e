"""fp16 and int8 exports of the trained bundled Explainer meet the product's tolerances.

The export runs as a user runs it — ``export/to_onnx.py src/wysiwyc/assets/shapes_explainer.pt
--precision fp16|int8`` with every other flag at its default (int8 calibrated on 128 images of
the checkpoint's dataset's train split, parity on 32 of its test images) — and its report must
hold the bounds of :data:`wysiwyc.formats.PRECISIONS`, unchanged: no ``--tol-*`` flag is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _helpers import ROOT, load_script
from wysiwyc.formats import PRECISIONS

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

BUNDLED = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.pt"
# the product's promise (docs and format table): a looser table would pass its own report
PROMISED = {"fp16": {"mask_iou": 0.99}, "int8": {"mask_iou": 0.95, "label_agreement": 0.99}}


def test_the_format_table_keeps_the_promised_tolerances() -> None:
    for precision, bounds in PROMISED.items():
        for key, bound in bounds.items():
            assert PRECISIONS[precision].tolerances[key] >= bound, (precision, key)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_trained_explainer_export_meets_the_product_tolerances(precision: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"shapes_explainer_{precision}.onnx"
    rc = load_script("export/to_onnx.py").main([str(BUNDLED), "-o", str(out), "--precision", precision])
    err = capsys.readouterr().err
    assert rc == 0 and out.is_file(), err
    if precision == "int8":
        assert "loading 128 int8 calibration images of shapes" in err
    report = json.loads(Path(f"{out}.report.json").read_text())
    tol = PRECISIONS[precision].tolerances
    assert report["tolerances"] == dict(tol)  # the product's bounds, as the table has them
    assert report["passed"] and report["precision"] == precision and report["n_images"] == 32
    assert report["mask_iou"] >= tol["mask_iou"] >= PROMISED[precision]["mask_iou"]
    assert report["label_agreement"] >= tol["label_agreement"]
    if precision == "int8":
        assert report["label_agreement"] >= PROMISED["int8"]["label_agreement"]

    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["wysiwyc.precision"] == precision
    ops = {n.op_type for n in model.graph.node}
    weights = {t.data_type for t in model.graph.initializer if len(t.dims) == 4}  # the conv kernels
    if precision == "fp16":
        assert weights == {onnx.TensorProto.FLOAT16} and "QuantizeLinear" not in ops
    else:
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops and onnx.TensorProto.INT8 in weights
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # images stay float32
