"""Perturbation baselines: RISE and Extremal Perturbation (torch-native, batched, on-device).

Class probabilities are sigmoid(logits) (our classifiers are multi-label; the papers used
softmax on single-label ImageNet / VOC models) — the setting ``prob="softmax"`` switches.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from ..ops import gaussian_blur
from ..models.fused import FusedModel
from .base import Attribution, register_method


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """(B,C) logits -> probabilities: 'sigmoid' (multi-label) or 'softmax'."""
    return torch.sigmoid(logits) if kind == "sigmoid" else torch.softmax(logits, dim=1)


def rise_masks(n: int, size: tuple[int, int], cells: int = 7, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    """RISE masks (n,1,H,W) in [0,1] on the CPU, as Petsiuk et al.'s reference code.

    A binary ``cells``×``cells`` grid (1 with probability p) is bilinearly upsampled to
    (cells+1)·cell_size with cell_size = ceil(H/cells) and cropped at a random shift in
    [0, cell_size) on each axis. Deterministic for a given ``seed``.
    """
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    grid = (torch.rand(n, 1, cells, cells, generator=gen) < p).float()
    up = F.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False)
    dy = torch.randint(0, ch, (n,), generator=gen)
    dx = torch.randint(0, cw, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, 1, h, (cells + 1) * cw)
    up = up.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, 1, h, w)
    return up.gather(3, cols)


@register_method("rise")
class RISE(Attribution):
    """RISE (Petsiuk et al. 2018), TorchRay defaults: 8000 masks, 7×7 cells, p = 0.5.

    ``batch_size`` (masked images per classifier call) only trades memory for speed: None
    means TorchRay's 32 on a CPU and 500 on CUDA, where 32-image calls leave the GPU idle.

    S_c = Σ_i p_c(I⊙M_i)·M_i / (N·p). Masks are drawn once per method instance (``seed``)
    and kept on the input's device. All classes share the same passes.

    Cost: N = 8000 classifier forward passes per image (any number of classes).
    """

    cost = "N=8000 forward passes (all classes)"

    def __init__(self, model: FusedModel, n_masks: int = 8000, cells: int = 7, p: float = 0.5,
                 batch_size: int | None = None, seed: int = 0, prob: str = "sigmoid", **settings: Any) -> None:
        super().__init__(model, n_masks=n_masks, cells=cells, p=p, batch_size=batch_size, seed=seed, prob=prob,
                         **settings)
        self.n_masks, self.cells, self.p = n_masks, cells, p
        self.batch_size, self.seed, self.prob = batch_size, seed, prob
        self._masks: torch.Tensor | None = None

    def masks_for(self, images: torch.Tensor) -> torch.Tensor:
        size = tuple(images.shape[-2:])
        if self._masks is None or tuple(self._masks.shape[-2:]) != size or self._masks.device != images.device:
            self._masks = rise_masks(self.n_masks, size, self.cells, self.p, self.seed).to(images.device, images.dtype)
        return self._masks

    @torch.no_grad()
    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        masks = self.masks_for(images)
        b, k = classes.shape
        out = images.new_zeros(b, k, *images.shape[-2:])
        step = self.batch_size or (500 if images.is_cuda else 32)
        for i in range(b):
            for s in range(0, self.n_masks, step):
                m = masks[s:s + step]
                p = probabilities(self.logits(images[i:i + 1] * m), self.prob)[:, classes[i]]  # (n,K)
                out[i] += torch.einsum("nk,nhw->khw", p, m[:, 0])
        return out / (self.n_masks * self.p)


@register_method("extremal")
class ExtremalPerturbation(Attribution):
    """Extremal Perturbation (Fong, Patrick & Vedaldi 2019), "preservation" game, TorchRay settings.

    For each target area a, a mask m maximises the class logit of the perturbed image
    m⊙x + (1-m)⊙blur(x) under the area constraint ||sort(m) - r_a||² (r_a: ones on the top
    a·HW entries), weighted 300·1.0035^t; 800 iterations of SGD (lr 0.01, momentum 0.9,
    dampening 0.9 as TorchRay), parameters initialised at 0.5 (TorchRay: 1, where our
    clamped generator has no gradient) and clamped to [0,1]. The
    result is the mean of the per-area masks (TorchRay's visualisation sums them).

    Scaling to small images (TorchRay is tuned for 224 px): the mask parameter grid has
    step ``round(7·H/224)`` px (≥1), the mask smoothing σ = 21·H/224 px, the perturbation
    blur σ_max = 20·H/224 px (at 64 px: step 2, σ 6, blur 5.7), and the reward is scaled
    by (7/step)² (12.25 at 64 px; exactly 1 at 224 px). The reward scale keeps TorchRay's
    balance of the two terms: the area regulariser is a mean over pixels, so its gradient per
    mask parameter does not depend on the grid, while the reward's gradient per parameter
    sums over the step² pixels the parameter covers. On a finer grid than TorchRay's the
    regulariser would otherwise dominate from the first iteration, and the mask would be
    decided by how the initially tied parameters sort instead of by the class evidence.
    Ties are broken on purpose: the parameters start at 0.5 plus a seeded ±1e-3 jitter, so
    CPU and CUDA (whose float rounding differs) start from the same point.
    Simplifications: TorchRay's smooth-max-convolution mask generator is replaced
    by bilinear upsampling + Gaussian smoothing (``smooth`` 0.09 is its temperature and has
    no equivalent here), its 8-level blur pyramid by a single fade to the strongest blur, and
    jitter by a random 0/1 px shift of the perturbed image each iteration.
    Areas: VOC default [0.025, 0.05, 0.1, 0.2]; on ``shapes`` (objects cover ~5–25 % of a
    64 px image) the same list is used — pass ``areas=`` to change it.

    Cost: iterations × |areas| forward+backward passes per image per class
    (800 × 4 = 3200 at the defaults), batched over images, areas and classes.
    """

    needs_grad = True
    cost = "800 x |areas| forward+backward per class"

    def __init__(self, model: FusedModel, areas: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2),
                 iterations: int = 800, lr: float = 0.01, momentum: float = 0.9, reg_weight: float | None = None,
                 reg_growth: float = 1.0035, seed: int = 0, **settings: Any) -> None:
        super().__init__(model, areas=areas, iterations=iterations, lr=lr, momentum=momentum, **settings)
        self.areas = tuple(float(a) for a in areas)
        self.iterations, self.lr, self.momentum = iterations, lr, momentum
        self.reg_weight, self.reg_growth, self.seed = reg_weight, reg_growth, seed

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        k, na = classes.shape[1], len(self.areas)
        step, reward_scale = self.grid(h)
        sigma_mask, sigma_blur = 21 * h / 224, 20 * h / 224
        gen = torch.Generator().manual_seed(self.seed)
        # one optimisation problem per (image, class, area): rows ordered (b, k, a)
        n = b * k * na
        x = images.repeat_interleave(k * na, 0)
        x_blur = gaussian_blur(x, sigma_blur)
        cls = classes.repeat_interleave(na, 1).reshape(n, 1)
        z = h * w
        ref = torch.zeros(na, z, device=images.device, dtype=images.dtype)
        for j, a in enumerate(self.areas):
            ref[j, z - int(round(a * z)):] = 1  # ascending sort: the ones at the end
        ref = ref.repeat(b * k, 1)
        reg_weight = 300.0 if self.reg_weight is None else self.reg_weight
        shape = (n, 1, math.ceil(h / step), math.ceil(w / step))
        jitter = 1e-3 * (2 * torch.rand(shape, generator=gen) - 1)
        param = (0.5 + jitter).to(images.device, images.dtype).requires_grad_(True)
        opt = torch.optim.SGD([param], lr=self.lr, momentum=self.momentum, dampening=self.momentum)
        for t in range(self.iterations):
            mask = self.mask(param, (h, w), sigma_mask)
            pert = mask * x + (1 - mask) * x_blur
            dy, dx = (int(v) for v in torch.randint(0, 2, (2,), generator=gen))
            pert = torch.roll(pert, shifts=(dy, dx), dims=(2, 3))
            reward = self.logits(pert).gather(1, cls).squeeze(1)
            reg = (mask.flatten(1).sort(1).values - ref).pow(2).mean(1)
            loss = (-reward_scale * reward + reg_weight * self.reg_growth ** t * reg).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                param.clamp_(0, 1)
        with torch.no_grad():
            mask = self.mask(param, (h, w), sigma_mask)
        return mask.view(b, k, na, h, w).mean(2)

    @staticmethod
    def grid(height: int) -> tuple[int, float]:
        """(mask parameter step in px, reward scale) for images ``height`` px tall: TorchRay's 7 px
        step at 224 px, scaled with the image, and the (7/step)² that restores its reward/area balance."""
        step = max(1, round(7 * height / 224))
        return step, (7 / step) ** 2

    @staticmethod
    def mask(param: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
        """Parameter grid (n,1,h',w') in [0,1] -> smooth mask (n,1,H,W) in [0,1]."""
        up = F.interpolate(param, size=size, mode="bilinear", align_corners=False)
        return gaussian_blur(up, sigma).clamp(0, 1)
