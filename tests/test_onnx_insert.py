"""ReciproCAM inserted into a user's ONNX classifier without torch (wysiwyc.export.onnx_insert):
the torch route's logits and masks, the CLI end to end, one-line errors with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from wysiwyc.attribution.reciprocam import ReciproCAMHead, mosaic_weights as torch_mosaic_weights  # noqa: E402
from wysiwyc.export.onnx_insert import insert_reciprocam, mosaic_weights  # noqa: E402
from wysiwyc.models.explanandum import HookedClassifier  # noqa: E402
from wysiwyc.models.fused import FusedModel  # noqa: E402
from wysiwyc.spec import ModelSpec  # noqa: E402
from _helpers import ROOT, load_script  # noqa: E402

NAMES = ["cat", "dog", "fox", "owl", "elk"]
SIZE = 32


class TinyCNN(nn.Module):
    """convs (BatchNorm, eval) -> 8×8 map (B,16,8,8) -> global average pool -> linear (B,5)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, len(NAMES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
        # a trained classifier's spread of scores over the copies: an untrained one's class
        # maps span ~1e-4, which min-max turns float32 rounding into 1e-4 mask differences
        model.fc.weight.mul_(30.0)
    return model.eval()


def _export(model: nn.Module, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(model, (torch.rand(2, 3, SIZE, SIZE),), input_names=["input"], output_names=["out"],
                             dynamo=True, external_data=False, dynamic_shapes=({0: batch},), verbose=False)
    prog.save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = _tiny()
    return model, _export(model, tmp_path_factory.mktemp("onnx_insert") / "tiny.onnx")


def _spec(bgr: bool = False) -> ModelSpec:
    return ModelSpec(class_names=list(NAMES), image_size=(SIZE, SIZE), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                     classifier_arch="onnx", dataset="", activation="softmax", channel_order="bgr" if bgr else "rgb")


def _torch_route(model: nn.Module, spec: ModelSpec) -> FusedModel:
    """The same classifier as train/wrap_classifier.py wraps it, with the spliced head."""
    clf = HookedClassifier(model, ["features"], "factory:tests:tiny")
    return FusedModel(spec, clf, ReciproCAMHead(clf, "features")).eval()


def _images(b: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kernel", ["gaussian", "point"])
def test_mosaic_weights_are_the_torch_heads(kernel):
    for h, w in ((1, 2), (3, 3), (5, 7)):
        assert np.array_equal(mosaic_weights(h, w, kernel), torch_mosaic_weights(h, w, kernel).numpy())


@pytest.mark.parametrize("bgr", [False, True])
@pytest.mark.parametrize("top_k", [None, 2])
def test_logits_and_masks_equal_the_torch_route(tiny, tmp_path, bgr, top_k):
    model, src = tiny
    spec = _spec(bgr)
    out = tmp_path / "fused.onnx"
    meta = insert_reciprocam(src, out, spec, top_k=top_k)
    written = ModelSpec.from_json(meta["wysiwyc.spec"])
    assert (written.kind, written.classifier_arch, written.channel_order) == ("reciprocam", "onnx", spec.channel_order)
    assert written.extra["reciprocam"] == {"layer": "relu_2", "kernel": "gaussian", "score": "softmax"}
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["images"]
    outputs = ["logits", "masks"] if top_k is None else ["logits", "classes", "masks"]
    assert [o.name for o in sess.get_outputs()] == outputs
    fused = _torch_route(model, spec)
    for b in (1, 3):  # the batch stays dynamic
        x = _images(b, seed=b)
        got = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = fused(x) if top_k is None else fused.forward_topk(x, top_k)
        assert got[-1].shape == (b, top_k or len(NAMES), SIZE, SIZE)
        assert np.abs(got[0] - want[0].numpy()).max() <= 1e-4
        if top_k is not None:
            assert np.array_equal(got[1], want[1].numpy())
        assert np.abs(got[-1] - want[-1].numpy()).max() <= 1e-4


def _to_onnx():
    return load_script("export/to_onnx.py")


def _classes(tmp_path: Path, names: list[str] = NAMES) -> str:
    p = tmp_path / "classes.txt"
    p.write_text("\n".join(names) + "\n")
    return str(p)


def test_cli_writes_a_fused_graph_the_runtime_runs(tiny, tmp_path, capsys):
    from wysiwyc.runtime.backends import open_backend

    model, src = tiny
    out = tmp_path / "tiny_rc.onnx"
    args = [str(src), "--head", "reciprocam", "--classes", _classes(tmp_path), "--activation", "softmax",
            "--mean", "0.4", "0.5", "0.6", "--std", "0.2", "0.25", "0.3", "-o", str(out), "--parity-samples", "4"]
    assert _to_onnx().main(args) == 0
    assert "feature map 'relu_2' (16x8x8" in capsys.readouterr().err
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["passed"] and report["logits_max_abs_diff"] <= 1e-4 and report["n_images"] == 4
    x = _images(2, seed=9)
    with open_backend(out) as backend:
        assert backend.spec.kind == "reciprocam" and backend.spec.image_size == (SIZE, SIZE)
        logits, masks = backend(x.numpy())
    with torch.no_grad():
        want_logits, want_masks = _torch_route(model, _spec())(x)
    assert masks.shape == (2, len(NAMES), SIZE, SIZE)
    assert np.abs(logits - want_logits.numpy()).max() <= 1e-4 and np.abs(masks - want_masks.numpy()).max() <= 1e-4


def test_the_onnx_route_never_imports_torch(tiny, tmp_path):
    _, src = tiny
    out = tmp_path / "no_torch.onnx"
    argv = [str(src), "--head", "reciprocam", "--classes", _classes(tmp_path), "--activation", "sigmoid",
            "--top-k", "2", "-o", str(out), "--parity-samples", "2"]
    code = ("import sys; sys.path.insert(0, 'export'); import to_onnx; "
            f"rc = to_onnx.main({argv!r}); print(rc, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": "src"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "0 False", res.stderr
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "classes", "masks"]


# -- errors: exit 2, one line, nothing written ----------------------------------------------
def _graph_model(path: Path, nodes: list, inits: dict[str, np.ndarray], out_dims: list) -> Path:
    """A hand-made ONNX model: input ``x`` (batch,3,8,8) -> ``nodes`` -> output ``y``."""
    h = onnx.helper
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_dims)],
                         [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def _mlp(path: Path) -> Path:
    h = onnx.helper
    return _graph_model(path, [h.make_node("Flatten", ["x"], ["f"]), h.make_node("Gemm", ["f", "w", "b"], ["y"])],
                        {"w": np.ones((192, 5)), "b": np.zeros(5)}, ["batch", 5])


def _feature_map_out(path: Path) -> Path:
    h = onnx.helper
    return _graph_model(path, [h.make_node("Conv", ["x", "k"], ["y"], pads=[1, 1, 1, 1])],
                        {"k": np.ones((5, 3, 3, 3))}, ["batch", 5, 8, 8])


def _residual(path: Path) -> Path:
    """conv -> relu -> add(relu, conv) -> global pool -> linear: ``r`` sits inside the skip."""
    h = onnx.helper
    nodes = [h.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"]),
             h.make_node("Add", ["r", "c"], ["s"]), h.make_node("GlobalAveragePool", ["s"], ["p"]),
             h.make_node("Flatten", ["p"], ["f"]), h.make_node("Gemm", ["f", "w", "b"], ["y"])]
    return _graph_model(path, nodes, {"k": np.ones((4, 3, 3, 3)), "w": np.ones((4, 5)), "b": np.zeros(5)},
                        ["batch", 5])


def _junk(path: Path) -> Path:
    path.write_text("hello, not a protobuf")
    return path


GOOD = ["--head", "reciprocam", "--activation", "softmax"]


@pytest.mark.parametrize("make, n_names, flags, msg", [
    (_mlp, 5, GOOD, "no 4-D feature tensor before global pooling; name one with --reciprocam-layer"),
    (_feature_map_out, 5, GOOD, "not logits (B,C)"),
    (None, 4, GOOD, "has 5 outputs but the class names list 4"),
    (None, 5, [*GOOD, "--reciprocam-layer", "nope"], "no tensor 'nope'"),
    (_residual, 5, [*GOOD, "--reciprocam-layer", "r"], "(a skip connection)"),
    (_junk, 5, GOOD, "is not an ONNX model"),
    (None, 5, ["--head", "reciprocam"], "needs --classes FILE|imagenet and --activation"),
    (None, 5, ["--head", "explainer", "--activation", "softmax"], "an .onnx classifier takes --head reciprocam"),
])
def test_user_errors(tiny, tmp_path, capsys, make, n_names, flags, msg):
    src = make(tmp_path / "clf.onnx") if make else tiny[1]
    out = tmp_path / "bad.onnx"
    args = [str(src), *flags, "--classes", _classes(tmp_path, NAMES[:n_names]), "-o", str(out), "--parity-samples", "2"]
    assert _to_onnx().main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["classes.txt", *([src.name] if make else [])])
