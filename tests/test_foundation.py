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
def _tiny_ckpt(path: Path) -> tuple[ModelSpec, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 6).eval()
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32))
    save_checkpoint(path, spec, model.state_dict(), train={"x": 1}, metrics={"acc": 0.5})
    return spec, model


def test_checkpoint_round_trip_stores_kind_once(tmp_path):
    p = tmp_path / "c.pt"
    spec, model = _tiny_ckpt(p)
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == "wysiwyc-checkpoint" and raw["format_version"] == 3
    assert "kind" not in raw and raw["spec"]["kind"] == "classifier"  # kind lives in the spec only
    assert any(k.startswith("top.") for k in raw["classifier"])  # the classifier's pooling + linear part
    ck = load_checkpoint(p, kinds=("classifier",))
    assert ck.spec == spec and ck.kind == "classifier" and ck.train == {"x": 1} and ck.metrics == {"acc": 0.5}
    fused = load_model(p)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(fused.classify(x), model(fused.norm(x)), atol=1e-6)


def test_checkpoint_refuses_foreign_and_other_version_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a torch file" * 10)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, plain)
    good = tmp_path / "good.pt"
    _tiny_ckpt(good)
    versions = {}
    for v in (99, 2):
        versions[v] = tmp_path / f"v{v}.pt"
        d = torch.load(good, weights_only=True)
        d["format_version"] = v
        torch.save(d, versions[v])
    for p, msg in [(junk, "not a loadable"), (plain, "not a wysiwyc checkpoint"),
                   (versions[99], "format version 99.*upgrade wysiwyc"),
                   (versions[2], "format version 2.*retrain it"), (tmp_path / "missing.pt", "not found")]:
        with pytest.raises(CheckpointError, match=msg):
            load_checkpoint(p)
    with pytest.raises(CheckpointError, match="expected one of: explainer"):
        load_checkpoint(good, kinds=("explainer",))


def test_with_head_keeps_the_classifier_fields():
    cspec = ModelSpec(class_names=["a", "b"], image_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
                      classifier_arch="resnet18", dataset="voc", extra={"spurious": True})
    spec = cspec.with_head("explainer", "unet", "sigmoid", {"explainer": {"width": 4}}, image_size=(48, 48))
    assert (spec.kind, spec.head_arch, spec.mask_kind, spec.image_size) == ("explainer", "unet", "sigmoid", (48, 48))
    assert (spec.class_names, spec.mean, spec.std, spec.classifier_arch, spec.dataset) == (
        ["a", "b"], (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), "resnet18", "voc")
    assert spec.extra == {"spurious": True, "explainer": {"width": 4}} and cspec.kind == "classifier"
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown kind"):
        cspec.with_head("gradcam")


@pytest.mark.parametrize("name", ["shapes_classifier", "shapes_explainer", "shapes_mask_predictor", "shapes_rtis"])
def test_bundled_checkpoints_load(name):
    path = Path(__file__).resolve().parents[1] / "src" / "wysiwyc" / "assets" / f"{name}.pt"
    ck = load_checkpoint(path)
    assert ck.kind == name.removeprefix("shapes_")
    model = load_model(ck)
    with torch.no_grad():
        logits, masks = model(torch.rand(2, 3, *ck.spec.image_size))
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
def test_train_classifier_end_to_end_and_the_same_seed_gives_the_same_weights(tmp_path, capsys):
    mod = _script("train/train_classifier.py")
    out = tmp_path / "clf.pt"
    args = ["--train-length", "64", "--val-length", "32", "--test-length", "32", "--epochs", "1",
            "--batch-size", "32", "--image-size", "32", "--no-progress", "--device", "cpu", "-o", str(out)]
    assert mod.main(args) == 0
    ck = load_checkpoint(out, kinds=("classifier",))
    assert ck.spec.image_size == (32, 32) and ck.spec.class_names == list(CLASSES)
    assert 0 <= ck.metrics["test_label_acc"] <= 1 and ck.metrics["best_epoch"] == 1
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


def _package_imports(room: str) -> set[str]:
    """Every ``wysiwyc.*`` module the files of ``src/wysiwyc/<room>/`` import (relative
    imports resolved), at module level or inside functions."""
    import ast

    pkg = Path(__file__).resolve().parents[1] / "src" / "wysiwyc"
    found: set[str] = set()
    for path in (pkg / room).rglob("*.py"):
        parts = ["wysiwyc", *path.relative_to(pkg).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        else:
            parts = parts[:-1]  # the module's package
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = parts[:len(parts) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                found.add(name)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("wysiwyc")}


def test_export_and_runtime_never_import_each_other():
    assert not [m for m in _package_imports("export") if m.startswith("wysiwyc.runtime")]
    assert not [m for m in _package_imports("runtime") if m.startswith("wysiwyc.export")]
    # and the check sees imports at all (a relative import resolved to its package)
    assert "wysiwyc.sidecar" in _package_imports("export") and "wysiwyc.sidecar" in _package_imports("runtime")
