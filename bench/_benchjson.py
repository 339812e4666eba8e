"""Reading pytest-benchmark JSON and writing the tables made from it (shared by the *_table.py scripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wysiwyc.errors import UserError
from wysiwyc.fileio import atomic_path


def load(path: str | Path) -> dict[str, Any]:
    """The payload of a ``--benchmark-json`` file.

    Raises:
        UserError: the file is missing or not JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"benchmark JSON not found: {p}")
    try:
        return json.loads(p.read_text())
    except ValueError as exc:
        raise UserError(f"{p} is not JSON ({exc})") from exc


def machine(payload: dict[str, Any]) -> tuple[str, str, Any]:
    """(machine, CPU name, CPU thread count) from pytest-benchmark's ``machine_info``."""
    m = payload.get("machine_info", {})
    cpu = m.get("cpu", {}).get("brand_raw") or m.get("processor") or m.get("machine", "?")
    return m.get("machine", "?"), cpu, m.get("cpu", {}).get("count", "?")


def emit(text: str, output: str | None, title: str, command: str) -> None:
    """Print ``text``, or write it to ``output`` under ``# title`` and the command that made it."""
    if not output:
        print(text)
        return
    with atomic_path(Path(output)) as tmp:
        Path(tmp).write_text(f"# {title}\n\nCommand: {command}.\n\n{text}\n")
    print(f"wrote {output}")
