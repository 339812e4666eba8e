"""Mask predictor (paper 2): controller, density, perturbation, batching, refinement, training, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers import load_script
from wysiwyc.attribution.ours import refine_scores
from wysiwyc.ops import pixel_ranks
from wysiwyc.checkpoint import load_checkpoint, save_checkpoint
from wysiwyc.data.shapes import CLASSES
from wysiwyc.ops import alternative_images, perturb
from wysiwyc.training.losses import mask_predictor_loss
from wysiwyc.ops import gaussian_blur
from wysiwyc.models.classifiers import build_classifier
from wysiwyc.models.fused import load_model
from wysiwyc.models.mask_predictor import (DistributionController, MaskPredictor, custom_density,
                                           head_from_spec, instance_normalise)
from wysiwyc.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["custom", "basic"])
def test_controller_is_monotone_and_normalises(kind):
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(3, 2, 8, 8, generator=g) * 5 + 2
    z = instance_normalise(coarse)
    assert torch.allclose(z.mean(dim=(-2, -1)), torch.zeros(3, 2), atol=1e-5)
    assert torch.allclose(z.std(dim=(-2, -1), unbiased=False), torch.ones(3, 2), atol=1e-3)
    m = DistributionController(kind)(coarse)
    assert 0 <= m.min() and m.max() <= 1
    a, b = coarse.flatten(2), m.flatten(2)
    i, j = torch.randint(0, 64, (2, 2000), generator=g)
    higher = a[..., i] > a[..., j]
    assert (b[..., i] >= b[..., j])[higher].all()  # the ranking is never inverted
    if kind == "custom":
        assert (b[..., i] > b[..., j])[higher].all()  # ...and strictly kept by sigmoid(ηz)^h


def test_eq7_density_matches_a_histogram():
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    m = torch.sigmoid(1.5 * z).pow(2.5)
    hist, edges = np.histogram(m.numpy(), bins=40, range=(0, 1), density=True)
    centres = torch.from_numpy((edges[:-1] + edges[1:]) / 2)
    pdf = custom_density(centres).numpy()
    inner = slice(2, 38)  # the density has integrable spikes at both ends
    assert np.abs(hist[inner] - pdf[inner]).max() / pdf[inner].max() < 0.03
    grid = torch.linspace(1e-4, 1 - 1e-4, 200_001, dtype=torch.float64)
    assert abs(float(torch.trapezoid(custom_density(grid), grid)) - 1) < 0.01


def test_perturbation_by_hand():
    img = torch.tensor([[[[1.0, 0.0], [0.5, 0.2]]]]).expand(1, 3, 2, 2)
    alt = torch.full((1, 3, 2, 2), 0.25)
    m = torch.tensor([[[1.0, 0.5], [0.0, 0.8]]])
    out = perturb(img, m, alt)
    expect = torch.tensor([[1.0, 0.0 * 0.5 + 0.25 * 0.5], [0.25, 0.2 * 0.8 + 0.25 * 0.2]])
    assert torch.allclose(out[0, 1], expect)
    # the loss is BCE on the mask's own class: logit 0 -> log 2
    assert torch.isclose(mask_predictor_loss(torch.tensor([[3.0, 0.0]]), torch.tensor([1])), torch.log(torch.tensor(2.0)))


def test_alternative_image_is_blur_or_random_colour():
    imgs = torch.rand(16, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    alt = alternative_images(imgs, 2.0, generator=torch.Generator().manual_seed(3))
    blurred = gaussian_blur(imgs, 2.0)
    is_blur = [(alt[i] - blurred[i]).abs().max() < 1e-6 for i in range(16)]
    assert 3 <= sum(is_blur) <= 13  # about half each
    for i in range(16):
        if not is_blur[i]:  # a random colour plus noise: nothing of the image is left in it
            corr = torch.corrcoef(torch.stack([alt[i].flatten(), imgs[i].flatten()]))[0, 1]
            assert abs(float(corr)) < 0.15 and 0.03 < float(alt[i].flatten(1).std(1).max()) < 0.25


def _head(arch: str, size: int, classes: int = 4) -> MaskPredictor:
    spec = ModelSpec(class_names=[f"c{i}" for i in range(classes)], image_size=(size, size), classifier_arch=arch,
                     kind="mask_predictor", head_arch="mask_predictor", mask_kind="custom",
                     extra={"mask_predictor": {"width": 16}})
    return head_from_spec(spec).eval()


@pytest.mark.parametrize("arch, size, coarse", [("small_cnn", 64, 16), ("resnet18", 96, 24)])
def test_generator_reads_named_blocks_and_outputs_a_quarter_size_mask(arch, size, coarse):
    torch.manual_seed(0)
    head = _head(arch, size)
    clf = build_classifier(arch, 4).eval()
    with torch.no_grad():
        feats = clf.forward_features(torch.rand(2, 3, size, size))
        assert head.coarse(feats).shape == (2, 4, coarse, coarse)
        assert len(head.ups) == 3
        m = head.masks(torch.rand(2, 3, size, size), feats)
    assert m.shape == (2, 4, size, size)


def test_all_classes_in_one_pass_equal_the_per_class_pairs():
    torch.manual_seed(0)
    head = _head("small_cnn", 32, classes=5)
    clf = build_classifier("small_cnn", 5).eval()
    with torch.no_grad():
        feats = clf.forward_features(torch.rand(3, 3, 32, 32))
        full = head.controlled(feats, (32, 32))
        bi = torch.tensor([0, 0, 1, 2, 2, 2])
        ki = torch.tensor([4, 1, 0, 3, 2, 0])
        pairs = head.controlled(feats, (32, 32), pairs=(bi, ki))
    assert torch.allclose(full[bi, ki], pairs, atol=1e-6)


def test_refinement_by_hand():
    r = torch.tensor([[0.9, 0.1, 0.5, 0.3]])
    assert pixel_ranks(r).tolist() == [[0, 3, 1, 2]]
    # q at 0, 2 and 4 revealed pixels; the dip is lifted by the monotone envelope
    q = torch.tensor([[0.2, 0.8, 0.6]])
    # envelope [0.2, 0.8, 0.8], v = [0.6, 0, 0]; step positions (rank+1)/4*2 = [0.5, 2, 1, 1.5]
    v = torch.tensor([0.3, 0.0, 0.0, 0.0])
    expect = r[0] * v
    assert torch.allclose(refine_scores(r, q)[0], expect / expect.max())


def _script():
    return load_script("train/train_mask_predictor.py")


@pytest.fixture(scope="module")
def seeded_mp(tmp_path_factory):
    """An untrained, seeded mask predictor (width 8) on a small_cnn: the attribution
    properties tested with it hold for any weights, so they need no training run."""
    torch.manual_seed(0)
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32), kind="mask_predictor",
                     head_arch="mask_predictor", mask_kind="custom", extra={"mask_predictor": {"width": 8}})
    clf = build_classifier("small_cnn", len(CLASSES)).state_dict()
    return save_checkpoint(tmp_path_factory.mktemp("mp_seeded") / "mp.pt", spec, clf,
                           head_from_spec(spec).state_dict())


@pytest.mark.slow
def test_train_checkpoint_load_export(tiny_classifier, tmp_path):
    out = tmp_path / "mp.pt"  # one filter and one generator epoch on 32 images
    rc = _script().main(["--classifier", str(tiny_classifier), "--train-length", "32", "--val-length", "16",
                         "--batch-size", "16", "--epochs", "1", "--width", "8", "--no-progress", "-o", str(out)])
    assert rc == 0
    ck = load_checkpoint(out, kinds=("mask_predictor",))
    assert set(ck.metrics["stages"]) == {"filter", "generator"}
    assert ck.spec.mask_kind == "custom" and "val_iou" in ck.metrics
    model = load_model(out)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, masks = model(x)
    assert masks.shape == (2, 6, 32, 32) and 0 <= masks.min() and masks.max() <= 1
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from wysiwyc.export.onnx_export import ExportOptions, export_checkpoint, export_model, parity_report

    onnx_path = tmp_path / "mp.onnx"
    export_checkpoint(out, onnx_path, ExportOptions())
    rep = parity_report(export_model(out), onnx_path, torch.rand(3, 3, 32, 32))
    assert rep["masks_max_abs_diff"] < 1e-4 and rep["label_agreement"] == 1.0


def test_target_class_mode_equals_the_all_class_pass(seeded_mp):
    from wysiwyc.attribution import build_method

    model = load_model(seeded_mp)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    attr = build_method("mask_predictor", model)
    full = attr(images, list(range(6)))  # K = C: the fused graph
    with torch.no_grad():
        assert torch.allclose(full, model(images)[1], atol=1e-6)
    classes = torch.tensor([[4], [0], [2]])
    one = attr(images, classes)  # target-class mode: only these pairs are decoded
    assert one.shape == (3, 1, 32, 32)
    assert torch.allclose(one[:, 0], full[torch.arange(3), classes[:, 0]], atol=1e-5)


def test_refined_method_keeps_the_ranking(seeded_mp):
    from wysiwyc.attribution import build_method

    model = load_model(seeded_mp)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    classes = torch.tensor([[1, 3], [5, 0]])
    raw = build_method("mask_predictor", model)(images, classes).flatten(2)
    ref = build_method("mask_predictor_refined", model, steps=8)(images, classes).flatten(2)
    assert ref.shape == raw.shape and 0 <= ref.min() and ref.max() <= 1
    order = raw.argsort(dim=2, descending=True, stable=True)
    ranked = ref.gather(2, order)  # refined scores in the raw ranking: never increasing
    assert (ranked[..., 1:] <= ranked[..., :-1] + 1e-6).all()
    top = ref.amax(2)  # scaled to a maximum of 1 (0 only where the probability never rose)
    assert (((top - 1).abs() < 1e-6) | (top == 0)).all()


def test_wrong_checkpoint_kind_exits_2(tiny_classifier, tmp_path, capsys):
    mp = tmp_path / "x.pt"
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32), kind="explainer", head_arch="unet")
    save_checkpoint(mp, spec, build_classifier("small_cnn", 6).state_dict(), head={})
    assert _script().main(["--classifier", str(mp), "-o", str(tmp_path / "o.pt")]) == 2
    assert "is a explainer checkpoint, expected one of: classifier" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_shipped_config_parses(tmp_path):
    cfg = ROOT / "train" / "configs" / "shapes_mask_predictor.json"
    args = _script().get_args_parser()
    from wysiwyc.scripting import parse_with_config

    ns = parse_with_config(args, ["--config", str(cfg), "-o", str(tmp_path / "x.pt")])
    assert ns.controller == "custom" and ns.eta == 1.5 and ns.h == 2.5 and ns.lr == 0.01
