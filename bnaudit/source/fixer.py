"""Applying fixes: edits onto a fresh libcst tree, the loop that re-analyzes until nothing changes,
and the writes that never leave a file half-fixed.

A finding's edits name nodes by the numbers the fact extractor gave them, so they are applied to
a parse of exactly the bytes that were analyzed.  The loop keeps every changed file in memory and
analyzes the program again from there (``analyze(..., overrides=)``): a fix that uncovers or
removes another finding is seen before anything is written, and ``--diff`` shows what ``--fix``
would write.  Writing comes last: a file that changed on disk since it was read is left alone, and
each file is replaced atomically (temporary file, then rename, mode kept).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterable

import libcst as cst

from bnaudit.findings import Finding
from bnaudit.fixes import TF1, Applicability, Edit, Fix
from bnaudit.source.facts import Walker
from bnaudit.source.notebooks import SUFFIX as NOTEBOOK
from bnaudit.source.parsing import PYTHON3, ParseFailure, parse

MAX_ROUNDS = 10


class _Unfixable(Exception):
    """An edit that does not fit the code it names (the reason is the message)."""


@dataclass
class _Target:
    node: cst.CSTNode
    ancestors: list[tuple[int, cst.CSTNode]]   # (number, node) from the module down to the node


class _Finder(Walker):
    """Numbers nodes as the fact extractor does; keeps the wanted ones, their ancestors and every
    node's span of numbers (a subtree is one contiguous range), for telling overlapping fixes apart."""

    def __init__(self, wanted: set[int]) -> None:
        super().__init__()
        self.wanted = wanted
        self.stack: list[tuple[int, cst.CSTNode]] = []
        self.found: dict[int, _Target] = {}
        self.spans: dict[int, tuple[int, int]] = {}

    def walk(self, node: cst.CSTNode) -> None:
        number = self._index + 1
        self.stack.append((number, node))
        if number in self.wanted:
            self.found[number] = _Target(node, list(self.stack))
        super().walk(node)
        self.stack.pop()
        self.spans[id(node)] = (number, self._index)


# ------------------------------------------------------------------------------------------ spelling

def tf1_spelling(module: cst.Module, code: str) -> str:
    """How this file spells TensorFlow's graph-mode namespace: an alias of ``tensorflow.compat.v1``,
    or the alias of ``tensorflow`` (with ``.compat.v1`` when the file itself writes it so)."""
    plain = None
    for statement in module.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Import):
                for alias in small.names:
                    name = _dotted(alias.name)
                    local = alias.asname.name.value if alias.asname and isinstance(alias.asname.name, cst.Name) \
                        else None
                    if name == "tensorflow.compat.v1" and local:
                        return local
                    if name == "tensorflow" and plain is None:
                        plain = local or "tensorflow"
            elif isinstance(small, cst.ImportFrom) and small.module is not None and \
                    _dotted(small.module) == "tensorflow.compat" and not isinstance(small.names, cst.ImportStar):
                for alias in small.names:
                    if _dotted(alias.name) == "v1":
                        return alias.asname.name.value if alias.asname else "v1"
    if plain is None:
        raise _Unfixable("the file does not import TensorFlow by a name the fix can use")
    return f"{plain}.compat.v1" if re.search(rf"\b{re.escape(plain)}\.compat\.v1\.", code) else plain


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


# ------------------------------------------------------------------------------------------- edits

_NO_SPACE = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(""))


def _expression(text: str) -> cst.BaseExpression:
    try:
        return cst.parse_expression(text)
    except cst.ParserSyntaxError as exc:  # a rule's bug, never the user's file
        raise _Unfixable(f"the fix's text {text!r} is not an expression") from exc


def _call(node: cst.CSTNode) -> cst.Call:
    if not isinstance(node, cst.Call):
        raise _Unfixable(f"expected a call, found {type(node).__name__}")
    return node


