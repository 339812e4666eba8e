"""Small helpers shared by the thin scripts in train/, export/, runtime/ and bench/ (stdlib-only)."""

from __future__ import annotations

import argparse


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The flags every training script shares: shapes cue, seed, workers, resume, output, device."""
    parser.add_argument("--spurious", action="store_true", help="shapes: plant the background cue for 'dots'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUT.last.pt")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("-o", "--output", required=True, help="checkpoint path (.pt)")
    add_device_arg(parser)


def image_size_arg(values: list[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    """``--image-size H W`` or ``--image-size S`` -> (H, W)."""
    if not values:
        return default
    if len(values) == 1:
        return (values[0], values[0])
    return (values[0], values[1])
