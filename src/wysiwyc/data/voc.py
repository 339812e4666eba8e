"""PASCAL VOC 2007 from a local root in its standard layout.

    ROOT/Annotations/<id>.xml
    ROOT/JPEGImages/<id>.jpg
    ROOT/ImageSets/Main/{train,val,trainval,test}.txt
    ROOT/SegmentationClass/<id>.png      (only for the segmentation subset)

Labels: every object class named in the XML, including ``difficult`` objects (the
classifier sees them in the image; dropping them would label visible objects absent).
Masks: from SegmentationClass palette indices where present (index k -> class k-1;
void 255 -> 255 "unknown"); images without segmentation get all-255 masks.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from . import register_dataset
from ._common import UNKNOWN, as_hw, load_image, resize_index_map, unknown_masks

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
LAYOUT = "ROOT/{Annotations,JPEGImages,ImageSets/Main/<split>.txt[,SegmentationClass]} (VOC2007 layout)"


@register_dataset("voc")
class VOCDataset(Dataset):
    """VOC-2007 multi-label samples ``(image, labels, masks)``; see the module doc."""

    class_names = list(VOC_CLASSES)

    def __init__(self, root: str | Path | None, split: str = "train", size: int | tuple[int, int] = 224,
                 **_: object) -> None:
        self.root = Path(root or "")
        self.size = as_hw(size)
        ids_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        for need in (self.root / "Annotations", self.root / "JPEGImages", ids_file):
            if not need.exists():
                raise UserError(f"voc root {self.root} is missing {need.relative_to(self.root) if self.root in need.parents else need}; expected {LAYOUT}")
        self.ids = [ln.split()[0] for ln in ids_file.read_text().splitlines() if ln.strip()]
        if not self.ids:
            raise UserError(f"{ids_file} lists no images; expected {LAYOUT}")

    def __len__(self) -> int:
        return len(self.ids)

    def labels_of(self, image_id: str) -> torch.Tensor:
        path = self.root / "Annotations" / f"{image_id}.xml"
        try:
            tree = ET.parse(path)
        except (ET.ParseError, OSError) as exc:
            raise UserError(f"cannot read VOC annotation {path}: {exc}") from exc
        labels = torch.zeros(len(VOC_CLASSES))
        for obj in tree.getroot().iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name in VOC_CLASSES:
                labels[VOC_CLASSES.index(name)] = 1
        return labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        image = load_image(self.root / "JPEGImages" / f"{image_id}.jpg", self.size)
        labels = self.labels_of(image_id)
        seg = self.root / "SegmentationClass" / f"{image_id}.png"
        if not seg.is_file():
            return image, labels, unknown_masks(len(VOC_CLASSES), self.size)
        with Image.open(seg) as im:
            if im.mode not in ("P", "L"):  # VOC stores palette indices; RGB would need a colour lookup
                raise UserError(f"{seg} is a {im.mode} image; VOC SegmentationClass PNGs hold palette indices")
            idx = resize_index_map(np.asarray(im), self.size)
        idx_t = torch.from_numpy(idx.astype(np.int64))
        cls = torch.arange(1, len(VOC_CLASSES) + 1).view(-1, 1, 1)
        masks = (idx_t.unsqueeze(0) == cls).to(torch.uint8)
        masks[:, idx_t == UNKNOWN] = UNKNOWN
        return image, labels, masks
