"""Where rendered frames go: a window, a video file, per-frame mask files, JSON lines.

Every output is an :class:`Output` with ``write(record)`` and ``close(ok)``. Files are
written under a temporary name and moved into place by ``close(ok=True)`` — also after
Ctrl-C or a SIGTERM, so an interrupted recording is a complete, playable file — while
``close(ok=False)`` (a crash) removes them: nothing half-written is left behind.
:meth:`Output.abort` is the emergency exit (a second stop signal): it removes the
temporaries at once, from any thread, and the output writes nothing more.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from ..errors import UserError, require
from ..fileio import check_writable
from .encoders import PREFERENCE, Encoder, choose_encoder, encoder_codec, open_encoder
from .imageops import resize, swap_rb

_WARNED: set[str] = set()  # encoder warnings already printed (once per run, not per stream)


class FrameRecord:
    """Everything known about one processed frame.

    Attributes:
        index, name: the frame's position in its source and its file name (images).
        image: the rendered frame (h,w,3) uint8 RGB. The pipeline passes a function that
            draws it, called on the first read (once, in whichever thread reads first): an
            output that shows a frame draws it, and a frame nobody shows is never drawn (the
            web view draws only the frames a client fetches, the window those the screen
            shows).
        probs: (C,) class probabilities.
        shown: indices of the classes drawn.
        timings_ms: per-stage latency of this frame.
        t: seconds since the run started.
        masks: (C,h0,w0) float32 masks at model resolution, when an output asked for them.
        source_size: (H, W) of the frame as the source delivered it.
        stream: the number of the stream it came from.
    """

    __slots__ = ("index", "name", "_image", "_lock", "probs", "shown", "timings_ms", "t", "masks",
                 "source_size", "stream")

    def __init__(self, index: int, name: str, image: np.ndarray | Callable[[], np.ndarray], probs: np.ndarray,
                 shown: list[int], timings_ms: dict[str, float], t: float, masks: np.ndarray | None = None,
                 source_size: tuple[int, int] = (0, 0), stream: int = 0) -> None:
        self.index, self.name, self._image, self.probs, self.shown = index, name, image, probs, shown
        self.timings_ms, self.t, self.masks, self.source_size, self.stream = timings_ms, t, masks, source_size, stream
        self._lock = threading.Lock() if callable(image) else None

    @property
    def image(self) -> np.ndarray:
        if self._lock is None:
            return self._image
        with self._lock:  # two outputs in two threads may ask at once: it is drawn once
            if callable(self._image):
                self._image = self._image()
        return self._image

    @property
    def drawn(self) -> bool:
        """Whether :attr:`image` exists yet (it is drawn on its first read)."""
        return not callable(self._image)


class Output:
    """Base output.

    Attributes:
        wants_masks: the records it gets carry every class's mask at model resolution.
        records: it writes per-frame records (JSON lines, mask files).
        main_thread: written in the render stage, in the calling thread (an OpenCV
            window); the others are written by the pipeline's outputs thread, in frame
            order, once the frame's timings are complete.
        stream: only this stream's frames (``None``: every stream's).
        draws: it shows or stores the rendered overlay; when no output does (JSON lines and
            mask files only), the pipeline skips the mask upsampling and the drawing.
    """

    draws = False
    wants_masks = False
    records = False
    main_thread = False
    stream: int | None = None

    def write(self, rec: FrameRecord) -> bool:
        """Deliver one frame; ``False`` asks the pipeline to stop (e.g. 'q' in the window)."""
        return True

    def close(self, ok: bool = True) -> None:
        pass

    def abort(self) -> None:
        """Discard what is not finished (temporary files) right now, e.g. from a signal
        handler before the process exits; finished files stay. Nothing is written after."""


# How long abort() waits for a write in progress in another thread before removing its file.
ABORT_WAIT_S = 2.0


class _FileOutput(Output):
    """An output writing temporary files: :meth:`abort` removes them. ``self.lock`` is held
    while a temporary file is created or written, so abort never races a new one into being."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entrant: abort may run in a signal handler inside close()
        self.aborted = False

    def abort(self) -> None:
        self.lock.acquire(timeout=ABORT_WAIT_S)  # held from now on: no later write starts
        self.aborted = True
        for tmp in self.temporaries():
            with contextlib.suppress(OSError):
                tmp.unlink()

    def temporaries(self) -> list[Path]:
        """The temporary files this output may have on disk now."""
        return []


