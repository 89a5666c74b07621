"""A small, picklable model of Python expressions: what an argument *is*.

The fact extractor turns every expression it cares about into one of these;
the program model resolves names through them (assignments, parameters,
imports) and the rules ask questions such as "is this a tensor?" or "is this
the UPDATE_OPS collection?".  Anything bnaudit cannot model is ``UNKNOWN``,
and rules stay silent on unknowns.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterator


class Value:
    __slots__ = ()

    def children(self) -> Iterator["Value"]:
        return iter(())

    def __reduce__(self):
        # Much faster than the generated slots __getstate__/__setstate__ (facts cross process
        # boundaries and the cache by the hundred thousand); pickle's memo keeps shared values shared.
        return type(self), tuple(getattr(self, name) for name in self.__slots__)


@dataclass(frozen=True, slots=True)
class Const(Value):
    """A literal: bool, None, number, string, or a tuple of those."""
    value: Any


@dataclass(frozen=True, slots=True)
class Dotted(Value):
    """A name reached through an import, fully qualified and canonical (``tensorflow.nn.moments``)."""
    name: str


@dataclass(frozen=True, slots=True)
class Ref(Value):
    """A local name (or ``self.attr``) used at node ``loc`` inside function ``scope``."""
    name: str
    scope: str
    loc: int


@dataclass(frozen=True, slots=True)
class Attr(Value):
    base: Value
    attr: str

    def children(self):
        yield self.base


@dataclass(frozen=True, slots=True)
class Call(Value):
    func: Value
    args: tuple[Value, ...]
    kwargs: tuple[tuple[str, Value], ...]
    star: tuple[Value, ...] = ()
    dstar: tuple[Value, ...] = ()
    loc: int = -1

    def children(self):
        yield self.func
        yield from self.args
        for _, value in self.kwargs:
            yield value
        yield from self.star
        yield from self.dstar

    def kwarg(self, name: str) -> Value | None:
        for key, value in self.kwargs:
            if key == name:
                return value
        return None

    def arg(self, name: str, index: int) -> Value | None:
        """The argument given as ``name=`` or at position ``index`` of the plain positional arguments
        (``*args`` are kept apart, in ``star``)."""
        given = self.kwarg(name)
        if given is None and index < len(self.args):
            given = self.args[index]
        return given


@dataclass(frozen=True, slots=True)
class Seq(Value):
    """A list, tuple or set display; ``Starred`` items splice."""
    items: tuple[Value, ...]

    def children(self):
        yield from self.items


@dataclass(frozen=True, slots=True)
class Dict(Value):
    """A dict display; a ``None`` key is a ``**splat``."""
    items: tuple[tuple[Value | None, Value], ...]

    def children(self):
        for key, value in self.items:
            if key is not None:
                yield key
            yield value


@dataclass(frozen=True, slots=True)
class Starred(Value):
    value: Value

    def children(self):
        yield self.value


@dataclass(frozen=True, slots=True)
class BinOp(Value):
    op: str
    left: Value
    right: Value

    def children(self):
        yield self.left
        yield self.right


@dataclass(frozen=True, slots=True)
class Unary(Value):
    op: str
    operand: Value

    def children(self):
        yield self.operand


@dataclass(frozen=True, slots=True)
class BoolOp(Value):
    op: str
    values: tuple[Value, ...]

    def children(self):
        yield from self.values


@dataclass(frozen=True, slots=True)
class Compare(Value):
    """``left <op> right`` with one operator (``==``, ``!=``, ``is``, ``is not``)."""
    op: str
    left: Value
    right: Value

    def children(self):
        yield self.left
        yield self.right


@dataclass(frozen=True, slots=True)
class Subscript(Value):
    base: Value
    index: Value

    def children(self):
        yield self.base
        yield self.index


@dataclass(frozen=True, slots=True)
class Lambda(Value):
    """A lambda, named by the scope its body was extracted into."""
    scope: str
    body: Value

    def children(self):
        yield self.body  # what the lambda computes when called (tf.cond's branches are part of its value)


@dataclass(frozen=True, slots=True)
class Comprehension(Value):
    """``[elt for target in iter if cond...]``; ``words`` are the string literals in the conditions."""
    elt: Value
    iter: Value
    words: tuple[str, ...]
    negated: bool

    def children(self):
        yield self.elt
        yield self.iter


@dataclass(frozen=True, slots=True)
class Param(Value):
    """A parameter of function ``function`` (qualified within its module), not yet bound to an argument."""
    module: str
    function: str
    name: str


@dataclass(frozen=True, slots=True)
class FunctionRef(Value):
    module: str
    function: str


@dataclass(frozen=True, slots=True)
class Opaque(Value):
    """An expression bnaudit does not model, such as a comparison; ``of`` is what it is drawn from,
    when known (a loop variable's iterable: it is built from it, not equal to anything)."""
    kind: str
    of: Value | None = None

    def children(self):
        if self.of is not None:
            yield self.of


UNKNOWN = Opaque("unknown")


def walk(value: Value) -> Iterator[Value]:
    """Pre-order traversal of a value tree (without resolving names)."""
    stack = [value]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.children())


def const(value: Value | None, default: Any = None) -> Any:
    return value.value if isinstance(value, Const) else default


def is_const(value: Value | None) -> bool:
    return isinstance(value, Const)



def spelled_alike(a: Any, b: Any) -> bool:
    """The same expression written in two places: equal except for ``loc``."""
    if isinstance(a, Value):
        return type(a) is type(b) and all(
            field.name == "loc" or spelled_alike(getattr(a, field.name), getattr(b, field.name))
            for field in fields(a))
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(spelled_alike, a, b))
    return a == b
