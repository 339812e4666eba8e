"""The latency bench and the precision bench build their ONNX Runtime sessions one way."""

from __future__ import annotations

import sys

import pytest

from _helpers import ROOT, load_script

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

OPTIONS = ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads", "execution_mode",
           "enable_cpu_mem_arena", "enable_mem_pattern")


def test_latency_and_precision_benches_build_the_same_int8_session(tiny_explainer, tmp_path, monkeypatch):
    from wysiwyc.models.fused import load_model

    # the bench modules put bench/ on sys.path (its conftest would shadow tests/conftest.py
    # for later tests): give them a copy that is thrown away after this test
    monkeypatch.setattr(sys, "path", [str(ROOT / "bench"), *sys.path])
    latency = load_script("bench/test_latency.py")
    precision = load_script("bench/test_onnx_precision.py")
    model = load_model(tiny_explainer)
    lat_backend = latency._ort_session(model, 32, "int8", tmp_path, tiny_explainer)
    prec_path, parity = precision._export(tiny_explainer, "int8")
    from _methods import open_session

    prec_backend = open_session(prec_path)  # as test_onnxruntime_precision opens its export
    lat_path = tmp_path / "bench.int8.onnx"
    assert lat_path.read_bytes() == prec_path.read_bytes()  # same quantised model, byte for byte
    a, b = lat_backend.session, prec_backend.session
    assert a.get_providers() == b.get_providers() == ["CPUExecutionProvider"]
    oa, ob = a.get_session_options(), b.get_session_options()
    assert [getattr(oa, k) for k in OPTIONS] == [getattr(ob, k) for k in OPTIONS]
    assert parity["label_agreement"] >= 0.99
