"""``[tool.bnaudit]`` of each file's nearest pyproject.toml, and how the command line combines with it."""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ConfigError(Exception):
    """A pyproject.toml whose [tool.bnaudit] table cannot be used."""


# Keys of [tool.bnaudit], spelled as ruff spells its own (kebab-case; snake_case is accepted too).
LIST_KEYS = ("select", "extend-select", "ignore", "exclude")
TABLE_KEYS = ("per-file-ignores",)


@dataclass
class Config:
    select: list[str] | None = None
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    # glob (relative to the pyproject's directory) -> codes ignored in the files it matches
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    path: Path | None = None  # the pyproject.toml it came from
    root: Path | None = None  # its directory; exclude and per-file-ignores globs are relative to it

    def ignored_here(self, file: Path) -> list[str]:
        """The per-file-ignores codes whose glob matches ``file``."""
        if not self.per_file_ignores or self.root is None:
            return []
        try:
            relative = file.resolve().relative_to(self.root.resolve()).as_posix()
        except (ValueError, OSError):
            relative = file.as_posix()
        return [code for pattern, codes in self.per_file_ignores.items()
                if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(file.name, pattern) for code in codes]


def _table(path: Path) -> dict | None:
    """The [tool.bnaudit] table of a pyproject.toml, None when it has none; ConfigError when the file
    cannot be read or is malformed (a malformed file is never passed over)."""
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: not a regular file")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: `tool` must be a table ([tool.bnaudit]), not {type(tool).__name__}")
    if "bnaudit" not in tool:
        return None
    table = tool["bnaudit"]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.bnaudit] must be a table")
    return table


def _strings(path: Path, key: str, value) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise ConfigError(f"{path}: [tool.bnaudit] {key} must be a list of strings")
    return list(value)


def parse(path: Path, table: dict) -> Config:
    config = Config(path=path, root=path.parent)
    for key, value in table.items():
        name = key.replace("_", "-")
        if name in LIST_KEYS:
            setattr(config, name.replace("-", "_"), _strings(path, key, value))
        elif name == "per-file-ignores":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [tool.bnaudit] {key} must be a table of glob = [codes]")
            config.per_file_ignores = {str(glob): _strings(path, f"{key}.{glob}", codes) for glob, codes in value.items()}
        else:
            raise ConfigError(f"{path}: unknown key in [tool.bnaudit]: {key!r} "
                              f"(expected {', '.join(LIST_KEYS + TABLE_KEYS)})")
    return config


def _directories(start: Path) -> list[Path]:
    try:
        start = start.resolve()
        return [start, *start.parents] if start.is_dir() else list(start.parents)
    except OSError:
        return []


class Resolver:
    """Each file's configuration: the nearest pyproject.toml at or above it that has a
    [tool.bnaudit] table (a nearer one without the table does not hide it), as ruff resolves it;
    or one file for every path (``--config``)."""

    def __init__(self, explicit: Path | None = None):
        self.explicit = parse(explicit, _table(explicit) or {}) if explicit is not None else None
        self._by_directory: dict[Path, Config] = {}

    def for_path(self, start: Path) -> Config:
        if self.explicit is not None:
            return self.explicit
        walked = []
        found = Config()
        for directory in _directories(start):
            if directory in self._by_directory:
                found = self._by_directory[directory]
                break
            walked.append(directory)
            candidate = directory / "pyproject.toml"
            try:
                present = candidate.is_file()
            except OSError:  # a directory that cannot be searched is passed over
                present = False
            table = _table(candidate) if present else None
            if table is not None:
                found = parse(candidate, table)
                break
        for directory in walked:
            self._by_directory[directory] = found
        return found


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml with a [tool.bnaudit] table at or above ``start``."""
    return Resolver().for_path(start).path


def load(start: Path, explicit: Path | None = None) -> Config:
    return Resolver(explicit).for_path(start)
