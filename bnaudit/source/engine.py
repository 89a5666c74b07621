"""Stat, read what changed, prefilter, parse and extract (in parallel), link, judge, locate, suppress.

Each file is read at most once and parsed at most once for facts; files with findings are parsed a
second time, for positions only.  With a cache, an unchanged file (by stat) is not read at all, and a
run whose inputs all match the last one's replays its result (see ``store``).  The parser and the
program model are imported only when something must be parsed or judged.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import re
import signal
import stat
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bnaudit.faults import FAULTS, expand_selection
from bnaudit.findings import Finding
from bnaudit.source import notebooks, prefilter
from bnaudit.source.cache import FactCache
from bnaudit.source.discover import discover, file_key, is_regular, module_name
from bnaudit.source.store import FileRecord, RunRecord, RunStore, code_version, result_key, stat_of

if TYPE_CHECKING:
    from bnaudit.source.facts import ModuleFacts
    from bnaudit.source.parsing import ParseFailure
    from bnaudit.source.rules import RawFinding

PARALLEL_THRESHOLD = 24      # below this many files to parse, one process is faster
SIGNALS_PARALLEL_THRESHOLD = 400   # files to read signals from: a regular-expression pass is cheap
# `# noqa`, `# noqa: E501 BN005`, `# noqa:BN005,BN009 because ...` (flake8's grammar: codes after the
# colon, separated by commas or spaces, then anything); `# bnaudit: ignore`, `# bnaudit: ignore[BN001]`,
# `ignore[unrun-update-ops, BN00]` (codes, names, prefixes).  Each comment on a line counts.
_NOQA_RE = re.compile(r"#\s*noqa(?P<colon>\s*:\s*(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_IGNORE_RE = re.compile(r"#\s*bnaudit\s*:\s*ignore\b(?:\s*\[(?P<inside>[^\]]*)\]|\s*:\s*(?P<after>[\w\-, ]+))?",
                        re.IGNORECASE)
_SKIP_FILE_RE = re.compile(r"^\s*#\s*bnaudit\s*:\s*skip-file\s*$", re.IGNORECASE | re.MULTILINE)


RECURSION_LIMIT = 10_000
DEFAULT_FILE_SECONDS = 60.0
# A source file larger than this is reported and skipped: its syntax tree and facts take tens to
# hundreds of bytes of memory per byte of source (33 in libcst's Python tree alone).
MAX_FILE_BYTES = 8 * 2 ** 20


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    errors: list[str] = field(default_factory=list)
    source_lines: dict[str, list[str]] = field(default_factory=dict)
    parsed: int = 0
    replayed: bool = False    # the last run's result, its inputs all unchanged
    # Errors of bnaudit itself (a file it could not analyze, a rule that failed): the run exits 2.
    internal_errors: list[str] = field(default_factory=list)
    transient: bool = False   # a file ran out of its time budget: this result is not stored for replay
    report_unused: bool = False
    # `path:line: ...` for each suppression comment that suppressed nothing (--report-unused-suppressions).
    unused_suppressions: list[str] = field(default_factory=list)


@dataclass
class InternalError:
    path: str
    message: str


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# A process that exits right after the check (the CLI) sets this to a list: the program is kept in it
# instead of freed, object by object, only for the process to end (see ``cli.console``).
KEEP_UNTIL_EXIT: list | None = None
# The files read before the workers were forked: they inherit them instead of being sent them.
_SHARED: dict[str, bytes] = {}


class _Workers:
    """One process pool per run, started on first use: it computes the prefilter's signals of the
    files read, then parses the files the prefilter keeps."""

    def __init__(self, count: int, data: dict[str, bytes]) -> None:
        self.count = count
        self.data = data
        self.pool: ProcessPoolExecutor | None = None
        self.inherited: set[str] = set()

    def map(self, function, jobs: list[tuple], sizes: list[int]) -> list:
        if self.pool is None:
            context = multiprocessing.get_context("fork") if sys.platform == "linux" else None
            if context is not None:
                _SHARED.clear()
                _SHARED.update(self.data)
                self.inherited = set(self.data)
            self.pool = ProcessPoolExecutor(max_workers=self.count, mp_context=context)
        # Largest first, in small chunks, so no worker is left with a big file at the end.
        order = sorted(range(len(jobs)), key=lambda i: -sizes[i])
        sent = [(*jobs[i][:1], None if jobs[i][0] in self.inherited else jobs[i][1], *jobs[i][2:]) for i in order]
        out = list(self.pool.map(function, sent, chunksize=max(1, len(jobs) // (self.count * 32))))
        result: list = [None] * len(jobs)
        for i, value in zip(order, out):
            result[i] = value
        return result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            _SHARED.clear()


def _signals_job(job: tuple[str, bytes | None, str, bool]) -> prefilter.Signals:
    path, data, name, is_package = job
    return prefilter.signals(_decode(data if data is not None else _SHARED[path]), name, is_package)


def _extract_job(job: tuple[str, bytes | None, str, bool]) -> ModuleFacts | ParseFailure | InternalError:
    from bnaudit.source.facts import extract
    from bnaudit.source.parsing import ParseFailure, parse

    path, data, name, is_package = job
    data = data if data is not None else _SHARED[path]
    try:
        with _time_budget(file_seconds()):
            parsed = parse(path, data)
            if isinstance(parsed, ParseFailure):
                return parsed
            facts = extract(parsed.module, path, name, is_package)
        facts.grammar = parsed.grammar
        return facts
    except _OverBudget:
        return ParseFailure(path, 1, 1, f"skipped: analyzing the file took over {file_seconds():g} s "
                                        "(BNAUDIT_FILE_TIMEOUT)", transient=True,
                            fix="Raise BNAUDIT_FILE_TIMEOUT (0 for no limit), or exclude the file if it is generated.")
    except RecursionError:
        return ParseFailure(path, 1, 1, "the file is nested too deeply to analyze")
    except Exception as exc:  # noqa: BLE001 - a bug on one file must not stop the others
        if os.environ.get("BNAUDIT_DEBUG"):
            raise
        return InternalError(path, f"{type(exc).__name__}: {exc}")


def file_seconds() -> float:
    """Each file's time budget for parsing and extraction (``BNAUDIT_FILE_TIMEOUT``, 0 for none)."""
    try:
        return float(os.environ.get("BNAUDIT_FILE_TIMEOUT", DEFAULT_FILE_SECONDS))
    except ValueError:
        return DEFAULT_FILE_SECONDS


