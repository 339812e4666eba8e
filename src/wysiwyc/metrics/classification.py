"""Multi-label classification metrics: per-class average precision, mAP, label accuracy."""

from __future__ import annotations

import torch


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class average precision (area under the step precision-recall curve).

    Args:
        scores: (N,C) any monotone score.
        targets: (N,C) in {0,1}.

    Returns:
        (C,) AP; NaN for a class with no positive.
    """
    order = scores.argsort(dim=0, descending=True)
    t = targets.gather(0, order).float()
    tp = t.cumsum(0)
    precision = tp / torch.arange(1, t.shape[0] + 1, device=t.device, dtype=t.dtype).unsqueeze(1)
    npos = t.sum(0)
    ap = (precision * t).sum(0) / npos
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


def multilabel_metrics(logits: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """mAP, per-label accuracy and exact-match accuracy for (N,C) logits and {0,1} labels."""
    pred = (torch.sigmoid(logits) >= threshold).float()
    ap = average_precision(logits, labels)
    return {
        "map": float(ap[~ap.isnan()].mean()) if (~ap.isnan()).any() else float("nan"),
        "label_acc": float((pred == labels).float().mean()),
        "exact_match": float((pred == labels).all(dim=1).float().mean()),
    }
