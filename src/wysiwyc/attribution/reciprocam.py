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

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from ..models.classifiers import BlockClassifier
from ..models.fused import FREE_HEADS, FusedModel
from ..ops import minmax
from .base import Attribution, gather_classes, register_method

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


class ReciproCAMHead(nn.Module):
    """The ReciproCAM attribution head of a fused model.

    ``masks(x_norm (B,3,H,W), feats) -> (B,C,H,W)`` in [0,1], all C classes. It reads
    ``feats[layer]`` and runs the classifier's blocks after ``layer`` and its top (the
    classifier's own modules, shared, not copied).

    Args:
        classifier: the frozen classifier whose features the fused model passes in.
        layer: the block whose output is masked (default: the last one).
        kernel: ``gaussian`` (authors' code) or ``point``.
        score: ``softmax`` (authors' code), ``sigmoid`` or ``logit``.
    """

    def __init__(self, classifier: BlockClassifier, layer: str | None = None, kernel: str = "gaussian",
                 score: str = "softmax") -> None:
        super().__init__()
        names = classifier.block_names
        self.layer = layer or names[-1]
        if self.layer not in names:
            raise UserError(f"unknown block {self.layer!r} of {classifier.arch}; choose from {', '.join(names)}")
        if score not in SCORES:
            raise UserError(f"unknown ReciproCAM score {score!r}; choose from {', '.join(SCORES)}")
        if kernel not in KERNELS:
            raise UserError(f"unknown ReciproCAM kernel {kernel!r}; choose from {', '.join(KERNELS)}")
        after = names[names.index(self.layer) + 1:]
        self.rest = nn.Sequential(*[classifier.blocks[n] for n in after], classifier.top)
        self.kernel, self.score = kernel, score

    def train(self, mode: bool = True) -> "ReciproCAMHead":
        # ``rest`` is the frozen classifier's own modules: a fused model's train() must not
        # switch its dropout/BatchNorm back on through this second path
        self.training = mode
        return self

    def class_maps(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature map (B,N,h,w) -> min-max normalised class maps (B,C,h,w)."""
        b, n, h, w = feats.shape
        p = h * w
        wts = mosaic_weights(h, w, self.kernel, feats.device).to(feats.dtype)  # (P,h,w)
        centre = feats.flatten(2)  # (B,N,P): the vector each copy spreads
        # copy p of image b: centre[b,:,p] · wts[p] -> (B,P,N,h,w), one batched head call
        mosaic = centre.transpose(1, 2)[:, :, :, None, None] * wts[None, :, None]
        logits = self.rest(mosaic.reshape(b * p, n, h, w))  # (B·P,C)
        scores = SCORES[self.score](logits).view(b, p, -1)
        return minmax(scores.transpose(1, 2).reshape(b, -1, h, w))

    def masks(self, x: torch.Tensor, feats: "dict[str, torch.Tensor]") -> torch.Tensor:
        maps = self.class_maps(feats[self.layer])
        return F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)


@FREE_HEADS.register("reciprocam")
def reciprocam_model(model: FusedModel, **settings: Any) -> FusedModel:
    """``model``'s classifier with a :class:`ReciproCAMHead` (whatever head it had), as one
    fused model; its spec says kind ``reciprocam`` (settings in ``extra["reciprocam"]``)."""
    from dataclasses import replace

    head = ReciproCAMHead(model.classifier, **settings).eval()
    spec = replace(model.spec, kind="reciprocam", head_arch="reciprocam", mask_kind=head.score,
                   extra={**model.spec.extra, "reciprocam": {"layer": head.layer, "kernel": head.kernel,
                                                             "score": head.score}})
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
        self.head = ReciproCAMHead(model.classifier, layer, kernel, score)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        x = self.model.norm(images)
        return gather_classes(self.head.masks(x, self.classifier.forward_features(x)), classes)
