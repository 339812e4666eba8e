"""The mask predictor of paper 2: a decoder over the frozen classifier's own feature maps
plus a distribution controller, trained with the classification loss only.

``M = upsample(C(G(F(I))))``:

* **Feature filter** (paper 2, App. A.1): on the deepest block ``X`` (B,Cx,h,w),
  ``Y_k = X · sigmoid(X·C_k / sqrt(Cx) + b_k)`` with a learned class embedding ``C``
  (K,Cx). Choice: the dot product is divided by sqrt(Cx) and given a per-class bias so the
  sigmoid starts in its linear range for any backbone width. All K classes are filtered
  at once by broadcasting the embeddings, so the decoder sees a batch of B·K maps and
  every class's mask comes out of one forward pass (:meth:`MaskPredictor.masks`, the
  fused graph); :meth:`MaskPredictor.class_masks` decodes only requested classes
  (target-class mode).
* **Generator** ``G``: three up-blocks (U-Net style, after Dabkowski & Gal). Each
  doubles the resolution with a transposed convolution (stride 2) while it is below the
  target — 1/4 of the input (56×56 at 224) — concatenates the classifier block of that
  resolution (1×1-projected, shared by all classes) and applies a conv-BN-ReLU
  bottleneck. When the deepest block is only 16× down (``small_cnn``), the third block
  works at the target resolution (stride 1). Output: one coarse score map per class.
* **Distribution controller** ``C``: instance normalisation of each coarse map
  (``z = (m − E m)/sqrt(Var m + ε)`` over its pixels), then ``relu`` (basic, Eq. 5;
  clamped at 1 here because masks must lie in [0,1] to perturb an image) or
  ``sigmoid(η·z)^h`` (custom, Eq. 6; η=1.5, h=2.5). Both are monotone, so the ranking
  of the generator's scores is preserved.
* Bilinear upsampling of the controlled coarse mask to the input size.

Registered for checkpoint kind ``mask_predictor`` via :func:`head_from_spec` (see
:mod:`wysiwyc.models.fused`): ``masks(x_norm, feats) -> (B,K,H,W)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import Registry
from ..spec import ModelSpec

CONTROLLERS: Registry[Callable[..., torch.Tensor]] = Registry("controller")
register_controller = CONTROLLERS.register


def instance_normalise(m: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Standardise every map of ``m`` (...,h,w) over its own pixels (zero mean, unit variance)."""
    mean = m.mean(dim=(-2, -1), keepdim=True)
    var = m.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (m - mean) / torch.sqrt(var + eps)


@register_controller("basic")
def basic_transform(z: torch.Tensor, **_: Any) -> torch.Tensor:
    """Eq. 5: ``relu(z)``, clamped at 1 so the mask stays a valid blend weight."""
    return z.clamp(0.0, 1.0)


@register_controller("custom")
def custom_transform(z: torch.Tensor, eta: float = 1.5, h: float = 2.5) -> torch.Tensor:
    """Eq. 6: ``sigmoid(η·z)^h`` — right-skewed scores in (0,1)."""
    return torch.sigmoid(eta * z).pow(h)


def custom_density(m: torch.Tensor, eta: float = 1.5, h: float = 2.5) -> torch.Tensor:
    """Eq. 7: density of ``sigmoid(η·z)^h`` for z ~ N(0,1), at ``m`` in (0,1)."""
    u = m.pow(-1.0 / h) - 1.0
    return (torch.exp(-torch.log(u) ** 2 / (2 * eta**2))
            / (math.sqrt(2 * math.pi) * h * eta * m * (1.0 - m.pow(1.0 / h))))