def display_available() -> bool:
    """Whether a window can be shown: a display server on Linux, always elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


# Frames a second a window or a web-view client is shown at most: video's rate.
DISPLAY_FPS = 30.0


class Pacer:
    """At most ``fps`` events a second, evenly: each taken event makes the next due one period
    after the last due time (so frames that arrive in batches still give ``fps`` on average),
    or one period after now when the caller fell behind (no burst to catch up after a stall).

    Args:
        fps: events a second at most.
        clock: seconds, monotonic (``time.perf_counter`` by default).
    """

    def __init__(self, fps: float, clock: Callable[[], float] | None = None) -> None:
        self.period = 1.0 / fps
        self.clock = clock or time.perf_counter
        self.due = 0.0  # when the next event may be taken (clock seconds)

    def take(self) -> bool:
        """Whether an event may happen now; when it may, the next one is scheduled."""
        now = self.clock()
        if now < self.due:
            return False
        self.due = self.due + self.period if now - self.due < self.period else now + self.period
        return True

    def wait(self) -> None:
        """Sleep until the next event is due."""
        time.sleep(max(0.0, self.due - self.clock()))


# Largest grid a multi-stream window opens at (h, w), in pixels: a 1080p screen.
GRID_MAX = (1080, 1920)


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` tiles: as square as it gets, filled row by row."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


class WindowOutput(Output):
    """An OpenCV window; ``q`` or Esc stops. A headless OpenCV build (no GUI) turns it
    off with one notice instead of failing.

    It shows at most ``max_fps`` frames a second (default :data:`DISPLAY_FPS`, video's rate):
    a frame that arrives sooner after the last one shown is neither drawn nor shown — each
    shown frame costs the GUI toolkit and the display server a few milliseconds, while a
    file or ``--demo`` runs at hundreds of frames a second; a camera's 30 FPS are all shown.

    Several streams (``names``: one caption per stream, in stream order) share one window
    as a grid (:func:`grid_shape`, at most :data:`GRID_MAX`), the way a video wall shows
    cameras: each shown tick draws the newest frame of every stream that has a new one and
    shows them all in one ``imshow`` — one window to place and close, and the display
    costs one frame's round trip per tick instead of one per stream.
    """

    draws = True

    main_thread = True

    def __init__(self, title: str = "wysiwyc", stream: int | None = None, max_fps: float = DISPLAY_FPS,
                 names: list[str] | None = None) -> None:
        self.cv2 = require("cv2", "video", "the preview window")
        self.title = title
        self.stream = stream
        self.enabled = True
        self.pacer = Pacer(max_fps)
        self.names = list(names) if names else None
        self._newest: dict[int, FrameRecord] = {}  # grid: each stream's newest record
        self._placed: dict[int, FrameRecord] = {}  # grid: the record each tile shows
        self._canvas: np.ndarray | None = None  # grid: (H,W,3) uint8 BGR
        self._tile = (0, 0)  # grid: (h, w) of a tile

    def write(self, rec: FrameRecord) -> bool:
        if not self.enabled:
            return True
        if self.names is not None:
            self._newest[rec.stream] = rec
        if not self.pacer.take():
            return True
        cv2 = self.cv2
        try:
            cv2.imshow(self.title, swap_rb(rec.image) if self.names is None else self.grid())
            # pollKey handles the window's events without waitKey's 1 ms wait (OpenCV >= 4.5.4)
            key = (cv2.pollKey() if hasattr(cv2, "pollKey") else cv2.waitKey(1)) & 0xFF
        except cv2.error:
            print("note: this OpenCV build cannot open windows (headless); continuing without one "
                  "(--no-show hides this)", file=sys.stderr)
            self.enabled = False
            return True
        return key not in (ord("q"), 27)

    def grid(self) -> np.ndarray:
        """The newest frame of every stream tiled in stream order, (H,W,3) uint8 BGR. Tiles
        take the size of the first frame shown, scaled down to fit :data:`GRID_MAX`; a frame
        of another shape is fitted into its tile (aspect kept, centred on black); a tile whose
        stream has no new frame is left as it is (not drawn again)."""
        from .overlay import caption

        rows, cols = grid_shape(len(self.names))
        if self._canvas is None:
            h, w = next(iter(self._newest.values())).image.shape[:2]
            s = min(1.0, GRID_MAX[0] / (rows * h), GRID_MAX[1] / (cols * w))
            self._tile = (max(1, int(h * s)), max(1, int(w * s)))
            self._canvas = np.zeros((rows * self._tile[0], cols * self._tile[1], 3), np.uint8)
        th, tw = self._tile
        for k, rec in self._newest.items():
            if self._placed.get(k) is rec or not 0 <= k < len(self.names):
                continue
            self._placed[k] = rec
            img = rec.image
            s = min(th / img.shape[0], tw / img.shape[1])
            fh, fw = min(th, max(1, round(img.shape[0] * s))), min(tw, max(1, round(img.shape[1] * s)))
            y, x = (k // cols) * th, (k % cols) * tw
            tile = self._canvas[y:y + th, x:x + tw]
            if (fh, fw) != (th, tw):
                tile[:] = 0
            oy, ox = (th - fh) // 2, (tw - fw) // 2
            # captioned on a copy (swap_rb makes one): rec.image is shared with the other outputs
            tile[oy:oy + fh, ox:ox + fw] = caption(swap_rb(resize(img, (fh, fw))), self.names[k])
        return self._canvas

    def close(self, ok: bool = True) -> None:
        if self.enabled:
            with contextlib.suppress(Exception):
                self.cv2.destroyWindow(self.title)


class VideoOutput(_FileOutput):
    """The rendered frames as a video file: ``.mp4``/``.m4v``/``.mov``/``.mkv`` in H.264
    where the installed encoders allow, else MPEG-4 Part 2 with a one-line warning;
    ``.avi`` in MJPEG (see :mod:`.encoders`). The size is the first frame's; later frames
    of another size (image folders) are resized to it.

    Attributes:
        encoder: the encoder's name in :data:`.encoders.ENCODERS`; ``codec`` says what it writes.
    """

    draws = True

    def __init__(self, path: str | os.PathLike[str], fps: float, stream: int | None = None,
                 encoder: str | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.path = check_writable(path)
        suffix = self.path.suffix.lower()
        if suffix not in PREFERENCE:
            raise UserError(f"--output {self.path}: unsupported video type {suffix!r}; use one of "
                            f"{', '.join(PREFERENCE)}")
        if encoder is None:
            encoder, warning = choose_encoder(suffix)
            if warning and warning not in _WARNED:
                _WARNED.add(warning)
                print(f"warning: --output {warning}", file=sys.stderr)
        self.encoder, self.codec = encoder, encoder_codec(encoder)
        self.fps = float(fps)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        self.writer: Encoder | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, rec: FrameRecord) -> bool:
        img = rec.image
        with self.lock:
            if self.aborted:
                return False
            if self.writer is None:
                self.size = img.shape[:2]
                self.writer = open_encoder(self.encoder, self.tmp, self.fps, self.size)
            if img.shape[:2] != self.size:
                img = resize(img, self.size)
            self.writer.write(img)
            self.frames += 1
        return True

    def close(self, ok: bool = True) -> None:
        with self.lock:
            if self.writer is not None:
                self.writer.close()  # finishes the container: the file is playable now
                self.writer = None
            if ok and self.frames and not self.aborted:
                os.replace(self.tmp, self.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.tmp.unlink()

    def temporaries(self) -> list[Path]:
        return [self.tmp]


class MaskOutput(_FileOutput):
    """One ``.npz`` per frame in a folder: ``masks`` uint8 (C,h,w) (mask × 255, model
    resolution, every class), ``probs`` float32 (C,), ``classes`` (C,) names and
    ``source_size`` int32 (2,) = the frame's (H, W) as the source delivered it. A top-k
    model's file holds the K masks it computed, (K,h,w), and their class indices
    ``mask_classes`` (K,).

    The masks stay at model resolution (64×64 for the demo model whatever the input size:
    that is all the model computed, and it keeps the files small); :func:`load_masks`
    upsamples them to ``source_size`` the way the overlay does (bilinear, centres aligned).
    """

    wants_masks = True
    records = True

    def __init__(self, folder: str | os.PathLike[str], class_names: list[str], stream: int | None = None) -> None:
        super().__init__()
        self.stream = stream
        self._tmp: Path | None = None  # the file being written now
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create --save-masks folder {self.folder}: {exc.strerror}") from exc
        if not os.access(self.folder, os.W_OK):
            raise UserError(f"--save-masks folder {self.folder} is not writable")
        self.classes = np.array(class_names)

    def write(self, rec: FrameRecord) -> bool:
        stem = f"{rec.index:06d}" + (f"_{Path(rec.name).stem}" if rec.name else "")
        dest = self.folder / f"{stem}.npz"
        tmp = self.folder / f".{stem}.partial.npz"
        extra = {}
        masks = rec.masks
        if hasattr(masks, "classes"):  # a top-k graph: the masks of these classes only
            extra["mask_classes"] = np.asarray(masks.classes, np.int64)
            masks = masks.masks
        masks = np.clip(masks * 255 + 0.5, 0, 255).astype(np.uint8)
        with self.lock:
            if self.aborted:
                return False
            self._tmp = tmp
            np.savez_compressed(tmp, masks=masks, probs=rec.probs.astype(np.float32), classes=self.classes,
                                source_size=np.asarray(rec.source_size, np.int32), **extra)
            os.replace(tmp, dest)
            self._tmp = None
        return True

    def temporaries(self) -> list[Path]:
        return [self._tmp] if self._tmp is not None else []


def load_masks(path: str | os.PathLike[str], at_source: bool = True) -> np.ndarray:
    """The masks of a ``--save-masks`` file as (C,H,W) float32 in [0,1]: at the frame's
    source size (``at_source``, bilinear like the overlay) or at model resolution."""
    with np.load(path) as npz:
        masks = npz["masks"].astype(np.float32) / 255.0
        size = tuple(int(v) for v in npz["source_size"]) if "source_size" in npz else masks.shape[-2:]
    if not at_source or tuple(size) == masks.shape[-2:]:
        return masks
    return np.stack([resize(m, size) for m in masks])


# a JSON line lists every class's probability up to this many classes, else the best ones
JSON_MAX_CLASSES = 32


class JsonLinesOutput(_FileOutput):
    """Per-frame predictions and timings as JSON lines, to a file or ``-`` (stdout); each
    line names its stream, frame number, the frame's source size (H, W) and, for image
    folders, the file. A model with more than :data:`JSON_MAX_CLASSES` classes lists the
    probabilities of its best :data:`JSON_MAX_CLASSES` classes per frame, highest first."""

    records = True

    def __init__(self, target: str, class_names: list[str]) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.stdout = target == "-"
        self.path = None if self.stdout else check_writable(target)
        self.tmp = None if self.path is None else self.path.with_name(f".{self.path.name}.partial")
        self.fh: TextIO = sys.stdout if self.stdout else open(self.tmp, "w")  # noqa: SIM115

    def write(self, rec: FrameRecord) -> bool:
        order = range(len(self.class_names))
        if len(self.class_names) > JSON_MAX_CLASSES:  # a many-class model: its best classes only
            order = np.argsort(-rec.probs, kind="stable")[:JSON_MAX_CLASSES]
        line = {"stream": rec.stream, "frame": rec.index, "t": round(rec.t, 4),
                "source_size": [int(v) for v in rec.source_size],
                "probs": {self.class_names[c]: round(float(rec.probs[c]), 4) for c in order},
                "shown": [self.class_names[c] for c in rec.shown],
                "timings_ms": {k: round(v, 3) for k, v in rec.timings_ms.items()}}
        if rec.name:
            line["name"] = rec.name
        self.fh.write(json.dumps(line) + "\n")
        return True

    def close(self, ok: bool = True) -> None:
        if self.stdout:
            self.fh.flush()
            return
        with self.lock:
            self.fh.close()
            if ok and not self.aborted:
                os.replace(self.tmp, self.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.tmp.unlink()

    def temporaries(self) -> list[Path]:
        return [self.tmp] if self.tmp is not None else []

