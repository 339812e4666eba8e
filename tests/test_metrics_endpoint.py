"""The web view's Prometheus endpoint: ``/metrics`` in text exposition format 0.0.4, parsed
here line by line — per-stream frame, drop and reconnect counters, FPS gauges and stage
latency histograms — under the same token rule as every other route, and scraped twice
during a real run (the counters grow). Every connection goes to 127.0.0.1, every wait is
bounded."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from wysiwyc.runtime.outputs import FrameRecord
from wysiwyc.runtime.serve import LATENCY_BUCKETS_S, METRICS_TYPE, ViewServer

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = [sys.executable, str(ROOT / "runtime" / "explain.py")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
TIMEOUT = 10  # seconds, every socket operation
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """(metric family -> type, (sample name, labels) -> value); fails on a malformed line."""
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            assert parts[1] in ("HELP", "TYPE"), line
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group(3))
    return types, samples


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    port = int(url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read().decode()
    finally:
        conn.close()


def _record(stream: int, ms: float) -> FrameRecord:
    timings = {"capture": ms, "infer": ms * 10, "end_to_end": ms * 100}
    return FrameRecord(0, "", np.zeros((8, 8, 3), np.uint8), np.zeros(2, np.float32), [], timings, 0.0, stream=stream)


def _value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_are_prometheus_text_with_per_stream_counters_and_histograms():
    stats = {"streams": [{"stream": 0, "fps": 12.5, "grabbed": 9, "dropped": 4, "corrupt": 1, "reconnects": 2},
                         {"stream": 1, "fps": 3.0, "grabbed": 3, "dropped": 0, "corrupt": 0, "reconnects": 0}]}
    view = ViewServer("127.0.0.1:0", ['cam "a"\\1', "demo"], stats=lambda: stats)
    try:
        for ms in (0.5, 2.0, 30.0):
            view.write(_record(0, ms))
        view.write(_record(1, 1.0))
        status, ctype, body = _get(view.url, "/metrics")
    finally:
        view.close()
    assert status == 200 and ctype == METRICS_TYPE
    types, samples = parse_exposition(body)
    assert types["wysiwyc_frames_total"] == "counter" and types["wysiwyc_fps"] == "gauge"
    assert types["wysiwyc_stage_latency_seconds"] == "histogram"
    assert _value(samples, "wysiwyc_frames_total", stream="0") == 3
    assert _value(samples, "wysiwyc_frames_total", stream="1") == 1
    assert _value(samples, "wysiwyc_frames_dropped_total", stream="0") == 4
    assert _value(samples, "wysiwyc_reconnects_total", stream="0") == 2
    assert _value(samples, "wysiwyc_fps", stream="0") == 12.5
    assert _value(samples, "wysiwyc_stream_info", stream="0", source='cam \\"a\\"\\\\1') == 1  # escaped
    # capture latencies 0.5, 2 and 30 ms: cumulative buckets, +Inf = count, sum in seconds
    buckets = [_value(samples, "wysiwyc_stage_latency_seconds_bucket", stream="0", stage="capture", le=str(b))
               for b in (*LATENCY_BUCKETS_S, "+Inf")]
    assert buckets == sorted(buckets) and buckets[0] == 1 and buckets[-1] == 3
    assert _value(samples, "wysiwyc_stage_latency_seconds_bucket", stream="0", stage="capture", le="0.025") == 2
    assert _value(samples, "wysiwyc_stage_latency_seconds_count", stream="0", stage="capture") == 3
    assert abs(_value(samples, "wysiwyc_stage_latency_seconds_sum", stream="0", stage="capture") - 0.0325) < 1e-9


def test_metrics_follow_the_token_rule():
    view = ViewServer("127.0.0.1:0", ["demo"], stats=lambda: {}, token="tok-1")
    try:
        assert _get(view.url, "/metrics")[0] == 401
        assert _get(view.url, "/metrics", {"Authorization": "Bearer wrong"})[0] == 403
        status, _, body = _get(view.url, "/metrics", {"Authorization": "Bearer tok-1"})  # how Prometheus sends it
        assert status == 200 and "wysiwyc_frames_total" in body
        assert _get(view.url, "/metrics?token=tok-1")[0] == 200
    finally:
        view.close()
    open_view = ViewServer("127.0.0.1:0", ["demo"], stats=lambda: {})  # loopback, no token: open
    try:
        assert _get(open_view.url, "/metrics")[0] == 200
    finally:
        open_view.close()


def _wait_for_url(err: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"web view at (http://127\.0\.0\.1:\d+/)", err.read_text() if err.exists() else "")
        if m:
            return m.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no web view address: {err.read_text() if err.exists() else ''}")


def test_a_running_view_serves_growing_counters(tmp_path):
    """Two --realtime demo streams (30 FPS each) with --serve on a free loopback port: two
    scrapes a second apart, frames and stage-histogram counts grow for every stream."""
    err = tmp_path / "err.txt"
    with open(err, "w") as e:
        proc = subprocess.Popen([*RUNTIME, "--source", "demo", "--source", "demo", "--realtime", "--max-frames", "240",
                                 "--no-show", "--serve", "127.0.0.1:0", "--status-every", "0"],
                                stdout=subprocess.DEVNULL, stderr=e, env=ENV, cwd=tmp_path)
        try:
            url = _wait_for_url(err, proc)
            scrapes = []
            for _ in range(2):
                deadline = time.monotonic() + 30
                while True:  # until both streams have delivered frames
                    status, _, body = _get(url, "/metrics")
                    assert status == 200
                    samples = parse_exposition(body)[1]
                    if all(_value(samples, "wysiwyc_frames_total", stream=s) > 0 for s in "01") \
                            or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                scrapes.append(samples)
                time.sleep(1.0)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert rc == 0, err.read_text()
    first, second = scrapes
    for s in "01":
        assert 0 < _value(first, "wysiwyc_frames_total", stream=s) < _value(second, "wysiwyc_frames_total", stream=s)
        key = dict(stream=s, stage="end_to_end")
        assert _value(first, "wysiwyc_stage_latency_seconds_count", **key) \
            < _value(second, "wysiwyc_stage_latency_seconds_count", **key)
        assert _value(second, "wysiwyc_stage_latency_seconds_bucket", le="+Inf", **key) \
            == _value(second, "wysiwyc_stage_latency_seconds_count", **key)
        assert _value(second, "wysiwyc_frames_grabbed_total", stream=s) >= _value(second, "wysiwyc_frames_total",
                                                                                  stream=s)
