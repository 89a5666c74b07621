"""``[tool.bnaudit]`` from the nearest pyproject.toml, merged under the command line."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ConfigError(Exception):
    """A pyproject.toml whose [tool.bnaudit] table cannot be used."""


@dataclass
class Config:
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    path: Path | None = None  # the pyproject.toml it came from
    root: Path | None = None  # its directory; exclude globs are relative to it


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start``; a directory that cannot be searched (no
    permission, a name too long) is passed over, as if it held none."""
    try:
        start = start.resolve()
        directories = [start, *start.parents] if start.is_dir() else list(start.parents)
    except OSError:
        return None
    for directory in directories:
        candidate = directory / "pyproject.toml"
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            continue
    return None


def load(start: Path, explicit: Path | None = None) -> Config:
    path = explicit or find_pyproject(start)
    if path is None:
        return Config()
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: not a regular file")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: `tool` must be a table ([tool.bnaudit]), not {type(tool).__name__}")
    table = tool.get("bnaudit", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.bnaudit] must be a table")
    config = Config(path=path, root=path.parent)
    for key, value in table.items():
        if key not in ("select", "ignore", "exclude"):
            raise ConfigError(f"{path}: unknown key in [tool.bnaudit]: {key!r} (expected select, ignore, exclude)")
        if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise ConfigError(f"{path}: [tool.bnaudit] {key} must be a list of strings")
        setattr(config, key, list(value))
    return config
