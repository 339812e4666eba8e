"""Which attribution methods the bench runs: the report's list and order, the slow ones, and
the default of a script that explains one checkpoint (quality, gallery)."""

from __future__ import annotations

from wysiwyc.errors import UserError

# every method the report (bench/report.py) scores, in table order: the checkpoint heads,
# then the baselines; methods missing from the registry or without their head are skipped
BENCH_METHODS = ("explainer", "mask_predictor", "mask_predictor_refined", "rtis", "reciprocam", "gradcam",
                 "gradcam++", "scorecam", "sise", "rise", "extremal")
# seconds to minutes per image on a CPU: --slow-limit images, true classes only
SLOW = ("scorecam", "sise", "rise", "extremal")


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
