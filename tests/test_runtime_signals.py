"""``runtime-explain`` under a service manager: SIGTERM and SIGHUP stop it like Ctrl-C
(outputs finalised, exit 0), a second signal stops it at once without leaving a half-written
file, and the handlers exist only while the CLI runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from _helpers import RUNTIME_ENV, default_signals, start_runtime

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

OUTPUTS = ["--output", "out.mp4", "--json", "frames.jsonl", "--summary", "s.json", "--save-masks", "masks/"]
STOP_S = 15  # a stopped run must be gone within this many seconds


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"ended before {what}: {(proc.args, proc.returncode)}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _lines_written(cwd: Path) -> bool:
    tmp = cwd / ".frames.jsonl.partial"
    return tmp.is_file() and tmp.stat().st_size > 0


def _stop(proc: subprocess.Popen, *signals: signal.Signals, cwd: Path) -> tuple[int, float]:
    """Send ``signals`` (each after the previous one was taken up); (exit status, seconds to exit)."""
    t0 = time.monotonic()
    for k, sig in enumerate(signals):
        if k:
            _wait_for(lambda: "finishing the outputs" in (cwd / "stderr.txt").read_text() or proc.poll() is not None,
                      proc, "the first signal taken up", timeout=STOP_S)
            if proc.poll() is not None:
                break  # it finished before the second signal: nothing left to stop
        proc.send_signal(sig)
    try:
        rc = proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        pytest.fail(f"still running {STOP_S} s after {[s.name for s in signals]}")
    return rc, time.monotonic() - t0


def _partials(cwd: Path) -> list[str]:
    return [str(p.relative_to(cwd)) for p in cwd.rglob("*") if "partial" in p.name or p.name.endswith(".tmp")]


def _video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.isOpened() and cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_stop_signal_finalises_every_output(tmp_path: Path, sig: signal.Signals) -> None:
    proc = start_runtime(tmp_path, "--demo", "--no-show", "--fps-limit", "30", "--status-every", "0", *OUTPUTS)
    _wait_for(lambda: _lines_written(tmp_path), proc, "JSON lines")
    rc, secs = _stop(proc, sig, cwd=tmp_path)
    err = (tmp_path / "stderr.txt").read_text()
    assert rc == 0, err
    assert secs < 10, f"took {secs:.1f} s to stop"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped_by"] == sig.name and summary["interrupted"] and summary["frames"] > 0
    lines = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == summary["frames"]
    assert [d["frame"] for d in lines] == sorted({d["frame"] for d in lines})  # each frame once, in order
    masks = sorted((tmp_path / "masks").glob("*.npz"))
    assert len(masks) == summary["frames"]
    with np.load(masks[-1]) as npz:
        assert npz["masks"].shape[0] == len(npz["classes"])  # the last one is complete too
    assert _video_frames(tmp_path / "out.mp4") >= 1
    assert _partials(tmp_path) == []
    assert f"interrupted by {sig.name}" in (tmp_path / "stdout.txt").read_text()
    assert "finishing the outputs" in err and "Traceback" not in err


def _complete_or_absent(cwd: Path) -> None:
    """Every final file there is whole: the video decodes, every JSON line and mask file loads."""
    if (cwd / "out.mp4").exists():
        assert _video_frames(cwd / "out.mp4") >= 1
    if (cwd / "frames.jsonl").exists():
        for line in (cwd / "frames.jsonl").read_text().splitlines():
            json.loads(line)
    if (cwd / "s.json").exists():
        assert "frames" in json.loads((cwd / "s.json").read_text())
    for path in (cwd / "masks").glob("*.npz"):
        with np.load(path) as npz:
            assert npz["masks"].ndim == 3


def test_second_signal_stops_at_once_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    proc = start_runtime(tmp_path, "--demo", "--no-show", "--fps-limit", "30", "--status-every", "0", *OUTPUTS)
    _wait_for(lambda: _lines_written(tmp_path), proc, "JSON lines")
    rc, secs = _stop(proc, signal.SIGTERM, signal.SIGTERM, cwd=tmp_path)
    err = (tmp_path / "stderr.txt").read_text()
    # 143: the second signal came while the outputs were being finished; 0: they were done first
    assert rc in (0, 128 + signal.SIGTERM), err
    assert secs < 10 and "Traceback" not in err
    if rc:
        assert "SIGTERM again: stopping now" in err
    _complete_or_absent(tmp_path)
    assert _partials(tmp_path) == []


ABORT_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from wysiwyc.runtime.cli import StopSignals

    out = Path(sys.argv[1])
    with StopSignals() as signals:
        # the first signal starts a slow finish, so the second always comes in the middle of it
        signals.on_stop = lambda name: (out / "stopping").write_text(name) or time.sleep(60)
        signals.on_abort.append(lambda: (out / ".video.partial").unlink())
        (out / ".video.partial").write_text("half")
        (out / "ready").write_text("")
        time.sleep(60)
""")


def test_second_signal_removes_unfinished_files_and_exits_with_the_signal(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", ABORT_SCRIPT, str(tmp_path)], env=RUNTIME_ENV, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_signals)
    _wait_for(lambda: (tmp_path / "ready").exists(), proc, "the script's start", timeout=60)
    proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: (tmp_path / "stopping").exists(), proc, "on_stop", timeout=STOP_S)
    assert (tmp_path / "stopping").read_text() == "SIGHUP"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)  # any of the three stops at once the second time
    _, err = proc.communicate(timeout=STOP_S)
    assert proc.returncode == 128 + signal.SIGINT and time.monotonic() - t0 < 5
    assert "SIGINT again: stopping now" in err
    assert not (tmp_path / ".video.partial").exists()


def test_signal_handlers_exist_only_while_the_cli_runs(tmp_path: Path) -> None:
    from wysiwyc.runtime.cli import StopSignals, main

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopSignals():
        inside = {s: signal.getsignal(s) for s in before}
    assert all(inside[s] is not before[s] for s in before if before[s] is not signal.SIG_IGN)
    assert main(["--demo", "--max-frames", "3", "--no-show", "--json", str(tmp_path / "f.jsonl")]) == 0
    assert {s: signal.getsignal(s) for s in before} == before
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 3
