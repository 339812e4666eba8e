"""Triton Inference Server: ``export/to_triton.py`` repositories and ``runtime-explain --model
triton://...`` against a real server.

The config tests parse every written ``config.pbtxt`` with Triton's own ModelConfig protobuf
(``tritonclient.grpc.model_config_pb2``) and need no server. The server tests run the
``tritonserver`` binary of the ``nvidia-pytriton`` wheel (:class:`wysiwyc.export.triton.LocalServer`)
on 127.0.0.1 with free ports, on a repository written with ``--backend python`` from the
bundled demo export; they are skipped, with the reason, where that binary cannot start, and
never talk to anything but that server. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _helpers import ROOT, load_script

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (the triton extra)")

DEMO_ONNX = ROOT / "src" / "wysiwyc" / "assets" / "shapes_explainer.onnx"
NAME = "shapes_explainer"
RUNTIME = [sys.executable, str(ROOT / "runtime" / "explain.py")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def to_triton(*argv: str) -> int:
    return load_script("export/to_triton.py").main([str(a) for a in argv])


def parse(entry: Path):
    from wysiwyc.export.triton import read_config_text

    return read_config_text((entry / "config.pbtxt").read_text(encoding="utf-8"))


def demo_spec_json() -> str:
    from wysiwyc.modelfile import SPEC_KEY, onnx_metadata

    return onnx_metadata(DEMO_ONNX)[SPEC_KEY]


def fake_onnx(path: Path, outputs: dict[str, tuple[int, list]], meta: dict[str, str], size: int = 8) -> Path:
    """An ONNX whose declared inputs and outputs are what a test needs (its nodes only name
    them: the config is read off the declarations, and this graph never runs)."""
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])]
    outs = [helper.make_tensor_value_info(n, t, shape) for n, (t, shape) in outputs.items()]
    nodes = [helper.make_node("Identity", ["images"], [n]) for n in outputs]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs))
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


# -- the repository (no server) -------------------------------------------------------------------
def test_python_backend_entry_parses_with_tritons_model_config(tmp_path):
    assert to_triton(DEMO_ONNX, "-o", tmp_path / "repo", "--backend", "python", "--threads", "1") == 0
    entry = tmp_path / "repo" / NAME
    cfg = parse(entry)
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == (NAME, "python", 16)
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("images", [3, 64, 64])]
    assert [(o.name, list(o.dims), o.label_filename) for o in cfg.output] == [
        ("logits", [6], "labels.txt"), ("masks", [6, 64, 64], "")]
    from tritonclient.grpc import model_config_pb2 as pb

    assert {i.data_type for i in cfg.input} | {o.data_type for o in cfg.output} == {pb.TYPE_FP32}
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, pb.ModelInstanceGroup.KIND_CPU)]
    from wysiwyc.spec import ModelSpec

    assert ModelSpec.from_json(cfg.parameters["wysiwyc.spec"].string_value) == ModelSpec.from_json(demo_spec_json())
    assert cfg.parameters["intra_op_thread_count"].string_value == "1"
    spec = json.loads(cfg.parameters["wysiwyc.spec"].string_value)
    assert (entry / "labels.txt").read_text().splitlines() == spec["class_names"]
    assert (entry / "1" / "model.onnx").read_bytes() == DEMO_ONNX.read_bytes()
    compile((entry / "1" / "model.py").read_text(), "model.py", "exec")  # valid Python
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [NAME]  # no temporaries left


def test_onnxruntime_entry_with_the_tensorrt_accelerator_parses(tmp_path):
    assert to_triton(DEMO_ONNX, "-o", tmp_path, "--name", "gpu_model", "--kind", "KIND_GPU", "--instances", "2",
                     "--trt-accelerator", "--no-dynamic-batching", "--max-batch-size", "8") == 0
    from tritonclient.grpc import model_config_pb2 as pb

    cfg = parse(tmp_path / "gpu_model")
    assert (cfg.backend, cfg.default_model_filename, cfg.max_batch_size) == ("onnxruntime", "model.onnx", 8)
    assert not cfg.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, pb.ModelInstanceGroup.KIND_GPU)]
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    assert (tmp_path / "gpu_model" / "1" / "model.onnx").is_file()
    assert not (tmp_path / "gpu_model" / "1" / "model.py").exists()


def _fake_engine(tmp_path: Path, batch: dict[str, int], with_onnx: bool = True) -> Path:
    """An .engine (bytes that are never deserialised here) with its sidecar, built 'from' the
    demo ONNX."""
    from wysiwyc.fileio import file_sha256
    from wysiwyc.modelfile import read_spec
    from wysiwyc.sidecar import write_sidecar

    engine = tmp_path / "demo.engine"
    engine.write_bytes(b"not a real plan")
    machine = {"trt_version": "10.9.0", "gpu_name": "NVIDIA H100", "compute_capability": "9.0"}
    src = DEMO_ONNX if with_onnx else tmp_path / "gone.onnx"
    write_sidecar(engine, machine, read_spec(DEMO_ONNX), graph="fused", precision="fp16", batch=batch,
                  source_onnx=str(src), source_onnx_sha256=file_sha256(DEMO_ONNX))
    return engine


def test_tensorrt_entry_from_an_engine_and_its_sidecar_parses(tmp_path):
    engine = _fake_engine(tmp_path, {"min": 1, "opt": 4, "max": 8})
    assert to_triton(engine, "-o", tmp_path / "repo") == 0
    from tritonclient.grpc import model_config_pb2 as pb

    cfg = parse(tmp_path / "repo" / "demo")
    assert (cfg.backend, cfg.default_model_filename, cfg.max_batch_size) == ("tensorrt", "model.plan", 8)
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4]  # the profile's OPT
    assert [g.kind for g in cfg.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    assert [list(o.dims) for o in cfg.output] == [[6], [6, 64, 64]]
    assert (tmp_path / "repo" / "demo" / "1" / "model.plan").read_bytes() == b"not a real plan"


def test_a_fixed_batch_engine_is_served_with_its_batch_and_max_batch_size_0(tmp_path):
    engine = _fake_engine(tmp_path, {"min": 4, "opt": 4, "max": 4}, with_onnx=False)  # dims from the spec
    assert to_triton(engine, "-o", tmp_path / "repo") == 0
    cfg = parse(tmp_path / "repo" / "demo")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [list(i.dims) for i in cfg.input] == [[4, 3, 64, 64]]
    assert [list(o.dims) for o in cfg.output] == [[4, 6], [4, 6, 64, 64]]


def test_a_top_k_graph_gets_its_int64_classes_output_and_odd_class_names_survive(tmp_path):
    from onnx import TensorProto

    from wysiwyc.spec import ModelSpec

    names = [f"c{i}" for i in range(38)] + ['café "quoted" \\ back', "✓ tick"]
    spec = ModelSpec(class_names=names, image_size=(8, 8), kind="explainer")
    src = fake_onnx(tmp_path / "topk.onnx", {"logits": (TensorProto.FLOAT, ["batch", 40]),
                                             "classes": (TensorProto.INT64, ["batch", 5]),
                                             "masks": (TensorProto.FLOAT, ["batch", 5, 8, 8])},
                    {"wysiwyc.spec": spec.to_json(), "wysiwyc.graph": "fused", "wysiwyc.precision": "fp32"})
    assert to_triton(src, "-o", tmp_path / "repo", "--preferred-batch-size", "8", "4") == 0
    from tritonclient.grpc import model_config_pb2 as pb

    cfg = parse(tmp_path / "repo" / "topk")
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [
        ("logits", pb.TYPE_FP32, [40]), ("classes", pb.TYPE_INT64, [5]), ("masks", pb.TYPE_FP32, [5, 8, 8])]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert json.loads(cfg.parameters["wysiwyc.spec"].string_value)["class_names"] == names
    assert (tmp_path / "repo" / "topk" / "labels.txt").read_text(encoding="utf-8").splitlines() == names


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("case", ["foreign_onnx", "masks_graph", "unknown_backend", "engine_for_onnxruntime",
                                  "accelerator_on_python", "cpu_tensorrt", "bad_preferred", "missing"])
def test_user_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, case):
    import onnx

    repo = tmp_path / "repo"
    src, extra = DEMO_ONNX, []
    if case == "foreign_onnx":
        model = onnx.load(str(DEMO_ONNX))
        del model.metadata_props[:]
        onnx.save(model, str(src := tmp_path / "foreign.onnx"))
    elif case == "masks_graph":
        model = onnx.load(str(DEMO_ONNX))
        for p in model.metadata_props:
            if p.key == "wysiwyc.graph":
                p.value = "masks"
        onnx.save(model, str(src := tmp_path / "masks.onnx"))
    elif case == "engine_for_onnxruntime":
        src, extra = _fake_engine(tmp_path, {"min": 1, "opt": 4, "max": 8}), ["--backend", "onnxruntime"]
    elif case == "cpu_tensorrt":
        src, extra = _fake_engine(tmp_path, {"min": 1, "opt": 4, "max": 8}), ["--kind", "KIND_CPU"]
    elif case == "missing":
        src = tmp_path / "nothing.onnx"
    extra += {"unknown_backend": ["--backend", "tflite"], "accelerator_on_python": ["--backend", "python",
              "--trt-accelerator"], "bad_preferred": ["--preferred-batch-size", "64"]}.get(case, [])
    assert to_triton(src, "-o", repo, *extra) == 2
    _one_line_error(capsys)
    assert not repo.exists() or not any(repo.iterdir())


def test_an_existing_entry_needs_force_and_a_failed_write_leaves_the_old_one(tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    assert to_triton(DEMO_ONNX, "-o", repo, "--backend", "python") == 0
    before = (repo / NAME / "config.pbtxt").read_text()
    capsys.readouterr()
    assert to_triton(DEMO_ONNX, "-o", repo) == 2
    assert "--force" in _one_line_error(capsys)
    import wysiwyc.export.triton as tr

    def broken_copy(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tr.shutil, "copyfile", broken_copy)
    assert to_triton(DEMO_ONNX, "-o", repo, "--force") == 2  # fails while writing the new entry
    assert "No space left" in _one_line_error(capsys)
    assert (repo / NAME / "config.pbtxt").read_text() == before  # the old entry, whole
    assert sorted(p.name for p in repo.iterdir()) == [NAME]  # and no temporaries
    monkeypatch.undo()
    assert to_triton(DEMO_ONNX, "-o", repo, "--force", "--no-dynamic-batching") == 0
    assert parse(repo / NAME).backend == "onnxruntime" and sorted(p.name for p in repo.iterdir()) == [NAME]


def test_triton_urls_route_to_the_triton_backend_and_an_absent_server_is_one_line_exit_2(tmp_path):
    from wysiwyc.export.triton import free_port
    from wysiwyc.runtime.backends import BACKENDS, ModelError, open_backend
    from wysiwyc.runtime.backends.triton import TritonBackend, parse_url

    assert BACKENDS["triton"] is TritonBackend
    assert parse_url("triton://10.0.0.5/m") == ("10.0.0.5", 8001, "m", "")
    assert parse_url("triton://[::1]:9001/m/3") == ("::1", 9001, "m", "3")
    for bad in ("triton://host", "triton://host:x/m", "triton://host:1/m/v/x", "triton://host:1/m/latest"):
        with pytest.raises(ModelError):
            parse_url(bad)
    url = f"triton://127.0.0.1:{free_port()}/{NAME}"
    with pytest.raises(ModelError, match="not reachable"):
        open_backend(url)
    r = subprocess.run([*RUNTIME, "--model", url, "--demo", "--max-frames", "4", "--no-show"], capture_output=True,
                       text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not reachable" in r.stderr


# -- a real server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The bundled demo export behind ``--backend python`` on a local tritonserver (skipped,
    with the reason, where the binary cannot start; a model that does not load fails)."""
    from wysiwyc.export.triton import LocalServer, ServerStartError

    repo = tmp_path_factory.mktemp("triton") / "repo"
    assert to_triton(DEMO_ONNX, "-o", repo, "--backend", "python", "--threads", "1") == 0
    server = LocalServer(repo)
    try:
        server.start()
    except ServerStartError as exc:
        server.close()
        pytest.skip(f"tritonserver cannot start here: {exc}")
    if not server.wait_ready(120):
        log = server.log_tail()
        server.close()
        pytest.fail(f"tritonserver is live but {NAME} did not load:\n{log}")
    yield server
    server.close()


