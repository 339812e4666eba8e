"""Tensor operations several rooms share: blur, perturbation with an alternative image,
pixel ranking and per-map normalisation. Bottom floor: imports torch only."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding; images (N,C,H,W), sigma in pixels.

    The kernel is truncated at 3σ and capped to the image size (reflect padding needs
    pad < size), so very large σ on tiny images is a strong but finite blur.
    """
    if sigma <= 0:
        return images
    n, c, h, w = images.shape
    radius = int(min(math.ceil(3 * sigma), h - 1, w - 1))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.pad(images.reshape(n * c, 1, h, w), (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, -1, 1))
    return out.view(n, c, h, w)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """(…,h,w) -> per-map (x - min) / (max - min + 1e-7), as pytorch-grad-cam scales its CAMs."""
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    flat = flat - lo
    return (flat / (flat.max(-1, keepdim=True).values + 1e-7)).view_as(maps)


def normalise_maps(s: torch.Tensor) -> torch.Tensor:
    """Per-map min-max to [0,1]; constant maps become 0. s (N,H,W) -> (N,H,W)."""
    flat = s.flatten(1).float()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    out = (flat - lo) / (hi - lo).clamp_min(1e-12)
    return torch.where(hi > lo, out, torch.zeros_like(out)).view_as(s)


def top_fraction_mask(s: torch.Tensor, frac: float | torch.Tensor) -> torch.Tensor:
    """Bool (N,H,W): the top ``frac`` of pixels (k = round(frac·HW), or per-map k tensor).

    Ties are broken by pixel index (stable descending sort), so the result is deterministic.
    """
    n, h, w = s.shape
    flat = s.flatten(1)
    if isinstance(frac, torch.Tensor):
        k = frac.to(flat.device).long().view(n, 1)
    else:
        k = torch.full((n, 1), int(round(frac * h * w)), device=flat.device)
    return (pixel_ranks(flat) < k).view(n, h, w)


def pixel_ranks(r: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Rank of every score in its row, 0 = first (highest when ``descending``): r (N,P) -> (N,P)
    long. Ties keep pixel order (stable sort), so the ranking is deterministic."""
    order = torch.sort(r, dim=1, descending=descending, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(r.shape[1], device=r.device).expand_as(order).contiguous())
    return rank


def alternative_images(images: torch.Tensor, blur_sigma: float, noise_std: float = 0.2,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The "alternative image" A of paper 2 (and RTIS): per image, with probability 1/2 the
    Gaussian-blurred image, else a random uniform colour plus Gaussian noise.

    Args:
        images: (B,3,H,W) in [0,1].
        blur_sigma: blur σ in pixels (paper 2: variance 10 at 224 px, i.e. σ≈3.2).
        noise_std: std of the noise on the random colour (the papers leave it open).
        generator: for reproducible draws.

    Returns:
        (B,3,H,W) in [0,1].
    """
    b = images.shape[0]
    dev, dt = images.device, images.dtype
    pick_blur = torch.rand(b, 1, 1, 1, generator=generator, device=dev) < 0.5
    colour = torch.rand(b, 3, 1, 1, generator=generator, device=dev, dtype=dt)
    noise = torch.randn(images.shape, generator=generator, device=dev, dtype=dt) * noise_std
    random_colour = (colour + noise).clamp(0, 1)
    return torch.where(pick_blur, gaussian_blur(images, blur_sigma), random_colour)


def perturb(images: torch.Tensor, masks: torch.Tensor, alternative: torch.Tensor) -> torch.Tensor:
    """φ(I, M) = I⊙M + A⊙(1−M): images/alternative (N,3,H,W), masks (N,H,W) or (N,1,H,W)."""
    m = masks if masks.ndim == 4 else masks.unsqueeze(1)
    return images * m + alternative * (1 - m)


def blur_sigma_for(size: int) -> float:
    """Paper 2's blur (variance 10 at 224 px) scaled to an image side, at least 2 px so a
    64 px image's fine patterns are really destroyed."""
    return max(2.0, math.sqrt(10.0) * size / 224.0)


def gather_classes(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Pick per-image class maps: maps (B,C,H,W), classes (B,K) long -> (B,K,H,W)."""
    b, k = classes.shape
    idx = classes.view(b, k, 1, 1).expand(b, k, *maps.shape[-2:])
    return maps.gather(1, idx)
