"""Jupyter notebooks as one program: the code cells in order, magics blanked, each cell marked.

A notebook runs its cells in one namespace, so a layer built in cell 2 and the train op of cell 5
are one program, exactly as the cells joined in order would be.  Each cell starts with a marker
comment, so that a line of the joined source can be told back as ``cell 5, line 3``; magics
(``%time``, ``!pip``, ``?help``) become comments, which keeps every line where it was.
"""

from __future__ import annotations

import re

SUFFIX = ".ipynb"
_MARKER = "# bnaudit: notebook cell {}"
_MARKER_RE = re.compile(r"^# bnaudit: notebook cell (\d+)$")
_MAGIC_RE = re.compile(r"^\s*(%|!|\?)|^\s*\S.*\?\s*$")
_CELL_MAGIC_RE = re.compile(r"^%%(\w+)")
# Cell magics whose body is Python (``%%time``); any other (``%%bash``, ``%%writefile``) is not read.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})


class NotebookError(ValueError):
    """The file is not a notebook nbformat can read."""


def is_notebook(path: str) -> bool:
    return path.endswith(SUFFIX)


def to_source(data: bytes) -> bytes:
    """The notebook's code cells joined in order (the Python source bnaudit analyzes)."""
    import nbformat

    try:
        notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as exc:  # nbformat raises JSON, validation and version errors of its own
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise NotebookError(f"not a notebook nbformat can read ({detail})") from None
    lines: list[str] = []
    for number, cell in enumerate(notebook.cells, 1):  # numbered as Jupyter shows them, markdown included
        if cell.get("cell_type") != "code":
            continue
        lines.append(_MARKER.format(number))
        cell_lines = str(cell.get("source", "")).splitlines()
        magic = _CELL_MAGIC_RE.match(cell_lines[0]) if cell_lines else None
        foreign = magic is not None and magic.group(1) not in _PYTHON_CELL_MAGICS
        for line in cell_lines:
            lines.append(f"# {line}" if foreign or _MAGIC_RE.match(line) else line)
    return ("\n".join(lines) + "\n").encode("utf-8")


def cell_position(source_lines: list[str], line: int) -> tuple[int, int] | None:
    """(cell, line in that cell) for a line of the joined source, both 1-based."""
    for index in range(min(line, len(source_lines)) - 1, -1, -1):
        match = _MARKER_RE.match(source_lines[index])
        if match:
            return int(match.group(1)), line - index - 1
    return None
