"""Datasets, by name: ``shapes`` (default, synthetic), ``voc:ROOT``, ``coco:ROOT``, ``folder:DIR``.

Every dataset yields ``(image, labels, masks)``: image float32 (3,H,W) RGB in [0,1]
resized to the requested size; labels float32 (C,) in {0,1}; masks uint8 (C,H,W) with
1 = class pixel, 0 = not, 255 = unknown/void (e.g. a VOC image without segmentation,
or VOC's void border). Every dataset has ``class_names``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..registry import Registry

if TYPE_CHECKING:  # torch stays unimported: the runtime imports data.shapes_render
    from torch.utils.data import DataLoader, Dataset

    from ..distributed import DistContext

# name -> factory(root, split, size, **kwargs) -> Dataset; each loader module registers
# itself and is imported on the first lookup, so importing this package stays torch-free
DATASETS: Registry[Callable[..., "Dataset"]] = Registry("dataset", plugins=(
    "wysiwyc.data.shapes", "wysiwyc.data.voc", "wysiwyc.data.coco", "wysiwyc.data.folder"))
register_dataset = DATASETS.register


def parse_data_arg(value: str) -> tuple[str, str | None]:
    """``'voc:/data/VOC2007'`` -> ``('voc', '/data/VOC2007')``; ``'shapes'`` -> ``('shapes', None)``."""
    name, _, root = value.partition(":")
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; use one of: shapes, voc:ROOT, coco:ROOT, folder:DIR")
    if name != "shapes" and not root:
        raise UserError(f"dataset {name!r} needs a root: {name}:PATH")
    return name, (root or None)


def build_dataset(data: str, split: str, size: int | tuple[int, int] = 64, **kwargs: Any) -> "Dataset":
    """Build a dataset from a ``--data`` value such as ``shapes`` or ``voc:ROOT``."""
    name, root = parse_data_arg(data)
    return DATASETS[name](root=root, split=split, size=size, **kwargs)


def make_loader(dataset: "Dataset", batch_size: int, shuffle: bool = False, workers: int = 0,
                drop_last: bool = False, *, shard: "DistContext | None" = None, seed: int = 0) -> "DataLoader":
    """A DataLoader over ``dataset`` in batches of ``batch_size``.

    With ``shard`` (training), it yields this rank's shard of a :class:`~wysiwyc.distributed.ShardSampler`
    — shuffled from (``seed``, epoch) when ``shuffle`` — in a world of one too, so the sample order
    does not depend on the world size. Without it, the shuffle order comes from the global torch seed.
    """
    from torch.utils.data import DataLoader

    if shard is None:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          drop_last=drop_last, persistent_workers=workers > 0)
    from ..distributed import ShardSampler

    sampler = ShardSampler(len(dataset), shard.rank, shard.world_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, persistent_workers=workers > 0)


def dataset_kwargs(data: str, length: int | None = None, spurious: bool = False,
                   seed: int = 0) -> dict[str, Any]:
    """Keyword arguments only the synthetic dataset understands, dropped for real data."""
    if parse_data_arg(data)[0] != "shapes":
        return {}
    kw: dict[str, Any] = {"spurious": spurious, "seed": seed}
    if length is not None:
        kw["length"] = length
    return kw


def check_classes(dataset_classes: list[str], model_classes: list[str], what: str = "checkpoint") -> None:
    """Raise a UserError when a dataset's classes differ from a model's."""
    if list(dataset_classes) != list(model_classes):
        raise UserError(
            f"class mismatch: the data has {len(dataset_classes)} classes ({', '.join(dataset_classes[:5])}…) "
            f"but the {what} has {len(model_classes)} ({', '.join(model_classes[:5])}…)"
        )
