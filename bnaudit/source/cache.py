"""A cache of per-file facts, so a re-run (pre-commit, CI) parses only what changed.

Facts depend only on a file's bytes, its module name, and bnaudit's own extraction code, so the
key hashes exactly those.  Entries are pickles written by this same code; a corrupt or unreadable
entry is treated as a miss.  Unpickling runs code, so every entry is sealed (see ``Seal``): one that
does not verify is a miss, never loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import stat
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


class Seal:
    """An HMAC over each cache entry under a per-user key: ``key`` (mode 0600) in a cache directory
    the user owns and nobody else can write.  Whoever can write cache entries (a shared CI cache, a
    shared home) cannot make bnaudit unpickle them.  A directory that fails those checks turns the
    cache off (``usable`` is False): slower, never unsafe."""

    def __init__(self, directory: Path) -> None:
        self.key = _user_key(str(directory))

    @property
    def usable(self) -> bool:
        return self.key is not None

    def seal(self, payload: bytes) -> bytes:
        assert self.key is not None
        return hmac.new(self.key, payload, hashlib.sha256).digest() + payload

    def open(self, blob: bytes) -> bytes | None:
        if self.key is None or len(blob) < 32:
            return None
        mac, payload = blob[:32], blob[32:]
        return payload if hmac.compare_digest(mac, hmac.new(self.key, payload, hashlib.sha256).digest()) else None


    def load(self, path: Path):
        """The value sealed in ``path``; None when it is missing, unreadable, or does not verify."""
        try:
            with open(path, "rb") as handle:
                payload = self.open(handle.read())
            return pickle.loads(payload) if payload is not None else None
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError,
                IndexError, KeyError):
            return None

    def dump(self, path: Path, value) -> None:
        if self.key is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a concurrent run never reads half an entry.
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
                handle.write(self.seal(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))
            os.replace(handle.name, path)
        except OSError:
            pass  # a read-only cache directory just means no cache


@lru_cache(maxsize=8)
def _user_key(directory: str) -> bytes | None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _private(os.stat(directory)):
            return None
        path = os.path.join(directory, "key")
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(32))
        status = os.lstat(path)
        if not stat.S_ISREG(status.st_mode) or not _private(status) or status.st_mode & 0o077:
            return None
        with open(path, "rb") as handle:
            key = handle.read(64)
        return key if len(key) == 32 else None
    except OSError:
        return None


def _private(status: os.stat_result) -> bool:
    """Owned by this user (where there are users) and writable by nobody else."""
    owner = getattr(os, "getuid", None)
    return (owner is None or status.st_uid == owner()) and not status.st_mode & 0o022


class FactCache:
    def __init__(self, directory: Path | None) -> None:
        self.seal = Seal(directory) if directory is not None else None
        self.directory = directory if self.seal is not None and self.seal.usable else None
        self.hits = 0

    def key(self, path: str, data: bytes, module: str, is_package: bool) -> str:
        digest = hashlib.sha256(data)
        # surrogateescape: a file name that is not UTF-8 (bytes the OS gave back as surrogates).
        digest.update(f"\0{path}\0{module}\0{is_package}\0{_code_version()}".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def get(self, key: str):
        if self.directory is None:
            return None
        value = self.seal.load(self.directory / key[:2] / key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, key: str, value) -> None:
        if self.directory is not None:
            self.seal.dump(self.directory / key[:2] / key, value)
