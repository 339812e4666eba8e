"""The runtime's GPU path, checked on the CPU wherever the logic allows: ONNX Runtime
IOBinding (parity with a plain run, buffers reused), the TensorRT provider's options,
batch profiles for engines (static batch included), the engine runner's chunking and
pinned staging buffers (with a fake engine), and batch-wide mask upsampling. What needs a
GPU is skipped with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from wysiwyc.errors import UserError
from wysiwyc.formats import DEFAULT_BATCH_PROFILE, plan_batch_profile
from wysiwyc.runtime.backends import open_backend
from wysiwyc.runtime.backends.base import group_by_shape
from wysiwyc.runtime.backends.onnxruntime import (default_trt_cache, session_providers, tensorrt_provider_options,
                                                   user_cache_dir)
from wysiwyc.runtime.batching import batch_plan
from wysiwyc.runtime.backends.tensorrt import TensorRTEngine, plan_chunks

ort = pytest.importorskip("onnxruntime")
DEMO_ONNX = "src/wysiwyc/assets/shapes_explainer.onnx"


@pytest.fixture(scope="module")
def demo_onnx(request):
    return request.config.rootpath / DEMO_ONNX


# -- ONNX Runtime IOBinding ---------------------------------------------------------------
def test_iobinding_matches_plain_run_and_reuses_its_buffers(demo_onnx):
    bound, plain = open_backend(demo_onnx, iobinding=True), open_backend(demo_onnx, iobinding=False)
    assert bound.name == "onnxruntime CPUExecutionProvider (IOBinding)" and bound.runner is not None
    assert plain.name == "onnxruntime CPUExecutionProvider" and plain.runner is None
    rng = np.random.default_rng(0)
    xs = [rng.random((3, 3, 64, 64), dtype=np.float32) for _ in range(2)] + [rng.random((5, 3, 64, 64), np.float32)]
    got = [bound(x) for x in xs]
    for x, (lb, mb) in zip(xs, got):
        lp, mp = plain(x)
        assert lb.shape == lp.shape and mb.shape == mp.shape == (x.shape[0], 6, 64, 64)
        np.testing.assert_array_equal(lb, lp)
        np.testing.assert_array_equal(mb, mp)
    # the first result was not overwritten by the later runs through the same bound buffers
    np.testing.assert_array_equal(got[0][0], plain(xs[0])[0])
    # input + 2 outputs for batch 3 (once, reused for the second call), again for batch 5
    assert bound.runner.allocations == 6
    bound(xs[2])
    assert bound.runner.allocations == 6


def test_iobinding_is_default_only_on_a_gpu_provider(demo_onnx):
    be = open_backend(demo_onnx)
    assert be.runner is None and be.trt_options is None  # CPU: a plain run is cheaper


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="needs onnxruntime-gpu and a CUDA GPU (pip install 'wysiwyc[gpu]')")
def test_iobinding_on_cuda_matches_the_cpu(demo_onnx):
    cuda, cpu = open_backend(demo_onnx, provider="cuda"), open_backend(demo_onnx, provider="cpu")
    assert cuda.runner is not None and cuda.runner.device_type == "cuda"
    x = np.random.default_rng(1).random((4, 3, 64, 64), dtype=np.float32)
    (lg, mg), (lc, mc) = cuda(x), cpu(x)
    assert np.abs(lg - lc).max() < 1e-3 and np.abs(mg - mc).max() < 1e-3


# -- TensorRT provider options --------------------------------------------------------------
def test_tensorrt_provider_options(tmp_path):
    opts = tensorrt_provider_options("fp32", (3, 64, 64), (1, 8, 8), cache_dir=tmp_path)
    assert opts == {
        "trt_fp16_enable": "true", "trt_engine_cache_enable": "true", "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": "true", "trt_timing_cache_path": str(tmp_path),
        "trt_profile_min_shapes": "images:1x3x64x64", "trt_profile_opt_shapes": "images:8x3x64x64",
        "trt_profile_max_shapes": "images:8x3x64x64"}
    assert tensorrt_provider_options("fp32", (3, 64, 64), (1, 8, 8), cache_dir=tmp_path,
                                     fp16=False)["trt_fp16_enable"] == "false"
    # an fp16 export stays fp16 whatever --no-fp16 says; an int8 (QDQ) export needs int8 mode
    assert tensorrt_provider_options("fp16", (3, 64, 64), (1, 8, 8), fp16=False)["trt_fp16_enable"] == "true"
    int8 = tensorrt_provider_options("int8", (3, 224, 224), (1, 4, 16), cache_dir=tmp_path)
    assert int8["trt_int8_enable"] == "true" and int8["trt_fp16_enable"] == "true"
    assert int8["trt_profile_max_shapes"] == "images:16x3x224x224"
    # a static-batch graph has one shape: no profile to give
    static = tensorrt_provider_options("fp32", (3, 64, 64), (1, 8, 8), static_batch=4, cache_dir=tmp_path)
    assert not any(k.startswith("trt_profile") for k in static)
    # the default cache is under the user cache dir
    assert tensorrt_provider_options("fp32", (3, 64, 64), (1, 1, 1))["trt_engine_cache_path"] == str(default_trt_cache())


def test_onnx_backend_reads_the_provider_options_from_the_model(demo_onnx, tiny_explainer, tmp_path):
    pytest.importorskip("onnx")
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint
    from wysiwyc.runtime.backends.onnxruntime import OnnxBackend

    cache = tmp_path / "cache" / "trt"
    opts = OnnxBackend(demo_onnx, trt_cache=cache, batch_range=(1, 4, 8))._tensorrt_options(ort)
    assert cache.is_dir() and opts["trt_engine_cache_path"] == str(cache)
    assert opts["trt_fp16_enable"] == "true" and "trt_int8_enable" not in opts  # the bundled model is fp32
    assert (opts["trt_profile_min_shapes"], opts["trt_profile_opt_shapes"], opts["trt_profile_max_shapes"]) == (
        "images:1x3x64x64", "images:4x3x64x64", "images:8x3x64x64")
    static = tmp_path / "b4.onnx"
    export_checkpoint(tiny_explainer, static, ExportOptions(dynamic_batch=False, batch=4))
    opts = OnnxBackend(static, trt_cache=cache, fp16=False)._tensorrt_options(ort)
    assert opts["trt_fp16_enable"] == "false" and not any(k.startswith("trt_profile") for k in opts)
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="cannot create the TensorRT engine cache .*--trt-cache DIR"):
        OnnxBackend(demo_onnx, trt_cache=tmp_path / "afile" / "x")._tensorrt_options(ort)


@pytest.mark.skipif("TensorrtExecutionProvider" not in ort.get_available_providers(),
                    reason="needs onnxruntime-gpu with TensorRT and a CUDA GPU")
def test_tensorrt_provider_gets_the_options_and_fills_the_cache(demo_onnx, tmp_path):
    be = open_backend(demo_onnx, provider="tensorrt", trt_cache=tmp_path, batch_range=(1, 4, 8))
    assert be.provider == "TensorrtExecutionProvider" and be.runner is not None
    got = be.session.get_provider_options()["TensorrtExecutionProvider"]
    assert got["trt_fp16_enable"] == "1" and got["trt_engine_cache_enable"] == "1"
    x = np.random.default_rng(3).random((8, 3, 64, 64), dtype=np.float32)
    lt, _ = be(x)
    lc, _ = open_backend(demo_onnx, provider="cpu")(x)
    assert np.abs(lt - lc).max() < 5e-2  # fp16
    assert any(tmp_path.iterdir())  # the engine is cached for the next start


def test_user_cache_dir_follows_xdg(monkeypatch, tmp_path):
    import sys

    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG_CACHE_HOME is the Linux convention")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "wysiwyc" and default_trt_cache() == tmp_path / "wysiwyc" / "tensorrt"


def test_batch_plan_profile_and_providers():
    assert batch_plan(8, 1).profile == (1, 8, 8)
    assert batch_plan(1, 4).profile == (1, 1, 4)  # 4 live streams: up to 4 frames a batch
    assert batch_plan(8, 12).profile == (1, 8, 12)
    opts = {"trt_fp16_enable": "true"}
    assert session_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], opts) == [
        ("TensorrtExecutionProvider", opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert session_providers(["CPUExecutionProvider"], None) == ["CPUExecutionProvider"]


# -- engine batch profiles --------------------------------------------------------------------
def test_batch_profile_plan():
    assert plan_batch_profile(None) == DEFAULT_BATCH_PROFILE == (1, 1, 16)
    assert plan_batch_profile(None, (1, 2, 8)) == (1, 2, 8)
    assert plan_batch_profile(4) == (4, 4, 4)  # static-batch ONNX: N/N/N
    assert plan_batch_profile(4, (4, 4, 4)) == (4, 4, 4)
    with pytest.raises(UserError, match="fixed batch of 4 .*built for 4 4 4"):
        plan_batch_profile(4, (1, 1, 16))
    with pytest.raises(UserError, match="1 ≤ MIN ≤ OPT ≤ MAX, got 4 2 8"):
        plan_batch_profile(None, (4, 2, 8))


def test_static_batch_onnx_builds_a_matching_profile(tiny_explainer, tiny_onnx, tmp_path):
    pytest.importorskip("onnx")
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint
    from wysiwyc.export.tensorrt import _check_request, onnx_static_batch

    static = tmp_path / "b4.onnx"
    export_checkpoint(tiny_explainer, static, ExportOptions(dynamic_batch=False, batch=4))
    assert onnx_static_batch(static) == 4 and onnx_static_batch(tiny_onnx) is None
    assert _check_request(static, None, 2.0)[1] == (4, 4, 4)
    assert _check_request(tiny_onnx, None, 2.0)[1] == (1, 1, 16)
    assert _check_request(tiny_onnx, (1, 4, 8), 2.0)[1] == (1, 4, 8)
    with pytest.raises(UserError, match="fixed batch of 4"):
        _check_request(static, (1, 1, 16), 2.0)


# -- the TensorRT engine runner ---------------------------------------------------------------
def test_plan_chunks():
    assert plan_chunks(3, (1, 4, 8)) == [(0, 3, 3)]
    assert plan_chunks(8, (1, 4, 8)) == [(0, 8, 8)]
    assert plan_chunks(19, (1, 4, 8)) == [(0, 8, 8), (8, 16, 8), (16, 19, 3)]
    assert plan_chunks(6, (4, 4, 4)) == [(0, 4, 4), (4, 6, 4)]  # static batch: the last piece padded
    assert plan_chunks(1, (2, 2, 16)) == [(0, 1, 2)]  # below the profile minimum: padded
    assert plan_chunks(0, (1, 1, 16)) == []


class FakeEngine(TensorRTEngine):
    """The runner's host side with the CUDA/TensorRT part replaced by numpy: logits are
    (sum of the image, its first pixel), masks the first two channels doubled."""

    def __init__(self, profile: tuple[int, int, int]) -> None:  # no TensorRT, no CUDA
        self.profile = [(b, 3, 2, 2) for b in profile]
        self.input_dtype = np.float32
        self.output_dtypes = {"logits": np.float32, "masks": np.float32}
        self._buffers, self._pinned, self.stream = {}, {}, None
        self.runs: list[int] = []
        self.pinned_allocs = 0

    def _pinned_alloc(self, nbytes):
        self.pinned_allocs += 1
        buf = np.zeros(nbytes, np.uint8)
        return buf.ctypes.data, buf

    def _pinned_free(self, ptr):
        pass

    def _execute(self, staged):
        n = staged.shape[0]
        lo, _, hi = self.batch_profile
        assert lo <= n <= hi and staged.base is not None  # a view of the pinned buffer
        self.runs.append(n)
        logits = self._host("logits", (n, 2), np.float32)
        logits[:, 0], logits[:, 1] = staged.sum(axis=(1, 2, 3)), staged[:, 0, 0, 0]
        masks = self._host("masks", (n, 2, 2, 2), np.float32)
        masks[:] = staged[:, :2] * 2
        return {"logits": logits, "masks": masks}


def _expected(x):
    return np.stack([x.sum(axis=(1, 2, 3)), x[:, 0, 0, 0]], 1), x[:, :2] * 2


@pytest.mark.parametrize("profile, n, runs", [((1, 4, 8), 19, [8, 8, 3]), ((4, 4, 4), 6, [4, 4]),
                                              ((1, 1, 16), 5, [5]), ((2, 2, 8), 1, [2])])
def test_engine_runner_chunks_pads_and_reuses_pinned_buffers(profile, n, runs):
    eng = FakeEngine(profile)
    x = np.random.default_rng(n).random((n, 3, 2, 2), dtype=np.float32)
    logits, masks = eng(x)
    exp_l, exp_m = _expected(x)
    np.testing.assert_allclose(logits, exp_l, rtol=1e-6)
    np.testing.assert_array_equal(masks, exp_m)
    assert eng.runs == runs
    allocs = eng.pinned_allocs
    assert allocs == 3  # images, logits, masks: once each
    first = logits.copy()
    for _ in range(3):  # same batch again: no new pinned buffer, earlier results untouched
        eng(x[::-1].copy())
    assert eng.pinned_allocs == allocs
    np.testing.assert_array_equal(logits, first)


# -- batch-wide postprocessing ----------------------------------------------------------------
def test_group_by_shape():
    frames = [np.zeros((4, 6, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)]
    assert group_by_shape(frames) == [((4, 6, 3), [0, 2]), ((8, 8, 3), [1])]


def test_masks_for_batch_matches_per_frame(demo_onnx):
    be = open_backend(demo_onnx)
    x = np.random.default_rng(2).random((3, 3, 64, 64), dtype=np.float32)
    _, masks = be.infer(x)
    picks = [([1, 0], (96, 80)), ([], (64, 64)), ([5], (128, 128))]
    got = be.masks_for_batch(masks, picks)
    for i, (classes, size) in enumerate(picks):
        assert got[i].shape == (len(classes), *size)
        np.testing.assert_array_equal(got[i], be.masks_for(masks, i, classes, size))


def test_pipeline_waits_for_the_device_once_per_batch_in_infer(demo_onnx):
    """A device backend is synchronised once per batch, inside the infer stage (so the device
    time is measured as inference), and its masks are upsampled batch by batch."""
    import threading

    from wysiwyc.runtime.backends.onnxruntime import OnnxBackend
    from wysiwyc.runtime.overlay import Overlay
    from wysiwyc.runtime.pipeline import Pipeline, RunOptions
    from wysiwyc.runtime.reader import FrameStream
    from wysiwyc.runtime.sources import DemoSource

    class DeviceSpy(OnnxBackend):
        def __init__(self, path):
            super().__init__(path)
            self.calls: list[str] = []

        def _open(self):
            super()._open()
            self.masks_on_device = True  # as the torch backend on CUDA

        def _run(self, x):
            self.calls.append(f"run {threading.current_thread().name}")
            return super()._run(x)

        def synchronize(self):
            self.calls.append(f"sync {threading.current_thread().name}")

        def masks_for_batch(self, masks, picks):
            self.calls.append(f"masks {len(picks)}")
            return super().masks_for_batch(masks, picks)

    be = DeviceSpy(demo_onnx).open()
    cond = threading.Condition()
    streams = [FrameStream(DemoSource(size=64, seed=k), cond=cond, stream_id=k) for k in range(2)]
    from wysiwyc.runtime.outputs import Output

    class Drawn(Output):  # shows the overlay, so the masks are upsampled and drawn
        draws = True

    res = Pipeline(streams, be, Overlay(list(be.spec.class_names)), [Drawn()],
                   RunOptions(max_frames=24, batch=4)).run()
    assert res.frames == 24
    runs = [c for c in be.calls if c.startswith("run")]
    syncs = [c for c in be.calls if c.startswith("sync")]
    masks = [int(c.split()[1]) for c in be.calls if c.startswith("masks")]
    assert len(runs) == len(syncs) == len(masks) == res.batches  # once per batch, never per frame
    assert set(syncs) == {"sync wysiwyc-infer"} and sum(masks) == 24
    # each batch: its model run, then its device wait, before anything downstream sees it
    order = [c.split()[0] for c in be.calls if not c.startswith("masks")]
    assert order == ["run", "sync"] * res.batches


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _cuda(), reason="needs torch with a CUDA GPU")
def test_torch_cuda_batch_upload_and_mask_upsampling_match_the_cpu(request):
    from wysiwyc.runtime.imageops import frames_to_batch

    pt = request.config.rootpath / "src/wysiwyc/assets/shapes_explainer.pt"
    gpu, cpu = open_backend(pt, device="cuda", fp16=False), open_backend(pt, device="cpu")
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((64, 64, 3), (48, 40, 3), (64, 64, 3))]
    for _ in range(2):  # the second batch reuses the pinned buffer
        x = gpu.preprocess(frames).cpu().numpy()
        ref = frames_to_batch(frames, (64, 64))
        assert np.abs(x[[0, 2]] - ref[[0, 2]]).max() < 1e-6  # same size: no resize, exact, in order
        assert np.abs(x[1] - ref[1]).mean() < 2e-2  # resized on the GPU (bilinear) vs on the CPU
    _, masks = gpu.infer(gpu.preprocess(frames))
    gpu.synchronize()
    picks = [([0, 3], (96, 96)), ([], (64, 64)), ([5], (128, 100))]
    got = gpu.masks_for_batch(masks, picks)
    ref = cpu.masks_for_batch(masks.cpu(), picks)  # the CPU torch path on the same masks
    for g, r in zip(got, ref):
        assert g.shape == r.shape and (g.size == 0 or np.abs(g - r).max() < 2e-3)
