"""One self-describing ``.pt`` checkpoint that ``torch.load(weights_only=True)`` loads.

Layout (plain dicts and tensors only, so no code runs on load)::

    {
      "format": "wysiwyc-checkpoint", "format_version": 2,
      "kind": "classifier" | "explainer" | "mask_predictor" | "rtis",
      "spec": ModelSpec.to_dict(),
      "classifier": state_dict,            # always: the explained classifier
      "head": state_dict | None,           # the attribution head, if any
      "train": {...config...}, "metrics": {...final metrics...},
    }

Format 1 stored the head under ``"explainer"`` and used the format-1 spec (see
:func:`wysiwyc.spec.upgrade_spec_dict`); :func:`load_checkpoint` reads both and always
returns the format-2 layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .fileio import atomic_path
from .spec import KINDS, ModelSpec

FORMAT = "wysiwyc-checkpoint"
FORMAT_VERSION = 2


class CheckpointError(UserError):
    """The file is not a usable wysiwyc checkpoint."""


def save_checkpoint(
    path: str | os.PathLike[str],
    kind: str,
    spec: ModelSpec,
    classifier: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None = None,
    train: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: the ``.pt`` file.
        kind: one of :data:`~wysiwyc.spec.KINDS`.
        spec: the model spec (its ``kind`` is set to ``kind``).
        classifier: the explained classifier's state dict.
        head: the attribution head's state dict (``None`` for a plain classifier).
        train, metrics: the training configuration and final metrics (plain values).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "spec": {**spec.to_dict(), "kind": kind},
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


def load_checkpoint(
    path: str | os.PathLike[str], kinds: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Load and validate a checkpoint (``weights_only=True``, on the CPU).

    Args:
        path: the ``.pt`` file.
        kinds: accepted kinds; ``None`` accepts every kind.

    Returns:
        The checkpoint dict in the format-2 layout (a format-1 file is upgraded in memory;
        ``format_version`` says what the file holds), plus ``"spec_obj"``: the
        :class:`~wysiwyc.spec.ModelSpec`.

    Raises:
        CheckpointError: missing file, not a torch file, a foreign file, a newer
            format, or a kind not in ``kinds``.
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
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{p} has format version {ckpt['format_version']}, this wysiwyc reads up to "
            f"{FORMAT_VERSION}: upgrade wysiwyc"
        )
    if int(ckpt.get("format_version", 0)) < 2:
        ckpt = _upgrade_v1(ckpt)
    kind = ckpt.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{p} has unknown kind {kind!r}")
    if kinds is not None and kind not in kinds:
        raise CheckpointError(f"{p} is a {kind} checkpoint, expected one of: {', '.join(kinds)}")
    try:
        ckpt["spec_obj"] = ModelSpec.from_dict(ckpt["spec"])
    except Exception as exc:
        raise CheckpointError(f"{p} has a malformed spec ({exc})") from exc
    ckpt["spec"] = ckpt["spec_obj"].to_dict()  # format-1 spec fields under their current names
    return ckpt


def _upgrade_v1(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2 in memory: the head's weights move from ``"explainer"`` to ``"head"``
    (the spec is upgraded by :meth:`ModelSpec.from_dict`)."""
    out = {k: v for k, v in ckpt.items() if k != "explainer"}
    out["head"] = ckpt.get("explainer")
    return out
