"""Put the checkout's ``src/`` first on sys.path so scripts run from a clone without install."""

import sys
from pathlib import Path

_src = Path(__file__).resolve().parents[1] / "src"
if (_src / "wysiwyc").is_dir() and str(_src) not in sys.path:
    sys.path.insert(0, str(_src))
