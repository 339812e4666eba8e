"""ONNX export: fp32/fp16 parity with torch, metadata round trip, dynamic batch, failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from wysiwyc.data.shapes import CLASSES  # noqa: E402
from wysiwyc.models.fused import load_model  # noqa: E402
from wysiwyc.spec import ModelSpec  # noqa: E402
from _helpers import load_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _to_onnx():
    return load_script("export/to_onnx.py")


def test_fp32_export_parity_metadata_and_dynamic_batch(tiny_explainer, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert _to_onnx().main([str(tiny_explainer), "-o", str(out), "--parity-samples", "8"]) == 0
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["passed"] and report["masks_max_abs_diff"] <= 1e-4 and report["label_agreement"] == 1.0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    spec = ModelSpec.from_json(meta["wysiwyc.spec"])
    assert spec.class_names == list(CLASSES) and meta["wysiwyc.precision"] == "fp32"
    assert [o.name for o in sess.get_outputs()] == ["logits", "masks"]
    model = load_model(tiny_explainer)
    for b in (1, 7):  # dynamic batch
        x = torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(b))
        logits, masks = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            t_logits, t_masks = model(x)
        assert logits.shape == (b, 6) and masks.shape == (b, 6, 32, 32)
        assert torch.allclose(torch.from_numpy(masks), t_masks, atol=1e-5)
    assert not list(tmp_path.glob("*.data"))  # one self-contained file


@pytest.mark.parametrize("graph", ["masks", "explainer"])  # the old spelling still works, with a notice
def test_masks_only_graph_equals_the_torch_explainer(tiny_explainer, tmp_path, capsys, graph):
    out = tmp_path / "e.onnx"
    assert _to_onnx().main([str(tiny_explainer), "-o", str(out), "--graph", graph, "--parity-samples", "4"]) == 0
    notice = "warning: --graph explainer is deprecated, use --graph masks"
    assert (notice in capsys.readouterr().err) == (graph == "explainer")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["masks"]
    assert sess.get_modelmeta().custom_metadata_map["wysiwyc.graph"] == "masks"
    model = load_model(tiny_explainer)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    (masks,) = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expect = torch.sigmoid(model.head(model.norm(x)))
    assert torch.allclose(torch.from_numpy(masks), expect, atol=1e-5)


def test_fp16_export_keeps_float32_io(tiny_explainer, tmp_path):
    out = tmp_path / "m16.onnx"
    assert _to_onnx().main([str(tiny_explainer), "-o", str(out), "--precision", "fp16", "--parity-samples", "4"]) == 0
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["mask_iou"] >= 0.99
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"


def test_int8_is_symmetric_qdq(tiny_explainer, tmp_path):
    """The structure of an int8 export (an untrained model, default tolerances); the trained
    Explainer's int8 tolerances are test_export_product_tolerances.py's."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "m8.onnx"
    rc = _to_onnx().main([str(tiny_explainer), "-o", str(out), "--precision", "int8", "--calib-samples", "16",
                          "--parity-samples", "8"])
    assert rc == 0
    report = json.loads(Path(str(out) + ".report.json").read_text())
    assert report["passed"] and report["wysiwyc.precision"] == "int8"
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all((z == 0).all() for z in zps)  # symmetric
    per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[1]) is not None
                   and inits[n.input[1]].size > 1]
    assert per_channel  # per-channel weight scales
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["wysiwyc.precision"] == "int8"


