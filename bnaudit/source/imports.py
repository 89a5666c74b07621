"""Which file an import statement loads, found the way Python finds it.

A repository is many programs: ``import model`` in ``a/main.py`` is ``a/model.py`` (the script's
own directory is ``sys.path[0]``, and Python 2 imports relative to the package first), not
``b/model.py``.  The search is the importer's directory, then the root of its package tree (the
directory above the outermost ``__init__.py``), then each directory above it; in each, a name is a
module (``name.py``), a package (``name/__init__.py``) or a namespace package (a directory).  The
first match wins, even when that file was not parsed (the prefilter dropped it), so a name never
falls through to a same-named file elsewhere.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Iterable

_MISSING = object()


@lru_cache(maxsize=65536)
def normalize(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


class ImportResolver:
    def __init__(self, files: Iterable[str]) -> None:
        self.files: set[str] = set()
        self.directories: set[str] = set()
        for path in files:
            norm = normalize(path)
            self.files.add(norm)
            directory = os.path.dirname(norm)
            while directory not in self.directories:
                self.directories.add(directory)
                parent = os.path.dirname(directory)
                if parent == directory:
                    break
                directory = parent
        self._bases = lru_cache(maxsize=None)(self._bases_uncached)
        self._found: dict[tuple[str, str], str | None] = {}
        self._directory = lru_cache(maxsize=None)(lambda path: os.path.dirname(normalize(path)))
        self._heads: dict[tuple[str, str], str | None] = {}

    def _head_base(self, directory: str, head: str) -> str | None:
        """The first base directory (in search order) where a top-level name exists."""
        key = (directory, head)
        if key not in self._heads:
            self._heads[key] = next((base for base in self._bases(directory)
                                     if self._in(base, [head]) is not _MISSING), None)
        return self._heads[key]

    def _is_package(self, directory: str) -> bool:
        return os.path.join(directory, "__init__.py") in self.files

    def _bases_uncached(self, directory: str) -> tuple[str, ...]:
        bases = [directory]
        root = directory
        while self._is_package(root):
            root = os.path.dirname(root)
        bases.append(root)
        current = directory
        while True:
            parent = os.path.dirname(current)
            if parent == current or parent not in self.directories:
                break
            bases.append(parent)
            current = parent
        return tuple(dict.fromkeys(bases))

    def _in(self, base: str, parts: list[str]) -> str | None | object:
        """The file for ``parts`` under ``base``: a path, None for a namespace package, or _MISSING."""
        target = os.path.join(base, *parts)
        if target + ".py" in self.files:
            return target + ".py"
        init = os.path.join(target, "__init__.py")
        if init in self.files:
            return init
        if target in self.directories:
            return None
        return _MISSING

    def resolve(self, importer: str, dotted: str) -> tuple[str | None, int]:
        """(path of the module, number of name parts it consumes) for ``dotted`` imported from
        ``importer``; (None, 0) when nothing checked matches.  ``pkg.model.build`` -> (pkg/model.py, 2)."""
        directory = self._directory(importer)
        key = (directory, dotted)
        if key in self._found:
            return self._found[key]  # type: ignore[return-value]
        parts = dotted.split(".")
        result: tuple[str | None, int] = (None, 0)
        base = self._head_base(directory, parts[0])
        if base is not None:
            for count in range(1, len(parts) + 1):
                found = self._in(base, parts[:count])
                if found is _MISSING:
                    break
                if found is not None:
                    result = (found, count)  # type: ignore[assignment]
        self._found[key] = result  # type: ignore[assignment]
        return result
