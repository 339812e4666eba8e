"""Training losses.

Explainer (paper 1, Stalder et al.), exactly as the authors' code computes it
(NN-Explainer ``models/explainer_classifier.py`` + ``utils/loss.py``, the code behind the
paper's numbers)::

    L = Lc(F(m⊙x), Y) + entropy_regularizer·Le(F((1-m)⊙x))
        + mask_variation_regularizer·[TV(m) + TV(n)]
        + mask_area_constraint_regularizer·Σ_{c∈Y} B(s_c)
        + mask_total_area_regularizer·A(m) + ncmask_total_area_regularizer·A(n)

m = pixel-wise max of the label classes' masks, n = max of the other classes' masks. The
paper writes one λa in front of A(m)+A(n)+B; the code weights the three separately and
has no other area term — we follow the code. Departures, each a flag whose default is
the code's: ``nontarget_reduce`` (A(n) over the max or the mean of the non-target
channels) and ``class_regularizer`` (the per-class term of :func:`class_mask_loss`, 0 = off). Masks multiply the
NORMALISED image (0 = the dataset mean colour), as in the authors' code.
Each function below is one term, on batches; all return a scalar averaged over the batch.

Mask predictor (paper 2, Eq. 4): only the classification loss on the perturbed image
φ(I, M) = I⊙M + A⊙(1−M) (:func:`mask_predictor_loss`; A and φ in :mod:`wysiwyc.ops`).

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


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, activation: str = "sigmoid") -> torch.Tensor:
    """Eq. 2 for a multi-label classifier: -1/C Σ_c [c∈Y] log p_c + [c∉Y] log(1-p_c),
    p = sigmoid(F(m⊙x)); batch mean.

    A softmax (single-label) classifier has one probability distribution per image, so the
    term is its cross-entropy against the target classes: -Σ_c y_c log softmax(F(m⊙x))_c
    with y = targets / |Y| (|Y| = 1 for the usual one target: the classifier's own top-1
    class, ``--targets predicted``, or the label); batch mean.

    Args:
        logits: (B,C) classifier logits of the masked image.
        targets: (B,C) in {0,1}.
        activation: the classifier's ``sigmoid`` or ``softmax``.
    """
    if activation == "softmax":
        y = targets.to(logits.dtype)
        y = y / y.sum(1, keepdim=True).clamp_min(1)
        return -(y * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def negative_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 3: 1/C Σ_c p̃_c log p̃_c with p̃ = softmax over classes of F((1-m)⊙x); batch mean.

    Minimal (-log(C)/C) when the complement leaves the classifier uniform. Softmax (not the
    paper's sigmoid) and the 1e-16 floor on p̃ follow the authors' ``entropy_loss``.

    Args:
        logits: (B,C) classifier logits of the inverse-masked image.
    """
    p = F.softmax(logits, dim=1).clamp_min(1e-16)
    return (p * p.log()).mean()


def area(mask: torch.Tensor) -> torch.Tensor:
    """Eq. A(m) = 1/Z Σ m[i,j]: mean over pixels of (B,H,W) masks, then over the batch."""
    return mask.mean()


