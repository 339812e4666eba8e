"""Put the checkout's ``src/`` first on sys.path and ``bench/`` after it, so an experiment
runs from a clone without install and can import the bench's shared helpers."""

import sys
from pathlib import Path

_bench = Path(__file__).resolve().parents[1]
_src = _bench.parent / "src"
if (_src / "wysiwyc").is_dir() and str(_src) not in sys.path:
    sys.path.insert(0, str(_src))
# last, not first: bench/conftest.py must not shadow the conftest of a test suite that imports an experiment
if str(_bench) not in sys.path:
    sys.path.append(str(_bench))
