"""ModelSpec: everything a consumer needs to use a trained model, with no other file.

The spec travels inside checkpoints (as a plain dict), inside ONNX ``metadata_props``
(as JSON) and inside TensorRT engine sidecars. Stdlib-only so the lean runtime can read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelSpec:
    """Description of a classifier (+ optional attribution head).

    Attributes:
        class_names: the C class names, in logit order.
        image_size: (H, W) in pixels the model was trained at.
        mean, std: per-channel RGB normalisation applied to images in [0, 1].
        classifier_arch: name in the classifier registry.
        kind: ``classifier``, ``explainer`` or ``mask_predictor``.
        explainer_arch: name in the explainer / mask-predictor registry, if any.
        mask_kind: how masks are made (``sigmoid`` for the Explainer, the controller
            name for the mask predictor), if any.
        dataset: the dataset the model was trained on, e.g. ``shapes``.
        extra: free-form architecture arguments needed to rebuild the nets.
    """

    class_names: list[str]
    image_size: tuple[int, int] = (64, 64)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    classifier_arch: str = "small_cnn"
    kind: str = "classifier"
    explainer_arch: str | None = None
    mask_kind: str | None = None
    dataset: str = "shapes"
    extra: dict[str, Any] = field(default_factory=dict)

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
