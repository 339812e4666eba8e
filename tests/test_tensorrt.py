"""TensorRT export: sidecar checks, precision rules, exit 2 without TensorRT, no torch import."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import load_script
from wysiwyc.errors import UserError
from wysiwyc.export.tensorrt import plan_precision
from wysiwyc.sidecar import SIDECAR_FORMAT, check_engine_sidecar

ROOT = Path(__file__).resolve().parents[1]
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
MACHINE = {"trt_version": "10.13.0.35", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _to_tensorrt():
    return load_script("export/to_tensorrt.py")


@pytest.fixture
def engine(tmp_path):
    e = tmp_path / "m.engine"
    e.write_bytes(b"plan")
    side = {"format": SIDECAR_FORMAT, "tensorrt_version": MACHINE["trt_version"], "gpu_name": MACHINE["gpu_name"],
            "compute_capability": "9.0", "spec": {"class_names": ["a", "b"], "image_size": [64, 64]},
            "precision": "fp16", "source_onnx": "m_fp16.onnx"}
    Path(f"{e}.json").write_text(json.dumps(side))
    return e


def test_matching_sidecar_passes(engine):
    assert check_engine_sidecar(engine, **MACHINE)["spec"].class_names == ["a", "b"]
    # another GPU model of the same architecture runs the engine
    assert check_engine_sidecar(engine, **{**MACHINE, "gpu_name": "NVIDIA H100 PCIe"})["precision"] == "fp16"


@pytest.mark.parametrize("change, msg", [
    ({"trt_version": "10.14.1.48"}, "built with TensorRT 10.13.0.35, this machine has 10.14.1.48"),
    ({"compute_capability": "8.9", "gpu_name": "NVIDIA L4"}, "built for compute capability 9.0"),
])
def test_mismatched_sidecar_says_how_to_rebuild(engine, change, msg):
    with pytest.raises(UserError) as e:
        check_engine_sidecar(engine, **{**MACHINE, **change})
    assert msg in str(e.value)
    assert f"python export/to_tensorrt.py m_fp16.onnx --fp16 -o {engine}" in str(e.value)


def test_missing_or_malformed_sidecar(engine):
    Path(f"{engine}.json").write_text("{not json")
    with pytest.raises(UserError, match="malformed.*python export/to_tensorrt.py"):
        check_engine_sidecar(engine, **MACHINE)
    Path(f"{engine}.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="malformed"):
        check_engine_sidecar(engine, **MACHINE)
    os.remove(f"{engine}.json")
    with pytest.raises(UserError, match="has no sidecar m.engine.json.*python export/to_tensorrt.py"):
        check_engine_sidecar(engine, **MACHINE)


def test_precision_rules():
    assert plan_precision("fp32", False, False, 10) == (True, "fp32")
    assert plan_precision("fp16", False, False, 11) == (True, "fp16")
    assert plan_precision("int8", False, True, 10) == (True, "int8")
    assert plan_precision("fp32", True, False, 10) == (False, "fp16")  # weakly typed BuilderFlag.FP16
    with pytest.raises(UserError, match="TensorRT 11 builds strongly typed"):
        plan_precision("fp32", True, False, 11)
    with pytest.raises(UserError, match="--int8 needs an ONNX with QDQ nodes"):
        plan_precision("fp32", False, True, 10)
    with pytest.raises(UserError, match="one of --fp16 and --int8"):
        plan_precision("fp16", True, True, 10)


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed: the no-TensorRT path cannot be exercised")
def test_cli_without_tensorrt_exits_2(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "m.engine"
    assert _to_tensorrt().main([str(tiny_onnx), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "tensorrt is not installed" in err and "pip install 'wysiwyc[trt]'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make, msg", [
    (lambda p: None, "model not found"),
    (lambda p: p.write_bytes(b"\x08garbage" * 10), "is not an ONNX model"),
])
def test_cli_bad_input_exits_2_before_tensorrt(tmp_path, capsys, make, msg):
    pytest.importorskip("onnx")
    src = tmp_path / "in.onnx"
    make(src)
    assert _to_tensorrt().main([str(src), "-o", str(tmp_path / "x.engine")]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.engine").exists()


def test_cli_refuses_explainer_only_graph_before_tensorrt(tiny_explainer, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

    src = tmp_path / "masks_only.onnx"
    export_checkpoint(tiny_explainer, src, ExportOptions(graph="masks"))
    assert _to_tensorrt().main([str(src), "-o", str(tmp_path / "x.engine")]) == 2
    assert "engines are built from the fused graph" in capsys.readouterr().err
    assert not (tmp_path / "x.engine").exists()


def test_cli_rejects_bad_profile_workspace_and_output(tiny_onnx, tmp_path, capsys):
    assert _to_tensorrt().main([str(tiny_onnx), "-o", str(tmp_path / "x.engine"), "--batch", "4", "2", "8"]) == 2
    assert "1 ≤ MIN ≤ OPT ≤ MAX" in capsys.readouterr().err
    assert _to_tensorrt().main([str(tiny_onnx), "-o", str(tmp_path / "x.engine"), "--workspace", "0"]) == 2
    assert "--workspace must be > 0" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")  # an output folder that cannot exist: its "parent" is a file
    assert _to_tensorrt().main([str(tiny_onnx), "-o", str(tmp_path / "afile" / "x.engine")]) == 2
    assert "cannot create output folder" in capsys.readouterr().err
    (tmp_path / "afile").unlink()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed")
def test_runtime_helpers_without_tensorrt_name_the_extra(engine):
    from wysiwyc.runtime.backends.tensorrt import TensorRTEngine
    from wysiwyc.sidecar import current_machine

    for call in (current_machine, lambda: TensorRTEngine(engine)):
        with pytest.raises(UserError, match=r"pip install 'wysiwyc\[trt\]'"):
            call()


def test_import_does_not_import_torch():
    code = "import sys, wysiwyc.export.tensorrt, wysiwyc.runtime.backends; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def _have_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not HAVE_TRT or not _have_gpu(),
                    reason="needs TensorRT (pip install 'wysiwyc[trt]') and a CUDA GPU; neither exists on CI")
def test_build_and_run_engine_matches_onnxruntime(tiny_onnx, tmp_path):
    import numpy as np

    from wysiwyc.runtime.backends import open_backend

    out = tmp_path / "tiny.engine"
    assert _to_tensorrt().main([str(tiny_onnx), "-o", str(out), "--batch", "1", "2", "4"]) == 0
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    lt, mt = open_backend(out)(x)
    lo, mo = open_backend(tiny_onnx)(x)
    assert np.abs(lt - lo).max() < 1e-3 and np.abs(mt - mo).max() < 1e-3
