"""The ``bnaudit`` command line: check, graph, rules, explain."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from bnaudit import __version__, ci_formats, faults, report
from bnaudit.config import ConfigError, Resolver

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

EXIT_CODES_HELP = """\
exit codes:
  0  no findings
  1  findings were reported
  2  usage error, bad configuration, an internal error (findings may be missing), or (check)
     nothing at all could be read / (graph) an artifact could not be read or is damaged
"""


def _error(message: str) -> None:
    print(f"bnaudit: error: {message}", file=sys.stderr)


CI_FORMATS = ("sarif", "github", "junit", "gitlab")


def _add_selection(parser: argparse.ArgumentParser, formats=("text", "json", *CI_FORMATS)) -> None:
    parser.add_argument("--select", action="append", metavar="CODES",
                        help="only report these codes (comma-separated; prefixes like BN00 allowed); "
                             "replaces the configuration's select")
    parser.add_argument("--extend-select", action="append", metavar="CODES",
                        help="add these codes to the selection (the configuration's or --select)")
    parser.add_argument("--ignore", action="append", metavar="CODES",
                        help="never report these codes (added to the configuration's ignore)")
    parser.add_argument("--format", choices=formats, default="text",
                        help="output format (default: text)" + (
                            "; json-report: every artifact with its layers, findings and counts"
                            if "json-report" in formats else ""))
    parser.add_argument("--output-file", "-o", type=Path, metavar="FILE",
                        help="write the report to FILE instead of standard output")
    parser.add_argument("--exit-zero", action="store_true",
                        help="exit 0 even when findings are reported (errors still exit 2)")
    parser.add_argument("--fail-on", choices=("error", "warning"), default="warning",
                        help="the lowest severity whose findings make the exit code 1 (default: warning)")
    parser.add_argument("--statistics", action="store_true",
                        help="print how many findings each code has instead of the findings")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="text: the findings only, without source lines, fix hints or the summary")
    parser.add_argument("--no-color", action="store_true",
                        help="never colour the text report (colour is used on a terminal unless NO_COLOR is set)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnaudit",
        description="Find batch-normalization misuse in TensorFlow and Keras code and trained artifacts.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bnaudit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "check", help="statically analyze Python training code (never imports it)",
        description="Statically analyze Python files; directories are searched recursively for *.py.",
        epilog=EXIT_CODES_HELP + "\nsuppress a finding on its line with  # bnaudit: ignore[BN001]  or  # noqa: BN001\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("paths", nargs="*", metavar="PATH",
                       help="files or directories (default: .); - reads one file from standard input")
    check.add_argument("--stdin-filename", metavar="NAME",
                       help="the name to report (and to look up configuration by) for the file read from -")
    _add_selection(check)
    check.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                       help="skip files and directories matching GLOB (repeatable)")
    check.add_argument("--config", type=Path, metavar="PYPROJECT",
                       help="read [tool.bnaudit] from this file instead of the nearest pyproject.toml")
    check.add_argument("--jobs", "-j", type=int, default=0, metavar="N",
                       help="worker processes (default: all cores when there are many files)")
    check.add_argument("--show-settings", action="store_true",
                       help="print the configuration each PATH resolves to (file, select, ignore, exclude) and exit")
    check.add_argument("--report-unused-suppressions", action="store_true",
                       help="report suppression comments that suppress nothing (exit 1 when there are any)")
    check.add_argument("--git-tracked", action="store_true",
                       help="walking directories, check only files git tracks or has staged (the pre-commit hook's view)")
    check.add_argument("--no-respect-gitignore", action="store_true",
                       help="also check files that .gitignore or .git/info/exclude ignore when walking directories")
    check.add_argument("--fix", action="store_true",
                       help="apply the safe fixes, re-check, and repeat until nothing changes; report what remains")
    check.add_argument("--unsafe-fixes", action="store_true",
                       help="with --fix or --diff, also apply the fixes that may change behaviour you rely on")
    check.add_argument("--diff", action="store_true",
                       help="print the fixes as a unified diff (suggestions too) and write nothing; "
                            "exit 1 when there is a diff")
    check.add_argument("--no-cache", action="store_true",
                       help="do not read or write the per-file facts cache ($BNAUDIT_CACHE_DIR, "
                            "default ~/.cache/bnaudit)")

    graph = commands.add_parser(
        "graph", help="audit a trained artifact (checkpoint, MetaGraph, SavedModel, Keras file, GraphDef)",
        description="Read a trained artifact's protos and tensors and report batch-norm faults. "
                    "Never executes model code. Needs the tf extra: pip install 'bnaudit[tf]'.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    graph.add_argument("paths", nargs="+", metavar="MODEL_PATH")
    _add_selection(graph, formats=("text", "json", "json-report", *CI_FORMATS))

    rules = commands.add_parser("rules", help="list the fault catalogue")
    rules.add_argument("--format", choices=("text", "json", "markdown"), default="text")

    explain = commands.add_parser("explain", help="print a rule's document")
    explain.add_argument("rule", metavar="CODE", help="a code such as BN001, or a name such as unrun-update-ops")
    return parser


def _selection(args: argparse.Namespace, config=None) -> tuple[set[str] | None, set[str]]:
    """The codes reported (None: all) and ignored, from the command line over a configuration.

    As in ruff: ``--select`` replaces the configuration's ``select``; ``--extend-select`` and
    ``extend-select`` add to it; ``--ignore`` adds to ``ignore``.
    """
    if args.select is not None and not any(item.strip() for value in args.select for item in value.split(",")):
        raise ValueError("--select '' selects nothing (give codes such as BN001,BN004, or ALL)")
    select = faults.expand_selection(args.select if args.select else (config.select if config else None))
    extend = list(config.extend_select if config else ()) + list(getattr(args, "extend_select", None) or ())
    if extend and select is not None:
        select |= faults.expand_selection(extend) or set()
    ignore = faults.expand_selection(list(config.ignore if config else ()) + (args.ignore or [])) or set()
    return select, ignore


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long, a loop of links: reported by discovery, one line
        return False


def _show_settings(args: argparse.Namespace) -> int:
    resolver = Resolver(args.config)
    try:
        for path in [Path(p) for p in args.paths] or [Path(".")]:
            config = resolver.for_path(path)
            select, ignore = _selection(args, config)
            ignore |= faults.expand_selection(config.ignored_here(path)) or set()
            print(json.dumps({
                "path": str(path), "configuration": str(config.path) if config.path else None,
                "select": sorted(select) if select is not None else sorted(faults.FAULTS),
                "ignore": sorted(ignore), "exclude": config.exclude, "per-file-ignores": config.per_file_ignores,
            }, indent=2))
    except (ConfigError, ValueError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    return EXIT_CLEAN


def _run_check(args: argparse.Namespace) -> int:
    if args.show_settings:
        return _show_settings(args)
    if "-" in args.paths:
        if args.paths != ["-"]:
            _error("- (standard input) cannot be combined with other paths")
            return EXIT_ERROR
        return _check_stdin(args)
    return _check_paths(args)


def _check_stdin(args: argparse.Namespace) -> int:
    """One file from standard input, analyzed on its own under --stdin-filename (default ``-``)."""
    import dataclasses
    import tempfile

    from bnaudit.source.notebooks import SUFFIX

    name = args.stdin_filename or "-"
    data = sys.stdin.buffer.read()
    suffix = SUFFIX if name.endswith(SUFFIX) else ".py"
    with tempfile.TemporaryDirectory(prefix="bnaudit-stdin-") as directory:
        temporary = Path(directory) / (Path(name).stem if name != "-" else "stdin").replace(" ", "_")
        temporary = temporary.with_suffix(suffix)
        temporary.write_bytes(data)
        config_start = Path(name).parent if name != "-" else Path(".")
        result_args = argparse.Namespace(**vars(args), stdin_file=(temporary, name, config_start))
        result_args.paths = [str(temporary)]
        result_args.no_cache = True
        shown = {str(temporary), os.path.relpath(temporary)}  # however discovery displays it
        code = _check_paths(result_args, rename=dict.fromkeys(shown, name),
                            replace=lambda finding: dataclasses.replace(
                                finding, path=name, message=_renamed(finding.message, dict.fromkeys(shown, name))))
    return code


def _reported(finding, resolver: Resolver, args: argparse.Namespace) -> bool:
    config = resolver.for_path(Path(finding.path))
    select, ignore = _selection(args, config)
    ignore |= faults.expand_selection(config.ignored_here(Path(finding.path))) or set()
    return (select is None or finding.code in select) and finding.code not in ignore


def _renamed(text: str, rename: dict[str, str]) -> str:
    for old in sorted(rename, key=len, reverse=True):
        text = text.replace(old, rename[old])
    return text


def _check_paths(args: argparse.Namespace, rename: dict[str, str] | None = None, replace=None) -> int:
    from bnaudit.source import analyze
    from bnaudit.source.cache import default_directory

    paths = [Path(p) for p in args.paths] or [Path(".")]
    stdin = getattr(args, "stdin_file", None)
    try:
        resolver = Resolver(args.config)
        start = stdin[2] if stdin else (paths[0] if _exists(paths[0]) else Path("."))
        config = resolver.for_path(start if _exists(start) else Path("."))
        _selection(args, config)  # a bad selector is a usage error before any work
    except (ConfigError, ValueError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    options = dict(
        exclude=list(config.exclude) + list(args.exclude),
        exclude_root=config.root,
        jobs=args.jobs,
        cache_dir=None if args.no_cache else default_directory(),
        respect_gitignore=not args.no_respect_gitignore,
        tracked_only=args.git_tracked,
        report_unused=getattr(args, "report_unused_suppressions", False),
    )
    if args.fix or args.diff:
        return _fix_paths(args, paths, options, resolver, rename or {}, replace)
    result = analyze(paths, **options)
    if rename:
        result.errors = [_renamed(message, rename) for message in result.errors]
        result.internal_errors = [_renamed(message, rename) for message in result.internal_errors]
        result.findings = [replace(finding) for finding in result.findings]
        result.source_lines = {rename.get(path, path): lines for path, lines in result.source_lines.items()}
    try:  # each file by its own configuration
        result.findings = [f for f in result.findings if _reported(f, resolver, args)]
    except (ConfigError, ValueError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    for message in result.errors + result.internal_errors:
        _error(message)
    if result.files_checked == 0 and result.errors:
        return EXIT_ERROR
    findings = result.findings
    if args.statistics:
        text = ci_formats.statistics(findings)
    elif args.format == "json":
        text = report.check_json(findings)
    elif args.format in CI_FORMATS:
        text = _ci_report(args.format, findings, result.files_checked)
    else:
        text = report.check_text(findings, result.files_checked, result.source_lines, quiet=args.quiet,
                                 color=_color(args))
    if not _emit(text, args):
        return EXIT_ERROR
    for line in result.unused_suppressions:
        print(f"bnaudit: warning: {_renamed(line, rename) if rename else line}", file=sys.stderr)
    if result.internal_errors:
        return EXIT_ERROR  # findings may be missing: never a green run
    if result.unused_suppressions and not args.exit_zero:
        return EXIT_FINDINGS
    return exit_for(findings, args)


def _fix_paths(args: argparse.Namespace, paths: list[Path], options: dict, resolver: Resolver,
               rename: dict[str, str], replace) -> int:
    """``--fix`` and ``--diff``: the fix loop over the program, then the writes (or the diff)."""
    from bnaudit.source import analyze, fixer

    last: list = []

    def analyze_with(overrides: dict[str, bytes]):
        result = analyze(paths, **{**options, "cache_dir": None, "report_unused": False}, overrides=overrides)
        try:
            result.findings = [f for f in result.findings if _reported(f, resolver, args)]
        except (ConfigError, ValueError) as exc:
            raise _Stop(str(exc)) from exc
        last[:] = [result]
        return result.findings

    def read(path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    try:
        run = fixer.fix_loop(analyze_with, read, unsafe=args.unsafe_fixes)
    except _Stop as exc:
        _error(str(exc))
        return EXIT_ERROR
    result = last[0]
    for message in result.errors + result.internal_errors:
        _error(_renamed(message, rename))
    if result.files_checked == 0 and result.errors:
        return EXIT_ERROR
    for note in run.notes:
        print(f"bnaudit: warning: {_renamed(note, rename)}", file=sys.stderr)
    shown = lambda path: rename.get(path, path)  # noqa: E731
    if args.diff:
        parts = [fixer.unified_diff(shown(path), run.originals[path], text) for path, text in run.changed().items()]
        parts += [fixer.unified_diff(shown(f.path), before, after, f"  ({f.code} suggestion, not applied by --fix)")
                  for f, before, after in run.suggestions]
        text = "".join(parts)
        if not _emit(text.rstrip("\n"), args):
            return EXIT_ERROR
        fixable = len(run.fixed)
        print(f"bnaudit: {fixable} fix{'es' if fixable != 1 else ''} would be applied"
              + (f", {len(run.suggestions)} suggested" if run.suggestions else ""), file=sys.stderr)
        if result.internal_errors:
            return EXIT_ERROR
        return EXIT_FINDINGS if text else EXIT_CLEAN
    stdin = getattr(args, "stdin_file", None)
    errors = fixer.write(run)
    for message in errors:
        _error(_renamed(message, rename))
    findings = [replace(f) for f in run.remaining] if replace else run.remaining
    stream = sys.stdout
    if stdin is not None:
        # As ruff does: the fixed source on standard output, the report on standard error.
        sys.stdout.flush()
        sys.stdout.buffer.write(stdin[0].read_bytes())
        sys.stdout.flush()
        stream = sys.stderr
    lines = {rename.get(path, path): lines for path, lines in result.source_lines.items()}
    if args.format == "json":
        text = report.check_json(findings)
    elif args.format in CI_FORMATS:
        text = _ci_report(args.format, findings, result.files_checked)
    else:
        text = report.check_text(findings, result.files_checked, lines, quiet=args.quiet, color=_color(args),
                                 fixed=len(run.fixed), unsafe=args.unsafe_fixes)
    if not _emit(text, args, stream):
        return EXIT_ERROR
    if args.format != "text":
        print(f"bnaudit: fixed {len(run.fixed)}, {len(findings)} remaining", file=sys.stderr)
    if result.internal_errors or errors:
        return EXIT_ERROR
    return exit_for(findings, args)


class _Stop(Exception):
    pass


def _replacements(findings) -> list:
    """Each finding's fix as a text span of its file as it is now (None where it has none)."""
    from bnaudit.source.fixer import replacement

    out = []
    for finding in findings:
        change = None
        if finding.autofix is not None and finding.line:
            try:
                change = replacement(finding, Path(finding.path).read_bytes())
            except OSError:
                pass
        out.append(change)
    return out


