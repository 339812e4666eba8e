"""Shared test helpers: paths, the shapes class names, and loading a stage script as a module.

Shared model fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["stripes", "checks", "dots", "grid", "rings", "zigzag"]


def load_script(rel: str) -> ModuleType:
    """Import a stage script such as ``export/to_onnx.py`` (its folder on sys.path while it loads)."""
    path = ROOT / rel
    spec = importlib.util.spec_from_file_location("wysiwyc_script_" + rel.replace("/", "_")[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses of the script look their module up by name
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    finally:
        sys.path.pop(0)
    return mod
