"""Shared pieces of the real-data loaders: resizing and sample assembly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

UNKNOWN = 255


def as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def load_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """RGB image resized (bilinear) to (H,W): float32 (3,H,W) in [0,1]."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_index_map(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (h,w) integer map to (H,W)."""
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.NEAREST))


def unknown_masks(num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    return torch.full((num_classes, *size), UNKNOWN, dtype=torch.uint8)