def _set_keyword(call: cst.Call, name: str, value: cst.BaseExpression) -> cst.Call:
    args = list(call.args)
    for i, arg in enumerate(args):
        if arg.keyword is not None and arg.keyword.value == name:
            args[i] = arg.with_changes(value=value)
            return call.with_changes(args=args)
    new = cst.Arg(value=value, keyword=cst.Name(name), equal=_NO_SPACE)
    if args and isinstance(args[-1].comma, cst.Comma):
        # A trailing comma: the new argument takes it (and the line break before `)`), and the
        # argument before it takes the separator its neighbours use.
        separator = args[-2].comma if len(args) > 1 and isinstance(args[-2].comma, cst.Comma) else \
            cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        new = new.with_changes(comma=args[-1].comma)
        args[-1] = args[-1].with_changes(comma=separator)
    args.append(new)
    return call.with_changes(args=args)


def _set_argument(call: cst.Call, name: str, index: int, value: cst.BaseExpression) -> cst.Call:
    args = list(call.args)
    for i, arg in enumerate(args):
        if arg.keyword is not None and arg.keyword.value == name:
            args[i] = arg.with_changes(value=value)
            return call.with_changes(args=args)
    position = 0
    for i, arg in enumerate(args):
        if arg.keyword is not None or arg.star == "**":
            break
        if arg.star == "*":
            break   # where the later positions land is not known
        if position == index:
            args[i] = arg.with_changes(value=value)
            return call.with_changes(args=args)
        position += 1
    raise _Unfixable(f"the call does not pass `{name}`")


def _rename(call: cst.Call, name: str) -> cst.Call:
    if isinstance(call.func, cst.Attribute):
        return call.with_changes(func=call.func.with_changes(attr=cst.Name(name)))
    if isinstance(call.func, cst.Name):
        return call.with_changes(func=cst.Name(name))
    raise _Unfixable("the callee is not a name")


def _replace(node: cst.CSTNode, value: cst.BaseExpression) -> cst.BaseExpression:
    if not isinstance(node, cst.BaseExpression):
        raise _Unfixable(f"expected an expression, found {type(node).__name__}")
    if node.lpar:
        value = value.with_changes(lpar=node.lpar, rpar=node.rpar)
    return value


def _statement(target: _Target) -> cst.SimpleStatementLine:
    """The statement line a wrap encloses: it must hold only that one statement."""
    for _, node in reversed(target.ancestors):
        if isinstance(node, (cst.Lambda, cst.BaseCompoundStatement, cst.SimpleStatementSuite)):
            break
        if isinstance(node, cst.SimpleStatementLine):
            if len(node.body) != 1:
                raise _Unfixable("the statement shares its line with others")
            return node
    raise _Unfixable("the code is not a statement of its own (a one-line block or a lambda)")


def _wrap(line: cst.SimpleStatementLine, item: cst.BaseExpression) -> cst.With:
    return cst.With(items=[cst.WithItem(item)], body=cst.IndentedBlock(body=[line.with_changes(leading_lines=[])]),
                    leading_lines=line.leading_lines)


def _convert(call: cst.Call, edit: Edit, func: cst.BaseExpression) -> cst.Call:
    if any(arg.star for arg in call.args):
        raise _Unfixable("the call passes *args or **kwargs")
    given: dict[str, cst.BaseExpression] = {}
    for i, arg in enumerate(arg for arg in call.args if arg.keyword is None):
        if i >= len(edit.params):
            raise _Unfixable("the call passes more positional arguments than the API takes")
        given[edit.params[i]] = arg.value
    given.update((arg.keyword.value, arg.value) for arg in call.args if arg.keyword is not None)
    renames = dict(edit.renames)
    new: dict[str, cst.BaseExpression] = {}
    for old, value in given.items():
        if old not in renames:
            raise _Unfixable(f"`{old}=` has no counterpart in the layer the fix calls")
        if renames[old]:
            new[renames[old]] = value
    for keyword, text in edit.defaults:
        new.setdefault(keyword, _expression(text))
    order = list(dict.fromkeys(name for _, name in edit.renames if name)) + [k for k, _ in edit.defaults]
    positional = list(edit.leading)
    if any(name not in new for name in positional):
        raise _Unfixable(f"the call does not pass `{next(n for n in positional if n not in new)}`")
    args = [cst.Arg(new[name]) for name in positional]
    args += [cst.Arg(new[name], keyword=cst.Name(name), equal=_NO_SPACE) for name in dict.fromkeys(order)
             if name in new and name not in positional]
    return call.with_changes(func=func, args=args)


