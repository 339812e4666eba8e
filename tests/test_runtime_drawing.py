"""Drawing at the model's pace: frames are drawn only where shown (once, in any thread), the
window and the web view show at a screen's pace, labels come from cached sprites that look
like ``cv2.putText`` on a darkened box, and two model runs in flight hand batches on in order."""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
import pytest

from wysiwyc.errors import UserError
from wysiwyc.runtime import cli
from wysiwyc.runtime.backends import Backend, open_backend
from wysiwyc.runtime.batching import batch_plan
from wysiwyc.runtime.imageops import resize, swap_rb, upscale
from wysiwyc.runtime.outputs import FrameRecord, Output, WindowOutput, grid_shape
from wysiwyc.runtime.overlay import Overlay, _Text, class_colour, select_classes, select_classes_batch
from wysiwyc.runtime.pipeline import Pipeline, RunOptions
from wysiwyc.runtime.reader import FrameStream
from wysiwyc.runtime.serve import ViewServer
from wysiwyc.runtime.sources import DemoSource
from wysiwyc.spec import ModelSpec

cv2 = pytest.importorskip("cv2")


class Counter:
    """A drawing function that counts its calls (in any thread)."""

    def __init__(self, value: int = 7) -> None:
        self.calls, self.value = 0, value
        self.lock = threading.Lock()

    def __call__(self) -> np.ndarray:
        with self.lock:
            self.calls += 1
        time.sleep(0.01)  # long enough for racing readers to overlap
        return np.full((4, 4, 3), self.value, np.uint8)


def _record(draw, stream: int = 0) -> FrameRecord:  # noqa: ANN001
    return FrameRecord(0, "", draw, np.zeros(2, np.float32), [], {}, 0.0, stream=stream)


# -- records ---------------------------------------------------------------------------------
def test_a_record_is_drawn_once_on_its_first_read_whichever_thread_reads():
    draw = Counter()
    rec = _record(draw)
    assert not rec.drawn and draw.calls == 0  # nothing drawn until someone looks
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(rec.image)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert draw.calls == 1 and rec.drawn
    assert all(s is seen[0] for s in seen) and int(seen[0][0, 0, 0]) == 7
    plain = _record(np.zeros((2, 2, 3), np.uint8))
    assert plain.drawn and plain.image.shape == (2, 2, 3)


# -- the window ------------------------------------------------------------------------------
class _FakeHighGui:
    """Stands in for OpenCV's window calls (CI's OpenCV is headless)."""

    error = cv2.error

    def __init__(self) -> None:
        self.shown = []

    def imshow(self, title: str, image: np.ndarray) -> None:
        self.shown.append(image)

    def pollKey(self) -> int:  # noqa: N802 (OpenCV's name)
        return -1

    def destroyWindow(self, title: str) -> None:  # noqa: N802
        pass


def test_the_window_draws_and_shows_at_most_max_fps_frames_a_second():
    assert WindowOutput().pacer.period == pytest.approx(1 / 30)  # video's rate by default
    win = WindowOutput(max_fps=10)
    win.cv2 = gui = _FakeHighGui()
    draws = [Counter(k) for k in range(30)]
    for d in draws:  # a burst far faster than 10 a second: the first is shown, the rest skipped
        assert win.write(_record(d))
    assert len(gui.shown) == 1 and [d.calls for d in draws] == [1] + [0] * 29
    # the shown image is the frame, as BGR
    np.testing.assert_array_equal(gui.shown[0], np.full((4, 4, 3), 0, np.uint8))
    time.sleep(0.12)
    late = Counter(99)
    win.write(_record(late))
    assert len(gui.shown) == 2 and late.calls == 1


