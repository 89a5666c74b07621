"""What the last run over the same paths saw, so a re-run reads only the files that changed.

One record per invocation (the paths given, the excludes, the working directory): each file's stat,
module name, prefilter signals and facts key, and the last result with the key of everything it was
computed from.  As in ruff, a file whose size, mtime and inode are unchanged is taken as unchanged
and is not read again; a result whose key matches (the same facts of the same files, the same file
list, the same selection, the same bnaudit) is replayed without building the program.
The facts themselves stay in the content-keyed :class:`~bnaudit.source.cache.FactCache`.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from bnaudit.source.cache import Seal
from bnaudit.source.prefilter import Signals

Stat = tuple[int, int, int]
# A file modified this close to the moment its stat is recorded may change again within the same
# mtime tick without its stat changing (git's "racily clean" entries): it is read again next time.
RACY_NS = 2_000_000_000


@dataclass(slots=True)
class FileRecord:
    stat: Stat
    module: tuple[str, bool]
    signals: Signals
    fact_key: str | None = None   # the FactCache key of its content, once needed


@dataclass
class RunRecord:
    version: str
    files: dict[str, FileRecord] = field(default_factory=dict)
    result_key: str | None = None
    result: Any = None
    selected: set[str] | None = None   # what the prefilter chose from these files


def stat_of(stat: os.stat_result) -> Stat:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


@lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of bnaudit's own code: any change to a rule or to the catalogue changes results."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode("utf-8", "surrogateescape"))
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def result_key(files: dict[str, FileRecord], wanted: set[str], options: tuple) -> str:
    """Everything a result is computed from: which files exist (imports resolve against them), the
    facts of the parsed ones (by content), and the options."""
    digest = hashlib.sha256(repr((code_version(), options)).encode("utf-8", "surrogateescape"))
    for path in sorted(files):
        record = files[path]
        digest.update(f"\0{path}\0{record.module}\0{record.fact_key if path in wanted else ''}".encode(
            "utf-8", "surrogateescape"))
    return digest.hexdigest()


class RunStore:
    """The record, sealed like the facts cache's entries (``cache.Seal``): one that does not verify
    is not unpickled."""

    def __init__(self, directory: Path, identity: tuple) -> None:
        name = hashlib.sha256(repr(identity).encode("utf-8", "surrogateescape")).hexdigest()[:32]
        self.path = directory / "runs" / f"{name}.pickle"
        self.seal = Seal(directory)

    def load(self) -> RunRecord | None:
        record = self.seal.load(self.path)
        if not isinstance(record, RunRecord) or record.version != code_version():
            return None
        return record

    def save(self, record: RunRecord) -> None:
        now = time.time_ns()
        self.seal.dump(self.path, replace(record, files={
            path: file if file.stat[1] < now - RACY_NS else replace(file, stat=(-1, -1, -1))
            for path, file in record.files.items()}))
