"""ModelSpec: everything a consumer needs to use a trained model, with no other file.

:class:`ModelSpec` is the only form a spec takes in code. Files hold it as JSON-able data:
a checkpoint under ``"spec"``, an ONNX export in ``metadata_props["wysiwyc.spec"]``, a
TensorRT engine in its sidecar; :func:`wysiwyc.modelfile.read_spec` reads it back from
any of them. The model's ``kind`` is stored in the spec and nowhere else. Stdlib-only so
the lean runtime can read it.

Words (the glossary in ``docs/design.md``): the *head* is the attribution network of any
kind (the Explainer, RTIS, the mask predictor, ReciproCAM); the classifier's own pooling +
linear part is its *top*; *explainer* names the paper-1 network only (kind ``explainer``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# what a checkpoint (and its spec) can hold: a plain classifier, or a classifier with one
# attribution head — the Explainer (paper 1), the Explainer net trained with the RTIS loss,
# or the mask predictor (paper 2)
KINDS = ("classifier", "explainer", "mask_predictor", "rtis")
# training-free heads, added to a classifier at export (``to_onnx.py --head``): no checkpoint
# has them, exported fused graphs do
FREE_KINDS = ("reciprocam",)
# ImageNet-1k's class names in logit order (torchvision's list), one per line
IMAGENET_CLASSES = Path(__file__).resolve().parent / "assets" / "imagenet_classes.txt"
# logits -> probabilities: multi-label (independent sigmoids) or single-label (softmax)
ACTIVATIONS = ("sigmoid", "softmax")


@dataclass
class ModelSpec:
    """Description of a classifier (+ optional attribution head).

    Attributes:
        class_names: the C class names, in logit order.
        image_size: (H, W) in pixels the model was trained at.
        mean, std: per-channel RGB normalisation applied to images in [0, 1].
        classifier_arch: name in the classifier registry.
        kind: one of :data:`KINDS`: ``classifier``, ``explainer``, ``mask_predictor`` or ``rtis``
            (or, in an export only, one of :data:`FREE_KINDS`: ``reciprocam``).
        head_arch: the head's architecture within its kind (the Explainer registry name for
            ``explainer`` / ``rtis``, ``mask_predictor`` for the mask predictor), if any.
        mask_kind: how masks are made (``sigmoid`` for the Explainer, the distribution
            controller's name for the mask predictor — its only record), if any.
        dataset: the dataset the model was trained on, e.g. ``shapes`` (empty for a
            classifier brought in from outside).
        activation: how logits become probabilities: ``sigmoid`` (multi-label, one
            probability per class) or ``softmax`` (single-label, they sum to 1).
        channel_order: the channel order the classifier expects, ``rgb`` or ``bgr``; the
            fused graph's input is RGB either way (the swap happens inside).
        extra: free-form architecture arguments needed to rebuild the nets (a user
            classifier's feature blocks under ``blocks``).
    """

    class_names: list[str]
    image_size: tuple[int, int] = (64, 64)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    classifier_arch: str = "small_cnn"
    kind: str = "classifier"
    head_arch: str | None = None
    mask_kind: str | None = None
    dataset: str = "shapes"
    activation: str = "sigmoid"
    channel_order: str = "rgb"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be rgb or bgr, got {self.channel_order!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Rebuild a spec from :meth:`to_dict` output (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["class_names"] = [str(c) for c in kwargs["class_names"]]
        kwargs["image_size"] = tuple(int(v) for v in kwargs.get("image_size", (64, 64)))
        kwargs["mean"] = tuple(float(v) for v in kwargs.get("mean", IMAGENET_MEAN))
        kwargs["std"] = tuple(float(v) for v in kwargs.get("std", IMAGENET_STD))
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "ModelSpec":
        return cls.from_dict(json.loads(s))

    def with_head(self, kind: str, head_arch: str | None = None, mask_kind: str | None = None,
                  extra: dict[str, Any] | None = None, **changes: Any) -> "ModelSpec":
        """The spec of this classifier with an attribution head: the classifier's fields
        (class names, preprocessing, arch) are kept, ``extra`` is merged into the
        classifier's, and ``changes`` override any other field (e.g. ``image_size``)."""
        if kind not in KINDS + FREE_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        return replace(self, kind=kind, head_arch=head_arch, mask_kind=mask_kind,
                       extra={**self.extra, **(extra or {})}, **changes)


def read_class_names(source: str) -> list[str]:
    """Class names from a text file (one per line, blank lines skipped), or ``imagenet`` for
    the 1000 ImageNet-1k names (torchvision's list, in logit order).

    Raises:
        UserError: a missing or empty file.
    """
    p = IMAGENET_CLASSES if source == "imagenet" else Path(source)
    if not p.is_file():
        raise UserError(f"class-name file not found: {p} (one name per line, or 'imagenet')")
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise UserError(f"{p} lists no class names")
    return names