def _ci_report(fmt: str, findings, checked: int) -> str:
    if fmt == "sarif":
        return ci_formats.sarif(findings, replacements=_replacements(findings))
    if fmt == "github":
        return ci_formats.github(findings)
    if fmt == "junit":
        return ci_formats.junit(findings, checked)
    return ci_formats.gitlab(findings)


def exit_for(findings, args: argparse.Namespace) -> int:
    """1 when a finding at or above --fail-on was reported (0 with --exit-zero), else 0."""
    if getattr(args, "exit_zero", False):
        return EXIT_CLEAN
    fail_on = getattr(args, "fail_on", "warning")
    failing = [f for f in findings if fail_on == "warning" or f.severity == faults.ERROR]
    return EXIT_FINDINGS if failing else EXIT_CLEAN


def _color(args: argparse.Namespace) -> bool:
    if args.no_color or os.environ.get("NO_COLOR") or args.output_file is not None:
        return False
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def _emit(text: str, args: argparse.Namespace, stream=None) -> bool:
    """The report on standard output (or ``stream``), or in --output-file (False, with one error line,
    if it cannot be written)."""
    if args.output_file is None:
        if text:
            print(text, file=stream or sys.stdout)
        return True
    try:
        args.output_file.write_text(text + ("\n" if text else ""), encoding="utf-8")
    except OSError as exc:
        _error(f"{args.output_file}: cannot write the report ({exc.strerror or exc})")
        return False
    return True