def _url(server) -> str:
    return f"triton://{server.grpc_url}/{NAME}"


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.slow
def test_the_served_model_matches_local_onnxruntime_on_the_same_batch(served):
    """21 frames of three sizes: two requests (max_batch_size 16), both ways in (an array, and
    the pipeline's preprocess -> infer), logits and masks within 1e-5 of ONNX Runtime here."""
    from wysiwyc.runtime.backends import open_backend

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (120, 160), (48, 80)] * 7]
    with open_backend(DEMO_ONNX, provider="cpu") as local, open_backend(_url(served)) as remote:
        assert remote.spec == local.spec and remote.name.startswith(f"triton {served.grpc_url}/{NAME}")
        x = local.preprocess(frames)
        want_logits, want_masks = local(x)
        got_logits, got_masks = remote(x)
        assert got_masks.shape == want_masks.shape == (21, 6, 64, 64)
        assert _max_diff(got_logits, want_logits) <= 1e-5 and _max_diff(got_masks, want_masks) <= 1e-5
        logits, masks = remote.infer(remote.preprocess(frames))  # the pipeline's way: sent in preprocess
        assert _max_diff(logits, want_logits) <= 1e-5 and _max_diff(remote.raw_masks(masks), want_masks) <= 1e-5
        assert remote.faults()["outages"] == 0


