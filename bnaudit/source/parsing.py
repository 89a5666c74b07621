"""Source text to a libcst module, whichever Python the file is written in.

libcst reads Python 3 only, but much TF1-era training code is Python 2, and some valid Python 3
mixes tabs and spaces in ways CPython accepts and libcst's tokenizer refuses.  Both are read
through a rewrite that keeps every line where it was: leading tabs expanded as CPython's tokenizer
counts them (to multiples of 8), then Python 2 syntax (``print x``, ``except E, e``, backticks,
``<>``, ``0777``, ``10L``, ``ur''``, ``exec code in ns``, ``raise E, msg``) turned into Python 3 by
fissix's fixers.  A ``SourceMap`` takes positions in the rewritten text back to the file.
"""

from __future__ import annotations

import difflib
import io
import re
import tokenize
from dataclasses import dataclass
from functools import lru_cache

import libcst as cst

PYTHON3, PYTHON3_TABS, PYTHON2 = "python3", "python3-tabs", "python2"

# Syntax-only fixers: each rewrites a Python 2 construct that is a syntax error in Python 3.
_FIXERS = tuple(f"fissix.fixes.fix_{name}" for name in (
    "print", "except", "exec", "repr", "ne", "numliterals", "long", "unicode", "raise", "tuple_params",
))
_PY2_HINT = re.compile(r"\s*(print\s+[^\s(=]|print\s*$|exec\s+\S|except\s+[\w.]+\s*,|raise\s+\w+\s*,)")


@dataclass
class ParseFailure:
    path: str
    line: int
    column: int
    message: str
    transient: bool = False  # a property of this run (a time budget), not of the file: never cached
    fix: str | None = None   # when the catalogue's (fix the syntax) is not what helps


@dataclass
class Parsed:
    module: cst.Module
    grammar: str
    source_map: "SourceMap | None" = None   # None: positions in the module are positions in the file


_ERROR_AT = re.compile(r"error at (\d+):(\d+)")


def _libcst_error(exc: cst.ParserSyntaxError, suffix: str = "") -> tuple[int, int, str]:
    """(line, column, message) of a libcst error; its parser's own "error at L:C" is more exact than
    ``editor_line``, which can point past the offending token."""
    match = _ERROR_AT.search(exc.message or "")
    line, column = (int(match.group(1)), int(match.group(2)) + 1) if match else (exc.editor_line, exc.editor_column)
    return line, column, _first_line(exc.message) + suffix


def _first_line(message: str | None) -> str:
    text = (message or "").strip().splitlines()
    first = text[0] if text else "invalid syntax"
    return "invalid syntax" if "expected one of" in first or first.startswith("parser error") else first


def decode(data: bytes) -> str:
    """The file's text by its PEP 263 declaration (UTF-8 by default), as Python reads it."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    return text[1:] if text.startswith("\ufeff") else text


def expand_indentation(text: str) -> str:
    """Leading tabs expanded to the next multiple of 8, the column CPython's tokenizer gives them."""
    return "".join(_expand_line(line) for line in text.splitlines(keepends=True))


def _expand_line(line: str) -> str:
    stripped = line.lstrip(" \t")
    indent = line[:len(line) - len(stripped)]
    return indent.expandtabs(8) + stripped if "\t" in indent else line


def _has_indent_tabs(text: str) -> bool:
    return re.search(r"^[ ]*\t", text, re.MULTILINE) is not None


@lru_cache(maxsize=1)
def _refactoring_tool():
    from fissix.refactor import RefactoringTool  # imported on first need: most files are Python 3
    return RefactoringTool(list(_FIXERS), {"print_function": False})


def to_python3(text: str) -> str:
    """Python 2 source rewritten as Python 3 by fissix (raises on what its grammar rejects)."""
    source = text if text.endswith("\n") else text + "\n"
    return str(_refactoring_tool().refactor_string(source, "<bnaudit>"))


