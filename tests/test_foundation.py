"""Foundation: shapes determinism and consistency, checkpoints, frozen classifiers, the
classifier training script end to end, and the user-error contract (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wysiwyc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from wysiwyc.data import build_dataset, check_classes
from wysiwyc.data.shapes import CLASSES, ShapesDataset
from wysiwyc.errors import UserError
from wysiwyc.models.classifiers import build_classifier, freeze
from wysiwyc.models.fused import load_model
from wysiwyc.spec import ModelSpec
from _helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


def _script(rel: str):
    return load_script(rel)


# -- shapes ------------------------------------------------------------------------------
def test_shapes_deterministic_by_seed_split_index():
    a = ShapesDataset("train", length=4, cache=False)
    b = ShapesDataset("train", length=4, cache=False)
    for i in range(4):
        for x, y in zip(a[i], b[i]):
            assert torch.equal(x, y)
    assert not torch.equal(a[0][0], ShapesDataset("test", length=1)[0][0])
    assert not torch.equal(a[0][0], ShapesDataset("train", length=1, seed=1)[0][0])


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_labels_match_masks(size):
    ds = ShapesDataset("val", size=size, length=24)
    for i in range(len(ds)):
        image, labels, masks = ds[i]
        assert image.shape == (3, size, size) and 0 <= image.min() and image.max() <= 1
        assert masks.shape == (len(CLASSES), size, size)
        assert set(masks.unique().tolist()) <= {0, 1}
        assert torch.equal(labels, (masks.flatten(1).amax(1) > 0).float())
        assert masks.sum(0).max() <= 1  # one visible owner per pixel: class masks are disjoint
        assert 1 <= labels.sum() <= 4


def test_spurious_cue_only_with_dots():
    plain = ShapesDataset("train", length=30, cache=False)
    cue = ShapesDataset("train", length=30, spurious=True, cache=False)
    dots = CLASSES.index("dots")
    n_dots = 0
    for i in range(30):
        (x0, y0, m0), (x1, y1, m1) = plain[i], cue[i]
        assert torch.equal(y0, y1) and torch.equal(m0, m1)
        if y0[dots]:
            n_dots += 1
            changed = (x0 != x1).any(0)
            assert changed.any() and not (changed & (m0.sum(0) > 0)).any()  # background only
        else:
            assert torch.equal(x0, x1)
    assert n_dots > 0


# -- checkpoints -------------------------------------------------------------------------
def _tiny_ckpt(path: Path, kind: str = "classifier") -> tuple[ModelSpec, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 6).eval()
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32))
    save_checkpoint(path, kind, spec, model.state_dict(), train={"x": 1}, metrics={"acc": 0.5})
    return spec, model


def test_checkpoint_round_trip(tmp_path):
    p = tmp_path / "c.pt"
    spec, model = _tiny_ckpt(p)
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == "wysiwyc-checkpoint" and raw["kind"] == "classifier"
    ck = load_checkpoint(p, kinds=("classifier",))
    assert ck["spec_obj"] == ModelSpec.from_dict(spec.to_dict())
    fused = load_model(p)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(fused.classify(x), model(fused.norm(x)), atol=1e-6)


def test_checkpoint_refuses_foreign_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a torch file" * 10)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, plain)
    good = tmp_path / "good.pt"
    _tiny_ckpt(good)
    newer = tmp_path / "newer.pt"
    d = torch.load(good, weights_only=True)
    d["format_version"] = 99
    torch.save(d, newer)
    for p, msg in [(junk, "not a loadable"), (plain, "not a wysiwyc checkpoint"), (newer, "format version"),
                   (tmp_path / "missing.pt", "not found")]:
        with pytest.raises(CheckpointError, match=msg):
            load_checkpoint(p)
    with pytest.raises(CheckpointError, match="expected one of: explainer"):
        load_checkpoint(good, kinds=("explainer",))


def _v1_file(path: Path, kind: str, spec: dict, classifier: dict, head: dict | None) -> Path:
    """A checkpoint exactly as format 1 wrote it: the head under "explainer", the format-1 spec."""
    torch.save({"format": "wysiwyc-checkpoint", "format_version": 1, "kind": kind, "spec": {**spec, "kind": kind},
                "classifier": classifier, "explainer": head, "train": {"x": 1}, "metrics": {"acc": 0.5}}, path)
    return path


def test_version_1_explainer_checkpoint_loads(tmp_path):
    from wysiwyc.models.explainer import head_from_spec

    torch.manual_seed(0)
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32), kind="explainer", head_arch="unet",
                     mask_kind="sigmoid", extra={"explainer": {"width": 4, "levels": 2}})
    clf, head = build_classifier("small_cnn", 6).state_dict(), head_from_spec(spec).state_dict()
    v1_spec = {k: v for k, v in spec.to_dict().items() if k != "head_arch"} | {"explainer_arch": "unet"}
    old = _v1_file(tmp_path / "v1.pt", "explainer", v1_spec, clf, head)
    new = save_checkpoint(tmp_path / "v2.pt", "explainer", spec, clf, head)
    ck = load_checkpoint(old, kinds=("explainer",))
    assert ck["format_version"] == 1 and "explainer" not in ck and ck["head"].keys() == head.keys()
    assert ck["spec"]["head_arch"] == "unet" and "explainer_arch" not in ck["spec"] and ck["spec_obj"] == spec
    assert torch.load(new, weights_only=True)["format_version"] == 2
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        (lo, mo), (ln, mn) = load_model(old)(x), load_model(new)(x)
    assert torch.equal(lo, ln) and torch.equal(mo, mn)


def test_version_1_mask_predictor_checkpoint_keeps_its_controller(tmp_path):
    from wysiwyc.models.mask_predictor import head_from_spec

    torch.manual_seed(0)
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32), kind="mask_predictor",
                     head_arch="mask_predictor", mask_kind="basic", extra={"mask_predictor": {"width": 8}})
    clf, head = build_classifier("small_cnn", 6).state_dict(), head_from_spec(spec).state_dict()
    # format 1 kept the controller twice; the head was built from the extra's copy
    v1_spec = {k: v for k, v in spec.to_dict().items() if k != "head_arch"} | {
        "explainer_arch": "mask_predictor", "mask_kind": None,
        "extra": {"mask_predictor": {"width": 8, "controller": "basic"}}}
    ck = load_checkpoint(_v1_file(tmp_path / "v1.pt", "mask_predictor", v1_spec, clf, head))
    assert ck["spec_obj"] == spec and ck["spec"]["extra"] == {"mask_predictor": {"width": 8}}
    model = load_model(ck)
    assert model.head.controller.kind == "basic"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = load_model(save_checkpoint(tmp_path / "v2.pt", "mask_predictor", spec, clf, head))(x)
        assert torch.equal(model(x)[1], ref[1])


def test_spec_reads_the_format_1_field_name():
    spec = ModelSpec.from_dict({"class_names": ["a"], "kind": "explainer", "explainer_arch": "unet"})
    assert spec.head_arch == "unet" and "explainer_arch" not in spec.to_dict()
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("name", ["shapes_classifier", "shapes_explainer", "shapes_mask_predictor", "shapes_rtis"])
def test_bundled_checkpoints_load(name):
    path = Path(__file__).resolve().parents[1] / "src" / "wysiwyc" / "assets" / f"{name}.pt"
    ck = load_checkpoint(path)
    assert ck["spec_obj"].kind == name.removeprefix("shapes_")
    model = load_model(ck)
    with torch.no_grad():
        logits, masks = model(torch.rand(2, 3, *ck["spec_obj"].image_size))
    assert logits.shape == (2, 6) and masks.shape == (2, 6, 64, 64)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from wysiwyc.fileio import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# -- frozen explanandum ------------------------------------------------------------------
def test_frozen_classifier_statistics_do_not_move():
    torch.manual_seed(0)
    clf = freeze(build_classifier("small_cnn", 6))
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    explainer = torch.nn.Conv2d(3, 1, 3, padding=1)
    parent = torch.nn.ModuleDict({"clf": clf, "expl": explainer})
    parent.train()  # a parent switching to train mode must not unfreeze the classifier
    assert not clf.training and explainer.training
    opt = torch.optim.SGD(explainer.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(4, 3, 32, 32)
        loss = clf(x * torch.sigmoid(explainer(x))).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert explainer.weight.grad is not None and explainer.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in clf.parameters())
    for k, v in clf.state_dict().items():
        assert torch.equal(v, before[k]), k


# -- training script ---------------------------------------------------------------------
@pytest.mark.slow
def test_train_classifier_end_to_end_and_resume(tmp_path, capsys):
    mod = _script("train/train_classifier.py")
    out = tmp_path / "clf.pt"
    args = ["--train-length", "64", "--val-length", "32", "--test-length", "32", "--epochs", "1",
            "--batch-size", "32", "--image-size", "32", "--no-progress", "--device", "cpu", "-o", str(out)]
    assert mod.main(args) == 0
    ck = load_checkpoint(out, kinds=("classifier",))
    assert ck["spec_obj"].image_size == (32, 32) and ck["spec_obj"].class_names == list(CLASSES)
    assert 0 <= ck["metrics"]["test_label_acc"] <= 1 and ck["metrics"]["best_epoch"] == 1
    assert not Path(str(out) + ".last.pt").exists()
    # the same seed gives the same weights
    out2 = tmp_path / "clf2.pt"
    assert mod.main(args[:-1] + [str(out2)]) == 0
    a, b = torch.load(out, weights_only=True), torch.load(out2, weights_only=True)
    assert all(torch.equal(a["classifier"][k], b["classifier"][k]) for k in a["classifier"])


@pytest.mark.parametrize("extra, msg", [
    (["--arch", "alexnet9"], "unknown classifier arch"),
    (["--data", "voc:/nonexistent/voc"], "voc"),
    (["--device", "cuda"], "cuda"),
])
def test_train_classifier_user_errors(tmp_path, capsys, extra, msg):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    mod = _script("train/train_classifier.py")
    out = tmp_path / "c.pt"
    rc = mod.main(["--train-length", "8", "--val-length", "8", "--epochs", "1", "--no-progress", "-o", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and msg in err[0].lower()
    assert not out.exists()


def test_unwritable_output_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    mod = _script("train/train_classifier.py")
    rc = mod.main(["--epochs", "1", "-o", str(blocker / "sub" / "c.pt")])
    assert rc == 2 and "cannot create output folder" in capsys.readouterr().err


def test_class_mismatch_is_a_user_error():
    with pytest.raises(UserError, match="class mismatch"):
        check_classes(list(CLASSES), list(CLASSES[:3]))


def test_dataset_registry_rejects_unknown():
    with pytest.raises(UserError, match="unknown dataset"):
        build_dataset("imagenet", "train")
    with pytest.raises(UserError, match="needs a root"):
        build_dataset("voc", "train")
