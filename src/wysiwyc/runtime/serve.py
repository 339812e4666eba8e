"""The live web view (``--serve HOST:PORT``): every stream's overlay in a browser.

Standard library only (``http.server.ThreadingHTTPServer``, one thread per client):

* ``/`` — a page tiling one ``<img>`` per stream, with the live statistics under them;
* ``/stream/N.mjpg`` — stream N's rendered frames as MJPEG (``multipart/x-mixed-replace``,
  what browsers, VLC and OpenCV play);
* ``/stream/N.jpg`` — its newest frame, one JPEG;
* ``/stats.json`` — the run's live statistics (frames, FPS, per-stream counters, stage
  percentiles);
* ``/metrics`` — the same for Prometheus (text exposition format 0.0.4): per stream the
  frames delivered, grabbed, dropped and corrupt, reconnects, FPS, and a histogram of each
  stage's latency (:class:`Metrics`).

Strangers are kept out: with a token (``--serve-token``, or one generated for a bind beyond
loopback) every route answers 401/403 unless the request carries it, as ``?token=`` or
``Authorization: Bearer``; at most ``max_clients`` requests are served at once (an MJPEG
viewer holds one while it watches), the rest get 503; methods other than GET and HEAD get
405. Captions are shown with URL credentials masked (:func:`~.sources.redact_url`).

Frames are drawn and JPEG-encoded only when a client asks, once per frame however many
clients watch, in the client's thread: an unwatched view costs the pipeline a reference
per frame, and a watched one the frames it sends. An MJPEG client gets at most ``fps``
frames a second (``--serve-fps``, default 30: what a browser shows smoothly; a 1000 FPS
run would otherwise spend a core on JPEGs nobody can see), each the newest frame: frames
are skipped, never queued, so one slow browser cannot hold memory or slow the run.
"""

from __future__ import annotations

import contextlib
import bisect
import hmac
import html
import http.server
import ipaddress
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UserError
from .imageops import cv2_or_none, swap_rb
from .outputs import DISPLAY_FPS, FrameRecord, Output, Pacer
from .sources import redact_url

