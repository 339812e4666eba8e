"""Runtime streams: end of stream always delivered, bounded statistics, multi-stream batching,
the live web view. Fast, CPU only, no model unless a test needs one."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from wysiwyc.runtime.reader import FrameStream
from wysiwyc.runtime.sources import Source


class CountSource(Source):
    """``n`` tiny frames whose pixel value is their index (mod 256), then the end."""

    kind = "count"

    def __init__(self, n: int, size: int = 4) -> None:
        super().__init__()
        self.n, self.size, self.i = n, size, 0

    def _read(self) -> np.ndarray | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return np.full((self.size, self.size, 3), (self.i - 1) % 256, np.uint8)


def drain(stream: FrameStream, batch: int, model_s: float = 0.0, first_batch_hook=None,
          deadline_s: float = 10.0) -> tuple[bool, list[int]]:
    """Consume ``stream`` like the pipeline does, with a model taking ``model_s`` per batch.

    Returns (whether the end of the stream arrived before ``deadline_s``, frame indices).
    The consumer runs in a thread so a lost end marker is a failure, not a hung test.
    """
    got: list[int] = []
    ended = threading.Event()

    def consume() -> None:
        first = True
        while True:
            frames = stream.next_batch(batch)
            if not frames:
                break
            assert 1 <= len(frames) <= batch
            got.extend(f.index for f in frames)
            if first and first_batch_hook is not None:
                first_batch_hook()
            first = False
            if model_s:
                time.sleep(model_s)
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    ok = ended.wait(deadline_s)
    stream.close()
    return ok, got


# -- item: end of stream ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [40, 48])
def test_end_of_stream_arrives_with_default_prefetch_and_a_slow_model(n):
    """Defaults (prefetch 32, batch 8) and a model slower than the 0.1 s the end marker
    used to be offered for: the queue is full when the source ends."""
    ok, got = drain(FrameStream(CountSource(n), prefetch=32), batch=8, model_s=0.15)
    assert ok, f"the end of the stream never arrived after {len(got)} of {n} frames"
    assert got == list(range(n))


def test_end_of_stream_arrives_when_the_queue_is_full_at_the_end():
    """Event-driven form of the same fault: the model of the first batch returns only once
    the reader has finished the source, so the queue is full when the end is reached."""
    # batch 1: the first batch takes frame 0, the other 4 fill the queue exactly
    stream = FrameStream(CountSource(5), prefetch=4)

    def wait_for_reader() -> None:
        deadline = time.monotonic() + 10
        while stream.source.i < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
        stream._thread.join(0.5)  # the old reader gave up on the end marker after 0.1 s

    ok, got = drain(stream, batch=1, first_batch_hook=wait_for_reader)
    assert ok and got == list(range(5))


@pytest.mark.parametrize("batch, prefetch", list(itertools.product([1, 3, 8], [1, 2, 5, 32])))
def test_every_frame_and_the_end_arrive_for_any_batch_prefetch_delay_and_length(batch, prefetch):
    for model_s, n in itertools.product([0.0, 0.003], [0, 1, 2, 7, 16]):
        ok, got = drain(FrameStream(CountSource(n), prefetch=prefetch), batch=batch, model_s=model_s)
        assert ok and got == list(range(n)), (batch, prefetch, model_s, n, got)


class FakeModel:
    """A numpy stand-in for a backend: ``delay_s`` per batch, logits and masks that encode
    the frame (its pixel value), so a test can check which frame each result belongs to."""

    @staticmethod
    def make(delay_s: float = 0.0):
        from wysiwyc.runtime.backends import Backend
        from wysiwyc.spec import ModelSpec

        class _Fake(Backend):
            name = "fake"

            def _open(self) -> None:
                self.spec = ModelSpec(class_names=["a", "b"], image_size=(4, 4))

            def _run(self, x: np.ndarray):
                if delay_s:
                    time.sleep(delay_s)
                v = x[:, 0, 0, 0]  # the frame's value / 255
                logits = np.stack([v * 10 - 5, 5 - v * 10], axis=1).astype(np.float32)
                return logits, np.repeat(x[:, :1], 2, axis=1)

        return _Fake().open()


def run_pipeline(streams, batch: int, delay_s: float = 0.0, max_frames=None, deadline_s: float = 30.0):
    """Run a Pipeline over ``streams`` with :class:`FakeModel`; returns (finished, records, result)."""
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions

    recs = []

    class Sink:
        wants_masks = records = True

        def write(self, rec):
            recs.append(rec)
            return True

        def close(self, ok=True):
            pass

    be = FakeModel.make(delay_s)
    pipe = Pipeline(streams, be, Overlay(["a", "b"]), [Sink()],
                    RunOptions(batch=batch, min_view=4, max_frames=max_frames))
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("res", pipe.run()), daemon=True)
    t.start()
    t.join(deadline_s)
    if t.is_alive():
        pipe.stop()
    return not t.is_alive(), recs, out.get("res")


@pytest.mark.parametrize("n", [40, 48])
def test_pipeline_ends_with_default_prefetch_and_a_slow_model(n):
    ok, recs, res = run_pipeline(FrameStream(CountSource(n), prefetch=32), batch=8, delay_s=0.15)
    assert ok, f"the run never ended after {len(recs)} of {n} frames"
    assert [r.index for r in recs] == list(range(n)) and res.frames == n


@pytest.mark.parametrize("streams", [1, 3])
def test_pipeline_delivers_every_frame_once_for_any_batch_prefetch_and_length(streams):
    for batch, prefetch, delay_s in itertools.product([1, 3, 8], [1, 4], [0.0, 0.002]):
        lengths = [(7 * k + batch + prefetch) % 13 for k in range(streams)]  # 0 included
        ss = [FrameStream(CountSource(n), prefetch=prefetch, stream_id=k) for k, n in enumerate(lengths)]
        ok, recs, res = run_pipeline(ss, batch=batch, delay_s=delay_s)
        assert ok, (batch, prefetch, delay_s, lengths)
        for k, n in enumerate(lengths):
            mine = [r for r in recs if r.stream == k]
            assert [r.index for r in mine] == list(range(n))
            # each result belongs to its frame: the fake model's class-a probability follows the pixel value
            want = 1 / (1 + np.exp(-(np.arange(n) / 255 * 10 - 5)))
            np.testing.assert_allclose([r.probs[0] for r in mine], want, atol=1e-5)
            assert res.streams.get(k, None) is None if n == 0 else res.streams[k].frames == n


# -- item: bounded statistics ----------------------------------------------------------------
def test_window_percentiles_match_numpy_within_the_window():
    from wysiwyc.runtime.stats import Window

    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 3.0, 1000)
    w = Window(256)
    w.add(data[0])
    assert w.summary()["p50"] == data[0] and len(w) == 1
    w.extend(data[1:200])  # fewer than the window: every sample
    np.testing.assert_array_equal(w.values(), data[:200])
    for q, name in ((50, "p50"), (95, "p95"), (99, "p99")):
        assert w.summary()[name] == pytest.approx(np.percentile(data[:200], q), rel=1e-12)
    w.extend(data[200:])  # more than the window: the newest 256, in order
    np.testing.assert_array_equal(w.values(), data[-256:])
    np.testing.assert_array_equal(w.last(3), data[-3:])
    s = w.summary()
    for q, name in ((50, "p50"), (95, "p95"), (99, "p99")):
        assert s[name] == pytest.approx(np.percentile(data[-256:], q), rel=1e-12)
    # count, mean, min and max cover every sample
    assert w.count == 1000 and s["mean"] == pytest.approx(data.mean(), rel=1e-12)
    assert (w.min, w.max) == (data.min(), data.max())


def test_run_statistics_memory_does_not_grow_with_frames():
    import tracemalloc

    from wysiwyc.runtime.pipeline import STAGES, RunResult

    res = RunResult()
    frame = {s: 1.5 for s in STAGES}

    def record(n: int) -> None:
        for i in range(n):
            res.timings.add({k: v + i % 7 for k, v in frame.items()})
            res.frames += 1

    record(5000)  # past the window: the ring buffers are full from here on
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    record(30000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    assert grown < 16384, f"statistics grew {grown} bytes over 30000 frames"  # a list: ~6 MB
    assert res.timings["end_to_end"].count == 35000 and len(res.timings["end_to_end"]) == 4096
    assert set(res.percentiles()) == set(STAGES)


# -- item: several streams, one model ------------------------------------------------------------
class LiveCount(CountSource):
    """An endless live source; ``gate`` (when given) must be set for each frame it delivers."""

    kind = "livecount"
    live = True

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(10**9)
        self.gate = gate

    def _read(self) -> np.ndarray | None:
        if self.gate is not None:
            while not self.gate.wait(0.05):
                pass
        return super()._read()


def test_batcher_takes_buffered_streams_in_turn_and_drops_nothing():
    from wysiwyc.runtime.batching import Batcher

    streams = [FrameStream(CountSource(5), prefetch=8, stream_id=0), FrameStream(CountSource(3), prefetch=8, stream_id=1)]
    b = Batcher(streams, max_batch=4).start()
    for s in streams:
        s._thread.join(10)  # both readers done: every frame is waiting
    batches = []
    while frames := b.next_batch():
        batches.append([(f.stream, f.index) for f in frames])
    b.close()
    assert batches == [[(0, 0), (1, 0), (0, 1), (1, 1)], [(0, 2), (1, 2), (0, 3), (0, 4)]]
    assert b.finished


def test_batcher_gives_each_live_stream_one_newest_frame_and_never_waits_for_a_silent_one():
    from wysiwyc.runtime.batching import Batcher

    silent = threading.Event()  # never set: this camera delivers nothing
    cond = threading.Condition()
    streams = [FrameStream(LiveCount(), cond=cond, stream_id=0), FrameStream(LiveCount(silent), cond=cond, stream_id=1),
               FrameStream(CountSource(20), prefetch=4, cond=cond, stream_id=2)]
    b = Batcher(streams, max_batch=3, wait_s=0.01).start()
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for _ in range(30):
        frames = b.next_batch()
        per = [f.stream for f in frames]
        assert per.count(0) <= 1 and 1 <= len(frames) <= 3
        for f in frames:
            seen[f.stream].append(f.index)
    silent.set()  # let the gated reader see the stop flag
    b.close()
    assert seen[1] == [] and len(seen[0]) > 0
    assert seen[0] == sorted(set(seen[0]))  # newest frames: increasing, never repeated
    assert seen[2] == list(range(len(seen[2])))  # the file: in order, nothing dropped
    assert streams[0].stats.grabbed - streams[0].stats.dropped - len(seen[0]) in (0, 1)


def test_one_batch_plan_for_the_backend_profile_the_batcher_and_the_summary(tmp_path):
    """Live and file sources mixed: the CLI's plan (the backend profile) and the batcher's
    plan agree, and a batch never exceeds it."""
    from wysiwyc.runtime.batching import Batcher, batch_plan
    from wysiwyc.runtime.cli import get_args_parser, run_batch_plan

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    parse = get_args_parser().parse_args
    # two live sources (a URL, a camera) and one file
    args = parse(["--url", "rtsp://127.0.0.1/s", "--camera", "0", "--video", str(clip), "--batch", "1"])
    assert run_batch_plan(args) == batch_plan(1, 2) and run_batch_plan(args).profile == (1, 1, 2)
    assert run_batch_plan(parse(["--source", "rtsp://h/s", "--source", str(clip), "--batch", "4"])).profile == (1, 4, 4)
    # --realtime plays files as live streams
    assert run_batch_plan(parse(["--video", str(clip), "--demo", "--realtime", "--batch", "1"])).profile == (1, 1, 2)

    cond = threading.Condition()
    streams = [FrameStream(LiveCount(), cond=cond, stream_id=0), FrameStream(LiveCount(), cond=cond, stream_id=1),
               FrameStream(CountSource(20), prefetch=8, cond=cond, stream_id=2)]
    b = Batcher(streams, max_batch=1, wait_s=0.05).start()
    assert b.plan == batch_plan(1, 2)
    sizes = [len(b.next_batch()) for _ in range(20)]
    b.close()
    assert max(sizes) <= b.plan.max_batch == 2


def test_next_batch_timeout_returns_without_ending_the_stream():
    gate = threading.Event()
    stream = FrameStream(LiveCount(gate))
    assert stream.next_batch(timeout=0.05) == [] and not stream.finished  # nothing yet, not the end
    gate.set()
    assert len(stream.next_batch(timeout=10)) == 1  # live: the newest frame
    stream.close()
    assert not stream._thread.is_alive()


def test_source_values_and_streams_files(tmp_path):
    from wysiwyc.runtime.sources import SourceError, expand_sources, source_kind

    (tmp_path / "imgs").mkdir()
    (tmp_path / "clip.avi").write_bytes(b"")
    (tmp_path / "cams.streams").write_text("# cameras of the hall\n0\n\nrtsp://10.0.0.5/s#frag  # door\n"
                                           "imgs\nclip.avi\ndemo\n/dev/video2\n")
    specs = expand_sources([str(tmp_path / "cams.streams"), "demo"])
    assert specs == ["0", "rtsp://10.0.0.5/s#frag", str(tmp_path / "imgs"), str(tmp_path / "clip.avi"), "demo",
                     "/dev/video2", "demo"]
    assert [source_kind(s) for s in specs] == ["camera", "url", "images", "video", "demo", "camera", "demo"]
    assert source_kind("photos/*.jpg") == "images" and source_kind("missing.mp4") == "video"
    with pytest.raises(SourceError, match="no such file"):
        source_kind(str(tmp_path / "nothing"))
    (tmp_path / "empty.streams").write_text("# nothing\n")
    with pytest.raises(SourceError, match="lists no sources"):
        expand_sources([str(tmp_path / "empty.streams")])


# -- item: live web view ------------------------------------------------------------------------
def test_web_view_serves_real_frames_and_live_statistics(tiny_onnx):
    import json
    import urllib.request

    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.serve import ViewServer, parse_address
    from wysiwyc.runtime.sources import DemoSource

    assert parse_address("8080") == ("127.0.0.1", 8080) and parse_address(":81") == ("0.0.0.0", 81)
    be = open_backend(tiny_onnx)
    cond = threading.Condition()
    streams = [FrameStream(DemoSource(size=32, seed=k), cond=cond, stream_id=k) for k in range(2)]
    view = ViewServer("127.0.0.1:0", [s.source.describe() for s in streams])
    pipe = Pipeline(streams, be, Overlay(list(be.spec.class_names)), [view], RunOptions(batch=4, min_view=96))
    view.stats = pipe.live_stats
    runner = threading.Thread(target=pipe.run, daemon=True)
    runner.start()
    try:
        page = urllib.request.urlopen(view.url, timeout=20).read().decode()
        assert 'src="/stream/0.mjpg"' in page and 'src="/stream/1.mjpg"' in page
        with urllib.request.urlopen(view.url + "stream/1.mjpg", timeout=20) as r:
            assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert r.readline() == b"--frame\r\n" and r.readline() == b"Content-Type: image/jpeg\r\n"
            length = int(r.readline().split(b":")[1])
            r.readline()
            img = cv2.imdecode(np.frombuffer(r.read(length), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (96, 96, 3) and img.std() > 0  # a rendered overlay, at its view size
        one = urllib.request.urlopen(view.url + "stream/0.jpg", timeout=20).read()
        assert cv2.imdecode(np.frombuffer(one, np.uint8), cv2.IMREAD_COLOR).shape == (96, 96, 3)
        stats = json.loads(urllib.request.urlopen(view.url + "stats.json", timeout=20).read())
        assert stats["frames"] >= 2 and [s["stream"] for s in stats["streams"]] == [0, 1]
        assert stats["streams"][1]["frames"] >= 1 and "end_to_end" in stats["latency_ms"]
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(view.url + "stream/7.mjpg", timeout=20)
    finally:
        pipe.stop()
        runner.join(30)
    assert not runner.is_alive() and pipe.result.frames >= 2


# -- item: files played at their frame rate -------------------------------------------------------
class RecordedPace(FrameStream):
    """Records when each frame was due instead of waiting for it (no clock in the test)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dues: list[float] = []

    def _wait_until(self, due: float) -> bool:
        self.dues.append(due)
        return True


