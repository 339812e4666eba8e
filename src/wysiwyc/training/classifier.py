"""The classifier training task: multi-label BCE on normalised images."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..distributed import gather_objects
from ..metrics.classification import multilabel_metrics
from ..models.classifiers import BlockClassifier, Normalize
from .fit import Task


class ClassifierTask(Task):
    """BCE-with-logits training of a :class:`BlockClassifier` on normalised images.

    Args:
        model: the classifier.
        mean, std: normalisation of images in [0,1].
        frozen_backbone: train only the head (as the Explainer paper fine-tunes).
    """

    def __init__(self, model: BlockClassifier, mean: tuple[float, ...], std: tuple[float, ...],
                 frozen_backbone: bool = False) -> None:
        self.model = model
        self.norm = Normalize(mean, std)
        if frozen_backbone:
            for p in model.blocks.parameters():
                p.requires_grad_(False)
        self.frozen_backbone = frozen_backbone
        self.modules = {"classifier": model}

    def to(self, device: torch.device) -> "ClassifierTask":
        super().to(device)
        self.norm.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        if self.frozen_backbone:  # frozen BatchNorm statistics too
            self.model.blocks.eval()

    def training_step(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch[0].to(device), batch[1].to(device)
        logits = self.model(self.norm(images))
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss, {}

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Any], device: torch.device) -> dict[str, float]:
        all_logits, all_labels = [], []
        for batch in loader:
            all_logits.append(self.model(self.norm(batch[0].to(device))).float().cpu())
            all_labels.append(batch[1].float())
        # mAP does not split over shards: every rank scores the logits of all of them
        shards = gather_objects((torch.cat(all_logits), torch.cat(all_labels)))
        logits, labels = torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards])
        out = {"val_loss": float(F.binary_cross_entropy_with_logits(logits, labels))}
        out.update({f"val_{k}": v for k, v in multilabel_metrics(logits, labels).items()})
        return out


@torch.no_grad()
def predict(model: nn.Module, norm: nn.Module, loader: Iterable[Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N,C), labels (N,C)) of a classifier over a loader."""
    model.eval()
    outs, labs = [], []
    for batch in loader:
        outs.append(model(norm(batch[0].to(device))).float().cpu())
        labs.append(batch[1].float())
    return torch.cat(outs), torch.cat(labs)