def area_bounds(masks: torch.Tensor, targets: torch.Tensor, a: float = 0.05, b: float = 0.3) -> torch.Tensor:
    """Eqs. 4-6 as the authors' ``ClassMaskAreaLoss``: Σ over the label classes of B(s_c), batch mean.

    B(s) = 1/Z Σ_i max(q_min[i] - q[i], 0) + 1/Z Σ_i max(q[i] - q_max[i], 0) with q the
    mask's values sorted descending and q_min / q_max = ⌊Za⌋ / ⌊Zb⌋ ones then zeros.
    The paper's Eq. 6 averages over the image's classes; the authors' code sums them
    (its ``losses[i].mean()`` is of a scalar) — we follow the code. Images without a label
    class contribute 0.

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
    return (per_class * targets.to(q.dtype)).sum(1).mean()


def total_variation(mask: torch.Tensor) -> torch.Tensor:
    """Eq. 7 as the authors' ``TotalVariationConv``: mean over pixels of |right diff| + |down diff|,
    with reflect padding (the last column / row differs from its reflected neighbour), batch mean.

    Args:
        mask: (B,H,W).
    """
    p = F.pad(mask.unsqueeze(1), (0, 1, 0, 1), mode="reflect").squeeze(1)
    right = (p[:, :-1, :-1] - p[:, :-1, 1:]).abs()
    down = (p[:, :-1, :-1] - p[:, 1:, :-1]).abs()
    return (right + down).mean()


def nontarget_area(masks: torch.Tensor, targets: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """A(n) over the non-target channels: ``max`` = area of their pixel-wise max n (the
    authors' code), ``mean`` = mean area of every non-target channel (each channel gets the
    gradient, not only the highest one). masks (B,C,H,W), targets (B,C) -> scalar."""
    if reduce == "max":
        return area(merge_masks(masks, targets)[1])
    if reduce == "mean":
        nt = 1 - targets.to(masks.dtype)
        per = masks.flatten(2).mean(2)  # (B,C)
        return ((per * nt).sum(1) / nt.sum(1).clamp_min(1)).mean()
    raise ValueError(f"nontarget_reduce must be 'max' or 'mean', got {reduce!r}")


CLASS_TERMS = ("keep", "remove")


def class_mask_loss(classifier: torch.nn.Module, x_norm: torch.Tensor, masks: torch.Tensor,
                    targets: torch.Tensor, absent_samples: int | None = None,
                    generator: torch.Generator | None = None, mode: str = "remove",
                    activation: str = "sigmoid") -> torch.Tensor:
    """Per-class term (not in the paper): Eq. 2 per (image, class c) pair on the image seen
    through one class's mask. The merged terms cannot tell the channels apart; this can.

    * ``remove``: F((1−s_c)⊙x) against Y with c taken out — removing mask c removes class c
      and only class c (for an absent c: changes nothing). A faint s_c leaves c in place and
      a wide one removes other classes, so only c's whole object satisfies it.
    * ``keep``: F(s_c⊙x) against [c∈Y]·onehot(c) — mask c keeps class c and nothing else.

    The entry of class c itself weighs C-1, as much as the other entries together (else
    wiping every mask out is the cheapest way down). Pairs: every labelled class of each
    image, plus every absent class (``absent_samples`` None) or that many drawn at random per
    image (one classifier pass per pair: |Y| + k passes per image instead of C).

    A softmax classifier's probabilities compete, so its pairs are scored on the class's
    own probability p_c alone: ``keep`` -log p_c for a target c (an absent c's mask is
    pushed to keep nothing of c: -log(1-p_c)), ``remove`` -log(1-p_c) for a target c (an
    absent c: nothing to remove, no entry); mean over the pairs.

    x_norm (B,3,H,W), masks (B,C,H,W), targets (B,C) -> mean over pairs and classes.
    """
    if mode not in CLASS_TERMS:
        raise ValueError(f"class term mode must be one of {CLASS_TERMS}, got {mode!r}")
    b, c = masks.shape[:2]
    t = targets > 0.5
    if absent_samples is None or absent_samples >= c:
        pick = torch.ones_like(t)
    else:  # the k absent classes with the lowest random keys
        keys = torch.rand(b, c, generator=generator, device=masks.device).masked_fill(t, 2.0)
        rank = keys.argsort(1).argsort(1)
        pick = t | ((rank < absent_samples) & ~t)
    if activation == "softmax":
        return _softmax_class_mask_loss(classifier, x_norm, masks, t, pick, mode)
    bi, ci = pick.nonzero(as_tuple=True)
    own = F.one_hot(ci, c).to(x_norm.dtype)
    sc = masks[bi, ci].unsqueeze(1)
    if mode == "keep":
        logits = classifier(x_norm[bi] * sc)
        want = own * t[bi, ci].to(logits.dtype).unsqueeze(1)
    else:
        logits = classifier(x_norm[bi] * (1 - sc))
        want = targets[bi].to(logits.dtype) * (1 - own)
    weight = 1 + (max(c, 2) - 2) * own  # own entry: C-1 (1 for C ≤ 2)
    return F.binary_cross_entropy_with_logits(logits, want, weight=weight)


def _softmax_class_mask_loss(classifier: torch.nn.Module, x_norm: torch.Tensor, masks: torch.Tensor,
                             t: torch.Tensor, pick: torch.Tensor, mode: str) -> torch.Tensor:
    """:func:`class_mask_loss` for a softmax classifier (see there): the pairs ``pick`` (B,C),
    targets ``t`` (B,C) bool."""
    if mode == "remove":
        pick = pick & t
    bi, ci = pick.nonzero(as_tuple=True)
    if len(bi) == 0:
        return x_norm.new_zeros(())
    sc = masks[bi, ci].unsqueeze(1)
    seen = x_norm[bi] * (sc if mode == "keep" else 1 - sc)
    logp = F.log_softmax(classifier(seen), dim=1).gather(1, ci[:, None])[:, 0]
    present = t[bi, ci]
    # log(1 - p) from log p, stable where p is near 1
    log1m = torch.log1p(-logp.exp().clamp(max=1 - 1e-6))
    want_present = present if mode == "keep" else torch.zeros_like(present)
    return -torch.where(want_present, logp, log1m).mean()


@dataclass
class ExplainerLossWeights:
    """Weights of the Explainer loss, named as in the authors' code. Defaults: their VGG16 /
    VOC-2007 values; ``nontarget_reduce`` and ``class_regularizer`` are this project's options
    (defaults = the code's behaviour)."""

    entropy_regularizer: float = 1.0
    mask_variation_regularizer: float = 1.0
    mask_area_constraint_regularizer: float = 1.0
    mask_total_area_regularizer: float = 0.1
    ncmask_total_area_regularizer: float = 0.3
    class_mask_min_area: float = 0.05
    class_mask_max_area: float = 0.3
    nontarget_reduce: str = "max"
    class_regularizer: float = 0.0
    class_absent_samples: int | None = None
    class_warmup_steps: int = 0
    class_term: str = "remove"

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def explainer_loss(classifier: torch.nn.Module, x_norm: torch.Tensor, masks: torch.Tensor,
                   targets: torch.Tensor, w: ExplainerLossWeights | None = None,
                   generator: torch.Generator | None = None,
                   activation: str = "sigmoid") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The authors' Explainer loss (module docstring).

    Args:
        classifier: the frozen explanandum F taking NORMALISED images.
        x_norm: (B,3,H,W) normalised images.
        masks: (B,C,H,W) Explainer masks in [0,1] (with grad).
        targets: (B,C) label classes Y in {0,1}.
        w: loss weights.
        generator: for the per-class term's sampled absent classes (validation passes one).
        activation: the classifier's ``sigmoid`` or ``softmax`` (:func:`classification_loss`,
            :func:`class_mask_loss`).

    Returns:
        (total loss, dict of the unweighted terms: cls, ent, tv, bounds, area_m, area_n, and
        class_mask when its weight is non-zero).
    """
    w = w or ExplainerLossWeights()
    m, n = merge_masks(masks, targets)
    kept = classifier(x_norm * m.unsqueeze(1))
    removed = classifier(x_norm * (1 - m).unsqueeze(1))
    terms = {
        "cls": classification_loss(kept, targets, activation),
        "ent": negative_entropy_loss(removed),
        "tv": total_variation(m) + total_variation(n),
        "bounds": area_bounds(masks, targets, w.class_mask_min_area, w.class_mask_max_area),
        "area_m": area(m),
        "area_n": nontarget_area(masks, targets, w.nontarget_reduce),
    }
    total = (terms["cls"] + w.entropy_regularizer * terms["ent"]
             + w.mask_variation_regularizer * terms["tv"]
             + w.mask_area_constraint_regularizer * terms["bounds"]
             + w.mask_total_area_regularizer * terms["area_m"]
             + w.ncmask_total_area_regularizer * terms["area_n"])
    if w.class_regularizer:
        terms["class_mask"] = class_mask_loss(classifier, x_norm, masks, targets, w.class_absent_samples, generator,
                                              w.class_term, activation)
        total = total + w.class_regularizer * terms["class_mask"]
    return total, terms


def mask_predictor_loss(logits: torch.Tensor, classes: torch.Tensor, activation: str = "sigmoid") -> torch.Tensor:
    """Paper 2, Eq. 4: the classification loss of each mask's own class on its perturbed
    image — for a multi-label classifier BCE pushing that logit up, for a softmax one (the
    paper's case) the cross-entropy -log softmax(F(φ))_k. logits (N,C) of φ(I_n, M_n),
    classes (N,) long."""
    if activation == "softmax":
        return F.cross_entropy(logits, classes)
    z = logits.gather(1, classes.view(-1, 1)).squeeze(1)
    return F.binary_cross_entropy_with_logits(z, torch.ones_like(z))


@dataclass
class RTISLossWeights:
    """Dabkowski & Gal's loss weights (the values of their public code)."""

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
