"""One self-describing ``.pt`` checkpoint that ``torch.load(weights_only=True)`` loads.

Layout (plain dicts and tensors only, so no code runs on load)::

    {
      "format": "wysiwyc-checkpoint", "format_version": 3,
      "spec": ModelSpec.to_dict(),         # kind included: the one place it is stored
      "classifier": state_dict,            # always: the explained classifier
      "head": state_dict | None,           # the attribution head, if any
      "train": {...config...}, "metrics": {...final metrics...},
    }

:func:`load_checkpoint` returns a :class:`Checkpoint`, whose ``spec`` is a
:class:`~wysiwyc.spec.ModelSpec`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .fileio import atomic_path
from .spec import KINDS, ModelSpec

FORMAT = "wysiwyc-checkpoint"
FORMAT_VERSION = 3
# the classifier's pooling + linear part was called "head" (now "top") before format 3
OLDEST_READABLE = 3


class CheckpointError(UserError):
    """The file is not a usable wysiwyc checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the file it came from.
        spec: the model spec (its ``kind`` says what the file holds).
        classifier: the explained classifier's state dict.
        head: the attribution head's state dict, ``None`` for a plain classifier.
        train, metrics: the training configuration and final metrics (plain values).
    """

    path: Path
    spec: ModelSpec
    classifier: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.spec.kind


def save_checkpoint(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    classifier: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None = None,
    train: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: the ``.pt`` file.
        spec: the model spec; its ``kind`` (one of :data:`~wysiwyc.spec.KINDS`) says what
            the file holds.
        classifier: the explained classifier's state dict.
        head: the attribution head's state dict (``None`` for a plain classifier).
        train, metrics: the training configuration and final metrics (plain values).
    """
    if spec.kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {spec.kind!r}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "classifier": {k: v.detach().cpu() for k, v in classifier.items()},
        "head": None if head is None else {k: v.detach().cpu() for k, v in head.items()},
        "train": _plain(train or {}),
        "metrics": _plain(metrics or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _plain(obj: Any) -> Any:
    """Make configs weights_only-safe: keep str/int/float/bool/None/list/dict, stringify the rest."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    return str(obj)


def load_checkpoint(path: str | os.PathLike[str], kinds: tuple[str, ...] | None = None) -> Checkpoint:
    """Load and validate a checkpoint (``weights_only=True``, on the CPU).

    Args:
        path: the ``.pt`` file.
        kinds: accepted kinds; ``None`` accepts every kind.

    Raises:
        CheckpointError: missing file, not a torch file, a foreign file, another format
            version, a malformed spec, or a kind not in ``kinds``.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if first.startswith("Weights only load failed"):
            first = "not a torch file of tensors and plain dicts"
        raise CheckpointError(f"{p} is not a loadable wysiwyc checkpoint ({first[:160]})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{p} is not a wysiwyc checkpoint (no format={FORMAT!r} field); "
            "train one with train/train_classifier.py"
        )
    version = int(ckpt.get("format_version", 0))
    if not OLDEST_READABLE <= version <= FORMAT_VERSION:
        newer = "upgrade wysiwyc" if version > FORMAT_VERSION else "retrain it with this wysiwyc"
        raise CheckpointError(f"{p} has format version {version}, this wysiwyc reads "
                              f"{OLDEST_READABLE}..{FORMAT_VERSION}: {newer}")
    try:
        spec = ModelSpec.from_dict(ckpt["spec"])
    except Exception as exc:
        raise CheckpointError(f"{p} has a malformed spec ({exc})") from exc
    if spec.kind not in KINDS:
        raise CheckpointError(f"{p} has unknown kind {spec.kind!r}")
    if kinds is not None and spec.kind not in kinds:
        raise CheckpointError(f"{p} is a {spec.kind} checkpoint, expected one of: {', '.join(kinds)}")
    return Checkpoint(p, spec, ckpt["classifier"], ckpt.get("head"), ckpt.get("train") or {},
                      ckpt.get("metrics") or {})
