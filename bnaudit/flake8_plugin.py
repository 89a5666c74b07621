"""bnaudit as a flake8 plugin: ``flake8 --select BN`` runs the analyzer on each file flake8 checks.

flake8 hands a plugin one file at a time, so the plugin sees what one file shows: a layer in
``model.py`` and the train op in ``train.py`` that imports it are judged together only by
``bnaudit check``, which reads the whole program.  The findings are the same codes and messages.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

from bnaudit import __version__


class Plugin:
    name = "bnaudit"
    version = __version__

    def __init__(self, tree, filename: str = "stdin", lines: list[str] | None = None):
        self.filename = filename
        self.lines = lines

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        from bnaudit.source import analyze

        path = Path(self.filename)
        with tempfile.TemporaryDirectory(prefix="bnaudit-flake8-") as directory:
            if self.lines is not None or not path.is_file():
                # What flake8 read (stdin, or a file it decoded), written where the analyzer can read it.
                path = Path(directory) / (path.name if path.suffix == ".py" else "stdin.py")
                path.write_text("".join(self.lines or ()), encoding="utf-8")
            result = analyze([path], cache_dir=None, jobs=1, respect_gitignore=False)
        shown = sorted({str(path), os.path.relpath(path), os.path.relpath(path, directory)}, key=len, reverse=True)
        for finding in result.findings:
            if Path(finding.path).resolve() != path.resolve():
                continue
            message = finding.message
            for name in shown:  # the message's references to its own file, under flake8's name for it
                message = message.replace(f"{name}:", f"{self.filename}:")
            # flake8 columns are 0-based; its message starts with the code.
            yield finding.line or 1, max((finding.column or 1) - 1, 0), f"{finding.code} {message}", type(self)
