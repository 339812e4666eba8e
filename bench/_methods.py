"""Which attribution methods a bench script runs for a checkpoint (shared by quality and gallery)."""

from __future__ import annotations

from wysiwyc.errors import UserError


def default_methods(kind: str) -> list[str]:
    """The method named like the checkpoint's kind (``explainer``, ``mask_predictor``, …)."""
    from wysiwyc.attribution import available_methods

    if kind in available_methods():
        return [kind]
    raise UserError(f"checkpoint kind {kind!r} has no default attribution method; pass --methods "
                    f"(one of: {', '.join(available_methods())})")


def parse_methods(value: str | None, kind: str) -> list[str]:
    """``--methods a,b`` -> ["a", "b"]; None -> :func:`default_methods`."""
    if value:
        return [m.strip() for m in value.split(",") if m.strip()]
    return default_methods(kind)
