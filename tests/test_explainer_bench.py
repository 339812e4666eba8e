"""bench/report.py's quality tables, bench/gallery.py and the explainer experiments end to end on a
tiny, untrained explainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wysiwyc.checkpoint import save_checkpoint
from wysiwyc.models.classifiers import build_classifier
from wysiwyc.models.explainer import head_from_spec
from wysiwyc.spec import ModelSpec
from _helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["stripes", "checks", "dots", "grid", "rings", "zigzag"]


def _load(name: str):  # noqa: ANN202
    return load_script(f"bench/{name}.py")


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32), kind="explainer", head_arch="unet",
                     mask_kind="sigmoid", extra={"explainer": {"width": 4, "levels": 3}, "spurious": True})
    clf = build_classifier("small_cnn", 6).eval()
    return save_checkpoint(tmp_path / "e.pt", spec, clf.state_dict(), head_from_spec(spec).state_dict())


@pytest.mark.slow
def test_quality_json_has_paper_rows_and_sane_baselines(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    md = tmp_path / "q.md"
    rc = _load("report").main(["--model", str(ckpt), "--limit", "6", "--batch-size", "6", "--quality-json", str(out),
                               "--quality-md", str(md), "--cue-probe", "--no-progress", "--device", "cpu"])
    assert rc == 0
    r = json.loads(out.read_text())
    pc = r["methods"]["explainer"]["per_class"]
    seen = [v for v in pc["per_class"]["iou"] if v is not None and v == v]  # NaN: class absent from the images
    assert seen and pc["iou"] == pytest.approx(sum(seen) / len(seen)) and pc["iou_min"] == pytest.approx(min(seen))
    text = md.read_text()
    assert "| trivial G.T. | 1.000 | 1.000 |" in text and "explainer: per class" in text and "Table 1" in text
    assert "ground-truth class masks (reference): Table 1" in text
    gtm = r["ground_truth_class_matrix"]
    assert len(gtm["matrix"]) == 6 and gtm["count"] == r["methods"]["explainer"]["class_matrix"]["count"]
    b = r["baselines"]
    assert b["0"]["iou"] == 0 and b["G.T."]["iou"] == pytest.approx(1) and b["G.T."]["mae"] == 0
    assert b["0"]["acc"] == pytest.approx(1 - b["1"]["acc"]) and b["0.5"]["mae"] == pytest.approx(0.5)
    e = r["methods"]["explainer"]
    assert 0 <= e["iou"] <= 1 and e["acc"] == pytest.approx(1 - e["mae"], abs=1e-5)  # binary ground truth
    m = e["class_matrix"]
    assert len(m["matrix"]) == 6 and len(m["none"]) == 6 and m["thresholds"][0] == 0.1
    assert "spurious_cue" in e and 0 <= e["spurious_cue"]["mask_share_on_cue"] <= 1
    cue = e["spurious_cue"]
    assert 0 < cue["uniform_mask_share_on_cue"] < 1 and 0 <= cue["classifier_prob_without_cue"] <= 1
    assert 0 < cue["hatched_background_fraction"] < 1
    for part in ("class_mask", "class_mask_cue_removed", "other_present_masks", "cue_alone"):
        assert all(0 <= v <= 1 for v in cue[part].values()), part


def test_cue_can_be_forced_and_background_is_where_it_lies() -> None:
    import numpy as np

    from wysiwyc.data.shapes_render import ShapesRenderer

    r = ShapesRenderer("test", 32, 0, spurious=True)
    for i in range(12):
        img, labels, masks = r.generate(i)
        planted, l2, m2 = r.generate(i, cue=True)
        plain, l3, m3 = r.generate(i, cue=False)
        assert np.array_equal(labels, l2) and np.array_equal(labels, l3) and np.array_equal(masks, m3)
        assert np.array_equal(img, planted if labels[2] else plain)
        diff = (planted != plain).any(-1)
        bg = r.background(i)
        assert diff.any() and not (diff & ~bg).any() and not (bg & masks.astype(bool).any(0)).any()
    q = _load("report")
    from wysiwyc.data import build_dataset

    ds = build_dataset("shapes", "test", 32, spurious=True, seed=0)
    planted, plain, stripes, field = q.cue_probe(ds, [0, 1], torch.device("cpu"))
    assert planted.shape == plain.shape == (2, 3, 32, 32) and stripes.any() and not (stripes & ~field).any()


def test_cue_regions_are_the_planted_background_hatch() -> None:
    from wysiwyc.data import build_dataset

    ds = build_dataset("shapes", "test", 32, spurious=True, seed=0)
    q = _load("report")
    idx = list(range(20))
    images, labels_all = (torch.stack([ds[i][j] for i in idx]) for j in (0, 1))
    cb = q.CueBatch(ds, 2, 0, images, labels_all, torch.device("cpu"))
    region, plain = cb.region, cb.plain
    for i in idx:
        img, labels, masks = ds[i]
        if labels[2] > 0:  # dots present: a cue, never on a class object
            assert region[i].sum() > 0 and not (region[i] & masks.bool().any(0)).any()
        else:
            assert region[i].sum() == 0
        # the cue-free image differs from the sample exactly on the cue
        diff = (plain[i] - img).abs().amax(0) > 1e-6
        assert torch.equal(diff, region[i])


def test_gallery_writes_png(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    assert _load("gallery").main(["--model", str(ckpt), "-n", "3", "--with-class", "dots", "--layout", "all", "-o", str(out),
                                  "--device", "cpu"]) == 0
    from PIL import Image

    im = Image.open(out)
    assert im.size == (9 * (64 + 4), 3 * (64 + 14 + 4))  # image, gt, 6 masks, overlay; 2x tiles, captions


def test_gallery_class_layout_one_column_per_labelled_class(ckpt: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from wysiwyc.data import build_dataset, dataset_kwargs

    out = tmp_path / "c.png"
    assert _load("gallery").main(["--model", str(ckpt), "-n", "3", "-o", str(out), "--device", "cpu"]) == 0
    ds = build_dataset("shapes", "test", (32, 32), **dataset_kwargs("shapes", None, True))
    counts = [int(ds[i][1].sum()) for i in range(40)]
    picked = [c for c in counts if c >= 2][:3]
    im = np.asarray(Image.open(out))
    # image | one mask per labelled class | one absent class | overlay
    assert im.shape[:2] == (3 * (64 + 14 + 4), (max(picked) + 3) * (64 + 4))
    first_mask = im[14:14 + 64, 68:68 + 64]  # first row, first labelled class: green ground-truth outline
    assert ((first_mask == (0, 200, 0)).all(-1)).sum() > 10
    assert _load("gallery").main(["--model", str(ckpt), "--with-class", "cats", "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_objective_ranks_candidate_masks(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "obj.json"
    rc = _load("experiments/objective").main(["--model", str(ckpt), "--limit", "4", "--batch-size", "2",
                                              "--json", str(out), "--device", "cpu"])
    assert rc == 0 and "| ground truth |" in capsys.readouterr().out
    r = json.loads(out.read_text())
    rows, w = r["rows"], r["weights"]
    assert r["images"] == 4 and rows["ground truth"]["iou"] == pytest.approx(1) and rows["ground truth"]["mae"] == 0
    zero, one = rows["all 0"], rows["all 1"]
    assert zero["area_m"] == zero["area_n"] == zero["tv"] == 0 and one["area_m"] == one["area_n"] == 1
    # all-0 masks: only the lower area bound is violated, by floor(a·Z)/Z per label class (summed)
    per_label = r["labels_per_image"]
    assert zero["bounds"] == pytest.approx(per_label * int(w["class_mask_min_area"] * 32 * 32) / (32 * 32))
    assert zero["total"] == pytest.approx(zero["cls"] + w["entropy_regularizer"] * zero["ent"]
                                          + w["mask_area_constraint_regularizer"] * zero["bounds"])
    assert one["bounds"] == pytest.approx(per_label * (1 - int(w["class_mask_max_area"] * 32 * 32) / (32 * 32)))


def test_objective_rejects_a_classifier_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = ModelSpec(class_names=list(CLASSES), image_size=(32, 32))
    clf = save_checkpoint(tmp_path / "c.pt", spec, build_classifier("small_cnn", 6).state_dict())
    assert _load("experiments/objective").main(["--model", str(clf), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_ablation_commands_and_table(tmp_path: Path) -> None:
    from conftest import make_explainer

    from wysiwyc.checkpoint import load_checkpoint, save_checkpoint

    abl = _load("experiments/explainer_ablation")
    argv = abl.command("init_default", tmp_path)
    assert "--mask-init" not in argv and argv[argv.index("--lr") + 1] == "0.002"
    argv = abl.command("cunet_remove", tmp_path)
    assert argv[argv.index("--arch") + 1] == "classifier_unet" and argv[argv.index("--class-term") + 1] == "remove"
    ck = load_checkpoint(make_explainer(tmp_path / "tiny.pt"))
    for name, iou in (("authors", 0.25), ("cunet", 0.5)):
        save_checkpoint(tmp_path / f"{name}.pt", ck.spec, ck.classifier, ck.head,
                        metrics={"val_iou": 0.7, "val_class_iou": iou, "train_seconds": 60.0, "best_epoch": 4})
    out = tmp_path / "abl"
    assert abl.main(["--work-dir", str(tmp_path), "--only", "authors,cunet,lr_1e-3", "--no-train",
                     "--out", str(out)]) == 0
    md = (tmp_path / "abl.md").read_text()
    assert "| authors' loss (U-Net, masks start at 0.95, lr 2e-3) | 0.700 | – | 0.250 |" in md
    rows = json.loads((tmp_path / "abl.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["authors", "cunet"]  # lr_1e-3 not trained: left out
    assert abl.main(["--work-dir", str(tmp_path), "--only", "nope", "--no-train"]) == 2


def test_report_true_class_masks_computes_each_true_pair_once():
    """bench/report.py: slow methods get each image's true classes in calls grouped by class
    count — every (image, class) pair once, none padded — and zeros for the other classes."""
    report = _load("report")
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.float32)
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    calls = []

    def attr(x, cls):  # mask value = 10 * image id + class: shows which pair filled which slot
        calls.append(cls.clone())
        return (10 * x[:, :1, None] + cls[:, :, None, None, None]).squeeze(2).expand(-1, -1, 2, 2)

    masks = report._true_class_masks(attr, images, labels, 4)
    assert sum(c.numel() for c in calls) == int(labels.sum()) == 8  # padding all 5 images to k=3: 15
    assert [tuple(c.shape) for c in calls] == [(1, 1), (2, 2), (1, 3)]
    want = torch.where(labels > 0, 10 * torch.arange(5.0).view(5, 1) + torch.arange(4.0), torch.zeros(()))
    assert torch.equal(masks[:, :, 0, 0], want)
    assert torch.equal(masks[:, :, 1, 1], want)


def test_gallery_methods_layout_marks_a_method_that_skipped_an_image() -> None:
    """bench/gallery.py's ``methods`` layout (bench/report.py's gallery): image | ground truth |
    each method's mask of the first labelled class; "not run" where a method skipped the image."""
    from wysiwyc.data import build_dataset, dataset_kwargs

    gallery = _load("gallery")
    ds = build_dataset("shapes", "test", (32, 32), **dataset_kwargs("shapes", None, True))
    masks = {"a": {0: torch.zeros(6, 32, 32), 1: torch.ones(6, 32, 32)}, "b": {0: torch.ones(6, 32, 32)}, "c": {}}
    rows = gallery.methods_rows(ds, masks, [0, 1], CLASSES)
    assert [[t[1] for t in r[2:]] for r in rows] == [["a", "b"], ["a", "b: not run"]]  # c ran on none: left out
    first = CLASSES[int(torch.nonzero(ds[1][1])[0])]
    assert rows[1][0][1] == f"#1 {first}" and rows[1][1][1] == "ground truth"
    assert (rows[1][2][0] == 255).all() and (rows[0][2][0] == 0).all() and rows[1][3][2] == gallery.RED
    assert gallery.draw_canvas(rows, 2).size == (4 * (64 + 4), 2 * (64 + 14 + 4))


def test_cue_probe_needs_the_planted_cue(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q.json"
    assert _load("report").main(["--model", str(ckpt), "--spurious", "off", "--cue-probe", "--limit", "2",
                                 "--quality-json", str(out), "--no-progress", "--device", "cpu"]) == 2
    assert "--cue-probe needs shapes data with the planted cue" in capsys.readouterr().err and not out.exists()
