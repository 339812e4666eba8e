"""ReciproCAM: the batched mosaic against a per-position loop, shapes, range, export parity."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from wysiwyc.attribution import build_method
from wysiwyc.attribution.reciprocam import mosaic_weights, reciprocam_model
from wysiwyc.models.classifiers import freeze, small_cnn
from wysiwyc.models.fused import FusedModel
from wysiwyc.spec import ModelSpec


@pytest.fixture(scope="module")
def fused() -> FusedModel:
    torch.manual_seed(0)
    clf = small_cnn(3, width=4)
    for m in clf.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    freeze(clf)
    return FusedModel(ModelSpec(class_names=["a", "b", "c"], image_size=(32, 32)), clf).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    # a 4×3 feature map: interior, edge and corner positions of the 3×3 mosaic
    return torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))


def _loop_reciprocam(fused: FusedModel, images: torch.Tensor, gaussian: bool, score: str) -> torch.Tensor:
    """The authors' formulation written out: one masked copy and one head call per image and
    position; the Gaussian weights g[di][dj] = (2-|di|)(2-|dj|)/16 placed by hand."""
    out = []
    with torch.no_grad():
        feats = fused.classifier.forward_features(fused.norm(images))["block4"]
        for fb in feats:
            n, h, w = fb.shape
            rows = []
            for i in range(h):
                for j in range(w):
                    masked = torch.zeros(1, n, h, w, dtype=fb.dtype)
                    for di in (-1, 0, 1) if gaussian else (0,):
                        for dj in (-1, 0, 1) if gaussian else (0,):
                            y, x = i + di, j + dj
                            if 0 <= y < h and 0 <= x < w:
                                g = (2 - abs(di)) * (2 - abs(dj)) / 16 if gaussian else 1.0
                                masked[0, :, y, x] = fb[:, i, j] * g
                    logits = fused.classifier.top(masked)[0]
                    rows.append({"softmax": torch.softmax(logits, 0), "sigmoid": torch.sigmoid(logits),
                                 "logit": logits}[score])
            cam = torch.stack(rows, 1).view(-1, h, w)  # (C,h,w)
            lo = cam.flatten(1).min(1).values[:, None, None]
            hi = cam.flatten(1).max(1).values[:, None, None]
            out.append((cam - lo) / (hi - lo + 1e-7))
    maps = torch.stack(out)
    return F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("kernel,score", [("gaussian", "softmax"), ("point", "softmax"), ("gaussian", "logit"),
                                          ("point", "sigmoid")])
def test_reciprocam_equals_per_position_loop(fused, images, kernel, score):
    # float64: an untrained net's maps span a small range, which min-max magnifies; in float32
    # the batched and per-copy summation orders alone differ by ~1e-4 after normalisation
    fused, images = copy.deepcopy(fused).double(), images.double()
    ref = _loop_reciprocam(fused, images, kernel == "gaussian", score)
    got = build_method("reciprocam", fused, kernel=kernel, score=score)(images, torch.arange(3).expand(2, 3))
    assert got.shape == (2, 3, 64, 48)
    assert torch.allclose(got, ref, atol=1e-5)


def test_all_classes_shape_range_and_class_selection(fused, images):
    m = build_method("reciprocam", fused)
    every = m(images, [0, 1, 2])
    assert every.shape == (2, 3, 64, 48)
    assert every.min() >= 0 and every.max() <= 1
    # each low-res map is min-max normalised: its bilinear upsampling reaches 0 and ~1
    assert torch.allclose(every.flatten(2).amax(-1), torch.ones(2, 3), atol=0.05)
    picked = m(images, torch.tensor([[2], [0]]))
    assert torch.equal(picked[0, 0], every[0, 2]) and torch.equal(picked[1, 0], every[1, 0])


def test_mosaic_weights_by_hand():
    w = mosaic_weights(2, 3, "gaussian")
    assert w.shape == (6, 2, 3)
    # copy of position (0,1): centre 1/4, left/right/below 1/8, diagonals below 1/16
    assert torch.allclose(w[1], torch.tensor([[2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16)
    assert torch.equal(mosaic_weights(2, 3, "point"), torch.eye(6).view(6, 2, 3))


def test_fused_reciprocam_model_matches_the_method_and_keeps_logits(fused, images):
    rc = reciprocam_model(fused)
    assert rc.spec.kind == "reciprocam" and rc.spec.extra["reciprocam"]["layer"] == "block4"
    rc.train()  # a fused model's train() must leave the shared frozen classifier in eval
    assert not fused.classifier.top.training
    with torch.no_grad():
        logits, masks = rc(images)
    assert torch.equal(logits, fused.classify(images))
    ref = build_method("reciprocam", fused)(images, torch.arange(3).expand(2, 3))
    assert torch.allclose(masks, ref, atol=1e-6)


def test_unknown_settings_are_user_errors(fused):
    from wysiwyc.errors import UserError

    for kw in ({"kernel": "box"}, {"score": "tanh"}, {"layer": "block9"}):
        with pytest.raises(UserError):
            build_method("reciprocam", fused, **kw)


def test_training_free_heads_and_kinds_agree():
    from wysiwyc.formats import GRAPHS
    from wysiwyc.models.fused import FREE_HEADS
    from wysiwyc.spec import FREE_KINDS

    assert set(FREE_HEADS) == set(FREE_KINDS) and set(FREE_KINDS) <= set(GRAPHS["fused"].kinds)
