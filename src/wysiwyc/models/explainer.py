"""The Explainer network E(x) -> C mask logit maps at input resolution (Stalder et al.).

Registry ``EXPLAINERS`` maps ``spec.head_arch`` to a builder ``(num_classes, **extra)``:

* ``unet`` (default for shapes): a small 4-level U-Net, width 16 by default, sized for a
  2-core CPU (~0.47 M parameters at width 16). BatchNorm + ReLU, bilinear upsampling to
  the skip's size, so any H, W works (no divisibility constraint) and it exports to ONNX.
* ``lraspp_mobilenet_v3``: torchvision LR-ASPP MobileNetV3-Large, the edge variant.
* ``deeplabv3_resnet50``: torchvision DeepLabV3-ResNet50, the paper's explainer.
* ``classifier_unet``: a U-Net whose encoder is a trainable copy of the explained
  classifier's feature blocks (:func:`init_encoder_from_classifier` copies its weights
  before training) — the shapes counterpart of the paper's pretrained backbone: its
  features already tell the classes apart.

The torchvision models are always built with ``weights=None, weights_backbone=None``
(offline: their defaults download ImageNet weights); a user's local backbone weights file
is loaded by :func:`load_backbone_weights` at training time only — afterwards the weights
live in the checkpoint.

Every head has ``forward(x_norm (B,3,H,W)) -> logits (B,C,H,W)`` and
``masks(x_norm, feats) -> sigmoid(logits)`` in [0,1]; the classifier features are ignored
(the Explainer sees only the image, by design of paper 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from ..ops import gather_classes
from ..registry import Registry
from ..spec import ModelSpec

EXPLAINERS: Registry[Callable[..., nn.Module]] = Registry("explainer architecture")


def register_explainer(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        EXPLAINERS[name] = fn
        return fn

    return deco


class ExplainerHead(nn.Module):
    """Wraps a segmentation net: ``forward`` gives logits, ``masks`` gives sigmoids.

    Args:
        net: module mapping (B,3,H,W) -> (B,C,H',W') logits, or a dict with key ``out``
            (torchvision segmentation models).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_norm: torch.Tensor) -> torch.Tensor:
        """Mask logits (B,C,H,W) for a normalised image batch (B,3,H,W)."""
        out = self.net(x_norm)
        if isinstance(out, dict):
            out = out["out"]
        if out.shape[-2:] != x_norm.shape[-2:]:
            out = F.interpolate(out, size=x_norm.shape[-2:], mode="bilinear", align_corners=False)
        return out

    # the Explainer sees only the image: a fused model does not collect the classifier's blocks for it
    needs_features = False

    def masks(self, x_norm: torch.Tensor, feats: Any = None,  # noqa: ARG002 - feats unused
              classes: torch.Tensor | None = None) -> torch.Tensor:
        """Per-class masks (B,C,H,W) in [0,1], or (B,K,H,W) for ``classes`` (B,K)."""
        m = torch.sigmoid(self(x_norm))
        return m if classes is None else gather_classes(m, classes)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A plain U-Net: ``levels`` encoder stages (width, 2·width, …), max-pool down,
    bilinear up + concat skip + double conv, 1x1 conv to C logits at input resolution.

    Args:
        num_classes: C.
        width: channels of the first level.
        levels: number of resolution levels (4 -> bottleneck at 1/8).
    """

    def __init__(self, num_classes: int, width: int = 16, levels: int = 4) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList([_block(3 if i == 0 else chans[i - 1], c) for i, c in enumerate(chans)])
        self.up = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(levels - 1))])
        self.out = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2, ceil_mode=True))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            # upsample to the skip's exact size: odd sizes stay aligned, exports as Resize
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)


@register_explainer("unet")
def unet(num_classes: int, width: int = 16, levels: int = 4, **_: Any) -> nn.Module:
    return UNet(num_classes, width=int(width), levels=int(levels))


@register_explainer("lraspp_mobilenet_v3")
def lraspp_mobilenet_v3(num_classes: int, **_: Any) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


@register_explainer("deeplabv3_resnet50")
def deeplabv3_resnet50(num_classes: int, **_: Any) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_resnet50 as tv_deeplab

    return tv_deeplab(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


class ClassifierUNet(nn.Module):
    """Encoder = the classifier's feature blocks (same architecture, own weights), decoder =
    bilinear up + concat skip + double conv per block, plus a full-resolution stem on the
    image so mask edges stay sharp; 1x1 conv to C logits at input resolution.

    Args:
        num_classes: C.
        classifier_arch: registry name of the explained classifier (``spec.classifier_arch``).
        width: channels of the full-resolution stem and of the last decoder stage.
    """

    def __init__(self, num_classes: int, classifier_arch: str, width: int = 16) -> None:
        super().__init__()
        from .classifiers import build_classifier

        classifier = build_classifier(classifier_arch, num_classes)
        chans = list(classifier.block_channels().values())
        self.encoder = classifier.blocks
        self.stem = _block(3, width)
        dec = [max(width, c // 2) for c in chans[:-1]]
        ups, cin = [], chans[-1]
        for skip_c, out_c in zip(reversed(chans[:-1]), reversed(dec)):
            ups.append(_block(cin + skip_c, out_c))
            cin = out_c
        self.up = nn.ModuleList(ups)
        self.fuse = _block(cin + width, width)
        self.out = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for block in self.encoder.values():
            h = block(h)
            skips.append(h)
        h = skips[-1]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(self.fuse(torch.cat([h, self.stem(x)], dim=1)))


@register_explainer("classifier_unet")
def classifier_unet(num_classes: int, classifier_arch: str = "small_cnn", width: int = 16, **_: Any) -> nn.Module:
    return ClassifierUNet(num_classes, classifier_arch=str(classifier_arch), width=int(width))


def init_encoder_from_classifier(head: ExplainerHead, classifier: nn.Module) -> int:
    """Copy the classifier's feature-block weights into a ``classifier_unet`` encoder.
    Returns the number of tensors copied.

    Raises:
        UserError: the head is not a ``classifier_unet`` or the blocks do not match.
    """
    enc = getattr(head.net, "encoder", None)
    blocks = getattr(classifier, "blocks", None)
    if enc is None or blocks is None:
        raise UserError("--encoder-init classifier needs --arch classifier_unet and a block classifier")
    state = blocks.state_dict()
    try:
        enc.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"the classifier's blocks do not fit the explainer's encoder: {exc}") from exc
    return len(state)


def build_explainer(arch: str, num_classes: int, **extra: Any) -> ExplainerHead:
    """Build an untrained :class:`ExplainerHead` by registry name."""
    if arch not in EXPLAINERS:
        raise UserError(f"unknown explainer architecture {arch!r}; choose from {', '.join(sorted(EXPLAINERS))}")
    return ExplainerHead(EXPLAINERS[arch](num_classes, **extra))


def head_from_spec(spec: ModelSpec) -> ExplainerHead:
    """The (untrained) head a spec describes: ``spec.head_arch`` (default ``unet``),
    ``spec.num_classes``, architecture arguments from ``spec.extra["explainer"]``."""
    extra = dict(spec.extra.get("explainer", {})) if isinstance(spec.extra, dict) else {}
    return build_explainer(spec.head_arch or "unet", spec.num_classes, **extra)


def init_mask_bias(head: ExplainerHead, mask: float, num_classes: int) -> int:
    """Start every mask at ``mask`` (in (0,1)) by setting the output biases to logit(mask).

    The output convolutions are the biased ``Conv2d`` layers with ``num_classes`` outputs
    (U-Net: ``out``; DeepLabV3: the classifier's last conv; LR-ASPP: its low and high
    classifiers, whose outputs are summed — the first gets the bias, the others 0). Their
    weights keep PyTorch's default init. The paper does not say how its masks start (its
    DeepLabV3 head is default-initialised, so masks start near 0.5); why a high start
    matters on ``shapes`` is in the README's Explainer section. Returns the number of
    layers set.
    """
    if not 0.0 < mask < 1.0:
        raise UserError(f"--mask-init must be in (0, 1), got {mask}")
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_classes
             and m.bias is not None]
    if not convs:
        raise UserError(f"{type(head.net).__name__}: no output convolution with {num_classes} channels found")
    logit = float(torch.logit(torch.tensor(mask)))
    with torch.no_grad():
        for i, conv in enumerate(convs):
            conv.bias.fill_(logit if i == 0 else 0.0)
    return len(convs)


def load_backbone_weights(head: ExplainerHead, path: str | Path) -> int:
    """Load a local torchvision backbone state dict (e.g. ``resnet50-*.pth`` or
    ``mobilenet_v3_large-*.pth``) into a torchvision explainer's ``backbone``.

    Only tensors whose names and shapes match are copied (the classification fc is not
    part of a segmentation backbone). Returns the number of tensors loaded.

    Raises:
        UserError: missing file, a U-Net (no backbone), or nothing matched.
    """
    from .classifiers import load_state

    p = Path(path)
    backbone = getattr(head.net, "backbone", None)
    if backbone is None:
        raise UserError("--backbone-weights needs a torchvision explainer (lraspp_mobilenet_v3, deeplabv3_resnet50)")
    state = load_state(p)  # a missing, unreadable or unsafe file: one line
    own = backbone.state_dict()
    # mobilenet backbones are IntermediateLayerGetter over `features`: names lose the prefix
    cand = {k.removeprefix("features."): v for k, v in state.items()}
    cand.update(state)
    match = {k: v for k, v in cand.items() if k in own and own[k].shape == v.shape}
    if not match:
        raise UserError(f"{p}: no tensor matches the {type(head.net).__name__} backbone")
    own.update(match)
    backbone.load_state_dict(own)
    return len(match)
