"""Our methods: the Explainer, RTIS and the mask predictor (single pass, via the fused model),
and the mask predictor with paper 2's per-image refinement (slower, registered separately).

All of them read the checkpoint's attribution head; :class:`HeadAttribution` is their shared
base (not registered: it is not a method of its own)."""

from __future__ import annotations

import torch

from ..ops import gather_classes, pixel_ranks
from .base import Attribution, register_method


class HeadAttribution(Attribution):
    """A checkpoint's attribution head through the fused model: masks for all C classes in
    one forward pass, gathered at the requested classes."""

    cost = "1 head + 1 classifier pass (all classes)"

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.model.head is None:
            raise ValueError("this checkpoint has no attribution head (a plain classifier)")
        _, masks = self.model(images)
        return gather_classes(masks, classes)


@register_method("explainer")
class ExplainerAttribution(HeadAttribution):
    """The Explainer (Stalder et al.): masks for all C classes in one forward pass.

    Cost: 1 explainer pass + 1 classifier pass per image (whatever K).
    """

    cost = "1 explainer + 1 classifier pass (all classes)"


@register_method("mask_predictor")
class MaskPredictorAttribution(HeadAttribution):
    """The mask predictor: a decoder over the classifier's own features, single pass.

    Asked for every class (K = C) it runs the fused model (all classes batched, the graph
    that is exported); asked for fewer (target-class mode, e.g. the top-1 class) it
    decodes only those (image, class) pairs — same values, K/C of the decoder cost.

    Cost: 1 classifier pass + 1 decoder pass per image (over the requested classes).
    """

    cost = "1 classifier + 1 decoder pass (requested classes)"

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        head = self.model.head
        if head is None or not hasattr(head, "class_masks") or classes.shape[1] >= self.model.spec.num_classes:
            return super().explain(images, classes)
        x = self.model.norm(images)
        return head.class_masks(x, self.classifier.forward_features(x), classes)


@register_method("rtis")
class RTISAttribution(HeadAttribution):
    """RTIS (Dabkowski & Gal 2017) as the Explainer paper ran it: the Explainer network
    trained with the RTIS loss (``train/train_explainer.py --loss rtis``).

    Cost: 1 explainer + 1 classifier pass per image (all classes).
    """

    cost = "1 explainer + 1 classifier pass (all classes)"


@register_method("mask_predictor_refined")
class RefinedMaskPredictorAttribution(MaskPredictorAttribution):
    """The mask predictor with paper 2's per-image refinement (Sec. 3.3).

    For each (image, class): rank the pixels by the predicted score r; reveal the top
    ``i`` pixels (the rest replaced by the blurred image, paper 2's φ) for ``steps + 1``
    evenly spaced ``i`` and read the class probability q_i; make it monotone,
    q_i ← max_{j≤i} q_j; give each pixel the extra importance v = q_max − q_i,
    linearly interpolated between the sampled ranks; the refined score is r·v, divided
    by its maximum so it stays in [0,1] (a choice: the paper leaves the scale open).
    Ties in r keep their order, so the ranking of distinct scores is preserved.

    Cost: 1 classifier + 1 decoder pass, plus ``steps + 1`` classifier passes per class
    (default 32 + 1, batched).
    """

    cost = "1 classifier + 1 decoder pass + 33 classifier passes per class"

    def __init__(self, model, steps: int = 32, blur_sigma: float | None = None, **settings) -> None:  # noqa: ANN001
        super().__init__(model, **settings)
        self.steps = int(steps)
        self.blur_sigma = blur_sigma

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        from ..ops import blur_sigma_for, gaussian_blur, perturb

        masks = super().explain(images, classes)  # (B,K,H,W)
        b, k, h, w = masks.shape
        blurred = gaussian_blur(images, self.blur_sigma or blur_sigma_for(w))
        fr = torch.linspace(0, 1, self.steps + 1, device=images.device)  # revealed fractions of pixels
        out = torch.empty_like(masks)
        for bi in range(b):
            r = masks[bi].flatten(1)  # (K,HW)
            rank = pixel_ranks(r)
            counts = (fr * h * w).round().long()  # pixels revealed at each step
            reveal = (rank[:, None, :] < counts[None, :, None]).float().view(k * len(fr), h, w)
            img = images[bi:bi + 1].expand(k * len(fr), -1, -1, -1)
            alt = blurred[bi:bi + 1].expand_as(img)
            probs = torch.sigmoid(self.logits(perturb(img, reveal, alt)))
            q = probs.view(k, len(fr), -1).gather(2, classes[bi].view(k, 1, 1).expand(k, len(fr), 1)).squeeze(2)
            out[bi] = refine_scores(r, q).view(k, h, w)
        return out


def refine_scores(r: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Paper 2, Sec. 3.3 on flat scores: r (K,N) predicted scores, q (K,S+1) the class
    probability with the top ``round(i/S·N)`` pixels revealed, i = 0..S.

    Returns (K,N) refined scores r·(q_max − q_i) / max, where q is first made monotone
    (q_i ← max_{j≤i} q_j) and q_i of the pixel of rank ρ is interpolated linearly at step
    position (ρ+1)/N·S.
    """
    n = r.shape[1]
    steps = q.shape[1] - 1
    rank = pixel_ranks(r)
    q = torch.cummax(q, dim=1).values  # monotone envelope
    v = q[:, -1:] - q  # q_max − q_i: q_max is the envelope's last value
    pos = (rank.float() + 1) / n * steps
    lo = pos.floor().long().clamp(max=steps)
    hi = (lo + 1).clamp(max=steps)
    t = pos - lo.float()
    vi = v.gather(1, lo) * (1 - t) + v.gather(1, hi) * t
    refined = r * vi
    return refined / refined.amax(dim=1, keepdim=True).clamp_min(1e-12)