def _run(args: list, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*RUNTIME, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=cwd)


@pytest.mark.slow
def test_runtime_explain_on_four_streams_via_triton_matches_the_local_run(served, tmp_path):
    common = ["--source", "demo"] * 4 + ["--max-frames", 96, "--no-show"]
    remote = _run(["--model", _url(served), *common, "--save-masks", tmp_path / "remote", "--summary",
                   tmp_path / "remote.json"], tmp_path)
    local = _run(["--model", DEMO_ONNX, "--provider", "cpu", *common, "--save-masks", tmp_path / "local"], tmp_path)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    summary = json.loads((tmp_path / "remote.json").read_text())
    assert summary["frames"] == 96 and len(summary["streams"]) == 4
    assert summary["model"]["backend"].startswith("triton ") and summary["model"]["path"] == _url(served)
    assert summary["server"]["outages"] == 0 and summary["server"]["frames_lost"] == 0
    compared = 0
    for f in sorted((tmp_path / "remote").glob("stream*/*.npz")):
        twin = tmp_path / "local" / f.parent.name / f.name
        if not twin.is_file():
            continue  # the other run's batches took this stream's frames in another order
        with np.load(f) as got, np.load(twin) as want:
            assert _max_diff(got["probs"], want["probs"]) <= 1e-5
            # uint8 files of float masks within 1e-5: equal, or one step apart at a rounding edge
            assert _max_diff(got["masks"], want["masks"]) <= 1
            compared += 1
    assert compared >= 48, compared


