"""Fixes as data: what a rule proposes, in a form the framework can show, apply and check.

After ruff's ``Fix``/``Edit``/``Applicability``: a rule never touches source text.  It names a node
by its ``loc`` (the pre-order number the fact extractor gave it) and says what to do there; the
fixer (``bnaudit.source.fixer``) applies the edits to a fresh libcst tree, keeping comments and
formatting, and keeps the result only if it parses.

Edit texts may spell TensorFlow's graph-mode namespace as ``{tf1}``: the fixer writes it the way
the file already does (``tf``, ``tf.compat.v1``, ``v1``...), so a fix never adds an import that the
file's own style would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

TF1 = "{tf1}"


class Applicability(str, Enum):
    """Whether a fix is applied by ``--fix`` (safe), only with ``--unsafe-fixes``, or only shown."""

    SAFE = "safe"              # cannot change what the program computes, except to remove the fault
    UNSAFE = "unsafe"          # changes behaviour a user may rely on (new variables, another layer)
    DISPLAY = "display-only"   # a suggestion: shown by --diff, never written

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Edit:
    """One change at one node.  Build edits with the constructors below."""

    kind: str       # keyword, argument, rename, replace, wrap, convert, hoist, import
    loc: int        # the node: a call for keyword/argument/rename/convert, any node for replace/wrap
    text: str = ""  # the new source (an expression; for wrap, the `with` item; for import, a statement)
    name: str = ""  # the keyword (keyword, argument)
    index: int = -1  # the positional index (argument), -1: keyword only; the inner node (hoist)
    # convert: the old API's positional parameters, and (old, new) renames; a new name "" drops the
    # argument; (keyword, text) pairs given when the call does not pass them.
    params: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()
    defaults: tuple[tuple[str, str], ...] = ()
    leading: tuple[str, ...] = ()   # convert: the new names passed by position, in order

    @classmethod
    def keyword(cls, call: int, name: str, text: str) -> "Edit":
        """Set ``name=text`` on the call: the keyword's value if given, a new keyword if not."""
        return cls("keyword", call, text, name)

    @classmethod
    def argument(cls, call: int, name: str, index: int, text: str) -> "Edit":
        """Replace the value of the call's argument given as ``name=`` or at position ``index``."""
        return cls("argument", call, text, name, index)

    @classmethod
    def rename(cls, call: int, name: str) -> "Edit":
        """Call another function of the same module: the last name of the callee becomes ``name``."""
        return cls("rename", call, name)

    @classmethod
    def replace(cls, node: int, text: str) -> "Edit":
        return cls("replace", node, text)

    @classmethod
    def convert(cls, call: int, func: str, params: tuple[str, ...], renames: tuple[tuple[str, str], ...],
                defaults: tuple[tuple[str, str], ...] = (), leading: tuple[str, ...] = ()) -> "Edit":
        """Call ``func`` instead, each argument renamed by ``renames`` (read by keyword, or by its
        position in ``params``), ``leading`` names passed by position.  An argument that ``renames``
        does not name refuses the fix."""
        return cls("convert", call, func, params=params, renames=renames, defaults=defaults, leading=leading)

    @classmethod
    def hoist(cls, node: int, inner: int) -> "Edit":
        """Replace the node with one of its descendants (after that one's own edits)."""
        return cls("hoist", node, index=inner)

    @classmethod
    def add_import(cls, statement: str) -> "Edit":
        """Add an import statement after the module's imports, unless the module has it already."""
        return cls("import", 0, statement)

    @classmethod
    def wrap(cls, node: int, item: str) -> "Edit":
        """Put the statement holding the node (one simple statement on its line) under ``with item:``."""
        return cls("wrap", node, item)


@dataclass(frozen=True)
class Fix:
    """What to do about one finding: a title (the action, shown with the finding) and its edits."""

    title: str
    edits: tuple[Edit, ...]
    applicability: Applicability = Applicability.SAFE

    def applies(self, unsafe: bool) -> bool:
        """Whether ``--fix`` (with ``--unsafe-fixes`` when ``unsafe``) writes this fix."""
        return self.applicability is Applicability.SAFE or (unsafe and self.applicability is Applicability.UNSAFE)

    def to_json(self) -> dict:
        return {"title": self.title, "applicability": str(self.applicability)}
