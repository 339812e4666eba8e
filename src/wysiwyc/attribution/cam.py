"""Class activation maps: Grad-CAM, Grad-CAM++, Score-CAM (torch-native, batched, on-device).

All three read the activations A (B,N,h,w) of one classifier block — by default
``classifier.target_block`` (the deepest block: ResNet ``layer4``, VGG ``pool5``, small_cnn
``block4``), override with ``layer="name"`` — and return ReLU(Σ_k w_k A_k) min-max
normalised per map, like pytorch-grad-cam (``scale_cam_image``), then bilinearly resized
to the input by the base class. The target score is the raw class logit, as
pytorch-grad-cam's ``ClassifierOutputTarget``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.fused import FusedModel
from ..ops import minmax
from .base import Attribution, register_method


class _GradCamBase(Attribution):
    """Shared pipeline: activations + per-class gradients of the target block, then ``weights``."""

    needs_grad = True

    def __init__(self, model: FusedModel, layer: str | None = None, **settings: Any) -> None:
        super().__init__(model, layer=layer, **settings)
        self.layer = layer or self.classifier.target_block

    def activations_and_grads(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A (B,N,h,w) and one gradient dlogit_c/dA (B,N,h,w) per column of ``classes`` (B,K).

        One forward and K backward passes; images are independent (eval mode), so the
        gradient of the batch sum is each image's own gradient.
        """
        # the classifier is frozen (no parameter grads): a leaf input that requires grad
        # is what makes the activations part of an autograd graph
        x = self.model.norm(images).detach().requires_grad_(True)
        feats, logits = self.classifier.features_and_logits(x)
        acts = feats[self.layer]
        k = classes.shape[1]
        grads = []
        for j in range(k):
            score = logits.gather(1, classes[:, j:j + 1]).sum()
            grads.append(torch.autograd.grad(score, acts, retain_graph=j < k - 1)[0])
        return acts.detach(), grads

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        acts, grads = self.activations_and_grads(images, classes)
        cams = [torch.relu((self.weights(acts, g)[:, :, None, None] * acts).sum(1)) for g in grads]
        return minmax(torch.stack(cams, 1))

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Channel weights (B,N) from activations and gradients (B,N,h,w)."""
        raise NotImplementedError


@register_method("gradcam")
class GradCAM(_GradCamBase):
    """Grad-CAM (Selvaraju et al. 2017): w_k = spatial mean of dy_c/dA_k.

    Cost: 1 forward + K backward classifier passes per image (K = explained classes).
    """

    cost = "1 forward + 1 backward per class"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean((2, 3))


@register_method("gradcam++")
class GradCAMPlusPlus(_GradCamBase):
    """Grad-CAM++ (Chattopadhay et al. 2018), closed form with exp(score) as in the paper:
    α = g² / (2g² + Σ_ij A · g³), w_k = Σ_ij α · ReLU(g) (pytorch-grad-cam's form).

    Cost: 1 forward + K backward classifier passes per image.
    """

    cost = "1 forward + 1 backward per class"

    def weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2, g3 = grads.pow(2), grads.pow(3)
        sum_a = acts.sum((2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + 1e-7)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (alpha * torch.relu(grads)).sum((2, 3))


@register_method("scorecam")
class ScoreCAM(Attribution):
    """Score-CAM (Wang et al. 2020): each activation map, upsampled and min-max normalised,
    masks the image; w = softmax over maps of the masked images' class logits.

    The masks multiply the [0,1] image (black elsewhere) before normalisation; scores are
    raw logits with a softmax over the N maps, as pytorch-grad-cam (the paper subtracts a
    baseline score first, which the softmax makes irrelevant). All K classes share the
    same N masked passes.

    Cost: 1 + N classifier forward passes per image (N = channels of the layer; 256 for
    small_cnn ``block4``, 2048 for ResNet-50 ``layer4``), in chunks of ``batch_size``.
    """

    cost = "1 + N forward passes (N = channels of the layer), all classes"

    def __init__(self, model: FusedModel, layer: str | None = None, batch_size: int = 64, **settings: Any) -> None:
        super().__init__(model, layer=layer, batch_size=batch_size, **settings)
        self.layer = layer or self.classifier.target_block
        self.batch_size = batch_size

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        acts = self.classifier.forward_features(self.model.norm(images))[self.layer]
        n = acts.shape[1]
        up = torch.nn.functional.interpolate(acts, size=(h, w), mode="bilinear", align_corners=False)
        up = minmax(up)
        k = classes.shape[1]
        scores = images.new_empty(b, n, k)
        for i in range(b):
            for s in range(0, n, self.batch_size):
                m = up[i, s:s + self.batch_size, None]
                logits = self.logits(images[i:i + 1] * m)
                scores[i, s:s + m.shape[0]] = logits[:, classes[i]]
        wts = torch.softmax(scores, dim=1)  # (B,N,K)
        cams = torch.relu(torch.einsum("bnk,bnhw->bkhw", wts, acts))
        return minmax(cams)
