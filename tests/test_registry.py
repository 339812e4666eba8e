"""The one registry mechanism: decorator registration, lookups with a helpful error, lazy plugins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wysiwyc.errors import UserError
from wysiwyc.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_register_lookup_and_mapping_protocol():
    reg: Registry[int] = Registry("widget")
    assert reg.register("b", "a")(7) == 7  # the decorator returns its target
    reg["c"] = 3
    assert list(reg) == ["b", "a", "c"] and reg.names() == ["a", "b", "c"] and len(reg) == 3
    assert reg.lookup("a") == reg["b"] == 7 and "c" in reg and "d" not in reg
    with pytest.raises(UserError, match="unknown widget 'd'; choose from a, b, c"):
        reg.lookup("d")
    with pytest.raises(KeyError):
        reg["d"]


def test_plugins_are_imported_on_first_lookup_and_a_missing_one_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "wysiwyc_test_plugin.py").write_text(
        "from wysiwyc.registry import Registry\n"
        "REG = Registry('thing', plugins=('wysiwyc_test_plugin_two', 'wysiwyc_test_no_such_module'))\n")
    (tmp_path / "wysiwyc_test_plugin_two.py").write_text(
        "from wysiwyc_test_plugin import REG\nREG.register('x')(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from wysiwyc_test_plugin import REG

    assert "wysiwyc_test_plugin_two" not in sys.modules
    assert REG.lookup("x") == 1 and REG.names() == ["x"]


def test_every_registry_is_a_registry():
    from wysiwyc.attribution.base import METHODS
    from wysiwyc.data import DATASETS
    from wysiwyc.models.classifiers import CLASSIFIERS
    from wysiwyc.models.fused import HEADS
    from wysiwyc.runtime.backends import BACKENDS
    from wysiwyc.runtime.sources import SOURCES

    for reg in (METHODS, DATASETS, CLASSIFIERS, HEADS, BACKENDS, SOURCES):
        assert isinstance(reg, Registry) and len(reg) > 0
    assert {"explainer", "rtis", "mask_predictor"} == set(HEADS)
    assert {"shapes", "voc", "coco", "folder"} == set(DATASETS)
    # one per file format, plus OpenVINO (--provider openvino) and Triton (triton:// URLs) where installed
    assert {"torch", "onnx", "engine", "openvino"} <= set(BACKENDS) <= {"torch", "onnx", "engine", "openvino", "triton"}
    assert {"explainer", "mask_predictor", "rtis", "gradcam", "rise", "sise"} <= set(METHODS)


def test_importing_the_data_package_stays_torch_free():
    code = "import sys, wysiwyc.data; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
