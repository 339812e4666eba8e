"""Training losses.

Explainer (paper 1, Stalder et al., Eq. 1-8)::

    L = Lc(F(m⊙x), Y) + λe·Le(F((1-m)⊙x)) + λa·[A(m) + A(n) + mean_{c∈Y} B(s_c)]
        + λtv·[TV(m) + TV(n)] + w_total·A(m) + w_nontarget·A(n)

m = pixel-wise max of the label classes' masks, n = max of the other classes' masks,
x = the NORMALISED image (0 = the dataset mean colour). The last two terms are the extra
"total area" L1 terms of the authors' public code (not in the paper's equation).
Each function below is one term, on batches; all return a scalar averaged over the batch.

Mask predictor (paper 2, Eq. 4): only the classification loss on the perturbed image
φ(I, M) = I⊙M + A⊙(1−M), A the blurred image or a random colour plus noise
(:func:`alternative_images`, :func:`perturb`, :func:`mask_predictor_loss`).

RTIS (Dabkowski & Gal 2017), the baseline the Explainer paper trains on its own network:
preserver + destroyer hinges, area power and smoothness (:func:`rtis_loss`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F


def merge_masks(masks: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Target mask m and non-target mask n (paper Sec. 3).

    Args:
        masks: (B,C,H,W) per-class masks in [0,1].
        targets: (B,C) in {0,1}, the label classes Y.

    Returns:
        m, n: (B,H,W) each; the max over an empty set is 0 (an image without labels has
        m = 0; an image with every class has n = 0).
    """
    t = targets.to(masks.dtype)[:, :, None, None]
    m = (masks * t).amax(dim=1)
    n = (masks * (1 - t)).amax(dim=1)
    return m, n


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 2: -1/C Σ_c [c∈Y] log p_c + [c∉Y] log(1-p_c), p = sigmoid(F(m⊙x)); batch mean.

    Args:
        logits: (B,C) classifier logits of the masked image.
        targets: (B,C) in {0,1}.
    """
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def negative_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 3: 1/C Σ_c p̃_c log p̃_c with p̃ = softmax over classes of F((1-m)⊙x); batch mean.

    Minimal (-log(C)/C) when the complement leaves the classifier uniform. The softmax
    (not sigmoid) follows the authors' code.

    Args:
        logits: (B,C) classifier logits of the inverse-masked image.
    """
    logp = F.log_softmax(logits, dim=1)
    return (logp.exp() * logp).mean()


def area(mask: torch.Tensor) -> torch.Tensor:
    """Eq. A(m) = 1/Z Σ m[i,j]: mean over pixels of (B,H,W) masks, then over the batch."""
    return mask.mean()


def area_bounds(masks: torch.Tensor, targets: torch.Tensor, a: float = 0.05, b: float = 0.3) -> torch.Tensor:
    """Eqs. 4-6: mean over the label classes of B(s_c), batch mean.

    B(s) = 1/Z Σ_i max(q_min[i] - q[i], 0) + 1/Z Σ_i max(q[i] - q_max[i], 0) with q the
    mask's values sorted descending and q_min / q_max = ⌊Za⌋ / ⌊Zb⌋ ones then zeros.
    Images without a label class contribute 0 (the paper's quotient is undefined there).
    The paper averages over the image's classes (Eq. 6); the authors' code sums — we
    follow the paper.

    Args:
        masks: (B,C,H,W) per-class masks in [0,1].
        targets: (B,C) in {0,1}.
        a, b: minimum / maximum area fractions, 0 < a < b < 1.
    """
    bsz, c = masks.shape[:2]
    q = masks.reshape(bsz, c, -1).sort(dim=-1, descending=True).values
    z = q.shape[-1]
    idx = torch.arange(z, device=masks.device)
    # ⌊Za⌋ with a tolerance: 0.29 * 100 is 28.999… in floating point
    q_min = (idx < math.floor(z * a + 1e-6)).to(q.dtype)
    q_max = (idx < math.floor(z * b + 1e-6)).to(q.dtype)
    per_class = (q_min - q).clamp_min(0).mean(-1) + (q - q_max).clamp_min(0).mean(-1)  # (B,C)
    t = targets.to(q.dtype)
    per_image = (per_class * t).sum(1) / t.sum(1).clamp_min(1)
    return per_image.mean()


