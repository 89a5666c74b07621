"""Stat, read what changed, prefilter, parse and extract (in parallel), link, judge, locate, suppress.

Each file is read at most once and parsed at most once for facts; files with findings are parsed a
second time, for positions only.  With a cache, an unchanged file (by stat) is not read at all, and a
run whose inputs all match the last one's replays its result (see ``store``).  The parser and the
program model are imported only when something must be parsed or judged.
"""

from __future__ import annotations

import os
import re
import stat
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bnaudit.faults import FAULTS
from bnaudit.findings import Finding
from bnaudit.source import prefilter
from bnaudit.source.cache import FactCache
from bnaudit.source.discover import discover, file_key, module_name
from bnaudit.source.store import FileRecord, RunRecord, RunStore, code_version, result_key, stat_of

if TYPE_CHECKING:
    from bnaudit.source.facts import ModuleFacts
    from bnaudit.source.parsing import ParseFailure
    from bnaudit.source.rules import RawFinding

PARALLEL_THRESHOLD = 24      # below this many files to parse, one process is faster
_SUPPRESS_RE = re.compile(r"#\s*(?:bnaudit:\s*ignore|noqa)(?::?\s*\[?(?P<codes>[A-Z0-9, ]+)\]?)?", re.IGNORECASE)


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    errors: list[str] = field(default_factory=list)
    source_lines: dict[str, list[str]] = field(default_factory=dict)
    parsed: int = 0
    replayed: bool = False    # the last run's result, its inputs all unchanged


@dataclass
class InternalError:
    path: str
    message: str


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _extract_job(job: tuple[str, bytes, str, bool]) -> ModuleFacts | ParseFailure | InternalError:
    from bnaudit.source.facts import extract
    from bnaudit.source.parsing import ParseFailure, parse

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
    store = RunStore(cache_dir, (tuple(str(p.absolute()) for p in paths), tuple(exclude or ()),
                                 str(exclude_root), os.getcwd())) if cache_dir is not None else None
    previous = store.load() if store is not None else None
    known = previous.files if previous is not None else {}

    records: dict[str, FileRecord] = {}
    data: dict[str, bytes] = {}
    explicit: set[str] = set()
    changed = False
    for file in found.files:
        shown = _display(file)
        try:
            status = os.stat(file)
        except OSError as exc:
            result.errors.append(f"{shown}: cannot read: {exc.strerror or exc}")
            continue
        if not stat.S_ISREG(status.st_mode):
            result.errors.append(f"{shown}: not a regular file")
            continue
        if named and (status.st_dev, status.st_ino) in named:
            explicit.add(shown)
        module = module_name(file)
        old = known.get(shown)
        if old is not None and old.stat == stat_of(status) and old.module == module:
            records[shown] = old   # unchanged: not read
            continue
        raw = _read(file, shown, result.errors)
        if raw is not None:
            data[shown] = raw
            records[shown] = FileRecord(stat_of(status), module, prefilter.signals(_decode(raw), *module))
            changed = True
    result.files_checked = len(records)
    changed = changed or records.keys() != known.keys()

    def content(path: str) -> bytes | None:
        if path not in data:
            raw = _read(Path(path), path, result.errors)
            if raw is None:
                return None
            data[path] = raw
        return data[path]

    wanted = prefilter.select_signals({path: record.signals for path, record in records.items()})
    # Files named on the command line are always parsed, so their syntax errors are reported.
    wanted |= explicit
    cache = FactCache(cache_dir)
    key = None
    if store is not None:
        for path in sorted(wanted):
            record = records[path]
            if record.fact_key is None:
                raw = content(path)
                if raw is None:
                    wanted.discard(path)
                    continue
                record.fact_key = cache.key(path, raw, *record.module)
                changed = True
        options = (sorted(select) if select is not None else None, sorted(ignore or ()), sorted(explicit))
        key = result_key(records, wanted, options)
        if previous is not None and previous.result_key == key:
            result.findings, errors, result.source_lines = previous.result
            result.errors.extend(errors)
            result.replayed = True
            if changed:
                store.save(RunRecord(previous.version, records, key, previous.result))
            return result

    first_error = len(result.errors)
    findings = _judge(sorted(wanted), records, content, cache, jobs, select, ignore, result)
    texts = {path: _decode(raw) for path in {f.path for f in findings} if (raw := content(path)) is not None}
    findings = [f for f in findings if not _suppressed(f, texts.get(f.path, ""))]
    findings.sort(key=lambda f: (f.path, f.line or 0, f.column or 0, f.code))
    result.findings = findings
    result.source_lines = {f.path: texts[f.path].splitlines() for f in findings if f.path in texts}
    if store is not None:
        store.save(RunRecord(code_version(), records, key,
                             (result.findings, result.errors[first_error:], result.source_lines)))
    return result