def _run_graph(args: argparse.Namespace) -> int:
    try:
        select, ignore = _selection(args)
    except ValueError as exc:
        _error(str(exc))
        return EXIT_ERROR
    try:
        have_tensorflow = importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # present in sys.modules but not importable
        have_tensorflow = False
    try:
        if not have_tensorflow:
            raise ImportError("No module named 'tensorflow'")
        from bnaudit.graph.command import run as run_graph
    except ImportError as exc:
        _error(f"bnaudit graph needs TensorFlow ({exc}); install it with: pip install 'bnaudit[tf]'")
        return EXIT_ERROR
    return run_graph(args.paths, fmt=args.format, select=select, ignore=ignore, options=args)


def _run_rules(args: argparse.Namespace) -> int:
    if args.format == "json":
        print(json.dumps([
            {"code": f.code, "name": f.name, "severity": f.severity, "detected_by": list(f.detected_by),
             "summary": f.summary, "fix": f.fix}
            for f in faults.FAULTS.values()
        ], indent=2))
    elif args.format == "markdown":
        print(report.rules_markdown())
    else:
        print(report.rules_table())
    return EXIT_CLEAN


def _run_explain(args: argparse.Namespace) -> int:
    try:
        text = faults.document(args.rule)
    except KeyError:
        _error(f"unknown rule {args.rule!r}; `bnaudit rules` lists them")
        return EXIT_ERROR
    print(text.rstrip())
    return EXIT_CLEAN


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    handlers = {"check": _run_check, "graph": _run_graph, "rules": _run_rules, "explain": _run_explain}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_ERROR
    except BrokenPipeError:  # `bnaudit check | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FINDINGS


def console() -> None:
    """The ``bnaudit`` command: ``main``, then an exit that skips freeing what the check built (a
    second or so on a large repository) once the output is flushed."""
    from bnaudit.source import engine

    engine.KEEP_UNTIL_EXIT = []
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    if engine.KEEP_UNTIL_EXIT:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
