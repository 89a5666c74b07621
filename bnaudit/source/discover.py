"""Which files to check: *.py under the given paths, minus excludes and vendored trees."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# Never descended into unless named on the command line.
SKIPPED_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    "site-packages", "dist-packages", "node_modules", ".eggs", "build", "dist",
})


@dataclass
class Discovery:
    files: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def file_key(path: Path) -> tuple[int, int]:
    """Identifies a file however it was named (symlinks, ``./``), for one stat call."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _is_virtualenv(directory: Path) -> bool:
    return (directory / "pyvenv.cfg").is_file() or (directory / "bin" / "activate").is_file() and \
        (directory / "lib").is_dir()


def _excluded(path: Path, patterns: list[str], root: Path | None) -> bool:
    if not patterns:
        return False
    candidates = {path.name, path.as_posix()}
    for base in filter(None, (root, Path.cwd())):
        try:
            candidates.add(path.resolve().relative_to(base.resolve()).as_posix())
        except ValueError:
            pass
    return any(fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, pattern.rstrip("/") + "/*")
               for candidate in candidates for pattern in patterns)


def is_regular(path: Path) -> bool:
    """A regular file (following links); False for what cannot even be looked at."""
    try:
        return path.is_file()
    except OSError:
        return False


class GitIgnore:
    """What git ignores under a directory walk: every ``.gitignore`` met on the way down, and the
    repository's ``.git/info/exclude``, with git's precedence (a deeper file's match wins; ``!`` negates)."""

    def __init__(self, top: Path):
        import pathspec

        self._pathspec = pathspec
        self.specs: dict[Path, object] = {}
        root = next((d for d in [top, *top.parents] if (d / ".git").exists()), None)
        self.root = root
        if root is not None:
            self._load(root, root / ".git" / "info" / "exclude")
            for directory in reversed(top.relative_to(root).parents if top != root else ()):
                self._load(root / directory, root / directory / ".gitignore")

    def _load(self, directory: Path, file: Path) -> None:
        try:
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return
        spec = self._pathspec.GitIgnoreSpec.from_lines(lines)
        previous = self.specs.get(directory)
        self.specs[directory] = spec if previous is None else previous + spec

    def enter(self, directory: Path) -> None:
        self._load(directory, directory / ".gitignore")

    def ignored(self, path: Path, is_dir: bool = False) -> bool:
        verdict = False
        for directory, spec in self.specs.items():
            try:
                relative = path.relative_to(directory).as_posix()
            except ValueError:
                continue
            result = spec.check_file(relative + ("/" if is_dir else ""))
            if result.include is not None:
                verdict = result.include
        return verdict


def git_tracked(directory: Path) -> set[Path] | None:
    """The files git tracks under ``directory`` (the index: committed and staged), or None outside a
    repository or without git."""
    import subprocess

    try:
        proc = subprocess.run(["git", "-C", str(directory), "ls-files", "-z", "--cached", "--full-name", "."],
                              capture_output=True, timeout=60)
        top = subprocess.run(["git", "-C", str(directory), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or top.returncode != 0:
        return None
    root = Path(top.stdout.strip())
    return {(root / os.fsdecode(name)).resolve() for name in proc.stdout.split(b"\0") if name}


def discover(paths: list[Path], exclude: list[str], exclude_root: Path | None = None,
             respect_gitignore: bool = True, tracked_only: bool = False) -> Discovery:
    """The files to check.  ``tracked_only`` (pre-commit's view): walking a directory inside a git
    repository keeps the files git tracks or has staged, never an untracked scratch file."""
    found = Discovery()
    seen: set[tuple[int, int]] = set()

    def add(file: Path) -> None:
        try:
            key = file_key(file)
        except OSError:
            key = (-1, hash(file))
        if key not in seen:
            seen.add(key)
            found.files.append(file)

    for path in paths:
        try:
            path.stat()
        except FileNotFoundError:
            found.errors.append(f"{path}: no such file or directory")
            continue
        except OSError as exc:  # a name too long, a loop of symbolic links, a directory not searchable
            found.errors.append(f"{path}: cannot be read ({(exc.strerror or str(exc)).lower()})")
            continue
        if path.is_file():
            # A file named explicitly is checked whatever its name or the excludes say.
            add(path)
            continue
        if not path.is_dir():
            found.errors.append(f"{path}: not a regular file (a FIFO, socket or device is never read)")
            continue
        if not os.access(path, os.R_OK | os.X_OK):
            found.errors.append(f"{path}: permission denied")
            continue
        ignore = GitIgnore(path.absolute()) if respect_gitignore else None
        tracked = git_tracked(path) if tracked_only else None
        for dirpath, dirnames, filenames in os.walk(path, onerror=lambda e: found.errors.append(
                f"{e.filename}: {e.strerror.lower() if e.strerror else e}")):
            directory = Path(dirpath)
            if ignore is not None:
                ignore.enter(directory.absolute())
            dirnames[:] = sorted(
                name for name in dirnames
                if name not in SKIPPED_DIRS and not name.startswith(".")
                and not _is_virtualenv(directory / name)
                and not _excluded(directory / name, exclude, exclude_root)
                and not (ignore is not None and ignore.ignored((directory / name).absolute(), is_dir=True))
            )
            for name in sorted(filenames):
                if name.endswith((".py", ".ipynb")) and not _excluded(directory / name, exclude, exclude_root) \
                        and not (ignore is not None and ignore.ignored((directory / name).absolute())) \
                        and (tracked is None or (directory / name).resolve() in tracked):
                    add(directory / name)
    return found


@lru_cache(maxsize=4096)
def _package_path(directory: Path) -> tuple[str, ...]:
    """The package names from the top of the package tree down to ``directory`` (empty if no package)."""
    if directory.parent == directory or not (directory / "__init__.py").is_file():
        return ()
    return (*_package_path(directory.parent), directory.name)


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted module name a file is imported as, and whether it is a package's ``__init__``."""
    path = path.absolute()
    is_package = path.name == "__init__.py"
    parts = _package_path(path.parent) + (() if is_package else (path.stem,))
    return ".".join(parts) or path.stem, is_package