def test_the_window_keeps_its_rate_when_frames_come_in_batches(monkeypatch):
    """Batches of 8 frames every 10 ms (800 FPS) for 3 s: 30 frames a second shown, evenly;
    after a 1 s stall no burst of frames to catch up."""
    from wysiwyc.runtime import outputs

    clock = [100.0]
    monkeypatch.setattr(outputs.time, "perf_counter", lambda: clock[0])
    win = WindowOutput()
    win.cv2 = gui = _FakeHighGui()
    shown_at = []
    for _ in range(300):
        for _ in range(8):
            n = len(gui.shown)
            win.write(_record(np.zeros((2, 2, 3), np.uint8)))
            if len(gui.shown) > n:
                shown_at.append(clock[0])
        clock[0] += 0.01
    assert 88 <= len(shown_at) <= 91  # 30 a second
    assert max(np.diff(shown_at)) <= 0.05 and min(np.diff(shown_at)) >= 0.02
    clock[0] += 1.0  # a stall
    before = len(gui.shown)
    for _ in range(3):  # 30 ms of batches after it: one frame, not a burst
        for _ in range(8):
            win.write(_record(np.zeros((2, 2, 3), np.uint8)))
        clock[0] += 0.01
    assert len(gui.shown) - before == 1


def test_grid_shape_is_as_square_as_it_gets():
    assert [grid_shape(n) for n in (1, 2, 3, 4, 5, 9, 10)] == [(1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3),
                                                              (3, 4)]


class _SolidDraw(Counter):
    """A drawing function (counted) of one RGB colour and shape."""

    def __init__(self, value: tuple[int, int, int], shape: tuple[int, int]) -> None:
        super().__init__()
        self.rgb, self.shape = value, shape

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return np.broadcast_to(np.array(self.rgb, np.uint8), (*self.shape, 3)).copy()


def test_several_streams_share_one_window_as_a_grid(monkeypatch):
    """Three streams in one window: a 2×2 grid of tiles the first frame's size, in stream order,
    BGR, each with its caption; a tick redraws only the streams with a new frame; a frame of
    another shape is fitted into its tile, centred on black; a shown frame stays untouched."""
    from wysiwyc.runtime import outputs

    clock = [100.0]
    monkeypatch.setattr(outputs.time, "perf_counter", lambda: clock[0])
    win = WindowOutput("wysiwyc - 3 streams", names=["[0] demo", "[1] demo", "[2] url http://cam/x"])
    win.cv2 = gui = _FakeHighGui()
    red, green, blue = _SolidDraw((200, 10, 10), (60, 200)), _SolidDraw((10, 200, 10), (60, 200)), \
        _SolidDraw((10, 10, 200), (30, 50))
    recs = [_record(red, 0), _record(green, 1), _record(blue, 2)]
    assert win.write(recs[0])  # shown at once: only stream 0 has a frame yet
    for r in recs[1:]:
        assert win.write(r)  # within the same 1/30 s: kept, not drawn
    assert len(gui.shown) == 1 and (red.calls, green.calls, blue.calls) == (1, 0, 0)
    clock[0] += 0.04
    win.write(recs[1])  # the next tick: every stream's newest frame
    assert len(gui.shown) == 2 and (red.calls, green.calls, blue.calls) == (1, 1, 1)
    grid = gui.shown[-1]
    assert grid.shape == (120, 400, 3)  # 2 × 2 tiles of 60 × 200
    bottom = grid[[59, 59, 119, 119], [0, 399, 0, 399]]  # the bottom-left/right pixel of each tile
    np.testing.assert_array_equal(bottom[0], (10, 10, 200))  # stream 0 (red), as BGR
    np.testing.assert_array_equal(bottom[1], (10, 200, 10))  # stream 1 (green)
    np.testing.assert_array_equal(bottom[2], (0, 0, 0))  # stream 2's 30×50 frame, fitted to 60×100, centred
    np.testing.assert_array_equal(grid[119, 50], (200, 10, 10))  # ... and there it is (blue)
    np.testing.assert_array_equal(bottom[3], (0, 0, 0))  # no fourth stream
    assert (grid[:20, 200 - 100:200] != (10, 10, 200)).any(axis=-1).any()  # stream 0's caption, top right
    assert (recs[0].image == (200, 10, 10)).all()  # the caption went on a copy
    clock[0] += 0.04
    win.write(_record(_SolidDraw((1, 2, 3), (60, 200)), 0))  # only stream 0 changed
    assert (red.calls, green.calls, blue.calls) == (1, 1, 1)
    np.testing.assert_array_equal(gui.shown[-1][59, 0], (3, 2, 1))
    np.testing.assert_array_equal(gui.shown[-1][59, 399], (10, 200, 10))