def _with_import(module: cst.Module, statement: str) -> cst.Module:
    """The module with ``statement`` after its last top-level import (after the docstring and
    ``__future__`` imports when it has none), unless a line of it already says so."""
    if any(line.strip() == statement for line in module.code.splitlines()):
        return module
    body = list(module.body)
    position = 0
    for i, item in enumerate(body):
        small = item.body if isinstance(item, cst.SimpleStatementLine) else ()
        if any(isinstance(s, (cst.Import, cst.ImportFrom)) for s in small):
            position = i + 1
        elif i == 0 and small and isinstance(small[0], cst.Expr) and isinstance(small[0].value, cst.SimpleString):
            position = max(position, 1)   # the docstring
    body.insert(position, cst.parse_statement(statement + "\n"))
    return module.with_changes(body=body)


def _edited(edit: Edit, node: cst.CSTNode, value: cst.BaseExpression | None) -> cst.CSTNode:
    if edit.kind == "keyword":
        return _set_keyword(_call(node), edit.name, value)
    if edit.kind == "argument":
        return _set_argument(_call(node), edit.name, edit.index, value)
    if edit.kind == "rename":
        return _rename(_call(node), edit.text)
    if edit.kind == "replace":
        return _replace(node, value)
    if edit.kind == "wrap":
        return _wrap(node, value)
    if edit.kind == "convert":
        return _convert(_call(node), edit, value)
    raise _Unfixable(f"unknown edit {edit.kind!r}")


class _Apply(cst.CSTTransformer):
    """Applies the planned edits bottom-up; a hoist takes its inner node as already edited."""

    def __init__(self, planned: dict[int, list[tuple[Edit, cst.BaseExpression | None]]],
                 hoisted: dict[int, int]) -> None:
        super().__init__()
        self.planned = planned
        self.hoisted = hoisted            # id(inner node) -> id(node it replaces)
        self.inner: dict[int, cst.CSTNode] = {}

    def on_leave(self, original_node, updated_node):
        for edit, value in self.planned.get(id(original_node), ()):
            if edit.kind == "hoist":
                updated_node = self.inner[edit.index]
            else:
                updated_node = _edited(edit, updated_node, value)
        if id(original_node) in self.hoisted:
            self.inner[self.hoisted[id(original_node)]] = updated_node
        return updated_node


# ------------------------------------------------------------------------------------ one file

@dataclass
class FileFixes:
    """What fixing one file's findings gave: the new bytes, the findings fixed, notes on the others."""
    text: bytes
    fixed: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def apply(path: str, source: bytes, findings: Iterable[Finding]) -> FileFixes:
    """Apply the fixes of ``findings`` (found in exactly ``source``) that do not overlap each other.

    A fix that does not fit, or whose result would not parse, is left out with a note; fixes that
    overlap one already taken wait for the next round of the loop.
    """
    findings = [f for f in findings if f.autofix is not None]
    out = FileFixes(source)
    if not findings:
        return out
    if path.endswith(NOTEBOOK):
        out.notes.extend(f"{path}:{f.line}: {f.code} not fixed: notebooks are not rewritten (see --diff)"
                         for f in findings)
        return out
    parsed = parse(path, source)
    if isinstance(parsed, ParseFailure) or parsed.grammar != PYTHON3 or parsed.source_map is not None:
        out.notes.extend(f"{path}:{f.line}: {f.code} not fixed: only Python 3 source is rewritten"
                         for f in findings)
        return out
    module = parsed.module
    wanted = set()
    for finding in findings:
        for edit in finding.autofix.edits:
            wanted.add(edit.loc)
            if edit.kind == "hoist":
                wanted.add(edit.index)
    finder = _Finder(wanted)
    finder.walk(module)
    code = module.code
    taken: list[tuple[int, int]] = []
    planned: dict[int, list[tuple[Edit, cst.BaseExpression | None]]] = {}
    hoisted: dict[int, int] = {}
    imports: list[str] = []
    for finding in findings:
        try:
            plan, spans, statements = _plan(finding.autofix, finder, module, code)
        except _Unfixable as exc:
            out.notes.append(f"{path}:{finding.line}: {finding.code} not fixed: {exc}")
            continue
        if any(start <= end2 and start2 <= end for start, end in spans for start2, end2 in taken):
            continue   # overlaps a fix taken in this round: the next round sees it afresh
        taken.extend(spans)
        for key, edits in plan.items():
            planned.setdefault(key, []).extend(edits)
            for edit, _ in edits:
                if edit.kind == "hoist":
                    inner = id(finder.found[edit.index].node)
                    hoisted[inner] = edit.index
        imports.extend(statement for statement in statements if statement not in imports)
        out.fixed.append(finding)
    if not planned:
        return out
    try:
        new = module.visit(_Apply(planned, hoisted))
        for statement in imports:
            new = _with_import(new, statement)
    except _Unfixable as exc:   # an edit that fit its node alone but not with the others
        out.notes.append(f"{path}: fixes dropped: {exc}")
        return FileFixes(source, [], out.notes)
    text = new.bytes
    if not _parses(path, text, source):
        out.notes.append(f"{path}: fixes dropped: the fixed file would not parse")
        return FileFixes(source, [], out.notes)
    out.text = text
    return out


