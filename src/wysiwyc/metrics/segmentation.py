"""Paper 1's segmentation metrics (Stalder et al., Sec. 4.2-4.3, Tables 1-2).

All per-image metrics use the *aggregated* masks: the method's masks of the image's
true classes merged by pixel-wise max (Sec. 4.3, "aggregating the masks from multiple
classes into a single one"), and the ground-truth class masks merged the same way.
Pixels whose ground truth is unknown (255, e.g. VOC's void border) are ignored.

* ``acc``  soft pixel accuracy without thresholding: mean of m·g + (1-m)(1-g)
           (= 1 - MAE for binary g, as the paper's Table 2 columns show).
* ``iou``  continuous IoU = Σ min(m,g) / Σ max(m,g); 1 when both are empty.
* ``sal``  Eq. 9: log(max(A(m), 0.05)) - log Σ_{c∈Y} p_c(m⊙x), p = sigmoid of the
           explanandum's logits (multi-label), m⊙x on the normalised image.
* ``mae``  mean |m - g|.

Per class (:class:`PerClassMeter`; judges each class's own mask, which the merged mask
cannot: a method lighting every object in every channel scores well merged):

* ``iou`` / ``mae``  mask of class c vs class c's ground truth, for labelled c.
* ``own``   mean of mask c over class c's object pixels.
* ``leak``  mean of mask c (c labelled) over the pixels of the other labelled classes'
            objects that are not c's.
* ``absent`` mean of mask c (c NOT labelled) over the labelled objects' pixels.

The class-specific masking matrix (Table 1): for each target class t (row) and images
containing t, the softmax probability of t when the image is masked with the binarised
(``s_k ≥ thr``, thr = 0.1 … 0.9) mask of class k (column), averaged over thresholds and
images; column ``none`` is the unmasked image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
METRICS: tuple[str, ...] = ("acc", "iou", "sal", "mae")


def aggregate(masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel-wise max over the labelled classes: masks (B,C,H,W), labels (B,C) -> (B,H,W)."""
    t = labels.to(masks.dtype)[:, :, None, None]
    return (masks.float() * t).amax(dim=1)


def aggregate_gt(gt: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth (B,C,H,W) uint8 {0,1,255} -> (g (B,H,W) float {0,1}, valid (B,H,W) bool).

    A pixel is invalid when any labelled class marks it unknown (255).
    """
    t = labels.bool()[:, :, None, None]
    unknown = ((gt == 255) & t).any(dim=1)
    g = ((gt == 1) & t).any(dim=1).float()
    return g, ~unknown


def segmentation_scores(m: torch.Tensor, g: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-map ``acc``, ``iou``, ``mae`` of masks m, g (…,H,W) in [0,1]: each (…), e.g. (B,)
    per image for (B,H,W) or (B,C) per image and class for (B,C,H,W)."""
    w = torch.ones_like(m) if valid is None else valid.to(m.dtype)
    z = w.flatten(-2).sum(-1).clamp_min(1)
    mae = ((m - g).abs() * w).flatten(-2).sum(-1) / z
    acc = ((m * g + (1 - m) * (1 - g)) * w).flatten(-2).sum(-1) / z
    inter = (torch.minimum(m, g) * w).flatten(-2).sum(-1)
    union = (torch.maximum(m, g) * w).flatten(-2).sum(-1)
    iou = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.ones_like(union))
    return {"acc": acc, "iou": iou, "mae": mae}