@pytest.mark.slow
def test_an_unknown_model_on_a_live_server_is_one_line_exit_2_naming_the_models(served, tmp_path):
    r = _run(["--model", f"triton://{served.grpc_url}/nope", "--demo", "--max-frames", 4, "--no-show"], tmp_path,
             timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "'nope' is not ready" in r.stderr and NAME in r.stderr


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _served_images(server) -> int:
    """Images the server has inferred so far (its statistics; the run's own files are
    written in blocks, so they are no clock)."""
    import tritonclient.grpc as grpc

    try:
        with grpc.InferenceServerClient(server.grpc_url) as client:
            stats = client.get_inference_statistics(NAME, as_json=True, client_timeout=5)
        return int(stats["model_stats"][0].get("inference_count", 0))
    except Exception:  # not up (yet)
        return 0


@pytest.mark.slow
def test_the_runtime_rides_out_a_server_restart_and_counts_the_frames_lost(served, tmp_path):
    """Four live (--realtime) demo streams; the server is killed (SIGKILL, stubs and all)
    once frames flow, and started again on the same ports: the run waits, reconnects, sends
    the failed requests again and finishes; the frames the streams dropped meanwhile are lost,
    and counted. Last in this file: the server is a new process afterwards."""
    frames = tmp_path / "frames.jsonl"
    start = _served_images(served)  # the other tests' images
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([*RUNTIME, "--model", _url(served), *(["--source", "demo"] * 4), "--realtime",
                                 "--max-frames", "1200", "--no-show", "--json", str(frames), "--summary",
                                 str(tmp_path / "s.json"), "--triton-retry", "120"],
                                stdout=out, stderr=err, env=ENV, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 90
            while _served_images(served) < start + 120 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proc.poll() is None and _served_images(served) >= start + 120, "the run did not get going"
            served.kill()
            time.sleep(1.0)
            served.start()
            assert served.wait_ready(120), served.log_tail()
            rc = proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    stderr = (tmp_path / "err.txt").read_text()
    assert rc == 0, stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["frames"] == 1200 and _lines(frames) == 1200
    srv = s["server"]
    assert srv["outages"] >= 1 and srv["requests_resent"] >= 1 and srv["outage_seconds"] >= 1.0, srv
    assert 0 < srv["frames_lost"] <= s["source"]["dropped"], (srv, s["source"])
    assert "is away" in stderr and "is back after" in stderr
    assert f"frames lost {srv['frames_lost']}" in (tmp_path / "out.txt").read_text()