def _lambda_body(outer: cst.CSTNode, inner: _Target) -> None:
    """A hoist takes the whole body of a lambda passed to the call (`tf.cond(p, lambda: bn(x), ...)`),
    so nothing the branch computed around it is lost."""
    chain = [node for _, node in inner.ancestors]
    path = next((chain[i:] for i, node in enumerate(chain) if node is outer), [])
    if not (len(path) == 4 and isinstance(path[1], cst.Arg) and isinstance(path[2], cst.Lambda)
            and path[2].body is path[3]):
        raise _Unfixable("the branch does more than build the layer")


def _plan(fix: Fix, finder: _Finder, module: cst.Module, code: str):
    """The edits of one fix, keyed by the node they change, the spans of numbers they touch, and the
    import statements it adds; each edit is tried on its node now, so a fix that does not fit is
    refused whole."""
    plan: dict[int, list[tuple[Edit, cst.BaseExpression | None]]] = {}
    spans = []
    statements = []
    spelling: str | None = None
    for edit in fix.edits:
        text = edit.text
        if TF1 in text:
            spelling = spelling or tf1_spelling(module, code)
            text = text.replace(TF1, spelling)
        if edit.kind == "import":
            statements.append(text)
            continue
        target = finder.found.get(edit.loc)
        if target is None or (edit.kind == "hoist" and edit.index not in finder.found):
            raise _Unfixable("the code it names is no longer there")
        node = target.node
        value = None if edit.kind in ("rename", "hoist") else _expression(text)
        if edit.kind == "wrap":
            node = _statement(target)
        if edit.kind == "hoist":
            _lambda_body(node, finder.found[edit.index])
        else:
            _edited(edit, node, value)  # raises _Unfixable if it does not fit
        plan.setdefault(id(node), []).append((edit, value))
        spans.append(finder.spans[id(node)])
    return plan, spans, statements