def test_a_grid_of_large_frames_fits_a_1080p_screen():
    win = WindowOutput(names=[f"[{k}]" for k in range(4)])
    win.cv2 = gui = _FakeHighGui()
    win.write(_record(np.zeros((1080, 1920, 3), np.uint8)))
    assert gui.shown[0].shape == (1080, 1920, 3)  # 2 × 2 tiles at half size


def test_the_cli_opens_one_window_for_every_stream(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "display_available", lambda: True)
    args = cli.get_args_parser().parse_args(["--demo", "--show"])
    one = cli.build_outputs(args, [DemoSource(size=16)], ["a"])
    assert [(type(o), o.names, o.title) for o in one] == [(WindowOutput, None, "wysiwyc")]
    srcs = [DemoSource(size=16), DemoSource(size=16, seed=1)]
    many = cli.build_outputs(args, srcs, ["a"])
    assert len(many) == 1 and many[0].stream is None
    assert many[0].names == [f"[0] {srcs[0].describe()}", f"[1] {srcs[1].describe()}"]
    assert many[0].title == "wysiwyc - 2 streams"


# -- the web view ----------------------------------------------------------------------------
def test_the_web_view_draws_and_sends_only_what_a_client_gets_at_its_pace():
    view = ViewServer("127.0.0.1:0", ["demo"], fps=20)
    draws: list[Counter] = []
    got: list[int] = [0]

    def watch() -> None:
        with urllib.request.urlopen(f"{view.url}stream/0.mjpg", timeout=10) as r:
            for line in r:
                got[0] += line.startswith(b"--frame")

    first = Counter()
    draws.append(first)
    view.write(_record(first))
    client = threading.Thread(target=watch)
    client.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.6:  # 1000 frames a second offered for 0.6 s
        d = Counter()
        draws.append(d)
        view.write(_record(d))
        time.sleep(0.001)
    view.close()
    client.join(timeout=10)
    drawn = sum(d.calls for d in draws)
    assert 5 <= got[0] <= 0.6 * 20 + 3  # about 20 a second, never the offered rate
    assert drawn == got[0]  # every frame sent was drawn once, no other frame was drawn
    assert all(d.calls <= 1 for d in draws)


