"""The Triton Inference Server backend: ``--model triton://HOST:PORT/NAME[/VERSION]``.

The fused model runs on a Triton server (a repository written by ``export/to_triton.py``),
reached over gRPC with ``tritonclient.grpc`` (the ``triton`` extra; imported when the
backend opens). Everything else — sources, batching, overlay, outputs, web view, summary —
is the local pipeline's. The model's spec comes from its config's ``parameters``
(``wysiwyc.spec``), so the URL is all a client needs.

Requests in flight: :meth:`TritonBackend.preprocess` sends the batch it has just prepared
at once (``async_infer``) and hands the pipeline a :class:`_Pending` instead of the array;
:meth:`~TritonBackend.infer` waits for its answer. So while the infer stage waits for batch
*n*, the preprocess thread has already sent batch *n+1*, and capture, pre/post-processing
and the server all work at the same time; at most ``inflight`` requests are outstanding
(``--triton-inflight``; the preprocess stage waits for a free slot). A batch above the
model's ``max_batch_size`` goes as several requests; a fixed-batch model (``max_batch_size``
0) gets requests of exactly its batch, padded. With this backend the ``infer`` stage is the
wait for an answer that was requested when the batch was ready, not the whole round trip.

Faults: a server that cannot be reached when the run starts is one line, exit 2. A server
that goes away mid-run (restart, crash, network) is retried with back-off (0.25 s doubling
to 4 s, on a new connection each time) for up to ``retry_s`` seconds (``--triton-retry``):
the requests that failed are sent again once the model is ready (inference has no side
effects), so every delivered frame has the model's real output. Live streams keep only
their newest frame meanwhile: the frames they drop during an outage are the frames lost,
counted with the outages in :meth:`TritonBackend.faults` (the summary's ``server``).
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np

from ...errors import require
from ...formats import GRAPHS, TOPK_OUTPUTS
from ...modelfile import SPEC_KEY, spec_from_metadata
from .base import Backend, ModelError, _as_masks, register_backend

SCHEME = "triton://"
DEFAULT_PORT = 8001  # Triton's gRPC port
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
DEFAULT_INFLIGHT = 2
DEFAULT_RETRY_S = 60.0
BACKOFF_S = (0.25, 4.0)  # first wait, longest wait (doubling in between)
# gRPC codes of a server that is away or not ready yet (a restart), as opposed to a request
# it refused (INVALID_ARGUMENT) or a model that failed on it (INTERNAL)
TRANSIENT = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED",
             "StatusCode.NOT_FOUND", "StatusCode.UNKNOWN", "StatusCode.RESOURCE_EXHAUSTED", None}


def is_triton_url(value: object) -> bool:
    return isinstance(value, str) and value.lower().startswith(SCHEME)


def parse_url(url: str) -> tuple[str, int, str, str]:
    """``triton://HOST[:PORT]/NAME[/VERSION]`` -> (host, port, model, version; ``""``: the
    server's choice).

    Raises:
        ModelError: not such a URL.
    """
    parts = urllib.parse.urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = -1
    if parts.scheme.lower() != "triton" or not parts.hostname or port < 1 or not 1 <= len(path) <= 2 \
            or (len(path) == 2 and not path[1].isdigit()):
        raise ModelError(f"--model {url}: expected triton://HOST:PORT/NAME or triton://HOST:PORT/NAME/VERSION "
                         f"(e.g. triton://127.0.0.1:{DEFAULT_PORT}/shapes_explainer)")
    return parts.hostname, port, path[0], path[1] if len(path) == 2 else ""


class _Request:
    """One request: ``x`` (B,3,H,W) float32 (padded to a fixed batch), ``n`` real images;
    the answer's arrays or the error arrive in a gRPC thread and set ``done``."""

    __slots__ = ("x", "n", "done", "outputs", "error", "t_sent")

    def __init__(self, x: np.ndarray, n: int) -> None:
        self.x, self.n = x, n
        self.done = threading.Event()
        self.outputs: list[np.ndarray] | None = None
        self.error: Any = None
        self.t_sent = 0.0


class _Pending:
    """A batch sent to the server: its requests, in order (what :meth:`TritonBackend.preprocess`
    hands the pipeline)."""

    def __init__(self, requests: list[_Request]) -> None:
        self.requests = requests

    def __len__(self) -> int:
        return sum(r.n for r in self.requests)


class _BadAnswer(Exception):
    """An answer whose outputs cannot be read: the server is there, so this is not retried."""

    def status(self) -> str:
        return "malformed answer"


