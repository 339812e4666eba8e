"""The lean runtime: sources, backends, overlay, outputs, faults, and no torch import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wysiwyc.data.shapes import CLASSES
from wysiwyc.runtime import cli
from wysiwyc.runtime.backends import Backend, open_backend
from wysiwyc.runtime.overlay import Overlay, class_colour, select_classes
from wysiwyc.runtime.pipeline import Pipeline, RunOptions
from wysiwyc.runtime.reader import FrameStream
from wysiwyc.runtime.sources import DemoSource, open_source

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]
from _mjpeg import MJPEGServer  # noqa: E402


@pytest.fixture(scope="module")
def models(tiny_explainer, tiny_onnx):
    """The shared tiny 32 px Explainer checkpoint and its fp32 ONNX export."""
    return {"pt": tiny_explainer, "onnx": tiny_onnx}


def run_cli(*args: str) -> int:
    return cli.main([*map(str, args)])


# -- backends ------------------------------------------------------------------------------
def test_onnx_and_torch_backends_agree(models):
    ort_be, torch_be = open_backend(models["onnx"]), open_backend(models["pt"], device="cpu")
    assert ort_be.name == "onnxruntime CPUExecutionProvider"
    assert torch_be.name.startswith("torch") and "cpu" in torch_be.name
    assert ort_be.spec.class_names == list(CLASSES) and ort_be.input_size == (32, 32)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for _ in range(3)]
    x = ort_be.preprocess(frames)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    lo, mo = ort_be(x)
    lt, mt = torch_be(x)
    assert np.abs(lo - lt).max() < 1e-4 and np.abs(mo - mt).max() < 1e-4
    # torch-side preprocessing and mask upsampling match the numpy path
    assert np.abs(torch_be.preprocess(frames).numpy() - x).max() < 1e-6
    up_o = ort_be.masks_for(mo, 1, [2, 0], (48, 40))
    up_t = torch_be.masks_for(torch.from_numpy(mt), 1, [2, 0], (48, 40))
    assert up_o.shape == (2, 48, 40) and np.abs(up_o - up_t).max() < 2e-3


def test_backend_is_a_context_manager(models):
    be = open_backend(models["onnx"])
    assert be.is_open  # open_backend opens: usable without a with block
    with be as same:
        assert same is be and be.infer(np.zeros((1, 3, 32, 32), np.float32))[1].shape == (1, 6, 32, 32)
    assert not be.is_open and be.spec.class_names == list(CLASSES)  # the spec outlives close()
    with pytest.raises(RuntimeError, match="not open"):
        be.infer(np.zeros((1, 3, 32, 32), np.float32))
    with be:  # reopens
        assert be.is_open
    be.close()  # closing twice is harmless


def test_static_batch_model_is_padded(models, tmp_path):
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint

    p = tmp_path / "b4.onnx"
    export_checkpoint(models["pt"], p, ExportOptions(dynamic_batch=False, batch=4))
    be, ref = open_backend(p), open_backend(models["onnx"])
    assert be.fixed_batch == 4
    x = np.random.default_rng(1).random((6, 3, 32, 32), dtype=np.float32)
    lo, mo = be(x)
    lr, mr = ref(x)
    assert lo.shape == (6, 6) and np.abs(lo - lr).max() < 1e-4 and np.abs(mo - mr).max() < 1e-4


# -- overlay --------------------------------------------------------------------------------
def test_blend_is_the_documented_formula():
    ov = Overlay(list(CLASSES), alpha=0.5)
    frame = np.full((4, 4, 3), 100, np.uint8)
    masks = np.zeros((1, 4, 4), np.float32)
    masks[0, 0, 0], masks[0, 1, 1] = 1.0, 0.5
    out = ov.blend(frame, [3], masks)
    col = class_colour(3)
    np.testing.assert_allclose(out[0, 0], 100 + 0.5 * (col - 100), atol=0.51)
    np.testing.assert_allclose(out[1, 1], 100 + 0.25 * (col - 100), atol=0.51)
    np.testing.assert_array_equal(out[2:], frame[2:])  # zero mask: frame untouched


def test_composited_layers_equal_blending_each_class_in_turn():
    """Three overlapping classes composited at the masks' resolution and blended once give
    the frame blended with one layer after another (``out = out·(1 − αm) + colour·αm``),
    to uint8 rounding; at a larger view the composite is upsampled once."""
    rng = np.random.default_rng(0)
    ov = Overlay(list(CLASSES), alpha=0.6)
    frame = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    masks = rng.random((3, 8, 8), dtype=np.float32)
    classes = [1, 4, 2]
    expect = frame.astype(np.float64)
    for c, m in zip(classes, masks):
        w = 0.6 * m[..., None]
        expect = expect * (1 - w) + class_colour(c) * w
    out = ov.blend(frame, classes, masks)
    assert np.abs(out.astype(np.float64) - expect).max() <= 1.0
    view = ov.render(frame, np.full(6, 0.9, np.float32), classes, masks, size=(32, 32))
    assert view.shape == (32, 32, 3)


def test_select_classes():
    p = np.array([0.9, 0.2, 0.7, 0.55, 0.95, 0.1], np.float32)
    assert select_classes(p, 0.5, 3) == [4, 0, 2]
    assert select_classes(p, 0.8, 3) == [4, 0]
    assert select_classes(p, 0.5, 0) == []
    assert select_classes(p, 0.5, 3, pinned=[5, 1]) == [5, 1]


# -- sources and policies --------------------------------------------------------------------
def test_demo_source_is_deterministic_and_pans():
    a, b = DemoSource(size=32, seed=3, hold=8), DemoSource(size=32, seed=3, hold=8)
    fa = [a.read() for _ in range(10)]
    fb = [b.read() for _ in range(10)]
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))
    np.testing.assert_array_equal(fa[2], np.roll(fa[0], 1, axis=1))  # one pixel every other frame
    assert not np.array_equal(fa[8], np.roll(fa[0], 4, axis=1))  # a new scene after `hold` frames


def _write_video(path: Path, n: int, size: int = 40) -> list[int]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (size, size))
    levels = [(i * 23) % 200 + 30 for i in range(n)]
    for v in levels:
        writer.write(np.full((size, size, 3), v, np.uint8))
    writer.release()
    return levels


def test_video_file_keeps_every_frame_in_order_and_batches(models, tmp_path):
    levels = _write_video(tmp_path / "clip.avi", 23)
    src = open_source("video", tmp_path / "clip.avi")
    stream = FrameStream(src, prefetch=64).start()
    # wait until the decoder has run ahead to the end (23 frames + the end marker fit the
    # queue), so every batch finds its frames already waiting
    stream._thread.join(timeout=60)
    assert not stream._thread.is_alive()
    batches = []
    while True:
        b = stream.next_batch(8)
        if not b:
            break
        batches.append(b)
    stream.close()
    frames = [f for b in batches for f in b]
    assert [f.index for f in frames] == list(range(23))
    assert [len(b) for b in batches] == [8, 8, 7]  # waiting frames were batched
    got = [int(round(f.image.mean())) for f in frames]
    assert max(abs(g - v) for g, v in zip(got, levels)) <= 3  # MJPEG is lossy, order is not
    assert stream.stats.dropped == 0 and stream.stats.corrupt == 0


class SlowBackend(Backend):
    """A model slower than its live source, deterministically: each inference returns only
    after the source has grabbed two more frames, so the newest-frame policy must drop one."""

    def __init__(self, inner: Backend, stream: FrameStream) -> None:
        super().__init__()
        self.inner, self.stream = inner, stream

    def _open(self):
        self.spec, self.name = self.inner.open().spec, "slow"

    def _close(self):
        self.inner.close()

    def _run(self, x):
        st, cond = self.stream.stats, self.stream._cond  # the grabber notifies it on every frame
        target = st.grabbed + 2
        with cond:
            assert cond.wait_for(lambda: st.grabbed >= target, timeout=30), "the source stopped"
        return self.inner.infer(x)


def test_live_policy_keeps_only_the_newest_frame(models):
    stream = FrameStream(DemoSource(size=32), live=True)
    slow = SlowBackend(open_backend(models["onnx"]), stream).open()
    seen = []

    class Spy:
        wants_masks = records = False

        def write(self, rec):
            seen.append(rec.index)
            return True

        def close(self, ok=True):
            pass

    res = Pipeline(stream, slow, Overlay(list(CLASSES)), [Spy()], RunOptions(max_frames=8, batch=8)).run()
    st = stream.stats
    assert res.frames == 8 and res.batches == 8  # live: batch 1 even though --batch 8
    assert seen == sorted(seen) and len(set(seen)) == 8
    assert st.dropped > 0 and max(np.diff(seen)) > 1  # frames the slow model could not take were dropped
    assert st.grabbed - st.dropped - res.frames in (0, 1)  # every grabbed frame is either shown or dropped


# -- the command, end to end -----------------------------------------------------------------
def test_demo_with_every_output(models, tmp_path, capsys):
    out, summ, js = tmp_path / "demo.mp4", tmp_path / "s.json", tmp_path / "f.jsonl"
    rc = run_cli("--demo", "--model", models["onnx"], "--max-frames", 12, "--no-show", "--output", out,
                 "--summary", summ, "--json", js, "--save-masks", tmp_path / "m", "--batch", 4)
    assert rc == 0
    s = json.loads(summ.read_text())
    assert s["frames"] == 12 and s["source"]["dropped"] == 0 and s["model"]["backend"].startswith("onnxruntime")
    assert set(s["latency_ms"]) == {"capture", "preprocess", "infer", "postprocess", "render", "draw", "end_to_end"}
    assert s["latency_ms"]["draw"]["p50"] > 0  # the video writer drew every frame
    assert s["batches"] >= 3  # batches of up to 4
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and cap.read()[1].shape == (384, 384, 3)
    lines = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(12))
    assert set(lines[0]["probs"]) == set(CLASSES) and "end_to_end" in lines[0]["timings_ms"]
    npz = np.load(tmp_path / "m" / "000000.npz")
    assert npz["masks"].shape == (6, 32, 32) and npz["masks"].dtype == np.uint8
    # the saved masks are the model's masks of that frame
    frame0 = DemoSource(size=32).read()
    be = open_backend(models["onnx"])
    logits, masks = be(be.preprocess([frame0]))
    assert np.abs(npz["masks"].astype(np.float32) / 255 - masks[0]).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(npz["probs"], 1 / (1 + np.exp(-logits[0])), atol=1e-5)
    assert "FPS" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*partial*"))


def test_torch_backend_from_the_command_line(models, tmp_path):
    summ = tmp_path / "s.json"
    assert run_cli("--demo", "--model", models["pt"], "--device", "cpu", "--max-frames", 3, "--no-show",
                   "--summary", summ) == 0
    assert json.loads(summ.read_text())["model"]["backend"].startswith("torch")


def test_image_folder_skips_corrupt_files(models, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(30, 50), (64, 64), (20, 20)]):
        cv2.imwrite(str(d / f"img{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    (d / "notes.txt").write_text("not an image")
    summ = tmp_path / "s.json"
    assert run_cli("--images", d, "--model", models["onnx"], "--no-show", "--save-masks", tmp_path / "m",
                   "--summary", summ) == 0
    s = json.loads(summ.read_text())
    assert s["frames"] == 3 and s["source"]["corrupt"] == 1 and s["source"]["corrupt_frames"] == ["broken.png"]
    # sorted order: broken.png (index 0, skipped), img0, img1, img2
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["000001_img0.npz", "000002_img1.npz",
                                                                  "000003_img2.npz"]
    assert "  corrupt broken.png" in capsys.readouterr().out.splitlines()  # the summary names it
    # masks are stored at model resolution with the source size that maps them back
    from wysiwyc.runtime.outputs import load_masks

    npz = np.load(tmp_path / "m" / "000001_img0.npz")
    assert npz["masks"].shape == (6, 32, 32) and tuple(npz["source_size"]) == (30, 50)
    up = load_masks(tmp_path / "m" / "000001_img0.npz")
    assert up.shape == (6, 30, 50) and up.dtype == np.float32
    np.testing.assert_allclose(up[2], cv2.resize(npz["masks"][2].astype(np.float32) / 255, (50, 30)), atol=1e-6)
    assert load_masks(tmp_path / "m" / "000001_img0.npz", at_source=False).shape == (6, 32, 32)


def test_network_stream_reconnects_after_a_drop(models, tmp_path):
    with MJPEGServer(frames_per_connection=10, fps=100) as server:
        summ = tmp_path / "s.json"
        assert run_cli("--rtsp", server.url, "--model", models["onnx"], "--max-frames", 14, "--no-show",
                       "--summary", summ, "--reconnect", 3) == 0
        s = json.loads(summ.read_text())
        assert s["frames"] == 14 and s["source"]["live"] and s["source"]["reconnects"] >= 1
        assert server.connections >= 2


def test_lost_stream_ends_cleanly_with_status_1(models, tmp_path, capsys):
    with MJPEGServer(frames_per_connection=5, fps=100, max_connections=1) as server:
        out = tmp_path / "o.mp4"
        rc = run_cli("--rtsp", server.url, "--model", models["onnx"], "--no-show", "--reconnect", 1,
                     "--output", out)
    assert rc == 1
    assert "reconnect attempts failed" in capsys.readouterr().err
    assert out.is_file()  # what was shown before the loss is kept, and playable


@pytest.mark.parametrize("args, msg", [
    (["--camera", "97"], "camera 97 could not be opened"),
    (["--video", "nope.mp4"], "video file not found"),
    (["--images", "no/such/dir"], "no such image folder"),
    (["--rtsp", "http://127.0.0.1:9/none.mjpg"], "cannot open stream"),
    (["--demo", "--model", "missing.onnx"], "model not found"),
    (["--demo", "--classes", "dots,unicorn"], "unknown class 'unicorn'"),
    (["--demo", "--output", "{tmp}/o.gif"], "unsupported video type"),
    (["--demo", "--provider", "cuda"], "CUDAExecutionProvider is not available"),
    (["--demo", "--threshold", "2"], "--threshold 2.0 is out of range"),
    (["--demo", "--show"], "no display"),
])
def test_user_errors_exit_2(models, tmp_path, capsys, monkeypatch, args, msg):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--model" not in args:
        args += ["--model", str(models["onnx"])]
    assert run_cli(*args, "--max-frames", 2) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_model_faults(models, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    bare = tmp_path / "bare.onnx"  # a valid ONNX model without a wysiwyc spec
    node = helper.make_node("Identity", ["images"], ["logits"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), bare)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    (tmp_path / "m.engine").write_bytes(b"\0" * 16)
    for model, msg in ((bare, "no wysiwyc spec"), (tmp_path / "junk.onnx", "not a loadable ONNX model"),
                       (tmp_path / "m.engine", "tensorrt"),
                       (tmp_path / "m.tflite", "model not found")):
        assert run_cli("--demo", "--model", model, "--max-frames", 1, "--no-show") == 2
        err = capsys.readouterr().err
        assert msg.lower() in err.lower() and "Traceback" not in err, (model, err)


# -- process-level behaviour -------------------------------------------------------------------
def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def test_runtime_never_imports_torch_for_onnx(models, tmp_path):
    code = ("import sys\n"
            "from wysiwyc.runtime.cli import main\n"
            "import wysiwyc.runtime.backends.tensorrt, wysiwyc.runtime.backends.onnxruntime\n"
            f"rc = main(['--demo', '--model', {str(models['onnx'])!r}, '--max-frames', '4', '--no-show'])\n"
            "assert rc == 0, rc\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
            "print('EXPORT' if 'wysiwyc.export' in sys.modules else 'NO-EXPORT')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["NO-TORCH", "NO-EXPORT"]  # the runtime needs neither


def test_ctrl_c_leaves_a_playable_video(models, tmp_path):
    out = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, str(ROOT / "runtime" / "explain.py"), "--demo", "--model",
                             str(models["onnx"]), "--no-show", "--output", str(out), "--fps-limit", "50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            # a terminal's Ctrl-C: SIGINT handled even when the test runner was started
                            # in the background, where the shell makes its children ignore SIGINT
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not list(tmp_path.glob(".live.partial.mp4")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) > 0 and cap.read()[0]
    assert not list(tmp_path.glob(".*partial*"))


def test_bundled_onnx_is_the_export_of_the_bundled_checkpoint():
    """The runtime's default model must be re-exported whenever the demo Explainer is retrained:
    ``python export/to_onnx.py src/wysiwyc/assets/shapes_explainer.pt -o src/wysiwyc/assets/shapes_explainer.onnx --force``."""
    import onnx

    from wysiwyc.fileio import file_sha256

    assets = ROOT / "src" / "wysiwyc" / "assets"
    meta = {p.key: p.value for p in onnx.load(str(assets / "shapes_explainer.onnx")).metadata_props}
    assert meta["wysiwyc.source_sha256"] == file_sha256(assets / "shapes_explainer.pt")
    assert meta["wysiwyc.precision"] == "fp32"


# -- what a new user meets ---------------------------------------------------------------------
def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    import re

    out = capsys.readouterr().out
    text = out[out.index("options:"):]
    # one entry per option: its line and the indented lines under it, unwrapped
    entries = {m.group(1): " ".join(m.group(0).split()) for m in re.finditer(r"^  (--?[\w-]+).*(?:\n {6,}.*)*", text, re.M)}
    for flag, default in (("--threshold", "0.5 for a multi-label model, 0.1 for a softmax one, whose "
                                          "probabilities share 1 among all classes"), ("--top-k", "3"), ("--alpha", "0.5"), ("--batch", "8"),
                          ("--reconnect", "5"), ("--view-size", "384"), ("--seed", "0"), ("--colormap", "class")):
        assert f"(default: {default})" in entries[flag], entries[flag]
    assert "(default: None)" not in out and "(default: False)" not in out and "(default: [])" not in out


def test_status_line_without_a_window(models, capsys):
    from wysiwyc.runtime.progress import StatusLine

    now = [0.0]
    lines = []

    class Sink:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    st = StatusLine("demo", every_s=5.0, file=Sink(), clock=lambda: now[0])
    for t, n in ((1.0, 8), (2.0, 8), (6.5, 8), (7.0, 8), (12.0, 8)):
        now[0] = t
        st.update(n)
    text = [s for s in lines if s.strip()]
    assert text == ["runtime-explain: 8 frames, 8.0 FPS (demo)", "runtime-explain: 24 frames, 3.7 FPS (demo)",
                    "runtime-explain: 40 frames, 3.3 FPS (demo)"]
    # the command prints one as soon as frames go through when there is no window nor terminal
    assert run_cli("--demo", "--model", models["onnx"], "--max-frames", 4, "--no-show") == 0
    import re

    assert re.search(r"^runtime-explain: \d+ frames, [\d.]+ FPS \(demo", capsys.readouterr().err, re.M)


# -- several streams -------------------------------------------------------------------------
def _image_folder(d: Path, n: int, size=(24, 36), seed: int = 0) -> list[str]:
    d.mkdir()
    rng = np.random.default_rng(seed)
    names = [f"{d.name}_{i:02d}.png" for i in range(n)]
    for name in names:
        cv2.imwrite(str(d / name), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return names


def test_four_streams_run_concurrently_and_deliver_every_frame_once(models, tmp_path):
    _write_video(tmp_path / "a.avi", 23)
    _write_video(tmp_path / "b.avi", 9, size=48)
    names_c = _image_folder(tmp_path / "c", 7)
    names_d = _image_folder(tmp_path / "d", 12, size=(40, 30), seed=1)
    (tmp_path / "two.streams").write_text("# two of the four\nb.avi\nc\n")
    js, summ, out = tmp_path / "f.jsonl", tmp_path / "s.json", tmp_path / "videos"
    rc = run_cli("--source", tmp_path / "a.avi", "--source", tmp_path / "two.streams", "--images", tmp_path / "d",
                 "--model", models["onnx"], "--no-show", "--json", js, "--summary", summ, "--batch", 4,
                 "--save-masks", tmp_path / "m", "--output", f"{out}/")
    assert rc == 0
    lines = [json.loads(line) for line in js.read_text().splitlines()]
    by_stream = {k: [r for r in lines if r["stream"] == k] for k in range(4)}
    assert len(lines) == 23 + 9 + 7 + 12
    assert [r["frame"] for r in by_stream[0]] == list(range(23))  # in order, each once
    assert [r["frame"] for r in by_stream[1]] == list(range(9))
    assert [r["name"] for r in by_stream[2]] == names_c and [r["name"] for r in by_stream[3]] == names_d
    assert by_stream[1][0]["source_size"] == [48, 48] and by_stream[3][0]["source_size"] == [40, 30]
    assert {len({r["stream"] for r in lines[i:i + 8]}) for i in range(0, 16, 8)} != {1}  # streams interleave
    s = json.loads(summ.read_text())
    assert s["frames"] == 51 and [st["frames"] for st in s["streams"]] == [23, 9, 7, 12]
    assert [st["stream"] for st in s["streams"]] == [0, 1, 2, 3] and s["streams"][3]["name"].startswith("images")
    assert all(set(st["latency_ms"]) == set(s["latency_ms"]) for st in s["streams"])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["stream0", "stream1", "stream2", "stream3"]
    assert len(list((tmp_path / "m" / "stream3").glob("*.npz"))) == 12
    for k, n in enumerate([23, 9, 7, 12]):  # one video per stream, every frame in it
        cap = cv2.VideoCapture(str(out / f"stream{k}.mp4"))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n


def test_a_dropping_stream_reconnects_while_the_others_run(models, tmp_path, capsys):
    names = _image_folder(tmp_path / "imgs", 6)
    with MJPEGServer(frames_per_connection=8, fps=100, max_connections=2) as server:
        js = tmp_path / "f.jsonl"
        rc = run_cli("--source", server.url, "--source", tmp_path / "imgs", "--model", models["onnx"], "--no-show",
                     "--reconnect", 1, "--json", js, "--summary", tmp_path / "s.json")
    assert rc == 1  # the stream was lost for good after its one reconnect; the folder finished
    s = json.loads((tmp_path / "s.json").read_text())
    live, imgs = s["streams"]
    assert live["live"] and live["reconnects"] == 1 and "reconnect attempts failed" in live["lost"]
    assert imgs["frames"] == 6 and imgs["lost"] is None
    lines = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["name"] for r in lines if r["stream"] == 1] == names
    assert "reconnect attempts failed" in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [
    (["--source", "no/such/clip.mp4"], "video file not found: no/such/clip.mp4"),
    (["--source", "demo", "--source", "no/such/dir/"], "no such file or folder"),
    (["--source", "{tmp}/x.streams"], "cannot read streams file"),
    (["--source", "demo", "--source", "demo", "--output", "{tmp}/o.mp4"], "need a pattern with {stream}"),
    (["--demo", "--serve", "localhost"], "expected HOST:PORT"),
])
def test_bad_sources_fail_fast_with_one_line(models, tmp_path, capsys, args, msg):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run_cli(*args, "--model", models["onnx"], "--max-frames", 2, "--no-show") == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and err.count("\n") == 1
