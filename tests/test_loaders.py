"""VOC, COCO and image-folder loaders on tiny fixtures written on the fly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wysiwyc.data import build_dataset
from wysiwyc.errors import UserError


def _jpg(path, h=20, w=30, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path, quality=95)


def test_voc_labels_and_masks(tmp_path):
    root = tmp_path / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    (root / "Annotations").mkdir()
    for iid, names in [("000001", ["cat", "person"]), ("000002", ["dog"])]:
        objs = "".join(f"<object><name>{n}</name><difficult>0</difficult></object>" for n in names)
        (root / "Annotations" / f"{iid}.xml").write_text(f"<annotation>{objs}</annotation>")
        _jpg(root / "JPEGImages" / f"{iid}.jpg")
    seg = np.zeros((20, 30), np.uint8)
    seg[:10, :15] = 8    # cat (index 8 -> class 7)
    seg[10:, 15:] = 15   # person
    seg[0, :] = 255      # void border
    im = Image.fromarray(seg, mode="P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])  # a full palette keeps indices as written
    (root / "SegmentationClass").mkdir()
    im.save(root / "SegmentationClass" / "000001.png")

    ds = build_dataset(f"voc:{root}", "test", (20, 30))
    assert len(ds) == 2 and ds.class_names[7] == "cat"
    img, labels, masks = ds[0]
    assert img.shape == (3, 20, 30) and abs(float(img[0].mean()) - 200 / 255) < 0.02
    assert labels.nonzero().flatten().tolist() == [7, 14]
    assert masks[7, 5, 5] == 1 and masks[7, 15, 20] == 0 and masks[14, 15, 20] == 1
    assert (masks[:, 0, :] == 255).all() and int(masks[7].eq(1).sum()) == 9 * 15
    _, labels2, masks2 = ds[1]
    assert labels2.nonzero().flatten().tolist() == [11] and (masks2 == 255).all()


def test_voc_missing_root_names_layout(tmp_path):
    with pytest.raises(UserError, match="VOC2007 layout"):
        build_dataset(f"voc:{tmp_path / 'nope'}", "train")


def _coco_fixture(root):
    (root / "annotations").mkdir(parents=True)
    for split in ("train2014", "val2014"):
        _jpg(root / split / "a.jpg", 10, 10)
        _jpg(root / split / "b.jpg", 10, 10)
    data = {
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10},
                   {"id": 2, "file_name": "b.jpg", "height": 10, "width": 10}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 18, "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [10, 10], "counts": [90, 10]}},
        ],
    }
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(data))


def test_coco_labels_and_masks(tmp_path):
    pytest.importorskip("pycocotools")
    root = tmp_path / "coco"
    _coco_fixture(root)
    ds = build_dataset(f"coco:{root}", "test", 10)
    assert ds.class_names == ["person", "dog"] and len(ds) == 2
    _, labels, masks = ds[0]
    assert labels.tolist() == [1.0, 1.0]
    # uncompressed RLE, column-major: the last 10 pixels are the last column
    assert int(masks[0].sum()) == 10 and masks[0][:, 9].all()
    assert masks[1][1:4, 1:4].all() and not masks[1][8, 8]
    assert 20 <= int(masks[1].sum()) <= 36  # a 5x5 polygon, rasterised
    _, labels_b, masks_b = ds[1]
    assert labels_b.sum() == 0 and masks_b.sum() == 0
    assert len(build_dataset(f"coco:{root}", "train", 10)) == 2  # ids 1, 2: none is a multiple of 10


def test_coco_malformed(tmp_path):
    root = tmp_path / "coco"
    _coco_fixture(root)
    (root / "annotations" / "instances_val2014.json").write_text("{not json")
    with pytest.raises(UserError, match="malformed COCO"):
        build_dataset(f"coco:{root}", "test", 10)


def test_folder_dataset_splits(tmp_path):
    for split in ("train", "test"):
        _jpg(tmp_path / "f" / split / "cat" / "1.jpg")
        _jpg(tmp_path / "f" / split / "dog" / "2.png", colour=(0, 0, 255))
    ds = build_dataset(f"folder:{tmp_path / 'f'}", "test", 16)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 2
    img, labels, masks = ds[1]
    assert labels.tolist() == [0.0, 1.0] and (masks == 255).all() and img[2].mean() > 0.9
    # without explicit splits: deterministic hash split that covers every image once
    for i in range(20):
        _jpg(tmp_path / "g" / ("a" if i % 2 else "b") / f"{i}.jpg")
    sizes = [len(build_dataset(f"folder:{tmp_path / 'g'}", s, 8)) for s in ("train", "val", "test") if _has(tmp_path / "g", s)]
    assert sum(sizes) == 20


def _has(root, split):
    try:
        build_dataset(f"folder:{root}", split, 8)
        return True
    except UserError:
        return False


def test_folder_missing(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_dataset(f"folder:{tmp_path / 'x'}", "train")
