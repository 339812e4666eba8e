"""Frame sources: cameras, URLs, video files, image folders and the demo.

A :class:`Source` yields frames (H,W,3) uint8 RGB one at a time;
:class:`~.reader.FrameStream` runs it in a background thread under one of two policies:

* **live** (cameras, network streams): the grabber thread reads as fast as the source
  delivers and keeps only the newest frame; the pipeline always gets the freshest one,
  so a slow model drops frames instead of falling behind (latency cannot grow). Dropped
  frames are counted. A stream that stops delivering is reopened with exponential
  back-off (0.5 s doubling to 8 s) up to ``reconnect`` times in a row.
* **buffered** (video files, image folders, the ``--demo`` stream): the thread decodes
  ahead into a bounded queue and nothing is dropped; the pipeline batches the frames
  that are already waiting.

A stream can also be **paced** (``pace`` frames per second, ``--realtime``): frame *k* is
handed over no earlier than *k / pace* seconds after the first, so a video file plays at
its real frame rate, like a camera; with the live policy a slow model then drops frames
exactly as it would on the camera.

A frame that cannot be decoded (a corrupt image file, an unreadable video frame) is
skipped and counted, never fatal.

Sources are registered by kind in :data:`SOURCES` (``camera``, ``url``, ``video``,
``images``, ``demo``); the CLI maps ``--source`` and ``--camera``, ``--url`` (or
``--rtsp``), ``--video``, ``--images`` and ``--demo`` to them.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, require
from ..registry import Registry
from .imageops import cv2_or_none, swap_rb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


# ``scheme://user:password@`` (RFC 3986 user-info: no '/', '?', '#' or whitespace, nor the
# quotes and brackets that end a URL quoted in JSON or HTML; greedy to the last '@', so an
# unencoded '@' inside a password is covered too)
_USERINFO = re.compile(r"""(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#"'<>]*@""")
# query parameters that commonly carry a secret: password=, token=, api_key=, X-Amz-Signature=, ...
_SECRET_PARAM = re.compile(r"""(?i)([?&;][\w.\-]*(?:pass|pwd|token|secret|key|auth|sig|credential)[\w.\-]*=)"""
                           r"""[^&#;\s"'<>]*""")


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it masked, for anything the runtime
    shows or writes: ``rtsp://admin:secret@host/cam`` -> ``rtsp://***@host/cam`` and
    ``...?token=abc`` -> ``...?token=***``; host, port and path stay readable."""
    text = _USERINFO.sub(r"\1***@", str(text))
    return _SECRET_PARAM.sub(r"\1***", text) if "=" in text else text


class SourceError(UserError):
    """A source cannot be opened (absent camera, missing file, unreachable stream). Its
    message has the credentials of any URL in it masked (:func:`redact_url`)."""

    def __init__(self, message: object = "") -> None:
        super().__init__(redact_url(str(message)))


class CorruptFrame(Exception):
    """One frame could not be decoded; the stream goes on."""


@dataclass
class Frame:
    """One frame and where/when it came from.

    Attributes:
        index: position in the source (for live sources: the n-th frame grabbed, so gaps
            show dropped frames).
        image: (H,W,3) uint8 RGB.
        t_capture: ``time.perf_counter()`` when the frame was decoded.
        capture_ms: time spent grabbing/decoding it (ms).
        name: file name for image folders, else ``""``.
        stream: the number of the stream it came from (0 for a single source).
    """

    index: int
    image: np.ndarray
    t_capture: float
    capture_ms: float
    name: str = ""
    stream: int = 0


@dataclass
class SourceStats:
    """Counters a stream reports in the summary."""

    grabbed: int = 0
    dropped: int = 0
    corrupt: int = 0
    reconnects: int = 0
    corrupt_names: list[str] = field(default_factory=list)


class Source:
    """A frame source. Subclasses implement :meth:`_open`, :meth:`_read`, :meth:`_close`.

    ``_read`` returns an (H,W,3) uint8 RGB frame, ``None`` at the end of the source (for
    a live source: the stream stopped delivering), or raises :class:`CorruptFrame`.
    """

    kind = "source"
    live = False

    def __init__(self) -> None:
        self.fps: float | None = None  # nominal frame rate, for video writers
        self.name = ""  # name of the last frame read (image files)

    def describe(self) -> str:
        """What the source is, for people (captions, summary, logs): never a credential."""
        return self.kind

    def open(self) -> None:
        """Open the source; raises :class:`SourceError` with a message naming it."""
        self._open()

    def reopen(self) -> bool:
        """Close and open again (live reconnect); ``False`` when that fails."""
        self._close()
        try:
            self._open()
        except SourceError:
            return False
        return True

    def read(self) -> np.ndarray | None:
        return self._read()

    def close(self) -> None:
        self._close()

    # -- subclass hooks -------------------------------------------------------------
    def _open(self) -> None:
        pass

    def _read(self) -> np.ndarray | None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


SOURCES: Registry[type[Source]] = Registry("source kind")


def register_source(kind: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator: register a :class:`Source` subclass as ``kind`` (and set its ``kind``)."""

    def deco(cls: type[Source]) -> type[Source]:
        cls.kind = kind
        return SOURCES.register(kind)(cls)

    return deco


def open_source(kind: str, target: Any, **kwargs: Any) -> Source:
    """Build and open a registered source, e.g. ``open_source("video", "clip.mp4")``."""
    if kind not in SOURCES:
        raise SourceError(f"unknown source kind {kind!r}; choose from {', '.join(SOURCES)}")
    src = SOURCES[kind](target, **kwargs)
    src.open()
    return src


# -- OpenCV sources ---------------------------------------------------------------------
class _Capture(Source):
    """Shared OpenCV ``VideoCapture`` plumbing (BGR -> RGB)."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target
        self.cap: Any = None

    def _capture(self, cv2: Any) -> Any:
        return cv2.VideoCapture(self.target)

    def _open(self) -> None:
        cv2 = require("cv2", "video", f"--{self.kind}")
        self.cap = self._capture(cv2)
        if not self.cap.isOpened():
            self.cap.release()
            self.cap = None
            raise SourceError(self._open_error())
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None

    def _open_error(self) -> str:
        return f"cannot open {self.describe()}"

    def _read(self) -> np.ndarray | None:
        if self.cap is None:
            return None
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        return _bgr_to_rgb(frame)

    def _close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] < 3 or frame.dtype != np.uint8:
        raise CorruptFrame(f"unexpected frame {frame.dtype} {frame.shape}")
    return swap_rb(np.ascontiguousarray(frame))  # BGR(A) -> RGB


@register_source("camera")
class CameraSource(_Capture):
    """A local camera by index (``--camera 0``) or device path (``--camera /dev/video2``)."""

    live = True

    def __init__(self, target: Any) -> None:
        super().__init__(int(target) if str(target).isdigit() else str(target))

    def describe(self) -> str:
        return redact_url(f"camera {self.target}")

    def _open(self) -> None:
        super()._open()
        # An opened device that cannot deliver a frame is held by another program.
        ok, _ = self.cap.read()
        if not ok:
            self._close()
            raise SourceError(f"camera {self.target} opened but delivers no frames: it is busy "
                              "(another program holds it) or not a capture device")

    def _open_error(self) -> str:
        return (f"camera {self.target} could not be opened: no such device, or it is busy "
                "(another program holds it); list devices with `v4l2-ctl --list-devices`")


@register_source("url")
class UrlSource(_Capture):
    """A network stream through FFmpeg: ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``.

    Open and read time out after ``timeout_s`` so a dead server triggers a reconnect
    instead of a hang.
    """

    live = True

    def __init__(self, target: Any, timeout_s: float = 5.0) -> None:
        super().__init__(str(target))
        self.timeout_ms = int(timeout_s * 1000)

    def describe(self) -> str:
        return f"url {redact_url(self.target)}"  # the real URL only opens the stream

    def _capture(self, cv2: Any) -> Any:
        if str(self.target).startswith("rtsp://"):
            # TCP interleaving survives NAT and packet loss; FFmpeg's default is UDP.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms]
        return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)

    def _open_error(self) -> str:
        return f"cannot open stream {redact_url(self.target)} (unreachable, refused, or not a video stream)"


@register_source("video")
class VideoFileSource(_Capture):
    """A video file; decoded ahead, nothing dropped. Unreadable frames are skipped and
    counted until ``max_bad`` in a row, which is taken as the end of a truncated file."""

    max_bad = 10

    def __init__(self, target: Any) -> None:
        super().__init__(str(target))
        self._frames = 0
        self._pos = 0
        self._bad = 0

    def describe(self) -> str:
        return redact_url(f"video {self.target}")

    def _open(self) -> None:
        if not Path(self.target).is_file():
            raise SourceError(f"video file not found: {self.target}")
        super()._open()
        cv2 = cv2_or_none()
        self._frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._pos = 0

    def _open_error(self) -> str:
        return f"cannot decode video {self.target} (not a video, or a codec this OpenCV build lacks)"

    def _read(self) -> np.ndarray | None:
        frame = super()._read()
        self._pos += 1
        if frame is not None:
            self._bad = 0
            return frame
        self._bad += 1
        if self._pos >= self._frames or self._bad >= self.max_bad:
            return None
        raise CorruptFrame(f"frame {self._pos - 1}")


@register_source("images")
class ImageFolderSource(Source):
    """Still images from a folder (sorted) or a glob pattern; corrupt files are skipped."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = str(target)
        self.files: list[str] = []
        self._next = 0

    def describe(self) -> str:
        return redact_url(f"images {self.target} ({len(self.files)} files)")

    def _open(self) -> None:
        t = self.target
        if any(ch in t for ch in "*?["):
            files = sorted(glob.glob(t, recursive=True))
        elif Path(t).is_dir():
            files = sorted(str(p) for p in Path(t).iterdir())
        elif Path(t).is_file():
            files = [t]
        else:
            raise SourceError(f"no such image folder or file: {t}")
        self.files = [f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES and Path(f).is_file()]
        if not self.files:
            raise SourceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {t}")
        self._next = 0

    def _read(self) -> np.ndarray | None:
        if self._next >= len(self.files):
            return None
        path = self.files[self._next]
        self._next += 1
        self.name = Path(path).name
        cv2 = cv2_or_none()
        if cv2 is not None:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise CorruptFrame(self.name)
            return _bgr_to_rgb(img)
        from PIL import Image

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as exc:  # PIL raises many types for a bad file
            raise CorruptFrame(self.name) from exc


@register_source("demo")
class DemoSource(Source):
    """The synthetic ``--demo`` stream: shapes scenes (numpy renderer, no data needed).

    Each scene is held for ``hold`` frames while it pans sideways one pixel every other
    frame (a wrap-around roll), so the stream moves like video and the masks must follow.
    Deterministic in ``seed``; endless (bound it with ``--max-frames``).
    """

    def __init__(self, target: Any = None, size: int = 64, seed: int = 0, spurious: bool = False,
                 hold: int = 48) -> None:
        super().__init__()
        from ..data.shapes_render import ShapesRenderer

        self.renderer = ShapesRenderer(split="test", size=int(size), seed=seed, spurious=spurious)
        self.hold = max(1, int(hold))
        self.fps = 30.0
        self._t = 0
        self._scene: tuple[int, np.ndarray] | None = None

    def describe(self) -> str:
        return f"demo (synthetic shapes {self.renderer.size}px)"

    def _read(self) -> np.ndarray | None:
        k, phase = divmod(self._t, self.hold)
        if self._scene is None or self._scene[0] != k:
            self._scene = (k, self.renderer.generate(k)[0])
        self._t += 1
        return np.roll(self._scene[1], phase // 2, axis=1)


# -- source specs ------------------------------------------------------------------------
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
STREAMS_SUFFIX = ".streams"


def _is_camera(value: str) -> bool:
    return value.isdigit() or value.startswith("/dev/video")


def _is_url(value: str) -> bool:
    return "://" in value


def _is_images(value: str) -> bool:
    return (any(ch in value for ch in "*?[") or Path(value).is_dir()
            or Path(value).suffix.lower() in IMAGE_SUFFIXES)


def _is_video(value: str) -> bool:
    return Path(value).is_file() or Path(value).suffix.lower() in VIDEO_SUFFIXES


# How a ``--source`` value is read, first match wins: (kind, test). ``demo`` is a word.
SOURCE_TESTS: list[tuple[str, Callable[[str], bool]]] = [
    ("demo", lambda s: s == "demo"),
    ("camera", _is_camera),
    ("url", _is_url),
    ("images", _is_images),
    ("video", _is_video),
]


def source_kind(value: str) -> str:
    """The source kind of a ``--source`` value: ``0`` or ``/dev/video2`` a camera, a URL
    (``rtsp://``, ``http://`` ...) a network stream, a folder, glob or image file an image
    source, another file a video, ``demo`` the synthetic stream."""
    for kind, test in SOURCE_TESTS:
        if test(value):
            return kind
    raise SourceError(f"--source {value}: no such file or folder, and not a camera index, URL or 'demo'")


def read_streams_file(path: str | os.PathLike[str]) -> list[str]:
    """The sources listed in a ``.streams`` file: one per line; blank lines and ``#``
    comments are skipped; relative paths are relative to the file."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise SourceError(f"cannot read streams file {p}: {exc.strerror}") from exc
    out = []
    for line in lines:
        value = re.sub(r"(^|\s)#.*$", "", line).strip()  # a comment: '#' at the start or after a space
        if not value:
            continue
        if not (_is_url(value) or _is_camera(value) or value == "demo" or Path(value).is_absolute()):
            value = str(p.parent / value)
        if value.endswith(STREAMS_SUFFIX):
            raise SourceError(f"{p}: a streams file cannot list another streams file ({value})")
        out.append(value)
    if not out:
        raise SourceError(f"streams file {p} lists no sources")
    return out


def expand_sources(values: list[str]) -> list[str]:
    """``--source`` values with every ``.streams`` file replaced by the sources it lists."""
    out: list[str] = []
    for value in values:
        if value.endswith(STREAMS_SUFFIX):
            out += read_streams_file(value)
        else:
            out.append(value)
    return out