class DistributionController(nn.Module):
    """Instance norm + a monotone transform from :data:`CONTROLLERS` (no parameters)."""

    def __init__(self, kind: str = "custom", eta: float = 1.5, h: float = 2.5) -> None:
        super().__init__()
        if kind not in CONTROLLERS:
            raise ValueError(f"unknown controller {kind!r}; choose from {', '.join(CONTROLLERS)}")
        self.kind, self.eta, self.h = kind, float(eta), float(h)

    def forward(self, coarse: torch.Tensor) -> torch.Tensor:
        """Coarse scores (...,h,w) -> masks (...,h,w) in [0,1]."""
        return CONTROLLERS[self.kind](instance_normalise(coarse), eta=self.eta, h=self.h)


class FeatureFilter(nn.Module):
    """``Y_k = X · sigmoid(X·C_k/sqrt(Cx) + b_k)`` for every class k (App. A.1)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(num_classes, channels) * 0.01)
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.scale = 1.0 / math.sqrt(channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class spatial gates (B,K,h,w) in (0,1) for features x (B,Cx,h,w)."""
        return torch.sigmoid(torch.einsum("bchw,kc->bkhw", x, self.embedding) * self.scale
                             + self.bias.view(1, -1, 1, 1))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """Transposed-conv upsampling (or none), + a skip of that resolution, + a bottleneck."""

    def __init__(self, cin: int, cout: int, skip_channels: int, upsample: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2) if upsample else nn.Conv2d(cin, cout, 1)
        self.body = _conv_bn_relu(cout + skip_channels, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            if skip.shape[-2:] != x.shape[-2:]:  # odd sizes: align on the skip's grid
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
        return self.body(x)


class MaskPredictor(nn.Module):
    """Generator + controller over a classifier's feature blocks.

    Args:
        block_shapes: ``{name: (C_k, H_k, W_k)}`` of the classifier at ``image_size``, in
            forward order (shallow to deep).
        image_size: (H, W) the predictor is built for (the skips are chosen by resolution).
        num_classes: K.
        width: decoder channels.
        controller, eta, h: the distribution controller (see module doc).
    """

    def __init__(self, block_shapes: "OrderedDict[str, tuple[int, int, int]]", image_size: tuple[int, int],
                 num_classes: int, width: int = 64, controller: str = "custom", eta: float = 1.5,
                 h: float = 2.5) -> None:
        super().__init__()
        names = list(block_shapes)
        self.deep = names[-1]
        cx, hd, _ = block_shapes[self.deep]
        target = max(1, image_size[0] // 4)
        self.filter = FeatureFilter(cx, num_classes)
        self.bottleneck = nn.Conv2d(cx, width, 1)
        self.skip_names: list[str | None] = []
        self.skip_proj = nn.ModuleDict()
        self.ups = nn.ModuleList()
        res = hd
        for _ in range(3):
            upsample = res < target
            res = min(res * 2, target) if upsample else res
            # the deepest classifier block at this resolution (other than the input block)
            skip = next((n for n in reversed(names[:-1]) if block_shapes[n][1] == res), None)
            if skip in self.skip_names:
                skip = None  # a stride-1 block: the skip was already used one level up
            self.skip_names.append(skip)
            if skip is not None and skip not in self.skip_proj:
                self.skip_proj[skip] = nn.Conv2d(block_shapes[skip][0], width // 2, 1)
            self.ups.append(UpBlock(width, width, width // 2 if skip else 0, upsample))
        self.out = nn.Conv2d(width, 1, 1)
        self.controller = DistributionController(controller, eta, h)
        self.num_classes = num_classes

    # -- generator --------------------------------------------------------------------------
    def coarse(self, feats: "OrderedDict[str, torch.Tensor]", pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Generator scores before the controller.

        Args:
            feats: classifier block outputs (B,C_k,H_k,W_k).
            pairs: ``(batch_idx (N,), class_idx (N,))`` to score only those (image, class)
                pairs (training); ``None`` scores every class of every image.

        Returns:
            (B,K,h4,w4) for all classes, or (N,h4,w4) for ``pairs``.
        """
        x = feats[self.deep]
        gate = self.filter.attention(x)  # (B,K,h,w)
        # The 1x1 bottleneck is linear over channels and the gate is one scalar per pixel, so
        # bottleneck(X·g_k) = (W·X)·g_k + b exactly: project once per image and gate the
        # projection, never materialising the (B·K, Cx, h, w) filtered features (Cx is 2048
        # on ResNet-50, 128 on small_cnn).
        proj = F.conv2d(x, self.bottleneck.weight)  # (B,width,h,w)
        bias = self.bottleneck.bias.view(1, -1, 1, 1)
        if pairs is None:
            b, k = x.shape[0], gate.shape[1]
            h = (proj.unsqueeze(1) * gate.unsqueeze(2)).flatten(0, 1) + bias  # (B*K,width,h,w)
            expand = lambda t: t.unsqueeze(1).expand(-1, k, -1, -1, -1).flatten(0, 1)  # noqa: E731
        else:
            bi, ki = pairs
            h = proj[bi] * gate[bi, ki].unsqueeze(1) + bias  # (N,width,h,w)
            expand = lambda t: t[bi]  # noqa: E731
        for name, up in zip(self.skip_names, self.ups):
            skip = expand(self.skip_proj[name](feats[name])) if name is not None else None
            h = up(h, skip)
        out = self.out(h)[:, 0]
        return out.view(b, k, *out.shape[-2:]) if pairs is None else out

    def controlled(self, feats: "OrderedDict[str, torch.Tensor]", size: tuple[int, int],
                   pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Masks in [0,1] at ``size``: (B,K,H,W), or (N,H,W) for ``pairs``."""
        m = self.controller(self.coarse(feats, pairs))
        squeeze = m.ndim == 3
        if squeeze:
            m = m.unsqueeze(1)
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        return m[:, 0] if squeeze else m

    needs_features = True

    def masks(self, x_norm: torch.Tensor, feats: "OrderedDict[str, torch.Tensor]",
              classes: torch.Tensor | None = None) -> torch.Tensor:
        """The fused-model contract: masks (B,C,H,W) in [0,1] for every class, or
        (B,K,H,W) for ``classes`` (B,K) (:meth:`class_masks`)."""
        if classes is not None:
            return self.class_masks(x_norm, feats, classes)
        return self.controlled(feats, tuple(x_norm.shape[-2:]))

    def class_masks(self, x_norm: torch.Tensor, feats: "OrderedDict[str, torch.Tensor]",
                    classes: torch.Tensor) -> torch.Tensor:
        """Target-class mode: masks (B,T,H,W) only for ``classes`` (B,T) long.

        The decoder runs on B·T maps instead of B·K, so explaining one class of a
        many-class classifier costs one class's decoder pass; the values equal
        ``masks(...)`` gathered at ``classes``.
        """
        b, t = classes.shape
        bi = torch.arange(b, device=classes.device).repeat_interleave(t)
        m = self.controlled(feats, tuple(x_norm.shape[-2:]), pairs=(bi, classes.reshape(-1)))  # (B*T,H,W)
        return m.view(b, t, *m.shape[-2:])


def head_from_spec(spec: ModelSpec) -> MaskPredictor:
    """Build the (untrained) mask predictor a ``mask_predictor`` spec describes.

    ``spec.mask_kind`` names the controller; ``spec.extra["mask_predictor"]`` holds
    ``width``, ``eta``, ``h``; the block shapes come from a dry run of the spec's classifier
    at its image size.
    """
    from .explanandum import classifier_from_spec

    cfg = dict(spec.extra.get("mask_predictor", {}))
    clf = classifier_from_spec(spec).eval()
    with torch.no_grad():
        feats = clf.forward_features(torch.zeros(1, 3, *spec.image_size))
    shapes = OrderedDict((k, tuple(int(s) for s in v.shape[1:])) for k, v in feats.items())
    return MaskPredictor(shapes, tuple(spec.image_size), spec.num_classes, width=int(cfg.get("width", 64)),
                         controller=str(spec.mask_kind or "custom"),
                         eta=float(cfg.get("eta", 1.5)), h=float(cfg.get("h", 2.5)))
