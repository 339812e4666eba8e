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

import torch
from torch import nn

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ..registry import Registry
from ..spec import ModelSpec
from .classifiers import BlockClassifier, Normalize, build_classifier, freeze

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


class FusedModel(nn.Module):
    """Normalise -> classifier (features once) -> logits + masks.

    Attributes:
        spec: the model spec.
        norm: :class:`Normalize` for images in [0,1].
        classifier: the frozen explanandum.
        head: the attribution head, or ``None`` for a plain classifier (then ``forward``
            returns logits and ``masks`` is all-ones — a classifier explains nothing).
    """

    def __init__(self, spec: ModelSpec, classifier: BlockClassifier, head: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.norm = Normalize(spec.mean, spec.std)
        self.classifier = classifier
        self.head = head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(images)
        feats, logits = self.classifier.features_and_logits(x)
        if self.head is None:
            b, _, h, w = images.shape
            return logits, images.new_ones(b, logits.shape[1], h, w)
        return logits, self.head.masks(x, feats)

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
    classifier = build_classifier(spec.classifier_arch, spec.num_classes)
    try:
        classifier.load_state_dict(ckpt.classifier)
    except RuntimeError as exc:
        raise CheckpointError(f"classifier weights do not fit {spec.classifier_arch} with "
                              f"{spec.num_classes} classes: {str(exc).splitlines()[0]}") from exc
    freeze(classifier)
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
