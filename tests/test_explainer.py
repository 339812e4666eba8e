"""Explainer heads, checkpoint round trip, the training task and the training script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wysiwyc.checkpoint import save_checkpoint
from wysiwyc.training.explainer import ExplainerTask
from wysiwyc.models.classifiers import build_classifier
from wysiwyc.models.explainer import EXPLAINERS, build_explainer, head_from_spec, init_mask_bias
from wysiwyc.models.fused import load_model
from wysiwyc.spec import ModelSpec
from _helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["stripes", "checks", "dots", "grid", "rings", "zigzag"]


def _spec(**kw: object) -> ModelSpec:
    return ModelSpec(class_names=list(CLASSES), image_size=(32, 32), kind="explainer", head_arch="unet",
                     mask_kind="sigmoid", extra={"explainer": {"width": 4, "levels": 3}}, **kw)  # type: ignore[arg-type]


def test_registry_has_the_three_architectures() -> None:
    assert {"unet", "lraspp_mobilenet_v3", "deeplabv3_resnet50"} <= set(EXPLAINERS)


@pytest.mark.parametrize("size", [(32, 32), (37, 45)])
def test_unet_logits_at_input_resolution_and_masks_are_sigmoids(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    head = head_from_spec(_spec()).eval()
    x = torch.randn(2, 3, *size)
    logits = head(x)
    assert logits.shape == (2, 6, *size)
    assert torch.allclose(head.masks(x, None), torch.sigmoid(logits))


def test_torchvision_explainers_build_offline() -> None:
    torch.manual_seed(0)
    head = build_explainer("lraspp_mobilenet_v3", 3).eval()
    out = head(torch.randn(2, 3, 40, 48))
    assert out.shape == (2, 3, 40, 48)
    deeplab = build_explainer("deeplabv3_resnet50", 2)
    assert deeplab.net.classifier[-1].out_channels == 2  # built with no download (weights=None)


def test_mask_init_sets_the_output_biases() -> None:
    from wysiwyc.errors import UserError

    torch.manual_seed(0)
    head = build_explainer("unet", 3, width=4, levels=2)
    torch.nn.init.zeros_(head.net.out.weight)  # then every pixel's mask is exactly the start value
    assert init_mask_bias(head, 0.9, 3) == 1
    assert torch.allclose(head.masks(torch.randn(1, 3, 8, 8)), torch.full((1, 3, 8, 8), 0.9))
    lraspp = build_explainer("lraspp_mobilenet_v3", 3)
    assert init_mask_bias(lraspp, 0.75, 3) == 2  # low + high classifiers, summed: one carries the bias
    logit = float(torch.logit(torch.tensor(0.75)))
    assert lraspp.net.classifier.low_classifier.bias.tolist() == pytest.approx([logit] * 3)
    assert lraspp.net.classifier.high_classifier.bias.abs().max() == 0
    with pytest.raises(UserError, match="in \\(0, 1\\)"):
        init_mask_bias(head, 1.0, 3)


def test_unknown_arch_is_a_user_error() -> None:
    from wysiwyc.errors import UserError

    with pytest.raises(UserError, match="unknown explainer"):
        build_explainer("nope", 3)


def test_checkpoint_round_trip_through_load_model(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = _spec()
    clf = build_classifier("small_cnn", 6).eval()
    head = head_from_spec(spec).eval()
    path = save_checkpoint(tmp_path / "e.pt", spec, clf.state_dict(), head.state_dict())
    model = load_model(path)
    images = torch.rand(2, 3, 32, 32)
    logits, masks = model(images)
    x = model.norm(images)
    assert torch.allclose(masks, torch.sigmoid(head(x)), atol=1e-6)
    assert torch.allclose(logits, clf(x), atol=1e-5)


def test_task_keeps_classifier_frozen_and_trains_only_the_head() -> None:
    torch.manual_seed(0)
    clf = build_classifier("small_cnn", 6)
    head = head_from_spec(_spec())
    task = ExplainerTask(head, clf, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    task.train(True)
    assert not clf.training and head.training
    bn_before = {k: v.clone() for k, v in clf.state_dict().items()}
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([[1.0, 0, 0, 0, 0, 0]] * 4)
    loss, logs = task.training_step((images, labels), torch.device("cpu"))
    loss.backward()
    assert all(p.grad is None for p in clf.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert all(torch.equal(bn_before[k], v) for k, v in clf.state_dict().items())  # BN statistics unchanged
    assert set(logs) == {"cls", "ent", "area_m", "area_n"}


def test_predicted_targets_threshold_the_classifier() -> None:
    clf = build_classifier("small_cnn", 6)
    task = ExplainerTask(head_from_spec(_spec()), clf, (0.5,) * 3, (0.25,) * 3, targets="predicted", threshold=0.5)
    x = torch.rand(3, 3, 32, 32)
    expected = (torch.sigmoid(clf(x)) >= 0.5).float()
    assert torch.equal(task._targets(x, torch.zeros(3, 6)), expected)
    with pytest.raises(ValueError):
        ExplainerTask(head_from_spec(_spec()), clf, (0.5,) * 3, (0.25,) * 3, targets="bogus")


def _script():  # noqa: ANN202
    return load_script("train/train_explainer.py")


@pytest.mark.slow
def test_train_script_end_to_end_with_config_override(tiny_classifier: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    clf = tiny_classifier
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"classifier": str(clf), "width": 4, "levels": 3, "epochs": 3, "batch-size": 8,
                               "train_length": 16, "val-length": 8, "lr": 1e-3, "entropy-regularizer": 2.5}))
    out = tmp_path / "expl.pt"
    rc = _script().main(["--config", str(cfg), "--epochs", "1", "--mask-init", "0.9", "--no-progress", "--device", "cpu",
                         "-o", str(out)])
    assert rc == 0 and out.is_file()
    ck = torch.load(out, weights_only=True)
    assert ck["spec"]["kind"] == "explainer" and ck["spec"]["head_arch"] == "unet" and ck["spec"]["mask_kind"] == "sigmoid"
    assert ck["train"]["mask_init"] == 0.9
    assert ck["train"]["epochs"] == 1 and ck["train"]["loss_weights"]["entropy_regularizer"] == 2.5  # CLI beat config; config beat default
    model = load_model(out)
    _, masks = model(torch.rand(1, 3, 32, 32))
    assert masks.shape == (1, 6, 32, 32)
    assert "val_iou" in ck["metrics"]


@pytest.mark.slow
def test_rtis_loss_trains_the_same_net_as_kind_rtis(tiny_classifier: Path, tmp_path: Path) -> None:
    from wysiwyc.attribution import build_method

    clf = tiny_classifier
    out = tmp_path / "rtis.pt"
    rc = _script().main(["--classifier", str(clf), "--loss", "rtis", "--width", "4", "--levels", "2", "--epochs", "1",
                         "--batch-size", "8", "--train-length", "16", "--val-length", "8", "--no-progress", "-o", str(out)])
    assert rc == 0
    ck = torch.load(out, weights_only=True)
    assert ck["spec"]["kind"] == "rtis" and ck["train"]["loss_weights"]["area"] == 8.0 and "val_destroy" in ck["metrics"]
    masks = build_method("rtis", load_model(out))(torch.rand(2, 3, 32, 32), [0, 3])
    assert masks.shape == (2, 2, 32, 32)


def test_train_script_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _script()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"no-such-flag": 1}))
    assert mod.main(["--config", str(bad), "-o", str(tmp_path / "x.pt")]) == 2
    assert "unknown setting" in capsys.readouterr().err
    assert mod.main(["--classifier", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("cfg", sorted(p for p in (ROOT / "train" / "configs").glob("*.json")
                                        if "mask_predictor" not in p.name), ids=lambda p: p.name)
def test_shipped_configs_parse(cfg: Path, tmp_path: Path) -> None:
    args = _script().parse_args(["--config", str(cfg), "-o", str(tmp_path / "x.pt")])
    raw = json.loads(cfg.read_text())
    assert args.arch == raw["arch"] and args.lr == raw["lr"]


def test_class_term_warmup_ramp() -> None:
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.models.explainer import build_explainer
    from wysiwyc.training.losses import ExplainerLossWeights

    w = ExplainerLossWeights(class_regularizer=2.0, class_warmup_steps=10)
    task = ExplainerTask(build_explainer("unet", 3, width=4, levels=2), build_classifier("small_cnn", 3),
                         (0.5,) * 3, (0.25,) * 3, w)
    assert [task.class_weight_at(s) for s in (0, 10, 15, 20, 100)] == [0.0, 0.0, 1.0, 2.0, 2.0]
    task.weights = ExplainerLossWeights(class_regularizer=2.0)
    assert task.class_weight_at(0) == 2.0


def test_classifier_unet_starts_from_the_classifier_blocks() -> None:
    from wysiwyc.errors import UserError
    from wysiwyc.models.classifiers import build_classifier
    from wysiwyc.models.explainer import build_explainer, init_encoder_from_classifier

    torch.manual_seed(0)
    clf = build_classifier("small_cnn", 4)
    head = build_explainer("classifier_unet", 4, classifier_arch="small_cnn", width=8)
    n = init_encoder_from_classifier(head, clf)
    assert n == len(clf.blocks.state_dict())
    for k, v in clf.blocks.state_dict().items():
        assert torch.equal(head.net.encoder.state_dict()[k], v)
    x = torch.randn(2, 3, 40, 48)
    assert head(x).shape == (2, 4, 40, 48)  # any input size, masks at input resolution
    with pytest.raises(UserError):
        init_encoder_from_classifier(build_explainer("unet", 4, width=4, levels=2), clf)
