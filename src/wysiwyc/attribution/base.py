"""Attribution base class and registry.

A method is a small subclass of :class:`Attribution` that implements
``explain(images, classes)``; the base owns the shared pipeline: input checks, classes
normalisation, device placement, ``no_grad`` where the method allows, clamping to [0,1]
and resizing to the input resolution.

Registering: decorate the subclass with ``@register_method("name")`` and list its module in
the plugins of :data:`METHODS`, which are imported on the first lookup (so heavy methods
stay unimported until asked for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from ..models.fused import FusedModel
from ..registry import Registry

METHODS: Registry[type["Attribution"]] = Registry("attribution method", plugins=(
    "wysiwyc.attribution.ours",
    "wysiwyc.attribution.cam",
    "wysiwyc.attribution.perturbation",
    "wysiwyc.attribution.sise",
    "wysiwyc.attribution.reciprocam",
))


def register_method(name: str) -> Callable[[type["Attribution"]], type["Attribution"]]:
    """Class decorator: register an :class:`Attribution` subclass as ``name`` (and set its
    :attr:`Attribution.name`)."""

    def deco(cls: type["Attribution"]) -> type["Attribution"]:
        cls.name = name
        return METHODS.register(name)(cls)

    return deco


def available_methods() -> list[str]:
    return METHODS.names()


def build_method(name: str, model: FusedModel, **settings: Any) -> "Attribution":
    """Instantiate a registered method on a loaded :class:`FusedModel`."""
    return METHODS.lookup(name)(model, **settings)


class Attribution:
    """Base class: owns the pipeline; subclasses implement :meth:`explain`.

    Attributes:
        name: registry name (set by :func:`register_method`).
        needs_grad: whether :meth:`explain` needs autograd (CAMs, optimisation methods).
        cost: classifier passes per image, as a human-readable string (docs and bench).
    """

    name: ClassVar[str] = "base"
    needs_grad: ClassVar[bool] = False
    cost: ClassVar[str] = "?"

    def __init__(self, model: FusedModel, **settings: Any) -> None:
        self.model = model
        self.settings = settings

    @property
    def classifier(self) -> torch.nn.Module:
        return self.model.classifier

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Classifier logits (B,C) of images (B,3,H,W) in [0,1]."""
        return self.model.classify(images)

    def __call__(self, images: torch.Tensor, classes: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B,3,H,W), got {tuple(images.shape)}")
        classes = self.normalise_classes(classes, images.shape[0], images.device)
        with torch.set_grad_enabled(self.needs_grad):
            masks = self.explain(images, classes)
        if masks.shape[-2:] != images.shape[-2:]:
            masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return masks.detach().clamp_(0, 1)

    @staticmethod
    def normalise_classes(classes: torch.Tensor | Sequence[int] | int, batch: int, device: torch.device) -> torch.Tensor:
        """int, (K,) or (B,K) -> long tensor (B,K) on ``device``."""
        c = torch.as_tensor(classes, dtype=torch.long, device=device)
        if c.ndim == 0:
            c = c.view(1, 1).expand(batch, 1)
        elif c.ndim == 1:
            c = c.view(1, -1).expand(batch, -1)
        if c.shape[0] != batch:
            raise ValueError(f"classes has {c.shape[0]} rows for a batch of {batch}")
        return c.contiguous()

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Masks (B,K,h,w) in [0,1] (any h,w; the base resizes) for ``classes`` (B,K)."""
        raise NotImplementedError