class _OverBudget(BaseException):  # not an Exception: no "except Exception" on the way may swallow it
    pass


@contextlib.contextmanager
def _time_budget(seconds: float):
    """SIGALRM after ``seconds``: one pathological file is reported as skipped, the run goes on."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _OverBudget

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def analyze(paths: list[Path], exclude: list[str] | None = None, exclude_root: Path | None = None,
            select: set[str] | None = None, ignore: set[str] | None = None, jobs: int = 0,
            cache_dir: Path | None = None, respect_gitignore: bool = True, tracked_only: bool = False,
            report_unused: bool = False, overrides: dict[str, bytes] | None = None) -> CheckResult:
    """Check the Python files under ``paths``.  ``overrides`` gives some files' content (by displayed
    path) instead of what is on disk: the fix loop analyzes its fixed text before writing it."""
    # Facts are millions of small long-lived objects that hold no cycles: the cyclic collector would
    # rescan them all, over and over, while they load and while the rules run (a third of the time).
    enabled = gc.isenabled()
    gc.disable()
    # libcst visits, and pickle returns facts from the workers, one Python frame per level or more:
    # nesting CPython accepts (199 brackets, parse.MAX_EXPRESSION_DEPTH) needs more than 1,000 frames.
    if sys.getrecursionlimit() < RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)
    try:
        return _analyze(paths, exclude, exclude_root, select, ignore, jobs, cache_dir, respect_gitignore,
                        tracked_only, report_unused, overrides or {})
    finally:
        if enabled and KEEP_UNTIL_EXIT is None:  # a process about to exit need not collect them
            gc.enable()


def _analyze(paths: list[Path], exclude: list[str] | None, exclude_root: Path | None, select: set[str] | None,
             ignore: set[str] | None, jobs: int, cache_dir: Path | None, respect_gitignore: bool,
             tracked_only: bool, report_unused: bool = False, overrides: dict[str, bytes] | None = None
             ) -> CheckResult:
    result = CheckResult()
    overrides = overrides or {}
    if overrides:
        cache_dir = None   # content that is not on disk is neither cached nor replayed
    result.report_unused = report_unused
    found = discover(paths, exclude or [], exclude_root, respect_gitignore, tracked_only)
    result.errors.extend(found.errors)
    named = {file_key(p) for p in paths if is_regular(p)}
    store = RunStore(cache_dir, (tuple(str(p.absolute()) for p in paths), tuple(exclude or ()),
                                 str(exclude_root), os.getcwd())) if cache_dir is not None and not report_unused else None
    previous = store.load() if store is not None else None
    known = previous.files if previous is not None else {}

    records: dict[str, FileRecord] = {}
    data: dict[str, bytes] = {}
    explicit: set[str] = set()
    fresh: list[tuple[str, FileRecord | None]] = []   # read this time, with what the last run saw
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
        if status.st_size > MAX_FILE_BYTES:
            result.errors.append(f"{shown}: skipped: {status.st_size:,} bytes is over the limit of "
                                 f"{MAX_FILE_BYTES // 2 ** 20} MiB per file (no training script is that large; "
                                 "parsing it would take gigabytes)")
            continue
        if named and (status.st_dev, status.st_ino) in named:
            explicit.add(shown)
        module = module_name(file)
        if shown in overrides:
            data[shown] = overrides[shown]
            records[shown] = FileRecord(stat_of(status), module, None)  # type: ignore[arg-type]
            fresh.append((shown, None))
            continue
        old = known.get(shown)
        if old is not None and old.stat == stat_of(status) and old.module == module:
            records[shown] = old   # unchanged: not read
            continue
        raw = _read(file, shown, result.errors)
        if raw is not None:
            data[shown] = raw
            records[shown] = FileRecord(stat_of(status), module, None)  # type: ignore[arg-type]
            fresh.append((shown, old))
    explicit &= set(records)  # a named file that could not be read (an unreadable notebook) has its error line
    workers = _Workers(jobs or os.cpu_count() or 1, data)
    try:
        return _finish(result, records, data, fresh, known, previous, store, explicit, workers,
                       cache_dir, select, ignore)
    finally:
        workers.close()


def _finish(result: CheckResult, records: dict[str, FileRecord], data: dict[str, bytes], fresh: list,
            known: dict[str, FileRecord], previous: RunRecord | None, store: RunStore | None, explicit: set[str],
            workers: _Workers, cache_dir: Path | None, select: set[str] | None, ignore: set[str] | None
            ) -> CheckResult:
    changed = resignaled = bool(fresh)
    if fresh:
        jobs = [(path, data[path], *records[path].module) for path, _ in fresh]
        if workers.count > 1 and len(jobs) >= SIGNALS_PARALLEL_THRESHOLD:
            found = workers.map(_signals_job, jobs, [len(data[path]) for path, _ in fresh])
        else:
            found = [_signals_job(job) for job in jobs]
        resignaled = False
        for (path, old), signals in zip(fresh, found):
            records[path].signals = signals
            resignaled = resignaled or old is None or old.signals != signals
    result.files_checked = len(records)
    same_files = records.keys() == known.keys()
    changed = changed or not same_files

    def content(path: str) -> bytes | None:
        if path not in data:
            raw = _read(Path(path), path, result.errors)
            if raw is None:
                return None
            data[path] = raw
        return data[path]

    if previous is not None and same_files and not resignaled and previous.selected is not None:
        selected = previous.selected   # the same signals of the same files select the same files
    else:
        selected = prefilter.select_signals({path: record.signals for path, record in records.items()})
    # Files named on the command line are always parsed, so their syntax errors are reported.
    wanted = selected | explicit
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
                store.save(RunRecord(previous.version, records, key, previous.result, selected))
            return result

    first_error = len(result.errors)
    findings = _judge(sorted(wanted), records, content, cache, workers, select, ignore, result)
    texts = {path: _decode(raw) for path in {f.path for f in findings} if (raw := content(path)) is not None}
    if result.report_unused:
        every = {path: _decode(raw) for path in wanted if (raw := content(path)) is not None}
        result.unused_suppressions = unused_suppressions(findings, every)
    findings = [f for f in findings if not _suppressed(f, texts.get(f.path, ""))
                and not _skipped_file(texts.get(f.path, ""))]
    findings.sort(key=lambda f: (f.path, f.line or 0, f.column or 0, f.code))
    result.findings = findings
    result.source_lines = {f.path: texts[f.path].splitlines() for f in findings if f.path in texts}
    if store is not None and not result.transient:  # a run cut short by a time budget is not replayed
        store.save(RunRecord(code_version(), records, key,
                             (result.findings, result.errors[first_error:], result.source_lines), selected))
    return result


def _judge(wanted: list[str], records: dict[str, FileRecord], content, cache: FactCache, workers: _Workers,
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

    if workers.count > 1 and len(jobs_list) >= PARALLEL_THRESHOLD:
        fresh = workers.map(_extract_job, jobs_list, [len(job[1]) for job in jobs_list])
    else:
        fresh = [_extract_job(job) for job in jobs_list]
    for key, outcome in zip(keys, fresh):
        if key is not None and not isinstance(outcome, InternalError) and not getattr(outcome, "transient", False):
            cache.put(key, outcome)
    outcomes.extend(fresh)
    outcomes.sort(key=lambda o: o.path)  # the same order whatever was cached

    facts = [o for o in outcomes if isinstance(o, ModuleFacts)]
    failures = [o for o in outcomes if isinstance(o, ParseFailure)]
    result.transient = any(failure.transient for failure in failures)
    result.internal_errors.extend(f"{o.path}: internal error while analyzing ({o.message}); set BNAUDIT_DEBUG=1 "
                                  f"for a traceback" for o in outcomes if isinstance(o, InternalError))
    wanted_codes = None if select is None and not ignore else (set(select or FAULTS) - set(ignore or ()))
    program = Program(facts, list(records)) if facts else None
    raw = run_all(program, wanted_codes, result.internal_errors) if program is not None else []
    if KEEP_UNTIL_EXIT is not None:
        KEEP_UNTIL_EXIT.append(program)

    findings = [Finding(f.path, f.line, f.column, "BN000", f.message, fix=f.fix) for f in failures]
    findings.extend(_place(raw, content))
    return [f for f in findings if (select is None or f.code in select) and f.code not in (ignore or set())]


def _read(file: Path, shown: str, errors: list[str]) -> bytes | None:
    """The file's source: its bytes, or a notebook's code cells joined (``notebooks``)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        errors.append(f"{shown}: cannot read: {exc.strerror or exc}")
        return None
    if notebooks.is_notebook(file.name):
        try:
            return notebooks.to_source(data)
        except notebooks.NotebookError as exc:
            errors.append(f"{shown}: {exc}")
            return None
    return data


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
                           level=finding.severity, autofix=finding.autofix))
    return out


