"""``shapes`` dataset: torch wrapper around :mod:`wysiwyc.data.shapes_render` (see its doc)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from . import register_dataset
from .shapes_render import CLASSES, DEFAULT_LENGTHS, SPLITS, ShapesRenderer

__all__ = ["CLASSES", "DEFAULT_LENGTHS", "SPLITS", "ShapesDataset", "make_shapes"]


class ShapesDataset(Dataset):
    """Synthetic multi-label images with per-class masks.

    Args:
        split: ``train``, ``val`` or ``test`` (disjoint seeds).
        size: image side in pixels (square images).
        length: number of images; default 6000/1000/1000 for train/val/test.
        seed: base seed; the same (seed, split, index) always gives the same sample.
        spurious: plant the background cue for ``spurious_class``.
        spurious_class: the class that always comes with the cue.
        max_objects: 1..max_objects class objects per image.
        max_distractors: 0..max_distractors plain blobs per image.
        cache: keep generated samples in memory (uint8), for repeated epochs.

    Item: ``(image, labels, masks)`` — image float32 (3,H,W) in [0,1]; labels float32
    (C,) in {0,1}; masks uint8 (C,H,W) in {0,1} (255 would mean "unknown", never here).
    """

    classes = CLASSES

    def __init__(
        self,
        split: str = "train",
        size: int = 64,
        length: int | None = None,
        seed: int = 0,
        spurious: bool = False,
        spurious_class: str = "dots",
        max_objects: int = 4,
        max_distractors: int = 2,
        cache: bool = True,
    ) -> None:
        self.renderer = ShapesRenderer(split, size, seed, spurious, spurious_class, max_objects, max_distractors)
        self.split, self.size, self.seed = split, int(size), int(seed)
        self.length = DEFAULT_LENGTHS[split] if length is None else int(length)
        self.spurious, self.spurious_class = spurious, spurious_class
        self.class_names = list(CLASSES)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self._cache is not None and index in self._cache:
            img, labels, masks = self._cache[index]
        else:
            img, labels, masks = self.renderer.generate(index)
            if self._cache is not None:
                self._cache[index] = (img, labels, masks)
        image = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        return image, torch.from_numpy(labels).float(), torch.from_numpy(masks)


@register_dataset("shapes")
def make_shapes(root: str | None = None, split: str = "train", size: int | tuple[int, int] = 64,
                **kwargs: object) -> ShapesDataset:
    """Registry factory: ``root`` is unused; ``size`` may be an int or a square (H, W)."""
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError("shapes images are square")
        size = size[0]
    return ShapesDataset(split=split, size=int(size), **kwargs)  # type: ignore[arg-type]
