"""Localisation and faithfulness metrics of papers 2 and 3, RISE's causal metrics, and a sanity check.

Conventions: a saliency map ``s`` is (N,H,W) float (any range, higher = more important);
the ground truth ``g`` is (N,H,W) bool, the region of the explained class. On ``shapes``
(and VOC/COCO with segmentation) ``g`` is the class's pixel mask; the papers used boxes
on VOC — pass :func:`box_regions` of the masks to reproduce that. Probabilities come from
``prob_fn(images (N,3,H,W) in [0,1]) -> (N,C)`` (sigmoid for our multi-label classifiers).

SISE paper (Sattarzadeh et al. 2021, "Evaluation"):

* ``ebpg``      energy-based pointing game  ||S⊙G||₁ / ||S||₁  (S min-max normalised first).
* ``miou_top``  IoU of the top 20 % pixels of S with G.
* ``bbox``      with N = |G|: the share of the top-N pixels of S that fall in G.
* ``drop`` / ``increase`` (top 15 %): keep only the top 15 % of S (others 0), Y = p(x),
  O = p(x⊙T(S)); Drop% = mean(max(0, Y-O)/Y)·100 (Chattopadhay et al.; the paper's
  formula is garbled in extraction, this is the cited definition), Increase% = mean(O > Y)·100.

Mask-predictor paper (Sec. 3.3, 4.2):

* ``m_f``   faithfulness: start from the fully blurred image (q_F), reveal the original
  pixels in decreasing-score order in steps of Δ = 1/32 of the image, measure q_i, up to
  the clean image (q_O). Eq. 8 literally reads Σ q_i/(q_O-q_F)·Δ, which is not an area
  between the curve and q_F; we use Σ_{i=1..1/Δ} (q_i - q_F)/(q_O - q_F)·Δ·100, the blue
  area of their Fig. 3 normalised per image (the literal form is 100·Σq_iΔ/(q_O-q_F)
  shifted by 100·q_F/(q_O-q_F)). Images with |q_O - q_F| < 1e-3 are skipped (NaN).
  The blur substrate is a Gaussian with σ = 0.05·image size (paper: "Gaussian blurred").
* ``m_i``   explainability: average precision of the pixel ranking against G,
  Σ P_i (R_i - R_{i-1})·100 (Eq. 9).
* ``pointing``  hit when the arg-max pixel of S lies in G (optionally within ``tolerance``
  pixels); accuracy is averaged per category, then over categories.

RISE (Petsiuk et al. 2018): ``deletion`` (replace pixels with 0 in decreasing-score
order) and ``insertion`` (reveal them over the blurred image) — AUC of p vs fraction,
trapezoid rule over ``steps`` (default 32 = M_F's Δ) equal steps. Lower deletion and
higher insertion are better.

Sanity check (Adebayo et al. 2018, parameter randomisation): Spearman rank correlation
between each map and the map of the same method on a classifier whose weights were
re-initialised (:func:`randomized_copy`); a method that ignores the model scores ≈ 1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch.nn import functional as F

from ..ops import gaussian_blur, normalise_maps, pixel_ranks, top_fraction_mask

ProbFn = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- helpers
def box_regions(g: torch.Tensor) -> torch.Tensor:
    """Bounding box of each (N,H,W) bool region, as a bool (N,H,W) region (empty stays empty)."""
    rows, cols = g.any(2), g.any(1)
    n, h, w = g.shape
    ar_h = torch.arange(h, device=g.device)
    ar_w = torch.arange(w, device=g.device)
    big = max(h, w) + 1
    r0 = torch.where(rows, ar_h, big).min(1).values
    r1 = torch.where(rows, ar_h, -1).max(1).values
    c0 = torch.where(cols, ar_w, big).min(1).values
    c1 = torch.where(cols, ar_w, -1).max(1).values
    in_r = (ar_h[None] >= r0[:, None]) & (ar_h[None] <= r1[:, None])
    in_c = (ar_w[None] >= c0[:, None]) & (ar_w[None] <= c1[:, None])
    return in_r[:, :, None] & in_c[:, None, :]


def class_probs(prob_fn: ProbFn, images: torch.Tensor, classes: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """p_c(images): images (N,3,H,W), classes (N,) long -> (N,)."""
    out = []
    for i in range(0, images.shape[0], batch):
        p = prob_fn(images[i:i + batch])
        out.append(p.gather(1, classes[i:i + batch].view(-1, 1)).squeeze(1))
    return torch.cat(out)


# ---------------------------------------------------------------- SISE paper
def ebpg(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game ||S⊙G||₁/||S||₁ per map (N,), S min-max normalised; empty S -> 0."""
    sn = normalise_maps(s).flatten(1)
    tot = sn.sum(1)
    return torch.where(tot > 0, (sn * g.flatten(1)).sum(1) / tot.clamp_min(1e-12), torch.zeros_like(tot))


def miou_top(s: torch.Tensor, g: torch.Tensor, frac: float = 0.2) -> torch.Tensor:
    """IoU of the top-``frac`` pixels of S with G, per map (N,)."""
    t = top_fraction_mask(s, frac).flatten(1)
    gf = g.flatten(1)
    inter = (t & gf).sum(1).float()
    union = (t | gf).sum(1).float()
    return inter / union.clamp_min(1)


