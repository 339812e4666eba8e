"""An image folder: ROOT/<class>/*.{jpg,jpeg,png,bmp,webp}, one label per image.

Splits: when ROOT/train, ROOT/val and/or ROOT/test exist, each holds its own class
subfolders; otherwise every image is assigned to train/val/test (80/10/10) by a hash of
its relative path, so the split is deterministic and stable when files are added.
Masks are unknown (255) — folders carry no segmentation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import UserError
from . import register_dataset
from ._common import as_hw, load_image, unknown_masks

EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
LAYOUT = "ROOT/<class>/<image> or ROOT/{train,val,test}/<class>/<image>"


def _hash_split(rel: str) -> str:
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 10
    return "train" if h < 8 else ("val" if h == 8 else "test")


@register_dataset("folder")
class FolderDataset(Dataset):
    """Single-label samples ``(image, one-hot labels, unknown masks)``; see the module doc."""

    def __init__(self, root: str | Path | None, split: str = "train", size: int | tuple[int, int] = 224,
                 **_: object) -> None:
        base = Path(root or "")
        if not base.is_dir():
            raise UserError(f"image folder {base} does not exist; expected {LAYOUT}")
        self.size = as_hw(size)
        explicit = (base / split).is_dir()
        top = base / split if explicit else base
        classes = sorted(p.name for p in top.iterdir() if p.is_dir() and p.name not in ("train", "val", "test"))
        if not classes:
            raise UserError(f"image folder {top} has no class subfolders; expected {LAYOUT}")
        self.class_names = classes
        self.items: list[tuple[Path, int]] = []
        for ci, c in enumerate(classes):
            for p in sorted((top / c).rglob("*")):
                if p.suffix.lower() in EXTS and (explicit or _hash_split(str(p.relative_to(top))) == split):
                    self.items.append((p, ci))
        if not self.items:
            raise UserError(f"image folder {top} has no images for split {split!r}; expected {LAYOUT}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        path, ci = self.items[index]
        labels = torch.zeros(len(self.class_names))
        labels[ci] = 1
        return load_image(path, self.size), labels, unknown_masks(len(self.class_names), self.size)
