"""Our single-pass methods: the Explainer and the mask predictor (both via the fused model)."""

from __future__ import annotations

import torch

from .base import Attribution, gather_classes, register_method


@register_method("explainer")
class ExplainerAttribution(Attribution):
    """The Explainer (Stalder et al.): masks for all C classes in one forward pass.

    Cost: 1 explainer pass + 1 classifier pass per image (whatever K).
    """

    cost = "1 explainer + 1 classifier pass (all classes)"

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.model.head is None:
            raise ValueError("this checkpoint has no attribution head (a plain classifier)")
        _, masks = self.model(images)
        return gather_classes(masks, classes)


@register_method("mask_predictor")
class MaskPredictorAttribution(ExplainerAttribution):
    """The mask predictor: a decoder over the classifier's own features, single pass.

    Cost: 1 classifier pass + 1 decoder pass per image (all classes batched).
    """

    cost = "1 classifier + 1 decoder pass (all classes)"