def test_failed_tolerance_removes_the_file(tiny_explainer, tmp_path, capsys):
    out = tmp_path / "strict.onnx"
    rc = _to_onnx().main([str(tiny_explainer), "-o", str(out), "--parity-samples", "2", "--tol-mask-abs", "-1"])
    assert rc == 1 and not out.exists()
    assert "parity check FAILED" in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [
    (["--opset", "5"], "unsupported opset"),
    (["--precision", "fp8"], "unsupported precision"),
    (["--head", "gradcam"], "unknown training-free head 'gradcam'"),
    (["--head", "reciprocam", "--graph", "masks"], "--head reciprocam makes a fused graph"),
])
def test_user_errors(tiny_explainer, tmp_path, capsys, args, msg):
    out = tmp_path / "bad.onnx"
    assert _to_onnx().main([str(tiny_explainer), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and not out.exists()


def test_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "x.pt"
    junk.write_text("hello")
    assert _to_onnx().main([str(junk), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "not a loadable wysiwyc checkpoint" in capsys.readouterr().err


def test_format_table_matches_the_commands():
    """Every flag the capability table lists is an option of the command it names."""
    from wysiwyc.formats import FORMATS, GRAPHS, PRECISIONS, format_for, known_files

    for fmt in FORMATS.values():
        assert set(fmt.precisions) <= set(PRECISIONS) and set(fmt.graphs) <= set(GRAPHS)
        assert format_for(f"dir/model{fmt.suffix.upper()}") is fmt
        if fmt.command.endswith("*.py"):
            continue
        options = {s for a in load_script(fmt.command).get_args_parser()._actions for s in a.option_strings}
        flags = set(fmt.flags) | {w for f in fmt.precision_flags.values() for w in f.split() if w.startswith("--")}
        assert flags <= options, (fmt.name, flags - options)
    assert format_for("model.tflite") is None
    assert known_files() == "a .pt checkpoint, an .onnx export or a TensorRT .engine"


# -- training-free heads and where the file goes ------------------------------------------
def test_reciprocam_head_export_matches_torch_and_runs_in_the_runtime(tmp_path, monkeypatch):
    """The bundled trained classifier: an untrained one's class maps span ~1e-3, which the
    min-max normalisation turns float32 rounding (1e-7) into 1e-3 mask differences."""
    from wysiwyc.attribution import build_method
    from wysiwyc.runtime import cli

    ckpt = ROOT / "src" / "wysiwyc" / "assets" / "shapes_classifier.pt"
    monkeypatch.chdir(tmp_path)  # no -o: the file goes to the current directory
    assert _to_onnx().main([str(ckpt), "--head", "reciprocam", "--parity-samples", "4"]) == 0
    out = tmp_path / "shapes_classifier_reciprocam.onnx"
    report = json.loads((tmp_path / "shapes_classifier_reciprocam.onnx.report.json").read_text())
    assert report["passed"] and report["masks_max_abs_diff"] <= 1e-4
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert [o.name for o in sess.get_outputs()] == ["logits", "masks"]
    assert ModelSpec.from_json(meta["wysiwyc.spec"]).kind == "reciprocam"
    clf = load_model(ckpt)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    logits, masks = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expect = build_method("reciprocam", clf)(x, torch.arange(6).expand(3, 6))
        assert torch.allclose(torch.from_numpy(logits), clf.classify(x), atol=1e-4)
    assert torch.allclose(torch.from_numpy(masks), expect, atol=1e-4)
    assert cli.main(["--demo", "--model", str(out), "--max-frames", "2", "--no-show"]) == 0


def test_export_never_overwrites_or_writes_into_the_package(tiny_explainer, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    assert _to_onnx().main([str(tiny_explainer), "-o", str(out), "--parity-samples", "2"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert _to_onnx().main([str(tiny_explainer), "-o", str(out), "--parity-samples", "2", "--force"]) == 0
    assert out.read_bytes() != b"keep"
    bundled = ROOT / "src" / "wysiwyc" / "assets" / "tiny_explainer.onnx"  # the checkout's package folder
    assert _to_onnx().main([str(tiny_explainer), "-o", str(bundled), "--parity-samples", "2"]) == 2
    assert "inside the installed wysiwyc package" in capsys.readouterr().err and not bundled.exists()


def test_export_says_what_it_is_doing(tiny_explainer, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _to_onnx().main([str(tiny_explainer), "--parity-samples", "2"]) == 0
    err = capsys.readouterr().err
    assert "exporting" in err and "parity check" in err and (tmp_path / "tiny_explainer.onnx").is_file()


def test_read_spec_reads_every_format_and_owns_the_foreign_file_error(tiny_explainer, tmp_path):
    import onnx

    from wysiwyc.modelfile import ModelFileError, read_spec
    from wysiwyc.sidecar import SIDECAR_FORMAT

    out = tmp_path / "m.onnx"
    assert _to_onnx().main([str(tiny_explainer), "-o", str(out), "--parity-samples", "2"]) == 0
    spec = read_spec(tiny_explainer)
    assert spec.kind == "explainer" and read_spec(out) == spec
    assert "wysiwyc.kind" not in {e.key for e in onnx.load(str(out)).metadata_props}  # kind: in the spec only
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    Path(f"{engine}.json").write_text(json.dumps({"format": SIDECAR_FORMAT, "tensorrt_version": "10.13",
                                                  "compute_capability": "9.0", "spec": spec.to_dict()}))
    assert read_spec(engine) == spec
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    for path, msg in [(foreign, "has no wysiwyc spec"), (tmp_path / "x.onnx", "model not found"),
                      (tiny_explainer.with_suffix(".txt"), "model not found")]:
        with pytest.raises(ModelFileError, match=msg):
            read_spec(path)
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(ModelFileError, match="unknown model type '.bin'"):
        read_spec(tmp_path / "m.bin")