def test_serve_fps_and_show_fps_are_checked(capsys):
    for argv in (["--demo", "--serve", "127.0.0.1:0", "--serve-fps", "0"], ["--demo", "--serve-fps", "15"],
                 ["--demo", "--show-fps", "-1"]):
        assert cli.main(argv + ["--no-show", "--max-frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "--serve-fps 0.0 is out of range" in err and "--serve-fps needs --serve" in err
    assert "--show-fps -1.0 is out of range" in err


# -- labels ----------------------------------------------------------------------------------
def _reference_label(img: np.ndarray, s: str, org: tuple[int, int], colour: tuple[int, int, int],
                     scale: float) -> np.ndarray:
    """A label drawn the direct way: the box darkened to 35 %, then ``cv2.putText``."""
    (tw, th), base = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    roi = img[y - th - 3:y + base + 2, x - 3:x + tw + 3]
    roi[:] = np.round(roi * 0.35).astype(np.uint8)
    cv2.putText(img, s, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return img


@pytest.mark.parametrize("scale", [0.4, 0.6, 1.0])
def test_a_pasted_label_looks_like_put_text_on_a_darkened_box(scale):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 300, 3), dtype=np.uint8)
    colour = tuple(int(v) for v in class_colour(1))
    org = (20, 60)
    ref = _reference_label(img.copy(), "circle 0.97", org, colour, scale)
    text = _Text(img.copy())
    text.put("circle 0.97", org, np.array(colour, np.float32), scale)
    out = text.image()
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 2  # rounding of the two uint8 passes
    assert np.abs(out.astype(int) - img.astype(int)).max() > 100  # and a label was drawn
    np.testing.assert_array_equal(out[:, 200:], img[:, 200:])  # nothing outside its box


def test_a_label_at_the_image_edge_is_clipped_not_shifted_out():
    img = np.zeros((20, 40, 3), np.uint8)
    text = _Text(img)
    text.put("a long label that overhangs", (30, 10), np.array((255, 255, 255), np.float32), 0.5)
    assert text.image().shape == (20, 40, 3) and text.image().max() > 0


# -- blending and class choice ---------------------------------------------------------------
def test_a_frame_larger_than_the_masks_is_blended_with_the_upsampled_mask():
    ov = Overlay(["a", "b", "c"], alpha=0.5)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    mask = rng.random((1, 8, 8), dtype=np.float32)
    up = cv2.resize(mask[0], (96, 96), interpolation=cv2.INTER_LINEAR)[..., None]
    expect = frame * (1 - 0.5 * up) + class_colour(2) * 0.5 * up
    out = ov.blend(frame, [2], mask)
    # the colour is upsampled as uint8 (OpenCV's fixed-point bilinear): half a grey level more
    assert np.abs(out.astype(np.float64) - expect).max() <= 1.5


def test_classes_are_chosen_for_a_whole_batch_as_for_each_frame():
    rng = np.random.default_rng(2)
    probs = rng.random((16, 7)).astype(np.float32)
    probs[3, 2] = probs[3, 5]  # a tie keeps the lower class first (a stable sort)
    for thr, k, pinned in ((0.5, 3, None), (0.0, 7, None), (0.9, 2, None), (0.5, 0, None), (0.5, 3, [6, 1])):
        assert select_classes_batch(probs, thr, k, pinned) == [select_classes(p, thr, k, pinned) for p in probs]
    assert select_classes(np.array([0.2, 0.9, 0.9], np.float32), 0.5, 3) == [1, 2]


@pytest.mark.parametrize(("src", "dst", "channels"), [((64, 64), (384, 384), 3), ((48, 64), (361, 500), 3),
                                                      ((64, 64), (480, 640), 1), ((3, 5), (7, 11), 3)])
def test_upscale_is_resize_to_within_one_grey_level(src, dst, channels):
    """The drawing's upscale (a warp) against cv2.resize (bilinear, centres aligned): at most one
    grey level apart anywhere, borders included; shrinking, equal sizes and floats are resize."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*src, channels) if channels > 1 else src, dtype=np.uint8)
    up = upscale(img, dst)
    assert up.shape == resize(img, dst).shape and up.dtype == np.uint8
    assert np.abs(up.astype(int) - resize(img, dst)).max() <= 1
    small = rng.random((8, 8)).astype(np.float32)
    np.testing.assert_array_equal(upscale(small, (16, 16)), resize(small, (16, 16)))
    np.testing.assert_array_equal(upscale(img, (2, 2)), resize(img, (2, 2)))
    assert upscale(img, src) is img


def test_swap_rb_swaps_red_and_blue_and_drops_alpha():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(swap_rb(rgb), rgb[..., ::-1])
    np.testing.assert_array_equal(swap_rb(swap_rb(rgb)), rgb)
    bgra = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    np.testing.assert_array_equal(swap_rb(bgra), bgra[..., 2::-1])
    assert swap_rb(rgb[:, ::2]).flags.c_contiguous  # any strides in, contiguous out


# -- model runs in flight --------------------------------------------------------------------
class _SlowBackend(Backend):
    """A host backend whose batches take random times (so two runs finish out of order):
    logits are each image's channel means, masks its first channel per class."""

    name = "slow"

    def __init__(self, runs: int) -> None:
        super().__init__(None)
        self.runs, self.rng, self.lock = runs, np.random.default_rng(0), threading.Lock()

    def _open(self) -> None:
        self.spec = ModelSpec(class_names=["a", "b", "c"], image_size=(16, 16), kind="explainer")
        self.concurrent_runs = self.runs

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            delay = float(self.rng.uniform(0, 0.01))
        time.sleep(delay)
        logits = x.mean(axis=(2, 3)) * 4 - 2
        return logits, np.repeat(x[:, :1], 3, axis=1)


class _Collect(Output):
    records = True

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, tuple[float, ...]]] = []

    def write(self, rec: FrameRecord) -> bool:
        self.seen.append((rec.stream, rec.index, tuple(np.round(rec.probs, 6))))
        return True


