"""User-facing errors and the wrapper that turns them into one line and exit code 2.

Everything a user can cause (bad path, wrong checkpoint, missing camera, bad flag,
missing optional dependency) raises :class:`UserError`. Entry points wrap their
``main`` in :func:`cli_main`, which prints ``error: <message>`` to stderr and returns 2
instead of a traceback. This module is stdlib-only so the lean runtime can use it.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import an optional dependency or raise a :class:`UserError` naming the pip extra.

    Args:
        module: importable module name, e.g. ``"onnxruntime"``.
        extra: the ``wysiwyc`` extra that installs it, e.g. ``"cpu"``.
        purpose: what it is needed for, shown in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = f" (needed for {purpose})" if purpose else ""
        raise UserError(
            f"{module} is not installed{why}: pip install 'wysiwyc[{extra}]' ({exc})"
        ) from exc


def cli_main(fn: Callable[..., int]) -> Callable[..., int]:
    """Decorate an entry point ``main(argv=None) -> int`` so user errors exit 2 cleanly.

    ``argparse`` already exits 2 on bad flags; this adds the same contract for
    :class:`UserError` and makes Ctrl-C exit 130 without a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
