"""A tiny MJPEG-over-HTTP server on loopback (what most IP cameras speak), for stream tests.

Serves ``multipart/x-mixed-replace`` JPEG frames at ``/stream.mjpg``. Each connection
gets ``frames_per_connection`` frames and is then closed — a stream drop the runtime
must survive by reconnecting — unless that is ``None`` (endless).

A **stall** (the connection stays open but nothing arrives, as when a camera hangs or a
link goes quiet): with ``stall_after=N`` the first ``stalls`` connections send ``N``
frames and then hold the connection open without sending anything, until :meth:`resume`
is called, the server shuts down, or ``hold_s`` passes; the connections after them are
served normally. :attr:`stalled` is set when the first stall begins.
"""

from __future__ import annotations

import http.server
import threading
import time

import numpy as np


class MJPEGServer:
    def __init__(self, frames_per_connection: int | None = None, fps: float = 50.0, size: int = 48,
                 max_connections: int | None = None, stall_after: int | None = None, stalls: int = 1,
                 hold_s: float = 30.0) -> None:
        import cv2

        self.connections = 0
        self.stalled = threading.Event()  # a connection has started to stall
        self.stall_started: float | None = None  # time.monotonic() when it did
        self._resume = threading.Event()
        server = self

        def jpeg(i: int) -> bytes:
            img = np.full((size, size, 3), (i * 37) % 256, np.uint8)
            img[: size // 2, : size // 2] = (0, 0, 255)
            return cv2.imencode(".jpg", img)[1].tobytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                if max_connections is not None and server.connections >= max_connections:
                    self.send_error(503)
                    return
                server.connections += 1
                stall_at = stall_after if server.connections <= stalls else None
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while frames_per_connection is None or i < frames_per_connection:
                        if i == stall_at:
                            self.wfile.flush()
                            if server.stall_started is None:
                                server.stall_started = time.monotonic()
                            server.stalled.set()
                            server._resume.wait(hold_s)  # the socket stays open, silent
                        data = jpeg(i)
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                        i += 1
                        time.sleep(1.0 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)  # shutdown() waits up to one poll

    def resume(self) -> None:
        """Stalled connections send again (and later ones do not stall)."""
        self._resume.set()

    def __enter__(self) -> "MJPEGServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._resume.set()  # no handler stays blocked in a stall
        self.httpd.shutdown()
        self.httpd.server_close()
