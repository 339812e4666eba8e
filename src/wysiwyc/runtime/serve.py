"""The live web view (``--serve HOST:PORT``): every stream's overlay in a browser.

Standard library only (``http.server.ThreadingHTTPServer``, one thread per client):

* ``/`` — a page tiling one ``<img>`` per stream, with the live statistics under them;
* ``/stream/N.mjpg`` — stream N's rendered frames as MJPEG (``multipart/x-mixed-replace``,
  what browsers, VLC and OpenCV play);
* ``/stream/N.jpg`` — its newest frame, one JPEG;
* ``/stats.json`` — the run's live statistics (frames, FPS, per-stream counters, stage
  percentiles).

Frames are JPEG-encoded only when a client asks, once per frame however many clients
watch, in the client's thread: an unwatched view costs the pipeline a reference per frame.
A client slower than the stream gets the newest frame each time (frames are skipped,
never queued), so one slow browser cannot hold memory or slow the run.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import json
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UserError
from .imageops import cv2_or_none
from .outputs import FrameRecord, Output

# Longest wait of a client thread for a new frame before it re-checks the server state.
WAIT_S = 0.5


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``PORT`` (loopback) -> (host, port)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise UserError(f"--serve {value}: expected HOST:PORT, :PORT or PORT (e.g. 127.0.0.1:8080)")
    if not _:
        host = "127.0.0.1"
    return host.strip("[]") or "0.0.0.0", int(port)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """(H,W,3) uint8 RGB -> JPEG bytes (OpenCV when installed, else Pillow)."""
    cv2 = cv2_or_none()
    if cv2 is not None:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            return buf.tobytes()
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


class _Slot:
    """The newest frame of one stream and its JPEG, encoded at most once."""

    def __init__(self) -> None:
        self.seq = 0
        self.image: np.ndarray | None = None
        self.jpeg_seq = -1
        self.jpeg = b""


class ViewServer(Output):
    """Serves the streams' overlays and the live statistics over HTTP (see the module doc).

    Args:
        address: ``HOST:PORT``; port 0 picks a free one (see :attr:`url`).
        names: one description per stream (the page's captions).
        stats: returns the live statistics (called per ``/stats.json`` request).
        quality: JPEG quality (0-100).
    """

    draws = True

    def __init__(self, address: str, names: list[str], stats: Callable[[], dict[str, Any]] | None = None,
                 quality: int = 80) -> None:
        self.names = list(names)
        self.stats = stats or (lambda: {})
        self.quality = int(quality)
        self.cond = threading.Condition()
        self.slots = [_Slot() for _ in names]
        self.closed = False
        host, port = parse_address(address)
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            raise UserError(f"--serve {address}: cannot listen there ({exc.strerror or exc})") from exc
        self.httpd.daemon_threads = True
        h, p = self.httpd.server_address[:2]
        self.url = f"http://{'127.0.0.1' if h in ('0.0.0.0', '::') else h}:{p}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="wysiwyc-serve", daemon=True)
        self.thread.start()

    # -- Output ---------------------------------------------------------------------------
    def write(self, rec: FrameRecord) -> bool:
        if 0 <= rec.stream < len(self.slots):
            with self.cond:
                slot = self.slots[rec.stream]
                slot.image, slot.seq = rec.image, slot.seq + 1
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
            while slot.seq <= after or slot.image is None:
                if self.closed:
                    return None
                self.cond.wait(WAIT_S)
            seq, image = slot.seq, slot.image
            if slot.jpeg_seq == seq:
                return seq, slot.jpeg
        data = encode_jpeg(image, self.quality)  # outside the lock: other streams go on
        with self.cond:
            if slot.jpeg_seq < seq:
                slot.jpeg_seq, slot.jpeg = seq, data
        return seq, data

    def page(self) -> str:
        tiles = "\n".join(
            f'<figure><img src="/stream/{i}.mjpg" alt="stream {i}"><figcaption>[{i}] {html.escape(n)}'
            "</figcaption></figure>" for i, n in enumerate(self.names))
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>wysiwyc live</title>
<style>body{{background:#111;color:#ddd;font:14px sans-serif;margin:8px}}
main{{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:8px}}
figure{{margin:0}}img{{width:100%;background:#000}}pre{{white-space:pre-wrap}}</style></head>
<body><main>{tiles}</main><pre id="stats"></pre><script>
async function tick(){{try{{const r=await fetch('/stats.json');const s=await r.json();
document.getElementById('stats').textContent=JSON.stringify(s,null,1);}}catch(e){{}}}}
setInterval(tick,1000);tick();</script></body></html>"""

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        view = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # the run's own output stays readable
                pass

            def _send(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                m = re.fullmatch(r"/stream/(\d+)\.(mjpg|jpg)", path)
                if path in ("/", "/index.html"):
                    self._send(view.page().encode(), "text/html; charset=utf-8")
                elif path == "/stats.json":
                    self._send(json.dumps(view.stats()).encode(), "application/json")
                elif m and int(m.group(1)) < len(view.slots):
                    self._stream(int(m.group(1)), once=m.group(2) == "jpg")
                else:
                    self.send_error(404, "not found: try /, /stream/N.mjpg, /stream/N.jpg, /stats.json")

            def _stream(self, stream: int, once: bool) -> None:
                got = view.frame(stream)
                if got is None:
                    self.send_error(503, "the run has ended")
                    return
                if once:
                    self._send(got[1], "image/jpeg")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    while got is not None:
                        seq, data = got
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        got = view.frame(stream, after=seq)

        return Handler
