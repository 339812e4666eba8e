"""ReciproCAM (Byun & Lee, "ReciproCAM: lightweight gradient-free class activation map"),
torch-native and batched, as an attribution method and as a head of the fused graph.

Take the feature map F (B,N,h,w) of one classifier block (default: the last, whose head is
pooling + linear layers); build P = h·w spatially masked copies of it per image; run all
B·P copies through the rest of the classifier in one batched call; the score of class k
at position p is the output for class k on copy p. Each class map is min-max normalised
and bilinearly resized to the image.

Copy p (position (i,j)) holds the feature vector F[:, i, j] spread over the 3×3
neighbourhood of (i,j) with the Gaussian weights [[1,2,1],[2,4,2],[1,2,1]]/16, zero
elsewhere (cut at the border). The authors' code has both this Gaussian mosaic of the
*centre* vector and a one-position mask, and its reference ``ReciproCam.__call__`` uses the
Gaussian one (``kernel="gaussian"``, the default); ``kernel="point"`` is the one-position
mask, the one OpenVINO XAI's CNN branch inserts. The authors' code scores with a softmax
over the classes (``score="softmax"``, the default); ``"sigmoid"`` (these classifiers are
multi-label) and ``"logit"`` are the alternatives.

Cost: 1 classifier pass + B·h·w passes of the head (pooling + linear layers) per batch;
all classes at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from ..models.explanandum import HookedClassifier
from ..models.fused import FREE_HEADS, FusedModel
from ..ops import gather_classes, minmax
from .base import Attribution, register_method

# the 3×3 binomial (Gaussian) kernel of the authors' code, centre 1/4
GAUSSIAN_3X3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0

# kernel name -> one-hot maps (P,1,h,w) -> that kernel placed around each 1, cut at the border
KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gaussian": lambda eye: F.conv2d(eye, GAUSSIAN_3X3.to(eye).view(1, 1, 3, 3), padding=1),
    "point": lambda eye: eye,
}
SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda logits: torch.softmax(logits, dim=-1),
    "sigmoid": torch.sigmoid,
    "logit": lambda logits: logits,
}


def mosaic_weights(h: int, w: int, kernel: str = "gaussian", device: torch.device | None = None) -> torch.Tensor:
    """Spatial weights (P,h,w), P = h·w: copy p = i·w + j weights position (y,x) by
    ``kernel`` centred at (i,j) (``point``: 1 at (i,j) only), zero elsewhere."""
    if kernel not in KERNELS:
        raise UserError(f"unknown ReciproCAM kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    return KERNELS[kernel](torch.eye(h * w, device=device).view(h * w, 1, h, w))[:, 0]


def mosaic(feats: torch.Tensor, kernel: str = "gaussian") -> torch.Tensor:
    """Feature map (B,N,h,w) -> its B·P masked copies (B·P,N,h,w), P = h·w, image-major:
    copy p of image b holds ``feats[b, :, p]`` spread by ``kernel`` around position p."""
    b, n, h, w = feats.shape
    wts = mosaic_weights(h, w, kernel, feats.device).to(feats.dtype)  # (P,h,w)
    centre = feats.flatten(2)  # (B,N,P): the vector each copy spreads
    return (centre.transpose(1, 2)[:, :, :, None, None] * wts[None, :, None]).reshape(b * h * w, n, h, w)


def token_mosaic(tokens: torch.Tensor, prefix: int, kernel: str = "gaussian") -> torch.Tensor:
    """ViT tokens (B,L,D) = ``prefix`` class/register tokens + a g×g grid -> (B·P,L,D), P = g²:
    copy p keeps the prefix tokens and weights the grid tokens by ``kernel`` around p (the
    ViT variant of ReciproCAM: the last encoder block sees one neighbourhood at a time)."""
    b, length, d = tokens.shape
    g = math.isqrt(length - prefix)
    wts = mosaic_weights(g, g, kernel, tokens.device).to(tokens.dtype).view(g * g, g * g)  # (P, grid)
    grid = tokens[:, None, prefix:] * wts[None, :, :, None]  # (B,P,g²,D)
    head = tokens[:, None, :prefix].expand(b, g * g, prefix, d)
    return torch.cat([head, grid], dim=2).reshape(b * g * g, length, d)


def token_layer(classifier: HookedClassifier, image_size: tuple[int, int]) -> tuple[str, int]:
    """The last repeated block of a transformer whose input is a token grid: (its module
    name, the number of prefix tokens before the grid). Repeated blocks are the children of
    a ``Sequential`` / ``ModuleList`` whose children all share one class (``encoder.layers``
    of torchvision's ViT, ``blocks`` of timm's).

    Raises:
        UserError: no such block (the model is neither a CNN nor a ViT).
    """
    model = classifier.model
    candidates = {}
    for name, mod in model.named_modules():
        kids = list(mod.named_children())
        if isinstance(mod, (nn.Sequential, nn.ModuleList)) and len(kids) > 1 and len({type(k) for _, k in kids}) == 1:
            candidates.update({f"{name}.{k}" if name else k: None for k, _ in kids})
    seen: list[tuple[str, int]] = []
    mods = dict(model.named_modules())

    def pre(name: str) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.ndim == 3:
                seen.append((name, int(x.shape[1])))
        return hook

    handles = [mods[n].register_forward_pre_hook(pre(n)) for n in candidates]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 3, *image_size, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    for name, length in reversed(seen):
        g = math.isqrt(length)
        prefix = length - g * g
        if g >= 2 and prefix <= 8:
            return name, prefix
    raise UserError(f"{classifier.arch}: found no feature map and no transformer token grid for ReciproCAM; "
                    "name the layer with --reciprocam-layer")


class ReciproCAMHead(nn.Module):
    """The ReciproCAM attribution head of a fused model.

    ``masks(x_norm (B,3,H,W), feats, classes=None) -> (B,C,H,W)`` in [0,1], all C classes
    (or (B,K,H,W) for ``classes`` (B,K)). On a zoo classifier it reads ``feats[layer]`` and
    runs the classifier's blocks after ``layer`` and its top (the classifier's own modules,
    shared, not copied). On a user's classifier (:class:`~wysiwyc.models.explanandum.HookedClassifier`)
    it splices into the classifier's own pass instead (:meth:`fused_forward`): a hook on
    ``layer`` appends the masked copies to the batch, so the rest of the user's network runs
    on B·(1+P) rows and returns the logits and the copies' scores together — one pass, any
    architecture whose layers after ``layer`` treat the rows independently. A CNN's ``layer``
    is its deepest feature block (its output is masked); a ViT's is its last encoder block
    (its input tokens are masked, :func:`token_mosaic`).

    Args:
        classifier: the frozen classifier whose features the fused model passes in.
        layer: the block whose output is masked (default: the last one; a ViT's last
            encoder block).
        kernel: ``gaussian`` (authors' code) or ``point``.
        score: ``softmax`` (authors' code), ``sigmoid`` or ``logit``.
        image_size: (H, W) of a dry run that finds a ViT's token layer.
    """

    needs_features = True

    def __init__(self, classifier: nn.Module, layer: str | None = None, kernel: str = "gaussian",
                 score: str = "softmax", image_size: tuple[int, int] = (224, 224)) -> None:
        super().__init__()
        if score not in SCORES:
            raise UserError(f"unknown ReciproCAM score {score!r}; choose from {', '.join(SCORES)}")
        if kernel not in KERNELS:
            raise UserError(f"unknown ReciproCAM kernel {kernel!r}; choose from {', '.join(KERNELS)}")
        self.kernel, self.score = kernel, score
        self.prefix: int | None = None  # ViT: tokens before the grid; None: a feature map
        self.spliced = isinstance(classifier, HookedClassifier)
        if self.spliced:
            self._user = (classifier,)  # a tuple: the fused model owns the classifier, not this head
            self.layer = layer or classifier.target_block
            if self.layer is None:
                self.layer, self.prefix = token_layer(classifier, image_size)
            classifier.module(self.layer)  # an unknown layer fails here
            return
        names = classifier.block_names
        self.layer = layer or names[-1]
        if self.layer not in names:
            raise UserError(f"unknown block {self.layer!r} of {classifier.arch}; choose from {', '.join(names)}")
        after = names[names.index(self.layer) + 1:]
        self.rest = nn.Sequential(*[classifier.blocks[n] for n in after], classifier.top)

    def train(self, mode: bool = True) -> "ReciproCAMHead":
        # ``rest`` is the frozen classifier's own modules: a fused model's train() must not
        # switch its dropout/BatchNorm back on through this second path
        self.training = mode
        return self

    def _maps(self, logits: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """Scores of the B·P copies (B·P,C) -> min-max normalised class maps (B,C,h,w)."""
        scores = SCORES[self.score](logits).view(b, h * w, -1)
        return minmax(scores.transpose(1, 2).reshape(b, -1, h, w))

    def class_maps(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature map (B,N,h,w) -> min-max normalised class maps (B,C,h,w) (zoo classifiers)."""
        b, _, h, w = feats.shape
        return self._maps(self.rest(mosaic(feats, self.kernel)), b, h, w)

    def _upsample(self, maps: torch.Tensor, size: tuple[int, ...], classes: torch.Tensor | None) -> torch.Tensor:
        if classes is not None:
            maps = gather_classes(maps, classes)
        return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False).clamp(0, 1)

    def masks(self, x: torch.Tensor, feats: "dict[str, torch.Tensor]",
              classes: torch.Tensor | None = None) -> torch.Tensor:
        if self.spliced:
            return self.fused_forward(x, classes)[1]
        return self._upsample(self.class_maps(feats[self.layer]), x.shape[-2:], classes)

    def fused_forward(self, x: torch.Tensor, classes: torch.Tensor | None = None,
                      k: int | None = None) -> tuple[torch.Tensor, ...]:
        """One pass of a user's classifier: ``(logits (B,C), masks)``, masks (B,C,H,W) or
        (B,K,H,W) for ``classes`` (B,K); with ``k``: ``(logits, classes (B,k), masks)`` for
        each image's top-k classes."""
        clf = self._user[0]
        b = x.shape[0]
        grid: list[int] = []
        if self.prefix is None:
            def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
                grid[:] = out.shape[-2:]
                return torch.cat([out, mosaic(out, self.kernel)])
            handle = clf.module(self.layer).register_forward_hook(hook)
        else:
            def pre(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
                g = math.isqrt(args[0].shape[1] - self.prefix)
                grid[:] = (g, g)
                return (torch.cat([args[0], token_mosaic(args[0], self.prefix, self.kernel)]), *args[1:])
            handle = clf.module(self.layer).register_forward_pre_hook(pre)
        try:
            out = clf(x)
        finally:
            handle.remove()
        logits = out[:b]
        if k is not None:
            classes = logits.topk(k, dim=1).indices
        maps = self._upsample(self._maps(out[b:], b, *grid), x.shape[-2:], classes)
        return (logits, classes, maps) if k is not None else (logits, maps)


@FREE_HEADS.register("reciprocam")
def reciprocam_model(model: FusedModel, **settings: Any) -> FusedModel:
    """``model``'s classifier with a :class:`ReciproCAMHead` (whatever head it had), as one
    fused model; its spec says kind ``reciprocam`` (settings in ``extra["reciprocam"]``)."""
    settings.setdefault("image_size", tuple(model.spec.image_size))
    head = ReciproCAMHead(model.classifier, **settings).eval()
    spec = model.spec.with_head("reciprocam", "reciprocam", head.score, {"reciprocam": {
        "layer": head.layer, "kernel": head.kernel, "score": head.score}})
    out = FusedModel(spec, model.classifier, head)
    return out.to(next(model.parameters()).device).eval()


@register_method("reciprocam")
class ReciproCAM(Attribution):
    """ReciproCAM: masks for all classes from one classifier pass and one batched head call
    over h·w masked copies of the last feature map (see the module docstring).

    Settings: ``layer``, ``kernel`` (``gaussian`` | ``point``), ``score``
    (``softmax`` | ``sigmoid`` | ``logit``).
    """

    cost = "1 classifier pass + h·w head passes (all classes)"

    def __init__(self, model: FusedModel, layer: str | None = None, kernel: str = "gaussian",
                 score: str = "softmax", **settings: Any) -> None:
        super().__init__(model, layer=layer, kernel=kernel, score=score, **settings)
        self.head = ReciproCAMHead(model.classifier, layer, kernel, score, tuple(model.spec.image_size))

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        x = self.model.norm(images)
        feats = None if self.head.spliced else self.classifier.forward_features(x)
        return self.head.masks(x, feats, classes)
