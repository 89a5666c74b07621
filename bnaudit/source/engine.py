"""Read, prefilter, parse and extract (in parallel), link, judge, locate, suppress.

Each file is read once and parsed at most once for facts; files with
findings are parsed a second time, for positions only.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bnaudit.faults import FAULTS
from bnaudit.findings import Finding
from bnaudit.source import prefilter
from bnaudit.source.cache import FactCache
from bnaudit.source.discover import discover, file_key, module_name
from bnaudit.source.facts import ModuleFacts, extract, locate
from bnaudit.source.parsing import ParseFailure, parse
from bnaudit.source.program import Program
from bnaudit.source.rules import RawFinding, run_all

PARALLEL_THRESHOLD = 24      # below this many files to parse, one process is faster
_SUPPRESS_RE = re.compile(r"#\s*(?:bnaudit:\s*ignore|noqa)(?::?\s*\[?(?P<codes>[A-Z0-9, ]+)\]?)?", re.IGNORECASE)


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    errors: list[str] = field(default_factory=list)
    source_lines: dict[str, list[str]] = field(default_factory=dict)
    parsed: int = 0


@dataclass
class InternalError:
    path: str
    message: str


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _extract_job(job: tuple[str, bytes, str, bool]) -> ModuleFacts | ParseFailure:
    path, data, name, is_package = job
    parsed = parse(path, data)
    if isinstance(parsed, ParseFailure):
        return parsed
    try:
        facts = extract(parsed.module, path, name, is_package)
        facts.grammar = parsed.grammar
        return facts
    except RecursionError:
        return ParseFailure(path, 1, 1, "the file is nested too deeply to analyze")
    except Exception as exc:  # noqa: BLE001 - a bug on one file must not stop the others
        if os.environ.get("BNAUDIT_DEBUG"):
            raise
        return InternalError(path, f"{type(exc).__name__}: {exc}")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def analyze(paths: list[Path], exclude: list[str] | None = None, exclude_root: Path | None = None,
            select: set[str] | None = None, ignore: set[str] | None = None, jobs: int = 0,
            cache_dir: Path | None = None) -> CheckResult:
    result = CheckResult()
    found = discover(paths, exclude or [], exclude_root)
    result.errors.extend(found.errors)
    named = {file_key(p) for p in paths if p.is_file()}
    explicit: set[str] = set()

    data: dict[str, bytes] = {}
    modules: dict[str, tuple[str, bool]] = {}
    for file in found.files:
        shown = _display(file)
        try:
            data[shown] = file.read_bytes()
        except OSError as exc:
            result.errors.append(f"{shown}: cannot read: {exc.strerror or exc}")
            continue
        modules[shown] = module_name(file)
        if named and file_key(file) in named:
            explicit.add(shown)
    result.files_checked = len(data)

    texts = {path: _decode(raw) for path, raw in data.items()}
    wanted = prefilter.select(texts, modules)
    # Files named on the command line are always parsed, so their syntax errors are reported.
    wanted |= explicit
    cache = FactCache(cache_dir)
    outcomes: list = []
    jobs_list = []
    keys: list[str] = []
    for path in data:
        if path not in wanted:
            continue
        key = cache.key(path, data[path], *modules[path])
        cached = cache.get(key)
        if cached is not None:
            outcomes.append(cached)
        else:
            jobs_list.append((path, data[path], *modules[path]))
            keys.append(key)
    result.parsed = len(jobs_list)

    workers = jobs or os.cpu_count() or 1
    if workers > 1 and len(jobs_list) >= PARALLEL_THRESHOLD:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            fresh = list(pool.map(_extract_job, jobs_list, chunksize=max(1, len(jobs_list) // (workers * 8))))
    else:
        fresh = [_extract_job(job) for job in jobs_list]
    for key, outcome in zip(keys, fresh):
        if not isinstance(outcome, InternalError):
            cache.put(key, outcome)
    outcomes.extend(fresh)
    outcomes.sort(key=lambda o: o.path)  # the same order whatever was cached

    facts = [o for o in outcomes if isinstance(o, ModuleFacts)]
    failures = [o for o in outcomes if isinstance(o, ParseFailure)]
    result.errors.extend(f"{o.path}: internal error while analyzing ({o.message}); set BNAUDIT_DEBUG=1 for a "
                         f"traceback" for o in outcomes if isinstance(o, InternalError))
    wanted_codes = None if select is None and not ignore else (set(select or FAULTS) - set(ignore or ()))
    raw = run_all(Program(facts, list(data)), wanted_codes, result.errors) if facts else []

    findings = [Finding(f.path, f.line, f.column, "BN000", f.message) for f in failures]
    findings.extend(_place(raw, data))
    findings = [f for f in findings if (select is None or f.code in select) and f.code not in (ignore or set())]
    findings = [f for f in findings if not _suppressed(f, texts.get(f.path, ""))]
    findings.sort(key=lambda f: (f.path, f.line or 0, f.column or 0, f.code))
    result.findings = findings
    result.source_lines = {f.path: texts[f.path].splitlines() for f in findings if f.path in texts}
    return result


def _place(raw: list[RawFinding], data: dict[str, bytes]) -> list[Finding]:
    """Positions for the reported nodes (and the nodes their messages refer to)."""
    wanted: dict[str, set[int]] = {}
    for finding in raw:
        wanted.setdefault(finding.path, set()).add(finding.loc)
        for path, loc in finding.related:
            wanted.setdefault(path, set()).add(loc)
    positions: dict[tuple[str, int], tuple[int, int, int, int]] = {}
    for path, locs in wanted.items():
        parsed = parse(path, data[path])
        if isinstance(parsed, ParseFailure):
            continue
        for loc, (line, col, end_line, end_col) in locate(parsed.module, locs).items():
            if parsed.source_map is not None:
                line, col = parsed.source_map.position(line, col)
                end_line, end_col = parsed.source_map.position(end_line, end_col)
            positions[(path, loc)] = (line, col, end_line, end_col)
    out = []
    for finding in raw:
        line, col, end_line, end_col = positions.get((finding.path, finding.loc), (1, 1, None, None))
        refs = [f"{path}:{positions.get((path, loc), (0,))[0]}" for path, loc in finding.related]
        message = finding.message.format(*refs) if refs else finding.message
        out.append(Finding(finding.path, line, col, finding.code, message, end_line, end_col, finding.fix,
                           level=finding.severity))
    return out


def _suppressed(finding: Finding, text: str) -> bool:
    lines = text.splitlines()
    candidates = {finding.line}
    if finding.end_line:
        candidates.add(finding.end_line)
    for number in candidates:
        if not number or number > len(lines):
            continue
        for match in _SUPPRESS_RE.finditer(lines[number - 1]):
            codes = match.group("codes")
            if not codes or finding.code in {c.strip().upper() for c in codes.split(",")}:
                return True
    return False
