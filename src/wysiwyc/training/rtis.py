"""The RTIS training task: the Explainer network trained with Dabkowski & Gal's loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..ops import alternative_images, perturb
from .explainer import ExplainerTask
from .losses import RTISLossWeights, rtis_loss


class RTISTask(ExplainerTask):
    """The RTIS baseline: the same Explainer net trained with Dabkowski & Gal's loss
    (:func:`wysiwyc.training.losses.rtis_loss`), as the Explainer paper did for its comparison.

    Per (image, target class) pair the class's own mask m_c preserves (φ(I, m_c)) and
    destroys (φ(I, 1−m_c)), with the alternative image of :func:`alternative_images`
    (blur σ=11 px at 224 px in RTIS, scaled; or a random colour plus noise).
    """

    def __init__(self, head: nn.Module, classifier: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 weights: RTISLossWeights | None = None, targets: str = "labels", threshold: float = 0.5) -> None:
        super().__init__(head, classifier, mean, std, targets=targets, threshold=threshold)
        self.rtis_weights = weights or RTISLossWeights()

    def loss(self, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        x = self.norm(images)
        y = self._targets(x, labels)
        masks = torch.sigmoid(self.head(x))
        bi, ki = (y > 0.5).nonzero(as_tuple=True)
        m = masks[bi, ki]
        alt = alternative_images(images[bi], max(1.0, 11.0 * images.shape[-1] / 224), generator=generator)
        kept = self.classifier(self.norm(perturb(images[bi], m, alt)))
        destroyed = self.classifier(self.norm(perturb(images[bi], 1 - m, alt)))
        total, terms = rtis_loss(kept, destroyed, ki, masks, self.rtis_weights)
        return total, terms, masks

    def training_step(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        total, terms, _ = self.loss(batch[0].to(device), batch[1].to(device))
        return total, {k: float(terms[k].detach()) for k in ("preserve", "destroy", "area")}