def _parses(path: str, text: bytes, before: bytes) -> bool:
    try:
        cst.parse_module(text)
    except Exception:  # noqa: BLE001 - any refusal means the result is not kept
        return False
    try:
        compile(before, path, "exec", dont_inherit=True, flags=0x400)   # ast.PyCF_ONLY_AST
    except (SyntaxError, ValueError):
        return True   # CPython rejected the original too: libcst's word is all there is
    try:
        compile(text, path, "exec", dont_inherit=True, flags=0x400)
    except (SyntaxError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------- the loop

@dataclass
class FixRun:
    """The outcome of the fix loop over a program."""
    originals: dict[str, bytes] = field(default_factory=dict)   # as read, for the files changed
    texts: dict[str, bytes] = field(default_factory=dict)       # the fixed content of those files
    fixed: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remaining: list[Finding] = field(default_factory=list)
    rounds: int = 0
    # Display-only fixes on the final text: (finding, text before, text after).
    suggestions: list[tuple[Finding, bytes, bytes]] = field(default_factory=list)

    def changed(self) -> dict[str, bytes]:
        return {path: text for path, text in self.texts.items() if text != self.originals[path]}


def fix_loop(analyze: Callable[[dict[str, bytes]], list[Finding]], read: Callable[[str], bytes | None],
             unsafe: bool, rounds: int = MAX_ROUNDS) -> FixRun:
    """Analyze, apply what applies, analyze the result again, until nothing changes (or ``rounds``)."""
    run = FixRun()
    findings = analyze({})
    seen: set[tuple] = set()
    for _ in range(rounds):
        wanted: dict[str, list[Finding]] = {}
        for finding in findings:
            if finding.autofix is not None and finding.autofix.applies(unsafe):
                wanted.setdefault(finding.path, []).append(finding)
        progress = False
        for path, group in wanted.items():
            source = run.texts.get(path)
            if source is None:
                source = read(path)
                if source is None:
                    continue
                run.originals[path] = source
            done = apply(path, source, group)
            run.notes.extend(note for note in done.notes if note not in run.notes)
            if done.text != source:
                run.texts[path] = done.text
                run.fixed.extend(done.fixed)
                progress = True
        if not progress:
            break
        state = tuple(sorted(run.texts.items()))
        if state in seen:   # two fixes undoing each other: stop where the loop already was
            run.notes.append("fixing stopped: the fixes of this round give back an earlier round's text")
            break
        seen.add(state)
        run.rounds += 1
        findings = analyze(dict(run.texts))
    run.remaining = findings
    for finding in findings:
        if finding.autofix is not None and finding.autofix.applicability is Applicability.DISPLAY:
            source = run.texts.get(finding.path) or read(finding.path)
            if source is None:
                continue
            shown = apply(finding.path, source, [finding])
            if shown.text != source:
                run.suggestions.append((finding, source, shown.text))
    return run


@dataclass(frozen=True)
class Replacement:
    """One fix as a span of the file and its new text (1-based lines, code-point columns; the end is
    exclusive): what SARIF's ``fixes`` carry."""
    start_line: int
    start_column: int
    end_line: int
    end_column: int
    text: str


def replacement(finding: Finding, source: bytes) -> Replacement | None:
    """The fix of one finding, applied alone, as the smallest span of the text it changes."""
    done = apply(finding.path, source, [finding])
    if done.text == source:
        return None
    try:
        old, new = source.decode("utf-8"), done.text.decode("utf-8")
    except UnicodeDecodeError:
        return None
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[len(old) - 1 - end] == new[len(new) - 1 - end]:
        end += 1

    def position(offset: int) -> tuple[int, int]:
        line = old.count("\n", 0, offset) + 1
        return line, offset - (old.rfind("\n", 0, offset) + 1) + 1

    return Replacement(*position(start), *position(len(old) - end), new[start:len(new) - end])


def unified_diff(path: str, before: bytes, after: bytes, label: str = "") -> str:
    old = before.decode("utf-8", "replace").splitlines(keepends=True)
    new = after.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(old, new, f"a/{path}", f"b/{path}{label}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


# --------------------------------------------------------------------------------- writing

def write(run: FixRun) -> list[str]:
    """Write every changed file atomically; a file changed on disk since it was read is skipped.

    Returns one error line per file not written.
    """
    errors = []
    for path, text in run.changed().items():
        try:
            real = os.path.realpath(path)   # a link stays a link: its target is rewritten
            with open(real, "rb") as handle:
                if handle.read() != run.originals[path]:
                    errors.append(f"{path}: not fixed: the file changed while bnaudit was fixing it")
                    continue
            mode = os.stat(real).st_mode & 0o7777
            directory = os.path.dirname(real) or "."
            descriptor, temporary = tempfile.mkstemp(prefix=".bnaudit-fix-", suffix=".py", dir=directory)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(temporary, mode)
                os.replace(temporary, real)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            errors.append(f"{path}: not fixed: cannot write it ({exc.strerror or exc})")
    return errors