def _python2_error(exc: Exception) -> tuple[int, int, str]:
    """(line, column, message) of a fissix parse or tokenize error."""
    context = getattr(exc, "context", None)
    if context and len(context) == 2 and isinstance(context[1], tuple):
        line, column = context[1]
        return line, column + 1, f"{getattr(exc, 'msg', 'invalid syntax')} (Python 2 grammar)"
    args = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[1], tuple) and len(args[1]) == 2:
        line, column = args[1]
        return line, column + 1, f"{args[0]} (Python 2 grammar)"
    return 0, 0, f"invalid syntax (Python 2 grammar: {type(exc).__name__})"


# CPython's tokenizer refuses more than 200 nested brackets; libcst's native parser recurses
# without such a limit and overflows its stack (a segfault) somewhere past 1,000.
MAX_BRACKETS = 200
# Deeper expressions (``a[0][0]...``, ``x.y.z...``, ``1+1+...``) cost libcst quadratic time or its
# stack; real code stays far below.
MAX_EXPRESSION_DEPTH = 500
# Operators chained in one line of a file CPython rejects anyway (libcst: about 1 s at 2,000).
MAX_CHAIN = 2000
LONG_LINE = 2000
DEEP_FIX = ("Split the expression (name its parts), or exclude the file if it is generated; "
            "bnaudit does not analyze nesting this deep.")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"()[]{}")
_STEP = {ord("("): 1, ord("["): 1, ord("{"): 1, ord(")"): -1, ord("]"): -1, ord("}"): -1}


def _bracket_depth(data: bytes) -> int:
    """Deepest bracket nesting, counting brackets in strings too (an upper bound)."""
    brackets = data.translate(None, _NOT_BRACKETS)
    if len(brackets) <= 2 * MAX_BRACKETS:
        return len(brackets) // 2
    depth = deepest = 0
    for byte in brackets:
        depth += _STEP[byte]
        if depth > deepest:
            deepest = depth
    return deepest


_CHAIN_OPS = frozenset({"+", "-", "*", "/", "//", "%", "@", "**", "|", "&", "^", "<<", ">>", ".", "==", "!=", "<",
                        ">", "<=", ">="})


def _longest_chain(data: bytes) -> int:
    """The most operators (and call or subscript trailers on a call or subscript) in one logical
    line, read with the tokenizer so that strings do not count; 0 if it cannot tokenize."""
    longest = count = 0
    previous = ""
    try:
        for token in tokenize.tokenize(io.BytesIO(data).readline):
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                longest, count = max(longest, count), 0
            elif token.type == tokenize.OP and (token.string in _CHAIN_OPS or
                                                token.string in "([" and previous in (")", "]")):
                count += 1
            previous = token.string
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError, LookupError):
        pass
    return max(longest, count)


def _expression_depth(tree) -> int:
    import ast

    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def too_deep(data: bytes) -> str | None:
    """Why a file is too deeply nested to hand to libcst, or None.

    Only a file with an extreme bracket count or a very long line pays for the check, which asks
    CPython's own parser: what it refuses for nesting is not Python, and what it accepts is
    measured.
    """
    if _bracket_depth(data) <= MAX_BRACKETS and max(map(len, data.splitlines()), default=0) <= LONG_LINE:
        return None
    import ast

    try:
        tree = compile(data, "<bnaudit>", "exec", ast.PyCF_ONLY_AST)
    except (RecursionError, MemoryError):
        return "the file is nested too deeply to parse"
    except SyntaxError as exc:
        message = str(exc.msg if hasattr(exc, "msg") else exc)
        if "too many nested" in message or "too complex" in message or "too deeply" in message:
            return f"the file is nested too deeply to parse ({message})"
        # Another syntax error (Python 2, say): the usual parse reports it, unless a line chains so
        # many operators that libcst would take minutes to get there (its parser is quadratic in a
        # chain, `1+1+...` or `f()()...`, and native code cannot be interrupted).
        chain = _longest_chain(data)
        if chain > MAX_CHAIN:
            return f"a line chains {chain} operators; bnaudit parses up to {MAX_CHAIN} in a line"
        return None
    except (ValueError, UnicodeError):
        return None
    depth = _expression_depth(tree)
    if depth > MAX_EXPRESSION_DEPTH:
        return f"an expression is nested {depth} deep; bnaudit parses up to {MAX_EXPRESSION_DEPTH}"
    return None


