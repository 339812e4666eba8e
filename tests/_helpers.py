"""Shared test helpers: paths, the shapes class names, and loading a stage script as a module.

Shared model fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
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
        sys.path.remove(str(path.parent))  # this entry, whatever the script added in front of it
    return mod


# runtime-explain from the checkout, as a separate process (signals, web view)
RUNTIME = [sys.executable, str(ROOT / "runtime" / "explain.py")]
RUNTIME_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def default_signals() -> None:
    """In the child: the default dispositions, as a service manager starts it (a test runner
    started in the background hands its children an ignored SIGINT, nohup an ignored SIGHUP)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start_runtime(cwd: Path, *args: str) -> subprocess.Popen:
    """``runtime-explain args`` in ``cwd``, its output in stdout.txt and stderr.txt there."""
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        return subprocess.Popen([*RUNTIME, *args], cwd=cwd, env=RUNTIME_ENV, stdout=out, stderr=err,
                                preexec_fn=default_signals)