def _judge(wanted: list[str], records: dict[str, FileRecord], content, cache: FactCache, jobs: int,
           select: set[str] | None, ignore: set[str] | None, result: CheckResult) -> list[Finding]:
    """Facts for the wanted files (cached or parsed, in parallel), then every rule over the program."""
    from bnaudit.source.facts import ModuleFacts
    from bnaudit.source.parsing import ParseFailure
    from bnaudit.source.program import Program
    from bnaudit.source.rules import run_all

    outcomes: list = []
    jobs_list = []
    keys: list[str | None] = []
    for path in wanted:
        record = records[path]
        cached = cache.get(record.fact_key) if record.fact_key is not None else None
        if cached is not None:
            outcomes.append(cached)
            continue
        raw = content(path)
        if raw is not None:
            jobs_list.append((path, raw, *record.module))
            keys.append(record.fact_key)
    result.parsed = len(jobs_list)

    workers = jobs or os.cpu_count() or 1
    if workers > 1 and len(jobs_list) >= PARALLEL_THRESHOLD:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            fresh = list(pool.map(_extract_job, jobs_list, chunksize=max(1, len(jobs_list) // (workers * 8))))
    else:
        fresh = [_extract_job(job) for job in jobs_list]
    for key, outcome in zip(keys, fresh):
        if key is not None and not isinstance(outcome, InternalError):
            cache.put(key, outcome)
    outcomes.extend(fresh)
    outcomes.sort(key=lambda o: o.path)  # the same order whatever was cached

    facts = [o for o in outcomes if isinstance(o, ModuleFacts)]
    failures = [o for o in outcomes if isinstance(o, ParseFailure)]
    result.errors.extend(f"{o.path}: internal error while analyzing ({o.message}); set BNAUDIT_DEBUG=1 for a "
                         f"traceback" for o in outcomes if isinstance(o, InternalError))
    wanted_codes = None if select is None and not ignore else (set(select or FAULTS) - set(ignore or ()))
    raw = run_all(Program(facts, list(records)), wanted_codes, result.errors) if facts else []

    findings = [Finding(f.path, f.line, f.column, "BN000", f.message) for f in failures]
    findings.extend(_place(raw, content))
    return [f for f in findings if (select is None or f.code in select) and f.code not in (ignore or set())]


def _read(file: Path, shown: str, errors: list[str]) -> bytes | None:
    try:
        return file.read_bytes()
    except OSError as exc:
        errors.append(f"{shown}: cannot read: {exc.strerror or exc}")
        return None


def _place(raw: list[RawFinding], content) -> list[Finding]:
    """Positions for the reported nodes (and the nodes their messages refer to)."""
    from bnaudit.source.facts import locate
    from bnaudit.source.parsing import ParseFailure, parse

    wanted: dict[str, set[int]] = {}
    for finding in raw:
        wanted.setdefault(finding.path, set()).add(finding.loc)
        for path, loc in finding.related:
            wanted.setdefault(path, set()).add(loc)
    positions: dict[tuple[str, int], tuple[int, int, int, int]] = {}
    for path, locs in wanted.items():
        source = content(path)
        parsed = parse(path, source) if source is not None else None
        if parsed is None or isinstance(parsed, ParseFailure):
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
