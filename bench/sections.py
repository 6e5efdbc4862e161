"""Sections of docs/benchmarks.md that each bench script owns and rewrites in place.

A section runs from ``<!-- bench/NAME: start -->`` to ``<!-- bench/NAME: end -->``; writing one
leaves the rest of the file alone, and ``core.py``, which writes the file's head, keeps them.
"""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- (bench/[\w.]+): start -->.*?<!-- \1: end -->", re.S)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench/{name}: start -->", f"<!-- bench/{name}: end -->"


def wrap(name: str, body: str) -> str:
    start, end = markers(name)
    return f"{start}\n{body.strip()}\n{end}"


def write(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of ``path`` with ``body``."""
    section = wrap(name, body)
    text = path.read_text() if path.exists() else ""
    start, end = markers(name)
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def kept(text: str) -> list[str]:
    """Every section in ``text``, in order (for a script that rewrites the rest)."""
    return [m.group(0) for m in _SECTION.finditer(text)]