def parse(path: str, data: bytes) -> Parsed | ParseFailure:
    """The file as a libcst module, or why neither grammar accepts it (from the one that got furthest)."""
    if b"\0" in data[:8192]:
        return ParseFailure(path, 1, 1, "binary file (contains NUL bytes), not Python source")
    deep = too_deep(data)
    if deep is not None:
        return ParseFailure(path, 1, 1, deep, fix=DEEP_FIX)
    try:
        return Parsed(cst.parse_module(data), PYTHON3)
    except cst.ParserSyntaxError as exc:
        py3_error = _libcst_error(exc)
    except RecursionError:
        return ParseFailure(path, 1, 1, "the file is nested too deeply to parse")
    except Exception as exc:  # noqa: BLE001 - libcst rejects a few inputs (encodings) in its own ways
        py3_error = (1, 1, f"cannot parse the file: {exc}")
    try:
        text = decode(data)
    except (UnicodeDecodeError, LookupError, SyntaxError) as exc:
        return ParseFailure(path, 1, 1, f"cannot decode the file: {exc}")
    failures = [py3_error]
    expanded = expand_indentation(text) if _has_indent_tabs(text) else text
    if expanded is not text:
        try:
            return Parsed(cst.parse_module(expanded), PYTHON3_TABS, SourceMap(text, expanded))
        except cst.ParserSyntaxError as exc:
            failures.append(_libcst_error(exc))
        except Exception:  # noqa: BLE001
            pass
    try:
        converted = to_python3(expanded)
    except RecursionError:
        return ParseFailure(path, 1, 1, "the file is nested too deeply to parse")
    except Exception as exc:  # noqa: BLE001 - fissix raises ParseError, TokenError, IndentationError
        failures.append(_python2_error(exc))
    else:
        try:
            return Parsed(cst.parse_module(converted), PYTHON2, SourceMap(text, converted))
        except cst.ParserSyntaxError as exc:
            failures.append(_libcst_error(exc, " (after reading it as Python 2)"))
        except Exception:  # noqa: BLE001
            pass
    furthest = max(failures, key=lambda f: (f[0], f[1]))
    line, column, message = furthest
    line_text = text.splitlines()[line - 1:line]
    if furthest is py3_error and line_text and _PY2_HINT.match(line_text[0]):
        message += " (Python 2 syntax)"
    return ParseFailure(path, line, column, message)


class SourceMap:
    """Positions in a rewritten text back to the original: lines are matched by difflib (the rewrites
    keep lines, except fissix's tuple-parameter fix), columns within a changed line by its characters."""

    def __init__(self, original: str, rewritten: str) -> None:
        self._original = original.splitlines()
        self._rewritten = rewritten.splitlines()
        self._lines: dict[int, int] | None = None

    def _line_map(self) -> dict[int, int]:
        if self._lines is None:
            if len(self._original) == len(self._rewritten):
                self._lines = {i: i for i in range(len(self._rewritten))}
            else:
                self._lines = {}
                matcher = difflib.SequenceMatcher(None, self._rewritten, self._original, autojunk=False)
                for tag, a0, a1, b0, b1 in matcher.get_opcodes():
                    for offset in range(a1 - a0):
                        self._lines[a0 + offset] = min(b0 + offset, max(b1 - 1, b0)) if tag != "equal" \
                            else b0 + offset
        return self._lines

    def position(self, line: int, column: int) -> tuple[int, int]:
        """(1-based line, 1-based column) in the rewritten text -> the same in the original."""
        index = self._line_map().get(line - 1, line - 1)
        if index >= len(self._original) or line - 1 >= len(self._rewritten):
            return index + 1, column
        new, old = self._rewritten[line - 1], self._original[index]
        if new == old:
            return index + 1, column
        col = column - 1
        mapped = 0
        for a, b, size in difflib.SequenceMatcher(None, new, old, autojunk=False).get_matching_blocks():
            if a <= col < a + size:
                mapped = b + (col - a)
                break
            if a + size <= col:
                mapped = b + size
        return index + 1, min(mapped, len(old)) + 1