def bbox_score(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Share of the top-|G| pixels of S lying in G, per map (N,); NaN where G is empty."""
    area = g.flatten(1).sum(1)
    t = top_fraction_mask(s, area).flatten(1)
    hit = (t & g.flatten(1)).sum(1).float()
    return torch.where(area > 0, hit / area.clamp_min(1).float(), torch.full_like(hit, float("nan")))


def drop_increase(prob_fn: ProbFn, images: torch.Tensor, s: torch.Tensor, classes: torch.Tensor,
                  frac: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: (drop (N,) in %, increase (N,) in {0,100}) keeping the top ``frac`` of S.

    Cost: 2 classifier passes per image.
    """
    keep = top_fraction_mask(s, frac).unsqueeze(1).to(images.dtype)
    y = class_probs(prob_fn, images, classes)
    o = class_probs(prob_fn, images * keep, classes)
    drop = (y - o).clamp_min(0) / y.clamp_min(1e-12) * 100
    return drop, (o > y).float() * 100


# ---------------------------------------------------------------- causal curves
def causal_curve(prob_fn: ProbFn, images: torch.Tensor, s: torch.Tensor, classes: torch.Tensor,
                 substrate: torch.Tensor, steps: int = 32, batch: int = 256) -> torch.Tensor:
    """Probability curve (N, steps+1) while moving pixels from ``images`` to ``substrate``.

    Step i (0..steps) shows the top round(i/steps·HW) pixels of S from ``images`` and the
    rest from ``substrate`` — i.e. an *insertion* curve (step 0 = substrate); with
    ``images`` black and ``substrate`` the original it is a *deletion* curve.
    Cost: steps+1 classifier passes per image.
    """
    n, _, h, w = images.shape
    rank = pixel_ranks(s.flatten(1)).view(n, 1, h, w)
    curve = images.new_empty(n, steps + 1)
    for i in range(steps + 1):
        k = int(round(i / steps * h * w))
        m = (rank < k).to(images.dtype)
        curve[:, i] = class_probs(prob_fn, images * m + substrate * (1 - m), classes, batch)
    return curve


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of (N, T+1) curves over x in [0,1] -> (N,)."""
    t = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * t)


def insertion_curve(prob_fn: ProbFn, images: torch.Tensor, s: torch.Tensor, classes: torch.Tensor,
                    steps: int = 32, sigma: float | None = None) -> torch.Tensor:
    """RISE insertion over the blurred image (σ default 0.05·min(H,W)); (N, steps+1)."""
    sig = 0.05 * min(images.shape[-2:]) if sigma is None else sigma
    return causal_curve(prob_fn, images, s, classes, gaussian_blur(images, sig), steps)


def deletion_curve(prob_fn: ProbFn, images: torch.Tensor, s: torch.Tensor, classes: torch.Tensor,
                   steps: int = 32) -> torch.Tensor:
    """RISE deletion: pixels set to 0 (black) in decreasing-score order; (N, steps+1), step 0 = clean."""
    # the top-k pixels come from the black image, the rest from the original
    return causal_curve(prob_fn, torch.zeros_like(images), s, classes, images, steps)


def m_f_from_curve(curve: torch.Tensor) -> torch.Tensor:
    """M_F (%) from an insertion curve (N, T+1) with Δ = 1/T (see module doc); NaN where q_O≈q_F."""
    q_f, q_o = curve[:, :1], curve[:, -1:]
    den = q_o - q_f
    val = ((curve[:, 1:] - q_f) / den.where(den.abs() >= 1e-3, torch.ones_like(den))).mean(1) * 100
    return torch.where(den.squeeze(1).abs() >= 1e-3, val, torch.full_like(val, float("nan")))


def m_f(prob_fn: ProbFn, images: torch.Tensor, s: torch.Tensor, classes: torch.Tensor,
        delta: float = 1 / 32) -> torch.Tensor:
    """Faithfulness M_F per image (N,) in %; cost 1/Δ + 1 classifier passes per image."""
    return m_f_from_curve(insertion_curve(prob_fn, images, s, classes, steps=int(round(1 / delta))))


# ---------------------------------------------------------------- mask-predictor paper
def m_i(s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Explainability M_I (%) per map (N,): average precision of the pixel ranking vs G; NaN if G empty."""
    flat = s.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    hits = g.flatten(1).gather(1, order).float()
    total = hits.sum(1)
    prec = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1, device=s.device)
    ap = (prec * hits).sum(1) / total.clamp_min(1) * 100
    return torch.where(total > 0, ap, torch.full_like(ap, float("nan")))


def pointing_hits(s: torch.Tensor, g: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """Bool (N,): whether the arg-max pixel of S is within ``tolerance`` px (Chebyshev) of G."""
    if tolerance > 0:
        g = F.max_pool2d(g.float().unsqueeze(1), 2 * tolerance + 1, stride=1, padding=tolerance).squeeze(1) > 0
    idx = s.flatten(1).argmax(1, keepdim=True)
    return g.flatten(1).gather(1, idx).squeeze(1)


def pointing_accuracy(hits: torch.Tensor, classes: torch.Tensor, num_classes: int) -> float:
    """M_PG (%): per-category hit rate, averaged over categories that occur."""
    accs = [hits[classes == c].float().mean().item() for c in range(num_classes) if (classes == c).any()]
    return 100 * sum(accs) / len(accs) if accs else float("nan")


# ---------------------------------------------------------------- sanity check
def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per map pair (N,) of (N,H,W) maps (ties ranked by index)."""
    ra = pixel_ranks(a.flatten(1).float(), descending=False).float()
    rb = pixel_ranks(b.flatten(1).float(), descending=False).float()
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


def randomized_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Deep copy of a FusedModel (or classifier) with the classifier's weights re-initialised.

    Every sub-module with ``reset_parameters`` is reset (BatchNorm running stats too), under
    ``torch.manual_seed(seed)`` so the check is reproducible; the attribution head is kept.
    """
    clone = copy.deepcopy(model)
    target = getattr(clone, "classifier", clone)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for mod in target.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
            if hasattr(mod, "reset_running_stats"):
                mod.reset_running_stats()
    finally:
        torch.random.set_rng_state(state)
    return clone
