"""Video encoders for ``--output``: H.264 where the installed libraries allow, else MPEG-4.

Browsers play H.264 in MP4 but not MPEG-4 Part 2 (``mp4v``), which is all that the
``opencv-python`` wheels encode. So, for ``.mp4``/``.m4v``/``.mov``/``.mkv``, the first of
these that works here is used (:data:`PREFERENCE`):

1. ``pyav-h264`` — PyAV (``pip install 'wysiwyc[h264]'``) with FFmpeg's libx264, constant
   quality (CRF 23, preset ``veryfast``, ``yuv420p`` so every player decodes it) capped at
   :data:`H264_MAXRATE` so a noisy stream cannot balloon;
2. ``opencv-avc1`` — an OpenCV build whose FFmpeg has an H.264 encoder (``avc1``);
3. ``opencv-mp4v`` — MPEG-4 Part 2, with a one-line warning saying why and how to get H.264.

``.avi`` is MJPEG (``opencv-mjpg``). Every encoder takes RGB frames (H,W,3) uint8 of one
size. :func:`choose_encoder` is the decision, separate from the probes, so it is tested
with fakes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import UserError, require
from ..registry import Registry
from .imageops import swap_rb

H264_CRF = 23  # libx264's default quality: visually clean overlays at a few Mbit/s
H264_MAXRATE = "4M"  # bits per second ceiling (with a 8 Mbit buffer)

# output suffix -> encoder names, best first
PREFERENCE: dict[str, tuple[str, ...]] = {
    **{s: ("pyav-h264", "opencv-avc1", "opencv-mp4v") for s in (".mp4", ".m4v", ".mov", ".mkv")},
    ".avi": ("opencv-mjpg",),
}
H264_HINT = ("browsers do not play it; for H.264 install PyAV (pip install 'wysiwyc[h264]') "
             "or an OpenCV built with an H.264 encoder")


class Encoder:
    """An open video file: ``write(rgb)`` per frame, ``close()`` to finish it (playable)."""

    codec = ""
    needs = ("cv2", "video")  # (module, the wysiwyc extra that installs it)

    def write(self, rgb: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


ENCODERS: Registry[type[Encoder]] = Registry("video encoder")


def even_size(h: int, w: int) -> tuple[int, int]:
    """The largest even (H, W) not above (h, w): 4:2:0 chroma needs even sides."""
    return max(2, h - h % 2), max(2, w - w % 2)


@ENCODERS.register("pyav-h264")
class PyAVH264(Encoder):
    """H.264 (libx264) in the file's container through PyAV."""

    codec = "H.264 (libx264)"
    needs = ("av", "h264")

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        av = require("av", "h264", "H.264 --output")
        self.av = av
        fmt = _container_format(path)
        # faststart: the index goes first, so a browser starts playing before the download ends
        self.container = av.open(str(path), mode="w", format=fmt,
                                 options={"movflags": "+faststart"} if fmt in ("mp4", "mov") else {})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.size = even_size(*size)
        self.stream.height, self.stream.width = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(H264_CRF), "preset": "veryfast", "maxrate": H264_MAXRATE,
                               "bufsize": "8M"}

    def write(self, rgb: np.ndarray) -> None:
        h, w = self.size
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():  # flush the encoder's delayed frames
            self.container.mux(packet)
        self.container.close()


def _container_format(path: Path) -> str:
    # the partial file's name ends in the real suffix; name the muxer anyway
    return {".mkv": "matroska", ".mov": "mov"}.get(path.suffix.lower(), "mp4")


class _OpenCV(Encoder):
    """OpenCV's ``VideoWriter`` with :attr:`fourcc`."""

    fourcc = ""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        cv2 = require("cv2", "video", "--output")
        h, w = size
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.fourcc), float(fps), (w, h))
        if not self.writer.isOpened():
            raise UserError(f"cannot write video {path} (no encoder for {self.fourcc} in this OpenCV build)")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(swap_rb(rgb))

    def close(self) -> None:
        self.writer.release()  # writes the container index: the file is playable now


@ENCODERS.register("opencv-avc1")
class OpenCVH264(_OpenCV):
    fourcc, codec = "avc1", "H.264 (OpenCV)"


@ENCODERS.register("opencv-mp4v")
class OpenCVMPEG4(_OpenCV):
    fourcc, codec = "mp4v", "MPEG-4 Part 2"


@ENCODERS.register("opencv-mjpg")
class OpenCVMJPEG(_OpenCV):
    fourcc, codec = "MJPG", "MJPEG"


# -- what works here ----------------------------------------------------------------------
@functools.cache
def pyav_h264_available() -> bool:
    """PyAV is installed and its FFmpeg has the libx264 encoder."""
    if importlib.util.find_spec("av") is None:
        return False
    try:
        import av

        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # av.codec.codec.UnknownCodecError, or a broken install
        return False


@functools.cache
def opencv_available(fourcc: str) -> bool:
    """OpenCV can open a writer for ``fourcc`` (tried on a tiny temporary file)."""
    if importlib.util.find_spec("cv2") is None:
        return False
    import cv2

    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        with _quiet_stderr():  # a failed open is an answer here, not an error to print
            w = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), 10.0, (16, 16))
            ok = w.isOpened()
            w.release()
        return bool(ok)
    except cv2.error:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (FFmpeg and OpenCV log from C, past ``sys.stderr``)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, captured): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


PROBES: dict[str, Callable[[], bool]] = {
    "pyav-h264": pyav_h264_available,
    "opencv-avc1": lambda: opencv_available("avc1"),
    "opencv-mp4v": lambda: True,  # every OpenCV build with video I/O has it
    "opencv-mjpg": lambda: True,
}


def choose_encoder(suffix: str, probes: dict[str, Callable[[], bool]] | None = None) -> tuple[str, str | None]:
    """The encoder for a file of ``suffix``: (name in :data:`ENCODERS`, warning or ``None``).

    Args:
        suffix: the output's suffix, e.g. ``.mp4``.
        probes: encoder name -> "works here?" (default :data:`PROBES`); probed in order of
            :data:`PREFERENCE`, stopping at the first that works.
    """
    probes = PROBES if probes is None else probes
    names = PREFERENCE[suffix.lower()]
    for name in names:
        if probes[name]():
            if "h264" in names[0] and name == "opencv-mp4v":
                return name, f"writing MPEG-4 Part 2 (mp4v): {H264_HINT}"
            return name, None
    raise UserError(f"no video encoder for {suffix} here")


def open_encoder(name: str, path: Path, fps: float, size: tuple[int, int]) -> Encoder:
    """An open :class:`Encoder` of kind ``name`` writing ``path`` at ``fps``, frames (H, W) = ``size``."""
    return ENCODERS[name](path, fps, size)


def encoder_codec(name: str) -> str:
    """What encoder ``name`` writes, e.g. ``H.264 (libx264)``; fails now (one line naming the
    extra) when its library is missing, not at the first frame."""
    cls = ENCODERS[name]
    require(*cls.needs, "--output")
    return cls.codec
