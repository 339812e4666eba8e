"""The explanandum zoo: multi-label classifiers that expose their feature blocks by name.

Every classifier is a :class:`BlockClassifier`: an ordered ``ModuleDict`` of feature
blocks (Grad-CAM, SISE and the mask predictor read them by name) followed by its *top*,
the pooling + linear layer(s) that map the last block to C logits (the word *head* is
kept for attribution networks). Inputs are *normalised* images (B,3,H,W) — normalisation lives outside so the
Explainer can mask the normalised image (0 = mean colour), as in the paper.

Registry: ``small_cnn`` (built-in, for the ``shapes`` default), ``vgg16``, ``resnet18``,
``resnet50``, ``mobilenet_v3_large``, ``efficientnet_b0`` (torchvision, new C-way top).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..registry import Registry

CLASSIFIERS: Registry[Callable[..., "BlockClassifier"]] = Registry("classifier arch")
register_classifier = CLASSIFIERS.register


class BlockClassifier(nn.Module):
    """Feature blocks + top. ``forward(x (B,3,H,W) normalised) -> logits (B,C)``.

    Attributes:
        blocks: ordered named feature blocks, shallow to deep.
        top: pooling + linear layer(s) mapping the last block to C logits.
        target_block: the block Grad-CAM-style methods default to (the deepest).
    """

    def __init__(self, blocks: "OrderedDict[str, nn.Module]", top: nn.Module, arch: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(blocks)
        self.top = top
        self.arch = arch
        self.target_block = list(blocks)[-1]

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks.keys())

    def forward_features(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """All block outputs, name -> (B,C_k,H_k,W_k)."""
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, block in self.blocks.items():
            x = block(x)
            feats[name] = x
        return feats

    def features_and_logits(self, x: torch.Tensor) -> tuple["OrderedDict[str, torch.Tensor]", torch.Tensor]:
        """Block outputs (as :meth:`forward_features`) and the logits (B,C), in one pass."""
        feats = self.forward_features(x)
        return feats, self.top(feats[next(reversed(feats))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return self.top(x)

    def block_channels(self, image_size: tuple[int, int] = (64, 64)) -> dict[str, int]:
        """Output channels of each block, found by a dry run at ``image_size``."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            p = next(self.parameters())
            feats = self.forward_features(torch.zeros(1, 3, *image_size, device=p.device, dtype=p.dtype))
        self.train(was_training)
        return {k: int(v.shape[1]) for k, v in feats.items()}


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_classifier("small_cnn")
def small_cnn(num_classes: int, width: int = 32, **_: object) -> BlockClassifier:
    """~0.58 M-parameter VGG-style CNN (width 32): four blocks at strides 2, 4, 8, 16.

    Each block downsamples with a strided 3x3 convolution rather than conv + max-pool at
    the higher resolution: ~46 M MACs per 64 px image instead of ~170 M, which is what
    makes a 2-core CPU train it in minutes, at the same accuracy on ``shapes``.
    """
    w = width
    blocks = OrderedDict(
        block1=nn.Sequential(*_conv_bn(3, w), *_conv_bn(w, w, stride=2)),
        block2=nn.Sequential(*_conv_bn(w, 2 * w, stride=2), *_conv_bn(2 * w, 2 * w)),
        block3=nn.Sequential(*_conv_bn(2 * w, 4 * w, stride=2), *_conv_bn(4 * w, 4 * w)),
        block4=nn.Sequential(*_conv_bn(4 * w, 8 * w, stride=2)),
    )
    top = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * w, num_classes))
    return BlockClassifier(blocks, top, "small_cnn")


def _tv(name: str) -> Callable[..., nn.Module]:
    import torchvision.models as tvm

    return getattr(tvm, name)


@register_classifier("resnet18")
def resnet18(num_classes: int, **_: object) -> BlockClassifier:
    return _resnet("resnet18", num_classes)


@register_classifier("resnet50")
def resnet50(num_classes: int, **_: object) -> BlockClassifier:
    return _resnet("resnet50", num_classes)


def _resnet(name: str, num_classes: int) -> BlockClassifier:
    m = _tv(name)(weights=None)
    blocks = OrderedDict(
        relu=nn.Sequential(m.conv1, m.bn1, m.relu),
        layer1=nn.Sequential(m.maxpool, m.layer1),
        layer2=m.layer2,
        layer3=m.layer3,
        layer4=m.layer4,
    )
    top = nn.Sequential(m.avgpool, nn.Flatten(), nn.Linear(m.fc.in_features, num_classes))
    return BlockClassifier(blocks, top, name)


@register_classifier("vgg16")
def vgg16(num_classes: int, **_: object) -> BlockClassifier:
    """Blocks end at VGG16's five max-pool layers (SISE's probe points)."""
    m = _tv("vgg16")(weights=None)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    current: list[nn.Module] = []
    for layer in m.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks[f"pool{len(blocks) + 1}"] = nn.Sequential(*current)
            current = []
    cls = list(m.classifier.children())
    cls[-1] = nn.Linear(cls[-1].in_features, num_classes)
    top = nn.Sequential(m.avgpool, nn.Flatten(), *cls)
    return BlockClassifier(blocks, top, "vgg16")