@pytest.mark.parametrize("streams", [1, 3])
def test_two_runs_in_flight_hand_frames_on_in_order_with_the_same_results(streams):
    results = {}
    for runs in (1, 2):
        be = _SlowBackend(runs).open()
        cond = threading.Condition()
        ss = [FrameStream(DemoSource(size=16, seed=k), cond=cond, stream_id=k) for k in range(streams)]
        out = _Collect()
        pipe = Pipeline(ss, be, Overlay(["a", "b", "c"]), [out], RunOptions(max_frames=60, batch=2, runs=runs))
        res = pipe.run()
        assert pipe.runs == runs and res.frames == 60
        for k in range(streams):  # every stream's frames in their order, from the first, none repeated
            idx = [i for s, i, _ in out.seen if s == k]
            assert idx == list(range(len(idx)))
        results[runs] = {(s, i): p for s, i, p in out.seen}
    # how many frames each stream gave depends on timing; every frame both runs saw agrees
    both = results[1].keys() & results[2].keys()
    assert len(both) >= 30 and all(results[1][k] == results[2][k] for k in both)


def test_runs_are_capped_by_what_the_backend_takes():
    be = _SlowBackend(1).open()
    ss = FrameStream(DemoSource(size=16, seed=0))
    assert Pipeline(ss, be, Overlay(["a", "b", "c"]), [], RunOptions(runs=4)).runs == 1


def test_onnxruntime_on_cpu_shares_its_threads_between_runs(tiny_onnx):
    from wysiwyc.runtime.backends.base import available_cores

    one = open_backend(tiny_onnx)
    two = open_backend(tiny_onnx, runs=2)
    assert one.concurrent_runs == 1 and two.concurrent_runs == 2
    threads = two.session.get_session_options().intra_op_num_threads
    assert threads == max(1, available_cores() // 2)
    bound = open_backend(tiny_onnx, runs=2, iobinding=True)  # its bound buffers serve one run at a time
    assert bound.concurrent_runs == 1
    one_thread = open_backend(tiny_onnx, runs=2, threads=1)  # --threads 1: one core, so one run
    assert one_thread.concurrent_runs == 1 and one_thread.session.get_session_options().intra_op_num_threads == 1
    four = open_backend(tiny_onnx, runs=2, threads=4)
    assert four.concurrent_runs == 2 and four.session.get_session_options().intra_op_num_threads == 2
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    for a, b in zip(one(x), two(x)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_batch_plan_runs_two_batches_for_buffered_sources_and_one_for_live():
    assert batch_plan(8, 0).model_runs == 2
    assert batch_plan(8, 1).model_runs == 1
    assert batch_plan(8, 1, runs=3).model_runs == 3
    with pytest.raises(UserError, match="--runs 0 is out of range"):
        cli._check_args(cli.get_args_parser().parse_args(["--demo", "--runs", "0"]))


def test_a_model_failure_in_one_of_two_runs_ends_the_run_with_that_error():
    class Failing(_SlowBackend):
        calls = 0

        def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with self.lock:
                self.calls += 1
                n = self.calls
            if n == 4:
                raise RuntimeError("the model failed")
            return super()._run(x)

    be = Failing(2).open()
    out = _Collect()
    with pytest.raises(RuntimeError, match="the model failed"):
        Pipeline(FrameStream(DemoSource(size=16)), be, Overlay(["a", "b", "c"]), [out],
                 RunOptions(max_frames=200, batch=2, runs=2)).run()
    assert len(out.seen) < 200
    assert not [t.name for t in threading.enumerate() if t.name.startswith("wysiwyc-")]  # nothing left running