# Longest wait of a client thread for a new frame before it re-checks the server state.
WAIT_S = 0.5
# A client that sends no request, or stops reading its stream, for this long is dropped.
CLIENT_TIMEOUT_S = 30.0
DEFAULT_MAX_CLIENTS = 8
DEFAULT_FPS = DISPLAY_FPS  # frames a second an MJPEG client gets at most
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``PORT`` (loopback) -> (host, port)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise UserError(f"--serve {value}: expected HOST:PORT, :PORT or PORT (e.g. 127.0.0.1:8080)")
    if not _:
        host = "127.0.0.1"
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as :func:`parse_address` returns it) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def serve_token(address: str, token: str | None = None, no_auth: bool = False) -> str | None:
    """The token a view at ``address`` requires: ``token`` when given; else none on loopback
    or with ``no_auth``; else a new random one (beyond loopback a token is the default)."""
    if token is not None and no_auth:
        raise UserError("--serve-token and --serve-no-auth contradict each other; give one of them")
    if token is not None:
        if not token.strip():
            raise UserError("--serve-token is empty")
        return token
    if no_auth or is_loopback(parse_address(address)[0]):
        return None
    return secrets.token_urlsafe(24)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """(H,W,3) uint8 RGB -> JPEG bytes (OpenCV when installed, else Pillow)."""
    cv2 = cv2_or_none()
    if cv2 is not None:
        ok, buf = cv2.imencode(".jpg", swap_rb(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            return buf.tobytes()
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


# Prometheus histogram buckets of the stage latencies, in seconds (what Prometheus counts in)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# the per-stream counters of the live statistics -> (metric, help)
STREAM_COUNTERS = {
    "grabbed": ("wysiwyc_frames_grabbed_total", "Frames the stream's reader decoded."),
    "dropped": ("wysiwyc_frames_dropped_total", "Frames replaced by a newer one before the model took them."),
    "corrupt": ("wysiwyc_frames_corrupt_total", "Corrupt frames or images skipped."),
    "reconnects": ("wysiwyc_reconnects_total", "Times the stream was reopened after a drop."),
}


def _label(value: object) -> str:
    """A label value, escaped as the exposition format wants (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Cumulative per-stream frame counts and stage-latency histograms (Prometheus histograms
    must only grow, so these are counted as frames arrive, not read off the run's bounded
    windows) and their text exposition (format 0.0.4) with the live statistics' counters.

    Args:
        streams: how many streams the run has.
    """

    def __init__(self, streams: int) -> None:
        self.lock = threading.Lock()
        self.frames = [0] * streams
        # (stream, stage) -> [count per bucket (the last: above every bound), sum in seconds]
        self.hist: dict[tuple[int, str], list[Any]] = {}

    def observe(self, stream: int, timings_ms: dict[str, float]) -> None:
        """Count one delivered frame of ``stream`` and its stage latencies (ms)."""
        with self.lock:
            if not 0 <= stream < len(self.frames):
                return
            self.frames[stream] += 1
            for stage, ms in timings_ms.items():
                h = self.hist.get((stream, stage))
                if h is None:
                    h = self.hist[(stream, stage)] = [[0] * (len(LATENCY_BUCKETS_S) + 1), 0.0]
                sec = float(ms) / 1e3
                h[0][bisect.bisect_left(LATENCY_BUCKETS_S, sec)] += 1
                h[1] += sec

    def text(self, names: list[str], stats: dict[str, Any]) -> str:
        """The exposition: ``names`` label the streams, ``stats`` is the live statistics
        (``/stats.json``: its per-stream counters and FPS)."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])

        family("wysiwyc_stream_info", "gauge", "The streams of the run (1 each), labelled with their source.")
        out += [f'wysiwyc_stream_info{{stream="{i}",source="{_label(n)}"}} 1' for i, n in enumerate(names)]
        with self.lock:
            frames, hist = list(self.frames), {k: (list(v[0]), v[1]) for k, v in self.hist.items()}
        family("wysiwyc_frames_total", "counter", "Frames delivered (inferred and rendered).")
        out += [f'wysiwyc_frames_total{{stream="{i}"}} {n}' for i, n in enumerate(frames)]
        per = [s for s in stats.get("streams", []) if isinstance(s, dict) and "stream" in s]
        for key, (name, help_) in STREAM_COUNTERS.items():
            family(name, "counter", help_)
            out += [f'{name}{{stream="{s["stream"]}"}} {int(s.get(key, 0))}' for s in per]
        family("wysiwyc_fps", "gauge", "Frames delivered per second since the run started.")
        out += [f'wysiwyc_fps{{stream="{s["stream"]}"}} {float(s.get("fps", 0.0))}' for s in per]
        family("wysiwyc_stage_latency_seconds", "histogram", "Per-frame latency of each pipeline stage.")
        for (stream, stage), (counts, total) in sorted(hist.items()):
            labels = f'stream="{stream}",stage="{_label(stage)}"'
            running = 0
            for bound, n in zip((*LATENCY_BUCKETS_S, "+Inf"), counts):
                running += n
                out.append(f'wysiwyc_stage_latency_seconds_bucket{{{labels},le="{bound}"}} {running}')
            out += [f"wysiwyc_stage_latency_seconds_sum{{{labels}}} {total}",
                    f"wysiwyc_stage_latency_seconds_count{{{labels}}} {running}"]
        return "\n".join(out) + "\n"


class _Slot:
    """The newest frame of one stream (its record, drawn when a client asks) and its JPEG,
    encoded at most once."""

    def __init__(self) -> None:
        self.seq = 0
        self.rec: FrameRecord | None = None
        self.jpeg_seq = -1
        self.jpeg = b""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is normal; the run's own output stays readable


class _Server6(_Server):
    address_family = socket.AF_INET6


class ViewServer(Output):
    """Serves the streams' overlays and the live statistics over HTTP (see the module doc).

    Args:
        address: ``HOST:PORT``; port 0 picks a free one (see :attr:`url`).
        names: one description per stream (the page's captions; URL credentials are masked).
        stats: returns the live statistics (called per ``/stats.json`` request).
        quality: JPEG quality (0-100).
        token: required on every request (``?token=`` or ``Authorization: Bearer``);
            ``None``: no token (see :func:`serve_token` for the CLI's rule).
        max_clients: requests served at once; more get 503.
        fps: frames a second an MJPEG client gets at most.

    Attributes:
        url: the page's address without the token; :attr:`login_url` carries it.
    """

    draws = True

    def __init__(self, address: str, names: list[str], stats: Callable[[], dict[str, Any]] | None = None,
                 quality: int = 80, token: str | None = None, max_clients: int = DEFAULT_MAX_CLIENTS,
                 fps: float = DEFAULT_FPS) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.names = [redact_url(n) for n in names]
        self.stats = stats or (lambda: {})
        self.quality = int(quality)
        self.token = token
        self.clients = threading.BoundedSemaphore(max_clients)
        self.cond = threading.Condition()
        self.slots = [_Slot() for _ in names]
        self.metrics = Metrics(len(names))
        self.closed = False
        host, port = parse_address(address)
        try:
            server = _Server6 if ":" in host else _Server
            self.httpd = server((host, port), self._handler())
        except OSError as exc:
            raise UserError(f"--serve {address}: cannot listen there ({exc.strerror or exc})") from exc
        h, p = self.httpd.server_address[:2]
        h = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(h, h)
        self.url = f"http://{f'[{h}]' if ':' in h else h}:{p}/"
        self.login_url = self.url + self.query
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="wysiwyc-serve", daemon=True)
        self.thread.start()

    # -- Output ---------------------------------------------------------------------------
    def write(self, rec: FrameRecord) -> bool:
        # the outputs thread hands records on once their timings are complete
        self.metrics.observe(rec.stream, rec.timings_ms)
        if 0 <= rec.stream < len(self.slots):
            with self.cond:
                slot = self.slots[rec.stream]
                slot.rec, slot.seq = rec, slot.seq + 1
                self.cond.notify_all()
        return True

    def close(self, ok: bool = True) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- serving --------------------------------------------------------------------------
    def frame(self, stream: int, after: int = 0) -> tuple[int, bytes] | None:
        """(seq, JPEG) of ``stream``'s newest frame once its seq is above ``after``;
        ``None`` when the server closes first. Waits in slices of :data:`WAIT_S`."""
        slot = self.slots[stream]
        with self.cond:
            while slot.seq <= after or slot.rec is None:
                if self.closed:
                    return None
                self.cond.wait(WAIT_S)
            seq, rec = slot.seq, slot.rec
            if slot.jpeg_seq == seq:
                return seq, slot.jpeg
        data = encode_jpeg(rec.image, self.quality)  # drawn and encoded outside the lock: other streams go on
        with self.cond:
            if slot.jpeg_seq < seq:
                slot.jpeg_seq, slot.jpeg = seq, data
        return seq, data

    @property
    def query(self) -> str:
        """``?token=...`` (URL-quoted) when a token is required, else ``""``."""
        return "" if self.token is None else "?token=" + urllib.parse.quote(self.token, safe="")

    def refusal(self, path: str, authorization: str | None) -> tuple[int, str] | None:
        """``None`` when a request for ``path`` with that ``Authorization`` header may pass,
        else (401 no token, or 403 a wrong one) and why."""
        if self.token is None:
            return None
        given = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("token", [])
        scheme, _, value = (authorization or "").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            given.append(value.strip())
        if not given:
            return 401, "this view needs its token: add ?token=TOKEN or send 'Authorization: Bearer TOKEN'"
        want = self.token.encode()
        if any(hmac.compare_digest(g.encode(), want) for g in given):
            return None
        return 403, "wrong token"

    def page(self) -> str:
        q = html.escape(self.query)  # URL-quoted already: safe in an attribute and in a JS string
        tiles = "\n".join(
            f'<figure><img src="/stream/{i}.mjpg{q}" alt="stream {i}"><figcaption>[{i}] {html.escape(n)}'
            "</figcaption></figure>" for i, n in enumerate(self.names))
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>wysiwyc live</title>
<style>body{{background:#111;color:#ddd;font:14px sans-serif;margin:8px}}
main{{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:8px}}
figure{{margin:0}}img{{width:100%;background:#000}}pre{{white-space:pre-wrap}}</style></head>
<body><main>{tiles}</main><pre id="stats"></pre><script>
async function tick(){{try{{const r=await fetch('/stats.json{q}');const s=await r.json();
document.getElementById('stats').textContent=JSON.stringify(s,null,1);}}catch(e){{}}}}
setInterval(tick,1000);tick();</script></body></html>"""

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        return type("Handler", (_ViewHandler,), {"view": self})


class _ViewHandler(http.server.BaseHTTPRequestHandler):
    """One request to a :class:`ViewServer` (``view``): the method, the token and the client
    cap are checked before anything else is done."""

    view: ViewServer
    timeout = CLIENT_TIMEOUT_S  # a client that sends nothing, or stops reading, is dropped

    def log_message(self, *args: Any) -> None:  # the run's own output stays readable
        pass

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method through do_<METHOD>: all but GET and HEAD are refused
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def end_headers(self) -> None:
        self.send_header("Referrer-Policy", "no-referrer")  # the token in the URL stays here
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def _not_allowed(self) -> None:
        self._error(405, "only GET and HEAD are allowed", {"Allow": "GET, HEAD"})

    def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = (message + "\n").encode()
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        refused = self.view.refusal(self.path, self.headers.get("Authorization"))
        if refused is not None:
            code, why = refused
            self._error(code, why, {"WWW-Authenticate": 'Bearer realm="wysiwyc"'} if code == 401 else None)
            return
        if not self.view.clients.acquire(blocking=False):
            self._error(503, "too many clients; try again later", {"Retry-After": "5"})
            return
        try:
            self._route(self.path.split("?", 1)[0])
        finally:
            self.view.clients.release()

    def _route(self, path: str) -> None:
        view = self.view
        m = re.fullmatch(r"/stream/(\d+)\.(mjpg|jpg)", path)
        if path in ("/", "/index.html"):
            self._send(view.page().encode(), "text/html; charset=utf-8")
        elif path == "/stats.json":
            # masked here too: a library caller's statistics may name raw source URLs
            self._send(redact_url(json.dumps(view.stats())).encode(), "application/json")
        elif path == "/metrics":
            self._send(view.metrics.text(view.names, view.stats()).encode(), METRICS_TYPE)
        elif m and int(m.group(1)) < len(view.slots):
            self._stream(int(m.group(1)), once=m.group(2) == "jpg")
        else:
            self._error(404, "not found: try /, /stream/N.mjpg, /stream/N.jpg, /stats.json, /metrics")

    def _stream(self, stream: int, once: bool) -> None:
        view = self.view
        if self.command == "HEAD" and not once:  # the headers only: no frame to wait for
            self._mjpeg_headers()
            return
        got = view.frame(stream)
        if got is None:
            self._error(503, "the run has ended")
            return
        if once:
            self._send(got[1], "image/jpeg")
            return
        self._mjpeg_headers()
        # a client that closed, reset or stopped reading (the socket timeout) just ends its stream
        pacer = Pacer(view.fps, time.monotonic)
        with contextlib.suppress(OSError):
            while got is not None:
                pacer.take()
                seq, data = got
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                pacer.wait()
                got = view.frame(stream, after=seq)

    def _mjpeg_headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