def saliency_score(m: torch.Tensor, logits_masked: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 9 per image (B,): m (B,H,W), logits of F(m⊙x) (B,C), labels (B,C)."""
    a = m.flatten(1).mean(1).clamp_min(0.05)
    p = (torch.sigmoid(logits_masked) * labels.to(logits_masked.dtype)).sum(1)
    return a.log() - p.clamp_min(1e-12).log()


def trivial_masks(g: torch.Tensor) -> dict[str, torch.Tensor]:
    """The sanity-check rows of Table 2: constant 0, 0.5, 1 and the ground truth, (B,H,W)."""
    return {"0": torch.zeros_like(g), "0.5": torch.full_like(g, 0.5), "1": torch.ones_like(g), "G.T.": g}


class SegmentationMeter:
    """Accumulates per-image ``acc/iou/sal/mae`` for one method over batches.

    Args:
        logits_fn: the explanandum on NORMALISED images, (B,3,H,W) -> (B,C) logits.
    """

    def __init__(self, logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.logits_fn = logits_fn
        self.values: dict[str, list[torch.Tensor]] = {k: [] for k in METRICS}

    @torch.no_grad()
    def update(self, x_norm: torch.Tensor, m: torch.Tensor, g: torch.Tensor, valid: torch.Tensor,
               labels: torch.Tensor) -> None:
        """x_norm (B,3,H,W), aggregated mask m (B,H,W), ground truth g / valid (B,H,W), labels (B,C)."""
        s = segmentation_scores(m, g, valid)
        s["sal"] = saliency_score(m, self.logits_fn(x_norm * m.unsqueeze(1)), labels)
        keep = labels.sum(1) > 0  # images without any class have no aggregated mask to judge
        for k in METRICS:
            self.values[k].append(s[k][keep].detach().cpu())

    def result(self) -> dict[str, float]:
        """Mean of each metric over all images seen (NaN before any)."""
        out = {}
        for k, v in self.values.items():
            t = torch.cat(v) if v else torch.empty(0)
            out[k] = float(t.mean()) if t.numel() else math.nan
        out["n"] = int(sum(x.numel() for x in self.values["iou"]))
        return out


def per_class_scores(masks: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per (image, class) values of the per-class metrics (module doc).

    Args:
        masks: (B,C,H,W) in [0,1]; gt: (B,C,H,W) uint8 {0,1,255}; labels: (B,C) in {0,1}.

    Returns:
        ``iou``, ``mae``, ``own``, ``leak``, ``absent``: (B,C) each, NaN where undefined
        (e.g. ``own`` for an unlabelled class, ``leak`` without another labelled object).
    """
    m = masks.float()
    lab = labels.bool()
    g = (gt == 1).float()
    nan = torch.full(lab.shape, float("nan"), device=m.device)
    own_class = segmentation_scores(m, g, gt != 255)  # (B,C): mask c against class c's ground truth

    def mean_over(region: torch.Tensor) -> torch.Tensor:  # region (B,C,H,W) float -> (B,C), NaN if empty
        cnt = region.flatten(2).sum(2)
        return torch.where(cnt > 0, (m * region).flatten(2).sum(2) / cnt.clamp_min(1), nan)

    objects = (g * lab[:, :, None, None]).amax(1, keepdim=True)  # (B,1,H,W): any labelled object
    others = (objects - g).clamp_min(0)  # labelled objects' pixels outside class c's own object
    return {"iou": torch.where(lab, own_class["iou"], nan), "mae": torch.where(lab, own_class["mae"], nan),
            "own": torch.where(lab, mean_over(g), nan), "leak": torch.where(lab, mean_over(others), nan),
            "absent": torch.where(~lab, mean_over(objects.expand_as(g)), nan)}


class PerClassMeter:
    """Accumulates :func:`per_class_scores`; ``result()`` gives each metric per class
    (``per_class``: name -> list of C means, NaN for a class never seen) and its mean over
    classes (key = the metric name)."""

    KEYS: tuple[str, ...] = ("iou", "mae", "own", "leak", "absent")

    def __init__(self, num_classes: int) -> None:
        self.C = num_classes
        self.sums = {k: torch.zeros(num_classes, dtype=torch.float64) for k in self.KEYS}
        self.counts = {k: torch.zeros(num_classes, dtype=torch.float64) for k in self.KEYS}

    @torch.no_grad()
    def update(self, masks: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor) -> None:
        """masks of ALL classes (B,C,H,W), gt (B,C,H,W) {0,1,255}, labels (B,C)."""
        for k, v in per_class_scores(masks, gt, labels).items():
            v = v.double().cpu()
            ok = ~v.isnan()
            self.sums[k] += torch.where(ok, v, torch.zeros_like(v)).sum(0)
            self.counts[k] += ok.sum(0)

    def merge(self, others: "list[PerClassMeter]") -> "PerClassMeter":
        """Add the sums and counts of ``others`` (e.g. every other rank's shard) into this one."""
        for other in others:
            for k in self.KEYS:
                self.sums[k] += other.sums[k]
                self.counts[k] += other.counts[k]
        return self

    def result(self) -> dict[str, object]:
        out: dict[str, object] = {"per_class": {}}
        for k in self.KEYS:
            per = torch.where(self.counts[k] > 0, self.sums[k] / self.counts[k].clamp_min(1),
                              torch.full((self.C,), float("nan"), dtype=torch.float64))
            out["per_class"][k] = per.tolist()
            seen = ~per.isnan()
            out[k] = float(per[seen].mean()) if seen.any() else math.nan
        out["iou_min"] = min((v for v in out["per_class"]["iou"] if not math.isnan(v)), default=math.nan)
        return out


class ClassMaskingMeter:
    """Table 1 of paper 1: softmax probability of each target class under each class's
    thresholded mask. ``result()`` gives ``matrix`` (C rows = target class, C columns =
    mask class), ``none`` (C,), ``count`` (C,) and the thresholds.

    Args:
        logits_fn: the explanandum on NORMALISED images, (B,3,H,W) -> (B,C).
        num_classes: C.
        thresholds: binarisation thresholds for the masks.
    """

    def __init__(self, logits_fn: Callable[[torch.Tensor], torch.Tensor], num_classes: int,
                 thresholds: Sequence[float] = THRESHOLDS) -> None:
        self.logits_fn, self.C, self.thresholds = logits_fn, num_classes, tuple(thresholds)
        self.sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        self.none = torch.zeros(num_classes, dtype=torch.float64)
        self.count = torch.zeros(num_classes, dtype=torch.float64)

    @torch.no_grad()
    def update(self, x_norm: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> None:
        """x_norm (B,3,H,W), masks of ALL classes (B,C,H,W) in [0,1], labels (B,C)."""
        lab = labels.to(torch.float64).cpu()
        self.count += lab.sum(0)
        self.none += (torch.softmax(self.logits_fn(x_norm).double(), 1).cpu() * lab).sum(0)
        for k in range(self.C):
            probs = torch.zeros(x_norm.shape[0], self.C, dtype=torch.float64)
            for thr in self.thresholds:
                mk = (masks[:, k] >= thr).to(x_norm.dtype).unsqueeze(1)
                probs += torch.softmax(self.logits_fn(x_norm * mk).double(), 1).cpu()
            # rows: target class t (only images containing t), column: mask class k
            self.sums[:, k] += (probs / len(self.thresholds) * lab).sum(0)

    def result(self) -> dict[str, object]:
        c = self.count.clamp_min(1)
        return {"matrix": (self.sums / c[:, None]).tolist(), "none": (self.none / c).tolist(),
                "count": self.count.tolist(), "thresholds": list(self.thresholds)}


def matrix_goal(result: dict[str, object], keep: float = 0.8, leak: float = 0.3,
                mean_leak: float = 0.2) -> dict[str, object]:
    """Check Table 1's goal: diagonal ≥ keep·none, every off-diagonal ≤ leak·none and their
    mean ≤ mean_leak·none.

    Returns ``diag_ratio`` / ``offdiag_max_ratio`` per class (relative to ``none``),
    ``diag_min`` / ``offdiag_max`` / ``offdiag_mean`` over the classes with test images, and
    booleans ``diag_ok``, ``offdiag_ok`` (classes without images are ignored).
    """
    mat = torch.tensor(result["matrix"], dtype=torch.float64)
    none = torch.tensor(result["none"], dtype=torch.float64).clamp_min(1e-12)
    ratio = mat / none[:, None]
    diag = ratio.diagonal()
    present = torch.tensor(result["count"]) > 0
    eye = torch.eye(len(diag), dtype=torch.bool)
    off_vals = ratio[present[:, None] & ~eye]
    off = ratio.clone()
    off.fill_diagonal_(-math.inf)
    offmax = off.max(1).values
    if not present.any():
        return {"diag_ratio": diag.tolist(), "offdiag_max_ratio": offmax.tolist(), "diag_min": math.nan,
                "offdiag_max": math.nan, "offdiag_mean": math.nan, "diag_ok": False, "offdiag_ok": False}
    off_max, off_mean = float(offmax[present].max()), float(off_vals.mean()) if off_vals.numel() else math.nan
    return {"diag_ratio": diag.tolist(), "offdiag_max_ratio": offmax.tolist(),
            "diag_min": float(diag[present].min()), "offdiag_max": off_max, "offdiag_mean": off_mean,
            "diag_ok": bool((diag[present] >= keep).all()),
            "offdiag_ok": bool(off_max <= leak and off_mean <= mean_leak)}
