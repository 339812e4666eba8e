"""The Explainer training task (paper 1): a frozen explanandum, a trainable mask net.

Only the Explainer's weights train; the classifier is frozen with
:func:`wysiwyc.models.classifiers.freeze` (eval mode forever, so its BatchNorm statistics
cannot drift). Images are normalised once; masks multiply the normalised image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..distributed import gather_objects, reduce_weighted_means
from ..models.classifiers import Normalize, freeze
from .fit import Task
from .losses import ExplainerLossWeights, explainer_loss, merge_masks

TARGETS = ("labels", "predicted")


class ExplainerTask(Task):
    """Train ``head`` to explain ``classifier`` with the paper's loss.

    Args:
        head: an Explainer head (``forward(x_norm) -> logits (B,C,H,W)``).
        classifier: the explanandum (frozen here).
        mean, std: normalisation of images in [0,1].
        weights: loss weights.
        targets: ``labels`` (ground truth, the paper's default) or ``predicted``
            (classifier's sigmoid ≥ ``threshold`` on the unmasked image, Sec. 3; for a
            softmax classifier its top-1 class).
        threshold: for ``predicted`` (sigmoid classifiers).
        activation: the classifier's ``sigmoid`` (multi-label) or ``softmax`` (single-label).
        bgr: the classifier expects BGR input (its spec's ``channel_order``).
    """

    def __init__(self, head: nn.Module, classifier: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 weights: ExplainerLossWeights | None = None, targets: str = "labels",
                 threshold: float = 0.5, activation: str = "sigmoid", bgr: bool = False) -> None:
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
        self.head = head
        self.classifier = freeze(classifier)
        self.norm = Normalize(mean, std, bgr=bgr)
        self.weights = weights or ExplainerLossWeights()
        self.targets, self.threshold, self.activation = targets, threshold, activation
        self.modules = {"explainer": head}

    def to(self, device: torch.device) -> "ExplainerTask":
        super().to(device)
        self.classifier.to(device)
        self.norm.to(device)
        return self

    def _targets(self, x_norm: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.targets == "labels":
            return labels
        with torch.no_grad():
            logits = self.classifier(x_norm)
        if self.activation == "softmax":
            return F.one_hot(logits.argmax(1), logits.shape[1]).to(labels.dtype)
        return (torch.sigmoid(logits) >= self.threshold).to(labels.dtype)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
             weights: ExplainerLossWeights | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(loss, unweighted terms, masks (B,C,H,W)) for images (B,3,H,W) in [0,1], labels (B,C).

        ``generator`` seeds any random draw of the loss (the per-class term's sampled absent
        classes; RTIS's alternative images), so validation is deterministic. ``weights``
        replaces the task's own for this call (training passes the warm-up's)."""
        x = self.norm(images)
        y = self._targets(x, labels)
        masks = torch.sigmoid(self.head(x))
        total, terms = explainer_loss(self.classifier, x, masks, y, weights or self.weights, generator,
                                      self.activation)
        return total, terms, masks

    def class_weight_at(self, step: int) -> float:
        """The per-class term's weight at a training step: 0 for ``class_warmup_steps`` steps (the
        merged terms first find the objects; from the 0.95 start the term alone would remove
        them from every mask), then a linear ramp to ``class_regularizer`` over as many steps."""
        w0 = self.weights.class_warmup_steps
        ramp = 1.0 if w0 <= 0 else min(1.0, max(0.0, (step - w0) / w0))
        return self.weights.class_regularizer * ramp

    def training_step(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch[0].to(device), batch[1].to(device)
        now = replace(self.weights, class_regularizer=self.class_weight_at(self.global_step))
        total, terms, _ = self.loss(images, labels, weights=now)
        return total, {k: float(terms[k].detach()) for k in ("cls", "ent", "area_m", "area_n")}

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any], device: torch.device) -> dict[str, float]:
        """Validation loss and its terms; when the batch has ground-truth masks, continuous
        IoU / MAE of the target mask (``val_iou``, ``val_mae``) and the per-class metrics
        (``val_class_iou``, ``val_class_iou_min``, ``val_own``, ``val_leak``, ``val_absent``);
        over every rank's shard when distributed."""
        from ..metrics.segmentation import PerClassMeter, aggregate_gt, segmentation_scores

        per_class = None
        gen = torch.Generator(device=device).manual_seed(0)
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            images, labels = batch[0].to(device), batch[1].to(device)
            total, terms, masks = self.loss(images, labels, generator=gen)
            b = images.shape[0]
            vals = {"val_loss": float(total), **{f"val_{k}": float(v) for k, v in terms.items()}}
            if len(batch) > 2 and labels.shape[1] == masks.shape[1]:  # ground truth in the classifier's classes
                m, _ = merge_masks(masks, labels)
                g, valid = aggregate_gt(batch[2].to(device), labels)
                s = segmentation_scores(m, g, valid)
                vals["val_iou"] = float(s["iou"].mean())
                vals["val_mae"] = float(s["mae"].mean())
                per_class = per_class or PerClassMeter(masks.shape[1])
                per_class.update(masks, batch[2].to(device), labels)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v * b
            n += b
        out = reduce_weighted_means(sums, n)
        meters = [m for m in gather_objects(per_class) if m is not None]
        if meters:
            r = meters[0].merge(meters[1:]).result()
            out.update({"val_class_iou": r["iou"], "val_class_iou_min": r["iou_min"], "val_own": r["own"],
                        "val_leak": r["leak"], "val_absent": r["absent"]})
        return out