def _decode(result: Any, names: tuple[str, ...]) -> list[np.ndarray]:
    try:
        return [result.as_numpy(name) for name in names]
    except Exception as exc:  # e.g. outputs without data
        raise _BadAnswer(f"malformed answer ({_message(exc)})") from exc


def _status(exc: BaseException) -> str | None:
    status = getattr(exc, "status", None)
    return status() if callable(status) else None


def _message(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return (str(text or type(exc).__name__).strip().splitlines() or [type(exc).__name__])[0][:300]


@register_backend("triton")
class TritonBackend(Backend):
    """A model on a Triton server (see the module doc).

    Args:
        url: ``triton://HOST:PORT/NAME`` or ``triton://HOST:PORT/NAME/VERSION``.
        triton_inflight: requests outstanding at most (``--triton-inflight``).
        triton_retry: seconds a vanished server is retried before the run gives up
            (``--triton-retry``).
    """

    def __init__(self, url: str, triton_inflight: int = DEFAULT_INFLIGHT, triton_retry: float = DEFAULT_RETRY_S,
                 **_: Any) -> None:
        super().__init__(None)
        self.url = url
        self.host, self.port, self.model, self.version = parse_url(url)
        self.address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if int(triton_inflight) < 1 or float(triton_retry) < 0:
            raise ModelError(f"--triton-inflight {triton_inflight} / --triton-retry {triton_retry} out of range")
        self.inflight, self.retry_s = int(triton_inflight), float(triton_retry)
        self.max_batch = 0
        self.outputs: tuple[str, ...] = tuple(GRAPHS["fused"].outputs)
        self._slots = threading.BoundedSemaphore(self.inflight)
        self._lock = threading.Lock()  # the client (replaced on reconnect) and the fault counters
        self._client: Any = None
        self._grpc: Any = None
        self._dropped: Callable[[], int] = lambda: 0
        self._down_since: float | None = None
        self._dropped_at_down = 0
        self._recovered_at = 0.0
        self._counts = {"outages": 0, "outage_seconds": 0.0, "requests_resent": 0, "frames_lost": 0}

    # -- opening ----------------------------------------------------------------------------------
    def _open(self) -> None:
        self._grpc = require("tritonclient.grpc", "triton", "triton:// models")
        self._client = self._grpc.InferenceServerClient(self.address)
        try:
            self._client.is_server_live(client_timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # InferenceServerException (UNAVAILABLE, DEADLINE_EXCEEDED), bad host names
            self._close()
            raise ModelError(f"the Triton server at {self.address} is not reachable ({_message(exc)}): start it "
                             "(docs/serving.md) or check --model") from None
        try:
            config = self._model_config()
            self.spec = self._spec(config)
            self._check_config(config)
        except BaseException:
            self._close()
            raise
        self.name = f"triton {self.address}/{self.model} ({config.get('backend') or config.get('platform') or '?'})"

    def _model_config(self) -> dict[str, Any]:
        c = self._client
        if not c.is_model_ready(self.model, self.version, client_timeout=CONNECT_TIMEOUT_S):
            index = c.get_model_repository_index(as_json=True, client_timeout=CONNECT_TIMEOUT_S).get("models", [])
            names = ", ".join(f"{m.get('name')} ({m.get('state', 'unknown').lower()})" for m in index) or "none"
            raise ModelError(f"model {self.model!r}{' version ' + self.version if self.version else ''} is not "
                             f"ready on the Triton server at {self.address} (its models: {names})")
        config: dict[str, Any] = c.get_model_config(self.model, self.version, as_json=True,
                                                    client_timeout=CONNECT_TIMEOUT_S)["config"]
        return config

    def _spec(self, config: dict[str, Any]) -> Any:
        raw = config.get("parameters", {}).get(SPEC_KEY, {}).get("string_value")
        if not raw:
            raise ModelError(f"{self.url}: the model's config has no wysiwyc spec (parameter {SPEC_KEY!r}); write "
                             "its repository with `python export/to_triton.py MODEL.onnx -o REPO/`")
        return spec_from_metadata({SPEC_KEY: raw}, self.url)

    def _check_config(self, config: dict[str, Any]) -> None:
        """The served graph is the fused one at the spec's size; its batch rule (a maximum, or a
        fixed batch when ``max_batch_size`` is 0)."""
        ins = [i.get("name") for i in config.get("input", [])]
        outs = {o.get("name") for o in config.get("output", [])}
        if outs == set(GRAPHS["masks"].outputs):
            raise ModelError(f"{self.url} is a masks-only graph; the runtime needs the fused graph")
        if ins != ["images"] or outs not in (set(GRAPHS["fused"].outputs), set(TOPK_OUTPUTS)):
            raise ModelError(f"{self.url}: expected input 'images' and outputs 'logits', 'masks' (or 'logits', "
                             f"'classes', 'masks'), got {ins} -> {sorted(o for o in outs if o)}")
        self.outputs = tuple(TOPK_OUTPUTS if "classes" in outs else GRAPHS["fused"].outputs)
        self.max_batch = int(config.get("max_batch_size", 0))
        dims = [int(d) for d in config["input"][0].get("dims", [])]
        if self.max_batch == 0:
            if len(dims) != 4 or dims[0] < 1:
                raise ModelError(f"{self.url}: max_batch_size 0 needs a fixed batch in the input's dims, got {dims}")
            self.fixed_batch = dims[0]
        hw = tuple(dims[-2:])
        if all(d > 0 for d in hw) and hw != self.input_size:
            raise ModelError(f"{self.url}: the server's input is {hw[0]}x{hw[1]} but the spec says "
                             f"{self.input_size[0]}x{self.input_size[1]}; rewrite the repository")

    def _close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- requests ---------------------------------------------------------------------------------
    def preprocess(self, frames: list[np.ndarray]) -> _Pending:
        """Frames -> the model input, sent at once: the answer is on its way while the infer
        stage still waits for the batch before."""
        return self._submit(super().preprocess(frames))

    def infer(self, x: Any) -> tuple[Any, Any]:
        """``(logits (B,C), masks (B,C,h,w) or ClassMasks)`` of a :class:`_Pending` batch from
        :meth:`preprocess`, or of an array (sent now)."""
        if not self.is_open:
            raise RuntimeError("TritonBackend is not open: call open() or use it in a with block")
        pending = x if isinstance(x, _Pending) else self._submit(np.asarray(x, dtype=np.float32))
        return _as_masks(self._collect(pending))

    def _submit(self, x: np.ndarray) -> _Pending:
        """Send ``x`` (B,3,H,W) as requests of at most ``max_batch_size`` images (exactly the
        fixed batch, padded, for a fixed-batch model)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        cap = self.fixed_batch or self.max_batch or len(x)
        requests = []
        for i in range(0, len(x), max(1, cap)):
            part = x[i:i + cap]
            n = len(part)
            if self.fixed_batch and n < self.fixed_batch:
                part = np.concatenate([part, np.repeat(part[-1:], self.fixed_batch - n, axis=0)])
            req = _Request(part, n)
            self._send(req)
            requests.append(req)
        return _Pending(requests)

    def _inputs(self, x: np.ndarray) -> list[Any]:
        inp = self._grpc.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return [inp]

    def _send(self, req: _Request) -> None:
        """``async_infer`` once a slot is free; the answer (or the error) lands in ``req``."""
        # answers always come back, or time out: the wait is bounded all the same
        slot = self._slots.acquire(timeout=REQUEST_TIMEOUT_S)

        def done(result: Any, error: Any) -> None:
            try:
                if error is None:
                    req.outputs = _decode(result, self.outputs)
                else:
                    req.error = error
            except Exception as exc:  # _BadAnswer
                req.error = exc
            finally:
                if slot:
                    self._slots.release()
                req.done.set()

        req.t_sent = time.monotonic()
        try:
            with self._lock:
                client = self._client
            client.async_infer(self.model, self._inputs(req.x), done, model_version=self.version,
                               outputs=[self._grpc.InferRequestedOutput(n) for n in self.outputs],
                               client_timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # a client closed by a reconnect, a send that failed at once
            done(None, exc)

    def _collect(self, pending: _Pending) -> tuple[np.ndarray, ...]:
        """Wait for every request of ``pending``; a failed one is sent again (:meth:`_recover`)."""
        parts = []
        for req in pending.requests:
            if not req.done.wait(REQUEST_TIMEOUT_S + CONNECT_TIMEOUT_S):
                req.error = TimeoutError(f"no answer in {REQUEST_TIMEOUT_S:.0f} s")
            if req.outputs is None:
                self._recover(req)
            assert req.outputs is not None
            parts.append([o[:req.n] for o in req.outputs])
        outs = tuple(np.concatenate(p) if len(p) > 1 else p[0] for p in zip(*parts))
        if outs[0].shape[1] != self.spec.num_classes:
            raise ModelError(f"{self.url} returns {outs[0].shape[1]} classes but its spec names "
                             f"{self.spec.num_classes}; rewrite the repository")
        return outs

    # -- faults -----------------------------------------------------------------------------------
    def _recover(self, req: _Request) -> None:
        """Send ``req`` again until it is answered: on a new connection, once the model is
        ready, waiting 0.25 s doubling to 4 s in between, for up to ``retry_s`` seconds.

        Raises:
            ModelError: the server refused the request while healthy (a real error), or stayed
                away longer than ``retry_s``.
        """
        if _status(req.error) not in TRANSIENT and self._healthy():
            raise ModelError(f"the Triton server at {self.address} failed on {self.model}: {_message(req.error)}")
        if req.t_sent >= self._recovered_at:  # not a leftover of an outage already over
            self._outage_begins(req.error)
        t0, delay = time.monotonic(), BACKOFF_S[0]
        while True:
            outputs, fatal = self._resend(req)
            if outputs is not None:
                req.outputs = outputs
                self._outage_ends()
                return
            if fatal is not None:
                raise ModelError(f"the Triton server at {self.address} failed on {self.model}: {_message(fatal)}")
            self._outage_begins(req.error)
            if time.monotonic() - t0 + delay > self.retry_s:
                raise ModelError(f"the Triton server at {self.address} has been unreachable for "
                                 f"{time.monotonic() - t0:.0f} s (--triton-retry {self.retry_s:g}): giving up")
            time.sleep(delay)
            delay = min(2 * delay, BACKOFF_S[1])

    def _resend(self, req: _Request) -> tuple[list[np.ndarray] | None, BaseException | None]:
        """One try on a new connection: (outputs, None) answered; (None, error) refused by a
        healthy server; (None, None) not there yet."""
        client = self._reconnect()
        try:
            if not client.is_model_ready(self.model, self.version, client_timeout=CONNECT_TIMEOUT_S):
                return None, None
            res = client.infer(self.model, self._inputs(req.x), model_version=self.version,
                               outputs=[self._grpc.InferRequestedOutput(n) for n in self.outputs],
                               client_timeout=REQUEST_TIMEOUT_S)
            outputs = _decode(res, self.outputs)
            with self._lock:
                self._counts["requests_resent"] += 1
            return outputs, None
        except Exception as exc:  # InferenceServerException, gRPC's own, _BadAnswer
            req.error = exc
            if _status(exc) not in TRANSIENT and self._healthy():
                return None, exc
            return None, None

    def _reconnect(self) -> Any:
        """A new client: a gRPC channel that lost its server backs off on its own schedule (up
        to minutes), a new one connects at once. Requests still on the old one fail and are
        sent again."""
        new = self._grpc.InferenceServerClient(self.address)
        with self._lock:
            old, self._client = self._client, new
        if old is not None:
            old.close()
        return new

    def _healthy(self) -> bool:
        """Whether the server is live and the model ready right now."""
        with self._lock:
            client = self._client
        try:
            return bool(client.is_server_live(client_timeout=2.0)
                        and client.is_model_ready(self.model, self.version, client_timeout=2.0))
        except Exception:  # unreachable: not healthy
            return False

    def _outage_begins(self, error: Any) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._dropped_at_down = self._dropped()
        print(f"runtime-explain: the Triton server at {self.address} is away ({_message(error)}); retrying for up "
              f"to {self.retry_s:g} s", file=sys.stderr, flush=True)

    def _outage_ends(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            now = time.monotonic()
            down, self._down_since, self._recovered_at = now - self._down_since, None, now
            lost = max(0, self._dropped() - self._dropped_at_down)
            self._counts["outages"] += 1
            self._counts["outage_seconds"] += down
            self._counts["frames_lost"] += lost
        print(f"runtime-explain: the Triton server at {self.address} is back after {down:.1f} s "
              f"({lost} frames lost meanwhile)", file=sys.stderr, flush=True)

    def watch(self, dropped: Callable[[], int]) -> None:
        """``dropped()``: the frames the run's streams have dropped so far; its growth during an
        outage is the frames lost."""
        self._dropped = dropped

    def faults(self) -> dict[str, Any]:
        """The server's outages so far: count, seconds, requests sent again, frames lost."""
        with self._lock:
            counts = dict(self._counts)
        counts["outage_seconds"] = round(counts["outage_seconds"], 3)
        return {"url": self.url, **counts}
