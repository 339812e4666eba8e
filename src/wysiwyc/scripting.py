"""Small helpers shared by the thin scripts in train/, export/, runtime/ and bench/ (stdlib-only)."""

from __future__ import annotations

import argparse


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def image_size_arg(values: list[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    """``--image-size H W`` or ``--image-size S`` -> (H, W)."""
    if not values:
        return default
    if len(values) == 1:
        return (values[0], values[0])
    return (values[0], values[1])
