"""The deployable unit: normalisation + frozen classifier + attribution head in one module.

``FusedModel(images (B,3,H,W) RGB in [0,1]) -> (logits (B,C), masks (B,C,H,W) in [0,1])``.
The classifier's feature blocks run once; the attribution head gets the normalised image
and those features (the Explainer ignores the features, the mask predictor reads them).
This is the graph export/ writes to ONNX and the torch backend of the runtime runs.

Attribution heads are registered by checkpoint kind in :data:`HEADS`. A head is an
``nn.Module`` with::

    masks(x_norm (B,3,H,W), feats: OrderedDict[name, (B,Ck,Hk,Wk)]) -> (B,C,H,W) in [0,1]

and is built from the spec by ``factory(spec) -> nn.Module``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ..errors import UserError
from ..registry import Registry
from ..spec import ModelSpec
from .classifiers import Normalize, freeze
from .explanandum import classifier_from_spec

# checkpoint kind -> factory(spec) -> untrained head
HEADS: Registry[Callable[[ModelSpec], nn.Module]] = Registry("attribution head kind")

# training-free heads (no checkpoint of their own): name -> factory(fused model, **settings)
# -> a fused model of the same classifier with that head, e.g. ``export/to_onnx.py --head``
FREE_HEADS: Registry[Callable[..., "FusedModel"]] = Registry("training-free head", plugins=(
    "wysiwyc.attribution.reciprocam",
))


# The factories import their head's module on call, so a plain classifier never imports one.
@HEADS.register("explainer", "rtis")  # RTIS is the Explainer network trained with another loss
def explainer_head(spec: ModelSpec) -> nn.Module:
    """The Explainer network of an ``explainer`` or ``rtis`` spec."""
    from .explainer import head_from_spec

    return head_from_spec(spec)


@HEADS.register("mask_predictor")
def mask_predictor_head(spec: ModelSpec) -> nn.Module:
    """The mask predictor of a ``mask_predictor`` spec."""
    from .mask_predictor import head_from_spec

    return head_from_spec(spec)


def build_head(spec: ModelSpec) -> nn.Module:
    """Build the (untrained) attribution head a spec describes."""
    if spec.kind not in HEADS:
        raise CheckpointError(f"no attribution head for kind {spec.kind!r}")
    return HEADS[spec.kind](spec)


class TopKModel(nn.Module):
    """``images -> (logits (B,C), classes (B,k), masks (B,k,H,W))``: a fused model that
    returns masks for each image's top-k classes only (the graph of a many-class export)."""

    def __init__(self, fused: "FusedModel", k: int) -> None:
        super().__init__()
        if not 1 <= k <= fused.spec.num_classes:
            raise UserError(f"--top-k must be 1..{fused.spec.num_classes}, got {k}")
        self.fused, self.k = fused, int(k)
        self.spec = fused.spec

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.fused.forward_topk(images, self.k)


class FusedModel(nn.Module):
    """Normalise -> classifier (features once) -> logits + masks.

    Attributes:
        spec: the model spec.
        norm: :class:`Normalize` for images in [0,1].
        classifier: the frozen explanandum.
        head: the attribution head, or ``None`` for a plain classifier (then ``forward``
            returns logits and ``masks`` is all-ones — a classifier explains nothing).
    """

    def __init__(self, spec: ModelSpec, classifier: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.norm = Normalize(spec.mean, spec.std, bgr=spec.channel_order == "bgr")
        self.classifier = classifier
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(images)
        if self.head is None:
            logits = self.classifier(x)
            b, _, h, w = images.shape
            return logits, images.new_ones(b, logits.shape[1], h, w)
        if getattr(self.head, "spliced", False):  # the head rides the classifier's own pass
            return self.head.fused_forward(x)
        feats, logits = self._features_and_logits(x)
        return logits, self.head.masks(x, feats)

    def forward_topk(self, images: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits (B,C), classes (B,k), masks (B,k,H,W))``: the masks of each image's k
        highest-scoring classes only (a many-class classifier never makes C full-size maps)."""
        x = self.norm(images)
        if getattr(self.head, "spliced", False):
            return self.head.fused_forward(x, k=k)
        feats, logits = self._features_and_logits(x)
        classes = logits.topk(k, dim=1).indices
        return logits, classes, self.head.masks(x, feats, classes)

    def _features_and_logits(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        if getattr(self.head, "needs_features", True):
            return self.classifier.features_and_logits(x)
        return {}, self.classifier(x)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B,C) of images (B,3,H,W) in [0,1]."""
        return self.classifier(self.norm(images))


def load_model(source: str | os.PathLike[str] | Checkpoint, kinds: tuple[str, ...] | None = None,
               device: str | torch.device = "cpu") -> FusedModel:
    """Rebuild a :class:`FusedModel` from a checkpoint path (or a loaded :class:`Checkpoint`).

    The classifier is frozen (eval mode, no grads); the head is in eval mode.

    Raises:
        CheckpointError: foreign file, wrong kind, or weights that do not fit the spec.
    """
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source, kinds)
    spec = ckpt.spec
    classifier = freeze(classifier_from_spec(spec, ckpt.classifier))
    head = None
    if spec.kind != "classifier":
        head = build_head(spec)
        if ckpt.head is None:
            raise CheckpointError(f"{spec.kind} checkpoint has no attribution weights")
        try:
            head.load_state_dict(ckpt.head)
        except RuntimeError as exc:
            raise CheckpointError(f"{spec.kind} weights do not fit {spec.head_arch}: "
                                  f"{str(exc).splitlines()[0]}") from exc
        head.eval()
    model = FusedModel(spec, classifier, head).to(device)
    model.eval()
    return model
