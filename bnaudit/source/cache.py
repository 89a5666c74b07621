"""A cache of per-file facts, so a re-run (pre-commit, CI) parses only what changed.

Facts depend only on a file's bytes, its module name, and bnaudit's own extraction code, so the
key hashes exactly those.  Entries are pickles written by this same code; a corrupt or unreadable
entry is treated as a miss.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from functools import lru_cache
from pathlib import Path

_EXTRACTION_MODULES = ("facts.py", "values.py", "parsing.py", "engine.py", "../catalogue.py")


def default_directory() -> Path:
    """``$BNAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/bnaudit``, else ``~/.cache/bnaudit``."""
    explicit = os.environ.get("BNAUDIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnaudit"


@lru_cache(maxsize=1)
def _code_version() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _EXTRACTION_MODULES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


class FactCache:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.hits = 0

    def key(self, path: str, data: bytes, module: str, is_package: bool) -> str:
        digest = hashlib.sha256(data)
        digest.update(f"\0{path}\0{module}\0{is_package}\0{_code_version()}".encode())
        return digest.hexdigest()

    def get(self, key: str):
        if self.directory is None:
            return None
        try:
            with open(self.directory / key[:2] / key, "rb") as handle:
                value = pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError):
            return None
        self.hits += 1
        return value

    def put(self, key: str, value) -> None:
        if self.directory is None:
            return
        target = self.directory / key[:2] / key
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a concurrent run never reads half an entry.
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
                pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(handle.name, target)
        except OSError:
            pass  # a read-only cache directory just means no cache
