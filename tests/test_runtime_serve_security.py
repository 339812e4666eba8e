"""The ``--serve`` web view keeps secrets and strangers out: a token on every route beyond
loopback, a cap on clients, GET/HEAD only, and source URLs whose credentials never show
(page, /stats.json, JSON lines, summary, status and error lines). Every connection goes to
127.0.0.1 and every wait is bounded."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _helpers import RUNTIME, RUNTIME_ENV, start_runtime
from wysiwyc.errors import UserError
from wysiwyc.runtime.outputs import FrameRecord
from wysiwyc.runtime.serve import ViewServer, is_loopback, serve_token
from wysiwyc.runtime.sources import SourceError, UrlSource, redact_url

SECRET_URL = "rtsp://admin:secret@127.0.0.1:9/cam"
TOKEN = "tok-123"
ROUTES = ["/", "/index.html", "/stats.json", "/stream/0.jpg", "/stream/1.mjpg", "/stream/9.jpg", "/nothing"]
TIMEOUT = 10  # seconds, every socket operation


def _frame(view: ViewServer, stream: int, value: int = 90) -> None:
    img = np.full((24, 32, 3), value, np.uint8)
    view.write(FrameRecord(0, "", img, np.zeros(2, np.float32), [], {}, 0.0, stream=stream))


@pytest.fixture
def view():
    names = [UrlSource(SECRET_URL).describe(), "demo"]
    v = ViewServer("127.0.0.1:0", names, stats=lambda: {"frames": 1, "streams": [{"name": n} for n in names]},
                   token=TOKEN, max_clients=3)
    _frame(v, 0)
    _frame(v, 1)
    yield v
    v.close()


def _request(view: ViewServer, method: str, path: str, headers: dict[str, str] | None = None,
             read: bool = True) -> tuple[int, dict[str, str], bytes, http.client.HTTPConnection]:
    """(status, headers, body, connection): an MJPEG answer is not read (``read`` False)."""
    port = int(view.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    mjpeg = r.getheader("Content-Type", "").startswith("multipart/")
    body = r.read() if read and not mjpeg and method != "HEAD" else b""
    if read and mjpeg:
        body = r.readline()  # the first boundary: the stream is live
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body, conn


def _status(view: ViewServer, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    status, _, _, conn = _request(view, method, path, headers)
    conn.close()
    return status


# -- the token ----------------------------------------------------------------------------------
def test_every_route_refuses_a_request_without_the_token(view: ViewServer) -> None:
    for path in ROUTES:
        status, headers, body, conn = _request(view, "GET", path)
        conn.close()
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
        assert b"<img" not in body and b"frames" not in body
        assert _status(view, "GET", path + "?token=nope") == 403
        assert _status(view, "GET", path, {"Authorization": "Bearer nope"}) == 403
        assert _status(view, "HEAD", path) == 401


def test_the_token_opens_every_route_by_query_or_header(view: ViewServer) -> None:
    for ask in ({"query": f"?token={TOKEN}"}, {"headers": {"Authorization": f"Bearer {TOKEN}"}}):
        q, headers = ask.get("query", ""), ask.get("headers")
        for path, ctype in (("/", "text/html"), ("/stats.json", "application/json"), ("/stream/0.jpg", "image/jpeg"),
                            ("/stream/1.mjpg", "multipart/x-mixed-replace")):
            status, got, body, conn = _request(view, "GET", path + q, headers)
            conn.close()
            assert status == 200 and got["content-type"].startswith(ctype), (path, ask)
            assert body, path
        assert _status(view, "GET", "/stream/9.jpg" + q, headers) == 404
        status, got, body, conn = _request(view, "HEAD", "/stats.json" + q, headers)
        conn.close()
        assert status == 200 and body == b"" and int(got["content-length"]) > 0
    # the page's own links carry the token, so a browser opened on login_url sees the streams
    assert view.login_url == view.url + f"?token={TOKEN}"
    page = view.page()
    assert f'src="/stream/0.mjpg?token={TOKEN}"' in page and f"fetch('/stats.json?token={TOKEN}')" in page


def test_methods_other_than_get_and_head_are_refused(view: ViewServer) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        for q in ("", f"?token={TOKEN}"):
            status, headers, _, conn = _request(view, method, "/stats.json" + q)
            conn.close()
            assert status == 405 and headers["allow"] == "GET, HEAD", (method, q)


# -- the client cap ------------------------------------------------------------------------------
def test_clients_beyond_the_cap_get_503_until_one_leaves(view: ViewServer) -> None:
    held = []
    try:
        for _ in range(3):  # the cap: three MJPEG viewers, each holding its connection open
            status, _, body, conn = _request(view, "GET", f"/stream/0.mjpg?token={TOKEN}")
            assert status == 200 and body == b"--frame\r\n"
            held.append(conn)
        status, headers, _, conn = _request(view, "GET", f"/stats.json?token={TOKEN}")
        conn.close()
        assert status == 503 and headers["retry-after"]
        assert _status(view, "GET", "/stats.json") == 401  # strangers are turned away before the cap
    finally:
        for conn in held:
            conn.close()
    # a viewer's slot frees once its stream notices the closed connection (at the next frames)
    for k in range(100):
        _frame(view, 0, value=k)
        if _status(view, "GET", f"/stats.json?token={TOKEN}") == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail("no slot came free after the viewers left")


# -- the token rule --------------------------------------------------------------------------------
def test_a_token_is_required_beyond_loopback_only() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "camera.local"))
    assert serve_token("127.0.0.1:0") is None and serve_token("localhost:8080") is None
    assert serve_token("[::1]:0") is None and serve_token("8080") is None  # PORT alone: loopback
    made = {serve_token("0.0.0.0:0"), serve_token(":8080"), serve_token("10.0.0.5:80")}
    assert len(made) == 3 and all(t and len(t) >= 24 for t in made)  # fresh and long
    assert serve_token("0.0.0.0:0", no_auth=True) is None
    assert serve_token("0.0.0.0:0", token="mine") == "mine" and serve_token("127.0.0.1:0", token="mine") == "mine"
    with pytest.raises(UserError, match="contradict"):
        serve_token("0.0.0.0:0", token="mine", no_auth=True)


def test_a_loopback_view_without_a_token_is_open() -> None:
    v = ViewServer("127.0.0.1:0", ["demo"])
    try:
        assert v.login_url == v.url and _status(v, "GET", "/stats.json") == 200
        assert _status(v, "POST", "/") == 405
    finally:
        v.close()


# -- credentials never show ----------------------------------------------------------------------------
def test_redact_url_masks_user_info_and_secret_parameters() -> None:
    assert redact_url(SECRET_URL) == "rtsp://***@127.0.0.1:9/cam"
    assert redact_url("cannot open url rtsp://a:p@ss@cam:554/s1 now") == "cannot open url rtsp://***@cam:554/s1 now"
    assert redact_url("http://cam/x.mjpg?user=bob&password=pw&token=t1&fps=5") == \
        "http://cam/x.mjpg?user=bob&password=***&token=***&fps=5"
    assert redact_url("rtsp://10.0.0.5/stream") == "rtsp://10.0.0.5/stream"
    assert redact_url("clip.mp4") == "clip.mp4"
    assert UrlSource(SECRET_URL).describe() == "url rtsp://***@127.0.0.1:9/cam"
    assert UrlSource(SECRET_URL).target == SECRET_URL  # the real URL still opens the stream
    assert str(SourceError(f"cannot open {SECRET_URL}")) == "cannot open rtsp://***@127.0.0.1:9/cam"


def test_page_and_statistics_never_show_credentials(view: ViewServer) -> None:
    _, _, page, conn = _request(view, "GET", f"/?token={TOKEN}")
    conn.close()
    _, _, stats, conn = _request(view, "GET", "/stats.json", {"Authorization": f"Bearer {TOKEN}"})
    conn.close()
    assert b"rtsp://***@127.0.0.1:9/cam" in page
    for body in (page, stats):
        assert b"secret" not in body and b"admin" not in body
    raw = ViewServer("127.0.0.1:0", [SECRET_URL])  # a library caller's raw name is masked too
    try:
        assert "secret" not in raw.page()
    finally:
        raw.close()


def _clean(*texts: str) -> None:
    for text in texts:
        assert "secret" not in text and "admin:" not in text, text[-2000:]


def test_a_stream_that_cannot_open_is_reported_without_its_credentials(tmp_path: Path) -> None:
    r = subprocess.run([*RUNTIME, "--url", SECRET_URL, "--no-show", "--reconnect", "0"], cwd=tmp_path, env=RUNTIME_ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "rtsp://***@127.0.0.1:9/cam" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    _clean(r.stdout, r.stderr)


def _web_view_url(proc: subprocess.Popen, cwd: Path) -> str:
    """The address the run printed once its view serves frames (the first status line)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        err = (cwd / "stderr.txt").read_text()
        m = re.search(r"web view at (http://\S+)", err)
        if m and " frames, " in err:
            return m.group(1)
        assert proc.poll() is None, err
        time.sleep(0.1)
    pytest.fail("no web view address within 90 s")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\S*)", url)
    assert m, url  # only ever loopback
    conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=TIMEOUT)
    try:
        conn.request("GET", m.group(2), headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _finish(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        pytest.fail("the run did not stop on SIGTERM")


def test_a_run_with_a_credentialed_stream_and_an_open_bind_keeps_both_safe(tmp_path: Path) -> None:
    """A camera URL with user:password and a secret parameter, served on 0.0.0.0: a token is
    generated and printed, required, and no output of the run shows the credentials."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _mjpeg import MJPEGServer

    with MJPEGServer(frames_per_connection=None, fps=15) as camera:
        source = camera.url.replace("http://", "http://admin:secret@") + "?token=secret-param"
        proc = start_runtime(tmp_path, "--source", source, "--no-show", "--status-every", "1", "--json", "frames.jsonl",
                      "--summary", "s.json", "--serve", "0.0.0.0:0")
        try:
            url = _web_view_url(proc, tmp_path)
            base, _, token = url.partition("?token=")
            assert len(token) >= 24 and base.startswith("http://127.0.0.1:")
            assert _get(base)[0] == 401 and _get(base + "stats.json")[0] == 401
            status, page = _get(url)
            assert status == 200 and b"***@127.0.0.1" in page
            status, stats = _get(base + "stats.json", {"Authorization": f"Bearer {token}"})
            assert status == 200 and json.loads(stats)["frames"] >= 1
            _clean(page.decode(), stats.decode())
        finally:
            rc = _finish(proc)
    assert rc == 0, (tmp_path / "stderr.txt").read_text()
    summary = (tmp_path / "s.json").read_text()
    assert json.loads(summary)["source"]["name"].startswith("url http://***@127.0.0.1:")
    _clean(summary, (tmp_path / "frames.jsonl").read_text(), (tmp_path / "stdout.txt").read_text(),
           (tmp_path / "stderr.txt").read_text().replace(token, "<token>"))


def test_serve_no_auth_serves_an_open_bind_without_a_token_and_warns(tmp_path: Path) -> None:
    proc = start_runtime(tmp_path, "--demo", "--no-show", "--fps-limit", "10", "--status-every", "1",
                  "--serve", "0.0.0.0:0", "--serve-no-auth")
    try:
        url = _web_view_url(proc, tmp_path)
        assert "?token=" not in url
        status, stats = _get(url + "stats.json")
        assert status == 200 and "frames" in json.loads(stats)
    finally:
        rc = _finish(proc)
    err = (tmp_path / "stderr.txt").read_text()
    assert rc == 0 and "warning: --serve-no-auth" in err, err


@pytest.mark.parametrize("args, msg", [
    (["--serve", "0.0.0.0:0", "--serve-token", "x", "--serve-no-auth"], "contradict"),
    (["--serve-token", "x"], "--serve-token needs --serve"),
    (["--serve", "127.0.0.1:0", "--serve-max-clients", "0"], "--serve-max-clients 0 is out of range"),
])
def test_serve_flag_mistakes_are_one_line_errors(args: list[str], msg: str, capsys) -> None:
    from wysiwyc.runtime.cli import main

    assert main(["--demo", "--no-show", "--max-frames", "1", *args]) == 2
    assert msg in capsys.readouterr().err