def _suppressed(finding: Finding, text: str) -> bool:
    """A suppression comment on the finding's first or last line names its code (or names none)."""
    lines = text.splitlines()
    candidates = {finding.line}
    if finding.end_line:
        candidates.add(finding.end_line)
    for number in candidates:
        if not number or number > len(lines):
            continue
        line = lines[number - 1]
        for match in _NOQA_RE.finditer(line):
            codes = match.group("codes")
            if not codes or finding.code in {code.upper() for code in re.split(r"[,\s]+", codes)}:
                return True
        for match in _IGNORE_RE.finditer(line):
            selectors = match.group("inside") if match.group("inside") is not None else match.group("after")
            if selectors is None or not selectors.strip() or finding.code in _selected(selectors):
                return True
    return False


def _selected(selectors: str) -> set[str]:
    """The codes that codes, prefixes (``BN00``) and names (``unrun-update-ops``) in a comment select;
    words that are none of these (a reason after the codes) select nothing."""
    codes: set[str] = set()
    for item in re.split(r"[,\s]+", selectors.strip()):
        try:
            codes |= expand_selection([item]) or set()
        except ValueError:
            continue
    return codes


def unused_suppressions(findings: list[Finding], texts: dict[str, str]) -> list[str]:
    """Suppression comments that suppress nothing: a `# bnaudit: ignore` with no finding on its line,
    or codes in `ignore[...]`/`# noqa:` that no finding on the line has.  A bare `# noqa` serves other
    tools too and is never reported."""
    on_line: dict[tuple[str, int], set[str]] = {}
    for finding in findings:
        for number in {finding.line, finding.end_line} - {None}:
            on_line.setdefault((finding.path, number), set()).add(finding.code)
    out = []
    for path, text in sorted(texts.items()):
        if "noqa" not in text and "bnaudit" not in text or _skipped_file(text):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            present = on_line.get((path, number), set())
            for match in _IGNORE_RE.finditer(line):
                selectors = match.group("inside") if match.group("inside") is not None else match.group("after")
                codes = _selected(selectors) if selectors and selectors.strip() else None
                if (codes is None and not present) or (codes is not None and not codes & present):
                    out.append(f"{path}:{number}: unused suppression {match.group(0).strip()!r}: "
                               f"no {'finding' if codes is None else '/'.join(sorted(codes)) + ' finding'} on this line")
            for match in _NOQA_RE.finditer(line):
                named = {code.upper() for code in re.split(r"[,\s]+", match.group("codes") or "")} & set(FAULTS)
                if named - present:
                    out.append(f"{path}:{number}: unused suppression {match.group(0).strip()!r}: "
                               f"no {'/'.join(sorted(named - present))} finding on this line")
    return out


def _skipped_file(text: str) -> bool:
    return bool(_SKIP_FILE_RE.search(text))