def total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Eq. 7, anisotropic TV: mean |down difference| + mean |right difference|, batch mean.

    The paper normalises both sums by Z; like the authors' code we average each
    difference map over its own size ((H-1)·W and H·(W-1)) — the same up to the border.

    Args:
        mask: (B,H,W).
    """
    dh = (mask[:, 1:, :] - mask[:, :-1, :]).abs()
    dw = (mask[:, :, 1:] - mask[:, :, :-1]).abs()
    # a 1-pixel-high (or -wide) mask has no differences in that direction: 0, not NaN
    return dh.sum() / max(dh.numel(), 1) + dw.sum() / max(dw.numel(), 1)


@dataclass
class ExplainerLossWeights:
    """Weights of the Explainer loss. Defaults: the paper / authors' code for VGG16 on
    VOC-2007 (λe=1, λa=1, λtv=1, total-area 0.1, non-target-area 0.3, a=0.05, b=0.3)."""

    entropy: float = 1.0
    area: float = 1.0
    tv: float = 1.0
    total_area: float = 0.1
    nontarget_area: float = 0.3
    min_area: float = 0.05
    max_area: float = 0.3

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def explainer_loss(classifier: torch.nn.Module, x_norm: torch.Tensor, masks: torch.Tensor,
                   targets: torch.Tensor, w: ExplainerLossWeights | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The full Eq. 1 (+ the code's two extra area terms).

    Args:
        classifier: the frozen explanandum F taking NORMALISED images.
        x_norm: (B,3,H,W) normalised images.
        masks: (B,C,H,W) Explainer masks in [0,1] (with grad).
        targets: (B,C) label classes Y in {0,1}.
        w: loss weights.

    Returns:
        (total loss, dict of the unweighted terms: cls, ent, area_m, area_n, bounds, tv).
    """
    w = w or ExplainerLossWeights()
    m, n = merge_masks(masks, targets)
    kept = classifier(x_norm * m.unsqueeze(1))
    removed = classifier(x_norm * (1 - m).unsqueeze(1))
    terms = {
        "cls": classification_loss(kept, targets),
        "ent": negative_entropy_loss(removed),
        "area_m": area(m),
        "area_n": area(n),
        "bounds": area_bounds(masks, targets, w.min_area, w.max_area),
        "tv": total_variation(m) + total_variation(n),
    }
    total = (terms["cls"] + w.entropy * terms["ent"]
             + w.area * (terms["area_m"] + terms["area_n"] + terms["bounds"])
             + w.tv * terms["tv"] + w.total_area * terms["area_m"] + w.nontarget_area * terms["area_n"])
    return total, terms


def mask_predictor_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Paper 2, Eq. 4 for multi-label classifiers: BCE pushing the logit of each mask's own
    class up on its perturbed image. logits (N,C) of φ(I_n, M_n), classes (N,) long."""
    z = logits.gather(1, classes.view(-1, 1)).squeeze(1)
    return F.binary_cross_entropy_with_logits(z, torch.ones_like(z))


@dataclass
class RTISLossWeights:
    """Dabkowski & Gal's loss weights (their public code, anchors.md)."""

    area: float = 8.0
    area_power: float = 0.3
    smooth: float = 0.5
    preserve: float = 0.3
    destroy: float = 1.0
    confidence: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def rtis_loss(logits_preserved: torch.Tensor, logits_destroyed: torch.Tensor, classes: torch.Tensor,
              all_masks: torch.Tensor, w: RTISLossWeights | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Real-time image saliency loss (Dabkowski & Gal 2017) on our Explainer net.

    Adaptation to multi-label sigmoid classifiers: the CW-style hinges act on the class's
    own logit — preserver ``relu(κ − z_c(φ(I, m_c)))``, destroyer ``relu(z_c(φ(I, 1−m_c)) + κ)``
    — for every (image, present class) pair; the area term ``mean((m+5e-4)^0.3)`` and the
    (squared) TV smoothness act on every class channel, so channels of absent classes shrink
    to nothing (the role of RTIS's "fake label" samples).

    Args:
        logits_preserved, logits_destroyed: (N,C) classifier logits of the two perturbations.
        classes: (N,) the pair's class.
        all_masks: (B,C,H,W) every mask channel in [0,1].
    """
    w = w or RTISLossWeights()
    zp = logits_preserved.gather(1, classes.view(-1, 1)).squeeze(1)
    zd = logits_destroyed.gather(1, classes.view(-1, 1)).squeeze(1)
    terms = {
        "preserve": F.relu(w.confidence - zp).mean(),
        "destroy": F.relu(zd + w.confidence).mean(),
        "area": (all_masks + 5e-4).pow(w.area_power).mean(),
        "smooth": ((all_masks[..., 1:, :] - all_masks[..., :-1, :]) ** 2).mean()
        + ((all_masks[..., :, 1:] - all_masks[..., :, :-1]) ** 2).mean(),
    }
    total = (w.preserve * terms["preserve"] + w.destroy * terms["destroy"] + w.area * terms["area"]
             + w.smooth * terms["smooth"])
    return total, terms
