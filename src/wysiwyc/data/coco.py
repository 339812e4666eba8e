"""COCO-2014 from a local root: ROOT/annotations/instances_{train,val}2014.json and
ROOT/{train,val}2014/*.jpg. Masks via pycocotools (extra ``coco``).

Splits follow the Explainer paper: ``train`` = 90% of train2014, ``val`` = the other 10%
(chosen by image id, deterministic), ``test`` = val2014. The 80 categories are in
ascending category-id order. Images without annotations are kept (all-zero labels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError, require
from . import register_dataset
from ._common import as_hw, load_image, resize_index_map

LAYOUT = "ROOT/annotations/instances_{train,val}2014.json + ROOT/{train,val}2014/*.jpg (COCO-2014 layout)"


@register_dataset("coco")
class COCODataset(Dataset):
    """COCO-2014 multi-label samples ``(image, labels, masks)``; see the module doc."""

    def __init__(self, root: str | Path | None, split: str = "train", size: int | tuple[int, int] = 224,
                 **_: object) -> None:
        self.root = Path(root or "")
        self.size = as_hw(size)
        year_split = "val2014" if split == "test" else "train2014"
        ann = self.root / "annotations" / f"instances_{year_split}.json"
        self.image_dir = self.root / year_split
        if not ann.is_file() or not self.image_dir.is_dir():
            raise UserError(f"coco root {self.root} is missing {ann.name if not ann.is_file() else year_split + '/'}; expected {LAYOUT}")
        try:
            data = json.loads(ann.read_text())
            cats = sorted(data["categories"], key=lambda c: c["id"])
            images = sorted(data["images"], key=lambda im: im["id"])
            anns = data.get("annotations", [])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"malformed COCO annotation file {ann}: {exc}; expected {LAYOUT}") from exc
        self.class_names = [c["name"] for c in cats]
        self.cat_index = {c["id"]: i for i, c in enumerate(cats)}
        if split in ("train", "val"):
            images = [im for im in images if (im["id"] % 10 == 0) == (split == "val")]
        self.images = images
        self.anns: dict[int, list[dict]] = {}
        for a in anns:
            self.anns.setdefault(a["image_id"], []).append(a)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask_utils = require("pycocotools.mask", "coco", "COCO masks")
        info = self.images[index]
        image = load_image(self.image_dir / info["file_name"], self.size)
        h, w = int(info["height"]), int(info["width"])
        C = len(self.class_names)
        labels = torch.zeros(C)
        full = np.zeros((C, h, w), dtype=np.uint8)
        for a in self.anns.get(info["id"], []):
            c = self.cat_index[a["category_id"]]
            labels[c] = 1
            seg = a["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            full[c] |= mask_utils.decode(rle).astype(np.uint8)
        masks = np.stack([resize_index_map(m, self.size) for m in full]) if C else np.zeros((0, *self.size), np.uint8)
        return image, labels, torch.from_numpy(masks.copy())
