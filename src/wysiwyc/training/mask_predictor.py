"""Training the mask predictor (paper 2) for a frozen classifier, in its two stages.

1. ``stage="filter"`` (App. A.1): only the feature filter's class embeddings train; for
   every image and class k the mean gate ``mean_ij sigmoid(X_ij·C_k)`` is pushed up for
   the classes present and down for the others (binary cross-entropy on that mean). The
   paper follows Dabkowski & Gal's noisy labels — alternately the real class and a wrong
   one; scoring every class each step covers both at once.
2. ``stage="generator"`` (Eq. 4): the filter is frozen, the generator trains with the
   classification loss only — for each (image, target class) pair, BCE pushing the
   class's logit up on φ(I, M) = I⊙M + A⊙(1−M). The distribution controller fixes the
   masks' score distribution, so no area or smoothness terms are needed.

Target classes: the classifier's own thresholded predictions by default (the paper uses
"only the outputs of the classifier"; the top-1 class when none passes the threshold),
or the ground-truth labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..distributed import reduce_weighted_means
from ..models.classifiers import Normalize, freeze
from ..models.mask_predictor import MaskPredictor
from ..ops import alternative_images, blur_sigma_for, perturb
from .fit import Task
from .losses import mask_predictor_loss

STAGES = ("filter", "generator")
TARGETS = ("predicted", "labels")


class MaskPredictorTask(Task):
    """Train ``head`` (a :class:`MaskPredictor`) to explain ``classifier``.

    Args:
        head: the mask predictor.
        classifier: the explanandum (frozen here).
        mean, std: normalisation of images in [0,1].
        stage: ``filter`` or ``generator`` (see module doc).
        targets: ``predicted`` (default) or ``labels``.
        threshold: sigmoid threshold for ``predicted`` (a softmax classifier: its top-1 class).
        blur_sigma: σ (pixels) of the blurred alternative image; ``None`` scales paper 2's.
        activation: the classifier's ``sigmoid`` or ``softmax``
            (:func:`~.losses.mask_predictor_loss`).
        bgr: the classifier expects BGR input.
    """

    def __init__(self, head: MaskPredictor, classifier: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 stage: str = "generator", targets: str = "predicted", threshold: float = 0.5,
                 blur_sigma: float | None = None, activation: str = "sigmoid", bgr: bool = False) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}")
        self.head, self.classifier = head, freeze(classifier)
        self.norm = Normalize(mean, std, bgr=bgr)
        self.stage, self.targets, self.threshold, self.activation = stage, targets, threshold, activation
        self.blur_sigma = blur_sigma
        for p in head.filter.parameters():
            p.requires_grad_(stage == "filter")
        self.modules = {"filter": head.filter} if stage == "filter" else {"mask_predictor": head}

    def to(self, device: torch.device) -> "MaskPredictorTask":
        self.head.to(device)
        self.classifier.to(device)
        self.norm.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        self.head.train(mode and self.stage == "generator")

    def _targets(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.targets == "labels":
            return labels > 0.5
        top1 = F.one_hot(logits.argmax(1), logits.shape[1]).bool()
        if self.activation == "softmax":
            return top1
        pred = torch.sigmoid(logits) >= self.threshold
        return torch.where(pred.any(1, keepdim=True), pred, top1)

    def loss(self, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, logs) on images (B,3,H,W) in [0,1] with labels (B,C)."""
        x = self.norm(images)
        with torch.no_grad():
            feats, logits = self.classifier.features_and_logits(x)
        y = self._targets(logits, labels)
        if self.stage == "filter":
            gate = self.head.filter.attention(feats[self.head.deep]).mean(dim=(-2, -1))  # (B,K)
            loss = F.binary_cross_entropy(gate.clamp(1e-6, 1 - 1e-6), y.float())
            g = gate.detach()
            return loss, {"gate_pos": float(g[y].mean()) if y.any() else 0.0,
                          "gate_neg": float(g[~y].mean()) if (~y).any() else 0.0}
        bi, ki = y.nonzero(as_tuple=True)
        masks = self.head.controlled(feats, tuple(images.shape[-2:]), pairs=(bi, ki))  # (N,H,W)
        sigma = self.blur_sigma or blur_sigma_for(images.shape[-1])
        alt = alternative_images(images[bi], sigma, generator=generator)
        out = self.classifier(self.norm(perturb(images[bi], masks, alt)))
        loss = mask_predictor_loss(out, ki, self.activation)
        probs = torch.softmax(out.detach(), 1) if self.activation == "softmax" else torch.sigmoid(out.detach())
        prob = probs.gather(1, ki.view(-1, 1)).mean()
        return loss, {"p_kept": float(prob), "area": float(masks.detach().mean())}

    def training_step(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(batch[0].to(device), batch[1].to(device))

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any], device: torch.device) -> dict[str, float]:
        """Validation loss (fixed alternative images) and, with ground-truth masks, the
        continuous IoU / MAE of the label classes' merged mask (paper 1's metrics); over every
        rank's shard when distributed."""
        from .losses import merge_masks
        from ..metrics.segmentation import aggregate_gt, segmentation_scores

        gen = torch.Generator(device=device).manual_seed(0)
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            images, labels = batch[0].to(device), batch[1].to(device)
            loss, logs = self.loss(images, labels, generator=gen)
            vals = {"val_loss": float(loss), **{f"val_{k}": v for k, v in logs.items()}}
            if self.stage == "generator" and len(batch) > 2 and labels.shape[1] == self.head.filter.bias.shape[0]:
                x = self.norm(images)
                masks = self.head.masks(x, self.classifier.forward_features(x))
                m, _ = merge_masks(masks, labels)
                g, valid = aggregate_gt(batch[2].to(device), labels)
                s = segmentation_scores(m, g, valid)
                vals["val_iou"], vals["val_mae"] = float(s["iou"].mean()), float(s["mae"].mean())
            b = images.shape[0]
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
        return reduce_weighted_means(sums, n)
