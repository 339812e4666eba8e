"""The two ways to watch the runtime, checked on a real display stack: the desktop window
under a virtual X server (Xvfb, needs an OpenCV build with a GUI — the ``gui`` extra) and
the ``--serve`` page rendered by headless Chromium. Each test takes a screenshot and looks
for the overlay in it; both skip (with the reason) where those programs are missing.
``bench/screenshots.sh`` makes the committed screenshots the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
RUNTIME = [sys.executable, "-c", "import sys; from wysiwyc.runtime.cli import main; sys.exit(main())"]


def _gui_opencv() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    info = cv2.getBuildInformation()
    gui = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.strip().startswith("GUI:")), "NONE")
    return gui not in ("", "NONE")


def _colourful(png: Path, box: tuple[int, int, int, int] | None = None) -> float:
    """Fraction of pixels (in ``box``) that are neither near-black nor grey: overlay content."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    a = np.asarray(img.crop(box) if box else img).astype(np.int16)
    saturation = a.max(-1) - a.min(-1)
    return float(((saturation > 40) & (a.max(-1) > 60)).mean())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run (Debian packages xvfb, xauth)")
@pytest.mark.skipif(not _gui_opencv(), reason="needs an OpenCV build with a GUI: pip install 'wysiwyc[gui]'")
@pytest.mark.parametrize("streams", [1, 2])
def test_window_shows_the_overlay_under_xvfb(tmp_path: Path, streams: int) -> None:
    """One stream: its window; two: one window with both side by side (a 1×2 grid of 384 px tiles)."""
    shot = tmp_path / "window.png"
    sources = ["--demo"] if streams == 1 else ["--source", "demo", "--source", "demo"]
    script = tmp_path / "grab.py"
    script.write_text(
        "import os, subprocess, sys, time\n"
        "from PIL import ImageGrab\n"
        "import numpy as np\n"
        f"p = subprocess.Popen({RUNTIME + sources + ['--show', '--max-frames', '1000000']!r})\n"
        "deadline = time.monotonic() + 120\n"
        "try:\n"
        "    while time.monotonic() < deadline and p.poll() is None:\n"
        "        img = ImageGrab.grab(xdisplay=os.environ['DISPLAY'])\n"
        "        if np.asarray(img).max() > 0:\n"
        "            time.sleep(2)  # the first frames are in; let the overlay settle\n"
        f"            ImageGrab.grab(xdisplay=os.environ['DISPLAY']).save({str(shot)!r})\n"
        "            break\n"
        "        time.sleep(0.5)\n"
        "finally:\n"
        "    p.terminate()\n"
        "    p.wait(30)\n")
    r = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 800x600x24", sys.executable, str(script)],
                       env=ENV, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), r.stderr[-2000:]
    assert _colourful(shot) > 0.05  # a window with the demo frame and its mask colours
    if streams == 2:  # the second stream's tile beside the first, in the same window
        assert _colourful(shot, (0, 0, 384, 450)) > 0.05 and _colourful(shot, (384, 0, 768, 450)) > 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs headless Chromium (Debian package chromium)")
def test_web_view_renders_in_headless_chromium(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen([*RUNTIME, "--source", "demo", "--source", "demo", "--serve", f"127.0.0.1:{port}",
                               "--no-show", "--max-frames", "1000000"], cwd=tmp_path, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=2) as r:
                    if b'"frames"' in r.read():
                        break
            except OSError:
                time.sleep(0.5)
        shot = tmp_path / "page.png"
        subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1000,600", "--virtual-time-budget=3000", f"--screenshot={shot}",
                        f"http://127.0.0.1:{port}/"], capture_output=True, timeout=120, cwd=tmp_path)
    finally:
        server.terminate()
        server.wait(30)
    assert shot.is_file()
    # two tiles side by side, each showing a live overlay
    assert _colourful(shot, (0, 0, 480, 400)) > 0.3 and _colourful(shot, (500, 0, 980, 400)) > 0.3
