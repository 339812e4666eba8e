"""Live-stream reconnects: a stalled stream (socket open, no frames), the back-off
schedule and its reset after a successful reopen, the ``reconnect`` attempt count, and
``--reconnect 0``."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from wysiwyc.runtime.reader import FrameStream
from wysiwyc.runtime.sources import Source, open_source

cv2 = pytest.importorskip("cv2")
from _mjpeg import MJPEGServer  # noqa: E402

BACKOFF = (0.01, 0.08)  # first delay, cap: doubles 0.01, 0.02, 0.04, 0.08, 0.08, ...
READ_TIMEOUT_S = 1.0  # UrlSource open/read timeout in the stall tests


class ScriptedSource(Source):
    """A live source that delivers ``frames`` frames per connection and then drops; each
    :meth:`reopen` takes its result from ``reopens`` (``False`` once they are used up)."""

    kind = "scripted"
    live = True

    def __init__(self, frames: int = 3, reopens: tuple[bool, ...] = (), label: str = "scripted camera") -> None:
        super().__init__()
        self.frames = frames
        self.reopens = list(reopens)
        self.label = label
        self.reopen_calls = 0
        self.connections = 1
        self._left = frames

    def describe(self) -> str:
        return self.label

    def _read(self) -> np.ndarray | None:
        if self._left <= 0:
            return None
        self._left -= 1
        return np.full((4, 4, 3), self.connections, np.uint8)

    def reopen(self) -> bool:
        self.reopen_calls += 1
        ok = self.reopens.pop(0) if self.reopens else False
        if ok:
            self.connections += 1
            self._left = self.frames
        return ok


def record_backoff(stream: FrameStream) -> list[float]:
    """The delays ``stream`` waits before its reopen attempts, recorded instead of waited
    (a closed stream still ends the wait)."""
    waits: list[float] = []
    stop = stream._stop

    def wait(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return stop.is_set()

    stop.wait = wait
    return waits


def run_to_end(stream: FrameStream, limit_s: float = 5.0) -> list:
    """Take frames until the stream has finished (at most ``limit_s`` seconds)."""
    frames = []
    deadline = time.monotonic() + limit_s
    while not stream.finished and time.monotonic() < deadline:
        frames += stream.next_batch(timeout=0.05)
    assert stream.finished, f"the stream did not finish within {limit_s} s"
    return frames


def run_scripted(src: ScriptedSource, reconnect: int) -> tuple[FrameStream, list[float]]:
    """``src`` read to its end through a stream with ``reconnect`` attempts and the test's
    back-off, the waits recorded instead of waited: (the closed stream, its waits)."""
    stream = FrameStream(src, reconnect=reconnect, backoff=BACKOFF)
    waits = record_backoff(stream)
    try:
        run_to_end(stream)
    finally:
        stream.close()
    return stream, waits


def schedule(first: float, cap: float, n: int) -> list[float]:
    return [min(first * 2**k, cap) for k in range(n)]


# -- back-off schedule, reset, attempt count (no real waiting) ---------------------------
def test_backoff_doubles_from_the_first_delay_up_to_the_cap():
    src = ScriptedSource(frames=3)  # every reopen fails
    stream, waits = run_scripted(src, 7)
    assert waits == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08])
    assert src.reopen_calls == 7 and stream.stats.reconnects == 0 and stream.lost


def test_backoff_starts_again_from_the_first_delay_after_a_successful_reopen():
    # drop 1: fail, fail, ok; drop 2: fail, ok; drop 3: four failures -> lost
    src = ScriptedSource(frames=3, reopens=(False, False, True, False, True))
    stream, waits = run_scripted(src, 4)
    assert waits == pytest.approx(schedule(*BACKOFF, 3) + schedule(*BACKOFF, 2) + schedule(*BACKOFF, 4))
    assert stream.stats.reconnects == 2 and src.connections == 3 and stream.stats.grabbed == 9
    assert "4 reconnect attempts failed" in stream.lost


@pytest.mark.parametrize("n", [1, 2, 5])
def test_reconnect_n_allows_exactly_n_attempts_in_a_row_before_the_stream_is_lost(n):
    # n - 1 failures then a success survive the first drop; n failures in a row lose the second
    src = ScriptedSource(frames=2, reopens=(False,) * (n - 1) + (True,))
    stream, waits = run_scripted(src, n)
    assert stream.stats.reconnects == 1 and src.connections == 2
    assert src.reopen_calls == 2 * n and len(waits) == 2 * n
    assert stream.lost == f"scripted camera stopped delivering frames and {n} reconnect attempts failed"


def test_a_lost_url_stream_is_named_without_its_credentials():
    with MJPEGServer(frames_per_connection=3, fps=200, max_connections=1) as server:
        url = server.url.replace("http://", "http://admin:s3cret@") + "?token=abc123"
        stream = FrameStream(open_source("url", url, timeout_s=READ_TIMEOUT_S), reconnect=2, backoff=BACKOFF)
        try:
            run_to_end(stream)
        finally:
            stream.close()
        connections = server.connections
    assert connections == 1 and stream.stats.reconnects == 0  # the server refuses the reopens (503)
    assert stream.lost.startswith("url http://***@127.0.0.1:") and "?token=***" in stream.lost
    assert "2 reconnect attempts failed" in stream.lost
    assert "s3cret" not in stream.lost and "abc123" not in stream.lost and "admin" not in stream.lost


# -- reconnect 0 ----------------------------------------------------------------------
def test_reconnect_0_loses_the_stream_at_its_first_drop_without_a_reopen_attempt():
    src = ScriptedSource(frames=3, reopens=(True,) * 5)  # a reopen would succeed
    stream, waits = run_scripted(src, 0)
    assert src.reopen_calls == 0 and waits == [] and stream.stats.reconnects == 0
    assert stream.stats.grabbed == 3
    assert stream.lost == "scripted camera stopped delivering frames (reconnect disabled)"


def test_cli_reconnect_0_exits_1_with_the_stream_lost_and_its_outputs_finalised(tiny_onnx, tmp_path):
    pytest.importorskip("onnxruntime")
    from wysiwyc.runtime import cli

    summ, video, js = tmp_path / "S.json", tmp_path / "o.mp4", tmp_path / "p.jsonl"
    with MJPEGServer(frames_per_connection=5, fps=100) as server:
        rc = cli.main(["--url", server.url, "--model", str(tiny_onnx), "--reconnect", "0", "--no-show",
                       "--summary", str(summ), "--output", str(video), "--json", str(js)])
        connections = server.connections
    assert rc == 1 and connections == 1  # no reopen attempt
    s = json.loads(summ.read_text())
    (st,) = s["streams"]
    assert st["live"] and st["reconnects"] == 0 and st["lost"].endswith("(reconnect disabled)")
    assert s["source"]["reconnects"] == 0 and s["source"]["lost"] == st["lost"]
    assert 1 <= s["frames"] <= 5 and st["grabbed"] == 5
    # the outputs are complete files (no partial left), holding every frame processed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S.json", "o.mp4", "p.jsonl"]
    assert len(js.read_text().splitlines()) == s["frames"]
    cap = cv2.VideoCapture(str(video))
    try:
        assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == s["frames"]
    finally:
        cap.release()


# -- a stalled stream: the socket stays open, nothing arrives -------------------------
def url_stream(server: MJPEGServer, reconnect: int) -> FrameStream:
    src = open_source("url", server.url, timeout_s=READ_TIMEOUT_S)
    return FrameStream(src, reconnect=reconnect, backoff=BACKOFF).start()


def test_a_stalled_stream_is_detected_within_the_read_timeout_and_reopened():
    with MJPEGServer(fps=100, stall_after=3) as server:  # the second connection is served normally
        stream = url_stream(server, reconnect=2)
        try:
            assert server.stalled.wait(5.0)
            reconnected_at, after = None, []  # frames read from the new connection
            deadline = server.stall_started + 3 * READ_TIMEOUT_S + 2.0
            while len(after) < 5 and time.monotonic() < deadline and not stream.finished:
                after += [f for f in stream.next_batch(timeout=0.05) if f.index >= 3]
                if reconnected_at is None and stream.stats.reconnects:
                    reconnected_at = time.monotonic()
            assert reconnected_at is not None, "the stall was not detected"
            detected_s = reconnected_at - server.stall_started
            assert 0.8 * READ_TIMEOUT_S <= detected_s <= 3 * READ_TIMEOUT_S
            assert len(after) == 5, "no frames after the reconnect"
            assert stream.stats.reconnects == 1 and stream.lost is None and server.connections == 2
        finally:
            server.resume()  # whatever happened, a blocked read gets data and returns
            t0 = time.monotonic()
            stream.close()
            assert time.monotonic() - t0 < 2.0


def test_a_pause_shorter_than_the_read_timeout_is_not_a_drop():
    with MJPEGServer(fps=100, stall_after=3) as server:
        stream = url_stream(server, reconnect=2)
        try:
            assert server.stalled.wait(5.0)
            time.sleep(0.3 * READ_TIMEOUT_S)
            server.resume()
            later = []
            deadline = time.monotonic() + 3.0
            while len(later) < 5 and time.monotonic() < deadline and not stream.finished:
                later += [f for f in stream.next_batch(timeout=0.05) if f.index >= 3]
            assert len(later) == 5
            assert stream.stats.reconnects == 0 and server.connections == 1 and stream.lost is None
        finally:
            server.resume()
            stream.close()


def test_a_stall_whose_server_is_gone_loses_the_stream_without_hanging():
    with MJPEGServer(fps=100, stall_after=3, max_connections=1) as server:  # reopens get 503
        stream = url_stream(server, reconnect=2)
        try:
            assert server.stalled.wait(5.0)
            run_to_end(stream, limit_s=3 * READ_TIMEOUT_S + 2.0)
            ended_s = time.monotonic() - server.stall_started
            assert ended_s <= 3 * READ_TIMEOUT_S
            assert stream.stats.reconnects == 0 and "2 reconnect attempts failed" in stream.lost
        finally:
            server.resume()
            stream.close()


def test_cli_url_timeout_reopens_a_stalled_stream(tiny_onnx, tmp_path):
    """--url-timeout 1: a camera that goes silent after 3 frames is reopened within a few
    seconds and the run gets its frames from the new connection."""
    pytest.importorskip("onnxruntime")
    from wysiwyc.runtime import cli

    summ = tmp_path / "S.json"
    with MJPEGServer(stall_after=3, fps=50) as server:
        rc = cli.main(["--url", server.url, "--model", str(tiny_onnx), "--url-timeout", "1", "--max-frames", "8",
                       "--batch", "1", "--no-show", "--summary", str(summ)])
        server.resume()
    s = json.loads(summ.read_text())
    assert rc == 0 and s["frames"] == 8 and s["source"]["reconnects"] >= 1 and server.connections >= 2
