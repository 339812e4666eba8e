"""SISE — Semantic Input Sampling for Explanation (Sattarzadeh et al., AAAI 2021).

Per the paper (Sec. 3):

1. **Feature extraction** at the output of every block of the classifier
   (``BlockClassifier.blocks``: ResNet relu, layer1..4; VGG pool1..5; small_cnn block1..4).
2. **Mask selection** (Eq. 7): keep the feature maps A_k of block l whose average gradient
   α_k = mean_ij ∂y_c/∂A_k exceeds μ·β, β = max_k α_k (μ = 0: positive gradients only).
   One backward per class gives the gradients of all blocks.
3. **Scoring**: each kept map is bilinearly upsampled to the input and min-max normalised
   (Ω), the image is multiplied by it and scored by the class probability; each score is
   divided by the mask's own area (mean of the mask) — the area normalisation of Sec. 3.3.
   The block's map is Σ_k score_k·mask_k, min-max normalised.
4. **Fusion** (Sec. 3.4, cascade from the shallowest to the deepest block):
   ex ← map_1; for each next block: ex ← (ex + map_l) ⊙ [map_l > Otsu(map_l)];
   the binary (hard) gate of the paper, not the soft sigmoid of one port. Output min-max.

Probabilities are sigmoid(logits) for our multi-label classifiers (``prob="softmax"``
for single-label models). ``mu`` is exposed (paper ablation: 0, 0.3, 0.5).

Cost per image and class: 1 forward + 1 backward + M forward passes, M = number of kept
maps over all blocks (≈ half of all block channels at μ = 0: ~240 of 480 for small_cnn,
~1900 of 3904 for ResNet-50), in chunks of ``batch_size``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..models.fused import FusedModel
from .base import Attribution, register_method
from ..ops import minmax
from .perturbation import probabilities


def otsu_threshold(x: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each map, as ``skimage.filters.threshold_otsu`` (256-bin histogram
    over [min, max], threshold = the centre of the bin maximising the between-class variance).

    x (N,H,W) -> (N,); a constant map returns its value.
    """
    n = x.shape[0]
    flat = x.flatten(1).to(torch.float64)
    lo, hi = flat.min(1).values, flat.max(1).values
    width = (hi - lo).clamp_min(1e-300)
    idx = ((flat - lo[:, None]) / width[:, None] * nbins).floor().clamp_(0, nbins - 1).long()
    hist = torch.zeros(n, nbins, dtype=torch.float64, device=x.device).scatter_add_(1, idx, torch.ones_like(flat))
    edges = lo[:, None] + width[:, None] * torch.arange(nbins + 1, device=x.device, dtype=torch.float64)[None] / nbins
    centers = (edges[:, :-1] + edges[:, 1:]) / 2
    w1 = hist.cumsum(1)
    w2 = hist.flip(1).cumsum(1).flip(1)
    m1 = (hist * centers).cumsum(1) / w1.clamp_min(1e-300)
    m2 = ((hist * centers).flip(1).cumsum(1) / w2.flip(1).clamp_min(1e-300)).flip(1)
    var = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    t = centers.gather(1, var.argmax(1, keepdim=True)).squeeze(1)
    return torch.where(hi > lo, t, lo).to(x.dtype)


@register_method("sise")
class SISE(Attribution):
    """SISE, block-wise input sampling with Otsu cascade fusion (see the module doc).

    Cost: 1 forward + 1 backward + M forward passes per image and class (M = kept maps).
    """

    needs_grad = True
    cost = "1 fwd + 1 bwd + M fwd per class (M = positive-gradient maps)"

    def __init__(self, model: FusedModel, mu: float = 0.0, batch_size: int = 64, prob: str = "sigmoid",
                 blocks: list[str] | None = None, **settings: Any) -> None:
        super().__init__(model, mu=mu, batch_size=batch_size, prob=prob, blocks=blocks, **settings)
        self.mu, self.batch_size, self.prob = mu, batch_size, prob
        self.blocks = blocks or self.classifier.block_names
        self.last_mask_count = 0  # kept maps in the last call (for reports)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        x = self.model.norm(images).detach().requires_grad_(True)  # frozen classifier: grads via the input
        feats, logits = self.classifier.features_and_logits(x)
        acts = [feats[n] for n in self.blocks]
        k = classes.shape[1]
        out = images.new_zeros(b, k, h, w)
        self.last_mask_count = 0
        for j in range(k):
            grads = torch.autograd.grad(logits.gather(1, classes[:, j:j + 1]).sum(), acts, retain_graph=j < k - 1)
            with torch.no_grad():
                for i in range(b):
                    layer_maps = [self.block_map(images[i], a[i], g[i], int(classes[i, j])) for a, g in zip(acts, grads)]
                    out[i, j] = self.fuse(torch.stack(layer_maps))
        return out

    def block_map(self, image: torch.Tensor, act: torch.Tensor, grad: torch.Tensor, cls: int) -> torch.Tensor:
        """One block's visualisation map (H,W) in [0,1] for one image (3,H,W) and class."""
        h, w = image.shape[-2:]
        alpha = grad.mean((1, 2))
        keep = alpha > self.mu * alpha.max()
        if not keep.any():
            return image.new_zeros(h, w)
        maps = act[keep].detach()
        self.last_mask_count += int(maps.shape[0])
        masks = minmax(F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False))
        scores = []
        for s in range(0, masks.shape[0], self.batch_size):
            m = masks[s:s + self.batch_size]
            scores.append(probabilities(self.logits(image[None] * m), self.prob)[:, cls])
        score = torch.cat(scores) / masks.mean((1, 2, 3)).clamp_min(1e-6)
        return minmax((score[:, None, None, None] * masks).sum(0)[0])

    @staticmethod
    def fuse(maps: torch.Tensor) -> torch.Tensor:
        """Otsu cascade over block maps (L,H,W), shallow to deep -> (H,W) in [0,1]."""
        ex = maps[0]
        thr = otsu_threshold(maps[1:]) if maps.shape[0] > 1 else None
        for l in range(1, maps.shape[0]):
            ex = (ex + maps[l]) * (maps[l] > thr[l - 1])
        return minmax(ex)