def _split_features(features: nn.Sequential, ends: list[int], prefix: str = "stage") -> "OrderedDict[str, nn.Module]":
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    start = 0
    for i, end in enumerate(ends):
        blocks[f"{prefix}{i + 1}"] = nn.Sequential(*list(features.children())[start:end])
        start = end
    return blocks


@register_classifier("mobilenet_v3_large")
def mobilenet_v3_large(num_classes: int, **_: object) -> BlockClassifier:
    """Blocks end at strides 2, 4, 8, 16, 32 of ``features``."""
    m = _tv("mobilenet_v3_large")(weights=None)
    blocks = _split_features(m.features, [2, 4, 7, 13, 17])
    cls = list(m.classifier.children())
    cls[-1] = nn.Linear(cls[-1].in_features, num_classes)
    top = nn.Sequential(m.avgpool, nn.Flatten(), *cls)
    return BlockClassifier(blocks, top, "mobilenet_v3_large")


@register_classifier("efficientnet_b0")
def efficientnet_b0(num_classes: int, **_: object) -> BlockClassifier:
    """Blocks end at strides 2, 4, 8, 16, 32 of ``features``."""
    m = _tv("efficientnet_b0")(weights=None)
    blocks = _split_features(m.features, [2, 3, 4, 6, 9])
    cls = list(m.classifier.children())
    cls[-1] = nn.Linear(cls[-1].in_features, num_classes)
    top = nn.Sequential(m.avgpool, nn.Flatten(), *cls)
    return BlockClassifier(blocks, top, "efficientnet_b0")


# torchvision state-dict prefixes -> our block names, for loading ImageNet weights files.
_TV_ENUMS = {
    "vgg16": "VGG16_Weights",
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
}


def build_classifier(arch: str, num_classes: int, weights: str | Path | None = None,
                     pretrained: bool = False) -> BlockClassifier:
    """Build a registered classifier with a fresh C-way top.

    Args:
        arch: registry name.
        num_classes: C.
        weights: a local torchvision state-dict file (e.g. ImageNet weights) loaded into
            the backbone; the 1000-way top is skipped.
        pretrained: fetch torchvision's default weight enum (needs internet).

    Raises:
        UserError: unknown arch, unreadable weights file, or no network for ``pretrained``.
    """
    model = CLASSIFIERS.lookup(arch)(num_classes)
    state = None
    if weights is not None:
        state = load_state(weights)
    elif pretrained:
        if arch not in _TV_ENUMS:
            raise UserError(f"{arch} has no torchvision pretrained weights")
        import torchvision.models as tvm

        enum = getattr(tvm, _TV_ENUMS[arch]).DEFAULT
        try:
            state = enum.get_state_dict(progress=False)
        except Exception as exc:
            raise UserError(
                f"could not download {enum} ({type(exc).__name__}); offline machines must pass "
                "--weights PATH to a local torchvision weights file"
            ) from exc
    if state is not None:
        load_torchvision_weights(model, state)
    return model


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local weights file (``weights_only``: no code runs on load);
    a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.

    Raises:
        UserError: missing or unreadable file, or one that holds no state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if first.startswith("Weights only load failed"):
            first = "not a file of tensors and plain dicts"
        raise UserError(f"cannot read weights file {p} ({first[:160]})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{p} holds no state dict (a mapping of names to tensors)")
    return state


def load_torchvision_weights(model: BlockClassifier, state: dict[str, torch.Tensor]) -> int:
    """Copy a torchvision state dict into our re-blocked model by matching parameter order.

    Our blocks wrap torchvision's own modules in the same order, so the i-th backbone
    tensor corresponds to the i-th tensor of the file; tensors whose shapes differ
    (the 1000-way top) are skipped. Returns how many tensors were loaded.

    Raises:
        UserError: when almost nothing matches (a file for another architecture).
    """
    ours = model.state_dict()
    our_keys = [k for k in ours if not k.endswith("num_batches_tracked")]
    their = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    loaded = 0
    for (ok, (tk, tv)) in zip(our_keys, their):
        if ours[ok].shape == tv.shape:
            ours[ok] = tv
            loaded += 1
    if loaded < 0.8 * len(our_keys) - 4:
        raise UserError(
            f"weights file matches only {loaded}/{len(our_keys)} tensors of {model.arch}: wrong architecture?"
        )
    model.load_state_dict(ours)
    return loaded


class Normalize(nn.Module):
    """(x - mean) / std for RGB images (B,3,H,W) in [0,1]; buffers so they export to ONNX.
    ``bgr``: the classifier expects BGR, so the channels are swapped first (``mean`` and
    ``std`` are then in BGR order too)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], bgr: bool = False) -> None:
        super().__init__()
        self.bgr = bool(bgr)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std


def freeze(model: nn.Module) -> nn.Module:
    """Freeze an explanandum: eval mode for good, no gradients to its weights.

    ``train()`` on the frozen module (or any parent) becomes a no-op for it, so
    BatchNorm statistics and dropout stay fixed — the pitfall of the authors' code, where
    Lightning switched the "frozen" classifier back to train mode after validation.
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def _stay_eval(mode: bool = True) -> nn.Module:  # noqa: ARG001 - signature of nn.Module.train
        return nn.Module.train(model, False)

    model.train = _stay_eval  # type: ignore[method-assign]
    return model