def test_paced_stream_hands_frames_over_at_its_frame_rate():
    s = RecordedPace(CountSource(5), pace=10.0)
    ok, got = drain(s, batch=8)
    assert ok and got == [0, 1, 2, 3, 4]
    assert np.allclose(np.diff(s.dues), 0.1) and len(s.dues) == 5  # frame k due k/10 s after the first
    unpaced = RecordedPace(CountSource(3))
    assert drain(unpaced, batch=8) == (True, [0, 1, 2]) and unpaced.dues == []
    with pytest.raises(ValueError, match="pace must be > 0"):
        FrameStream(CountSource(1), pace=0)


def test_realtime_flag_makes_file_sources_paced_live_streams():
    from wysiwyc.runtime.cli import REALTIME_DEFAULT_FPS, get_args_parser, playback
    from wysiwyc.runtime.sources import DemoSource

    assert get_args_parser().parse_args(["--demo", "--realtime"]).realtime
    demo = DemoSource(size=16)
    assert playback(demo, True) == {"live": True, "pace": 30.0} and playback(demo, False) == {}
    no_rate = CountSource(1)
    assert playback(no_rate, True) == {"live": True, "pace": REALTIME_DEFAULT_FPS}
    no_rate.live = True  # a camera or network stream is paced by its device
    assert playback(no_rate, True) == {}


