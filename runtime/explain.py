#!/usr/bin/env python
"""Run ``runtime-explain`` from a checkout: ``python runtime/explain.py --demo``.

The same command as the ``runtime-explain`` console script that ``pip install`` creates;
the logic lives in :mod:`wysiwyc.runtime.cli`.
"""

from __future__ import annotations

import sys

import _path  # noqa: F401  (checkout src/ on sys.path)

from wysiwyc.runtime.cli import get_args_parser, main  # noqa: F401  (get_args_parser: the script contract)

if __name__ == "__main__":
    sys.exit(main())