def test_nothing_is_drawn_when_no_output_shows_the_overlay() -> None:
    """JSON lines or mask files only: no mask taken and no overlay, the frame as captured; an
    output that shows frames gets each drawn once, its masks taken as it is drawn."""
    from wysiwyc.runtime.backends import open_backend
    from wysiwyc.runtime.outputs import Output
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import DemoSource

    class Sink(Output):
        def __init__(self, draws: bool) -> None:
            self.draws, self.images = draws, []

        def write(self, rec):  # noqa: ANN001, ANN201
            self.images.append(rec.image)
            return True

    counts = {}
    for draws in (False, True):
        be = open_backend(None)
        calls = []
        real = be.masks_for
        be.masks_for = lambda masks, i, classes, size, real=real: calls.append(i) or real(masks, i, classes, size)
        sink = Sink(draws)
        res = Pipeline(FrameStream(DemoSource(size=64, seed=3)), be, Overlay(list(be.spec.class_names)), [sink],
                       RunOptions(max_frames=16, batch=4)).run()
        assert res.frames == 16
        counts[draws] = len(calls)
        shapes = {im.shape for im in sink.images}
        if draws:
            assert (64, 64, 3) not in shapes  # drawn at the view size
        else:
            assert shapes == {(64, 64, 3)}  # the frame as captured
    assert counts == {False: 0, True: 16}
