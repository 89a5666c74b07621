"""Per-file facts: one libcst pass reduces a module to what the rules judge.

Nodes are identified by their pre-order index (``loc``), not by position:
positions cost about three parses, so they are computed afterwards, and only
for the nodes a rule reports (see ``locate``).  Imports and aliases are
resolved here, in the same pass, instead of with libcst's
QualifiedNameProvider (six parses).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from bnaudit import catalogue
from bnaudit.source import values as V

_BINOPS = {
    cst.Add: "+", cst.Subtract: "-", cst.Multiply: "*", cst.Divide: "/", cst.Power: "**",
    cst.FloorDivide: "//", cst.Modulo: "%", cst.MatrixMultiply: "@",
}


_COMPARE_OPS = {cst.Equal: "==", cst.NotEqual: "!=", cst.Is: "is", cst.IsNot: "is not"}


class _Record:
    """Fast pickling for the slotted fact records (see ``values.Value.__reduce__``)."""
    __slots__ = ()

    def __reduce__(self):
        return type(self), tuple(getattr(self, name) for name in self.__slots__)


@dataclass(slots=True)
class CallFact(_Record):
    loc: int
    value: V.Call
    scope: str
    ctx: tuple[int, ...]          # locs of the enclosing `with` items in this scope, innermost last
    enclosing: tuple[int, ...]    # locs of the calls this call is an argument of, innermost last
    target: str | None = None     # the name this call's result is assigned to, if any
    end: int = 0
    # The if-statement arms around the call in its function, outermost first: (if loc, 0 body / 1 else).
    branches: tuple[tuple[int, int], ...] = ()


@dataclass(slots=True)
class ContextFact(_Record):
    loc: int
    value: V.Value
    alias: str | None
    scope: str
    end: int = 0


@dataclass(slots=True)
class AssignFact(_Record):
    name: str
    value: V.Value
    scope: str                    # the function, or "Class::self" for `self.x = ...`
    loc: int
    ctx: tuple[int, ...]
    function: str = ""            # the function the assignment is written in


@dataclass(slots=True)
class FunctionFact(_Record):
    qualname: str
    params: tuple[str, ...]
    defaults: dict[str, V.Value]
    parent: str                   # the enclosing function scope ("" for module level)
    class_name: str | None        # set for methods
    decorators: tuple[V.Value, ...]
    loc: int
    returns: list[V.Value] = field(default_factory=list)
    end: int = 0
    is_lambda: bool = False
    star: str = ""                # the *args parameter's name
    dstar: str = ""               # the **kwargs parameter's name
    positional: int = -1          # how many params take positional arguments (-1: all of them)


@dataclass(slots=True)
class ClassFact(_Record):
    name: str
    bases: tuple[V.Value, ...]
    loc: int
    end: int = 0


@dataclass(slots=True)
class LoopFact(_Record):
    loc: int
    scope: str
    target: str | None
    iter: V.Value
    end: int = 0


@dataclass(slots=True)
class TestFact(_Record):
    """A place where Python evaluates a value as a bool."""
    loc: int
    kind: str                     # if, while, not, and, or, ifexp, assert
    value: V.Value
    scope: str


@dataclass
class ModuleFacts:
    path: str
    module: str
    imports: set[str] = field(default_factory=set)
    star_imports: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)   # import aliases (what `from m import *` brings)
    calls: list[CallFact] = field(default_factory=list)
    contexts: dict[int, ContextFact] = field(default_factory=dict)
    assigns: dict[tuple[str, str], list[AssignFact]] = field(default_factory=dict)
    functions: dict[str, FunctionFact] = field(default_factory=dict)
    classes: dict[str, ClassFact] = field(default_factory=dict)
    loops: list[LoopFact] = field(default_factory=list)
    tests: list[TestFact] = field(default_factory=list)
    # `a - b` expressions (loc, value): where a one-pass variance would be computed.
    subtractions: list[tuple[int, V.Value]] = field(default_factory=list)
    # dict displays (loc, value): where arguments such as batch_norm_params are set.
    dicts: list[tuple[int, V.Value]] = field(default_factory=list)
    grammar: str = "python3"      # how the file was read (see parsing.py)
    # if-statement conditions by the if's loc (see CallFact.branches), where each if ends, and the
    # arms that end the function (return, raise, sys.exit): code after such an if never runs with them.
    ifs: dict[int, V.Value] = field(default_factory=dict)
    if_ends: dict[int, int] = field(default_factory=dict)
    leaving_arms: set[tuple[int, int]] = field(default_factory=set)


_SKIPPED_FIELDS = frozenset({
    "lpar", "rpar", "leading_lines", "lines_after_decorator", "header", "footer", "semicolon", "comma",
    "equal", "colon", "newline", "trailing_whitespace", "operator", "asynchronous", "lbracket", "rbracket",
    "lbrace", "rbrace", "relative", "dot", "default_indicator", "star_tok",
})
# Children in source order (dataclass field order differs for these).
_ORDER = {
    cst.FunctionDef: ("decorators", "name", "params", "returns", "body"),
    cst.ClassDef: ("decorators", "name", "bases", "keywords", "body"),
    cst.IfExp: ("body", "test", "orelse"),
}
_FIELDS: dict[type, tuple[str, ...]] = {}
# Whether a field's value type is a CST node (an ABC check per value costs a fifth of the walk).
_IS_NODE: dict[type, bool] = {}


def _fields(cls: type) -> tuple[str, ...]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _ORDER.get(cls) or tuple(
            f.name for f in dataclasses.fields(cls)
            if not f.name.startswith("whitespace") and f.name not in _SKIPPED_FIELDS)
        _FIELDS[cls] = fields
    return fields


def _target_names(target: cst.BaseExpression) -> list[cst.Name]:
    """The names a loop or comprehension target binds: ``i, (a, b)`` -> i, a, b."""
    if isinstance(target, (cst.Tuple, cst.List)):
        return [name for element in target.elements for name in _target_names(element.value)]
    return [target] if isinstance(target, cst.Name) else []


class Walker:
    """A lean pre-order traversal (libcst's visitor machinery costs almost as much as the parse).

    Numbers every node it enters; the extractor and ``locate`` share it, so they agree on numbers.
    Subclasses define ``visit_<Node>``/``leave_<Node>`` methods, and ``enter_with_body``.
    """

    def __init__(self) -> None:
        self._index = 0
        # Per node class: (visit, leave, fields, kind) with kind 1 for if/ifexp, 2 for with.
        self._plans: dict[type, tuple] = {}

    def _plan(self, cls: type) -> tuple:
        kind = 1 if cls is cst.If or cls is cst.IfExp else 2 if cls is cst.With else 0
        return (getattr(self, f"visit_{cls.__name__}", None), getattr(self, f"leave_{cls.__name__}", None),
                _fields(cls), kind)

    def walk(self, node: cst.CSTNode) -> None:
        self._index += 1
        cls = type(node)
        plan = self._plans.get(cls)
        if plan is None:
            plan = self._plans[cls] = self._plan(cls)
        visit, leave, fields, kind = plan
        if visit is not None:
            visit(node)
        is_node = _IS_NODE
        for name in fields:
            value = getattr(node, name)
            kind_of = type(value)
            if kind_of is tuple or kind_of is list:
                for item in value:
                    node_type = is_node.get(type(item))
                    if node_type is None:
                        node_type = is_node[type(item)] = issubclass(type(item), cst.CSTNode)
                    if node_type:
                        self.walk(item)
                continue
            node_type = is_node.get(kind_of)
            if node_type is None:
                node_type = is_node[kind_of] = issubclass(kind_of, cst.CSTNode)
            if not node_type:
                continue
            if kind == 1 and name in ("body", "orelse"):
                self.enter_branch(node, name == "orelse")
                self.walk(value)
                self.leave_branch(node)
                continue
            if kind == 2 and name == "body":
                self.enter_with_body(node)
            self.walk(value)
        if leave is not None:
            leave(node)

    def enter_with_body(self, node: cst.With) -> None:
        pass

    def enter_branch(self, node: cst.If, orelse: bool) -> None:
        pass

    def leave_branch(self, node: cst.If) -> None:
        pass


def _dotted_text(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = _dotted_text(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def _module_name(node: cst.BaseExpression | None) -> str:
    return _dotted_text(node) or "" if node is not None else ""


class Extractor(Walker):
    def __init__(self, path: str, module: str, is_package: bool) -> None:
        super().__init__()
        self.facts = ModuleFacts(path=path, module=module)
        self._package = module if is_package else module.rpartition(".")[0]
        self._aliases: dict[str, str] = self.facts.aliases
        self._scopes: list[str] = [""]           # function scopes
        self._classes: list[str | None] = [None]  # class whose body we are in, per scope level
        self._ctx: list[list[int]] = [[]]         # with-items, per function scope
        self._arms: list[list[tuple[int, int]]] = [[]]  # if-statement arms, per function scope
        self._if_locs: dict[int, int] = {}
        self._calls: list[int] = []
        self._functions: list[FunctionFact] = []
        self._loops: list[LoopFact] = []
        self._open_calls: list[CallFact] = []
        self._open_ctx: list[list[ContextFact]] = []
        self._cache: dict[int, V.Value] = {}
        self._lambda_names: dict[int, str] = {}
        self._class_stack: list[tuple[ClassFact, str | None]] = []
        self._with_items: list[ContextFact] = []
        self._pending_target: tuple[int, str] | None = None
        # The variables of the comprehensions being read: each is drawn from its iterable.
        self._comprehension_names: list[dict[str, V.Value]] = []

    # ----------------------------------------------------------------- names
    @property
    def scope(self) -> str:
        return self._scopes[-1]

    def _resolve_import(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        target = self._aliases.get(head)
        if target is None:
            return ""
        return catalogue.canonical(f"{target}.{rest}" if rest else target)

    def _lambda_name(self, node: cst.Lambda) -> str:
        name = self._lambda_names.get(id(node))
        if name is None:
            name = f"{self.scope + '.' if self.scope else ''}<lambda#{len(self._lambda_names)}>"
            self._lambda_names[id(node)] = name
        return name

    # ----------------------------------------------------------- expressions
    def value(self, node: cst.CSTNode | None) -> V.Value:
        if node is None:
            return V.UNKNOWN
        cached = self._cache.get(id(node))
        if cached is None:
            cached = self._convert(node)
            self._cache[id(node)] = cached
        return cached

    def _convert(self, node: cst.CSTNode) -> V.Value:  # noqa: C901 - one dispatch table
        if isinstance(node, cst.Name):
            name = node.value
            if name in ("True", "False", "None"):
                return V.Const({"True": True, "False": False, "None": None}[name])
            for names in reversed(self._comprehension_names):
                if name in names:
                    return names[name]
            if name in self._aliases:
                return V.Dotted(catalogue.canonical(self._aliases[name]))
            return V.Ref(name, self.scope, self._index)
        if isinstance(node, cst.Attribute):
            base = self.value(node.value)
            attr = node.attr.value
            if isinstance(base, V.Dotted):
                return V.Dotted(catalogue.canonical(f"{base.name}.{attr}"))
            if isinstance(base, V.Ref) and base.name == "self" and self._enclosing_class():
                return V.Ref(f"self.{attr}", f"{self._enclosing_class()}::self", self._index)
            return V.Attr(base, attr)
        if isinstance(node, cst.Call):
            return self._call_value(node)
        if isinstance(node, cst.Integer):
            try:
                return V.Const(int(node.value, 0))
            except ValueError:
                return V.UNKNOWN
        if isinstance(node, cst.Float):
            try:
                return V.Const(float(node.value.replace("_", "")))
            except ValueError:
                return V.UNKNOWN
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            text = _literal(node)
            return V.Const(text if isinstance(text, str) else None) if text is not None else V.UNKNOWN
        if isinstance(node, cst.UnaryOperation):
            operand = self.value(node.expression)
            if isinstance(node.operator, cst.Minus) and isinstance(operand, V.Const) \
                    and isinstance(operand.value, (int, float)) and not isinstance(operand.value, bool):
                return V.Const(-operand.value)
            if isinstance(node.operator, cst.Not):
                return V.Unary("not", operand)
            return V.Unary(type(node.operator).__name__, operand)
        if isinstance(node, cst.BinaryOperation):
            op = _BINOPS.get(type(node.operator), "?")
            left, right = self.value(node.left), self.value(node.right)
            folded = _fold(op, left, right)
            return folded if folded is not None else V.BinOp(op, left, right)
        if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
            return V.Seq(tuple(self.value(el.value) if not isinstance(el, cst.StarredElement)
                               else V.Starred(self.value(el.value)) for el in node.elements))
        if isinstance(node, cst.Dict):
            items = []
            for el in node.elements:
                if isinstance(el, cst.DictElement):
                    items.append((self.value(el.key), self.value(el.value)))
                else:
                    items.append((None, self.value(el.value)))
            return V.Dict(tuple(items))
        if isinstance(node, cst.Subscript):
            index = node.slice[0].slice if node.slice else None
            return V.Subscript(self.value(node.value),
                               self.value(index.value) if isinstance(index, cst.Index) else V.Opaque("slice"))
        if isinstance(node, cst.Lambda):
            name = self._lambda_name(node)
            self._scopes.append(name)
            try:
                body = self.value(node.body)
            finally:
                self._scopes.pop()
            return V.Lambda(name, body)
        if isinstance(node, cst.BooleanOperation):
            op = "and" if isinstance(node.operator, cst.And) else "or"
            return V.BoolOp(op, (self.value(node.left), self.value(node.right)))
        if isinstance(node, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
            comp = node.for_in
            words: list[str] = []
            negated = False
            for cond in comp.ifs:
                for sub in _strings_in(cond.test):
                    words.append(sub)
                negated = negated or _has_negation(cond.test)
            iterable = self.value(comp.iter)
            self._comprehension_names.append(self._loop_names(comp.target, iterable))
            try:
                elt = self.value(node.elt)
            finally:
                self._comprehension_names.pop()
            return V.Comprehension(elt, iterable, tuple(words), negated)
        if isinstance(node, cst.StarredElement):
            return V.Starred(self.value(node.value))
        if isinstance(node, cst.NamedExpr):
            return self.value(node.value)
        if isinstance(node, cst.Comparison):
            if len(node.comparisons) == 1:
                op = _COMPARE_OPS.get(type(node.comparisons[0].operator))
                if op is not None:
                    return V.Compare(op, self.value(node.left), self.value(node.comparisons[0].comparator))
            return V.Opaque("compare")
        return V.Opaque(type(node).__name__)

    def _call_value(self, node: cst.Call) -> V.Call:
        args: list[V.Value] = []
        kwargs: list[tuple[str, V.Value]] = []
        star: list[V.Value] = []
        dstar: list[V.Value] = []
        for arg in node.args:
            if arg.keyword is not None:
                kwargs.append((arg.keyword.value, self.value(arg.value)))
            elif arg.star == "*":
                star.append(self.value(arg.value))
            elif arg.star == "**":
                dstar.append(self.value(arg.value))
            else:
                args.append(self.value(arg.value))
        return V.Call(self.value(node.func), tuple(args), tuple(kwargs), tuple(star), tuple(dstar))

    # ---------------------------------------------------------------- imports
    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            name = _module_name(alias.name)
            self.facts.imports.add(name)
            if alias.asname is not None:
                self._aliases[alias.asname.name.value] = name
            else:
                head = name.split(".")[0]
                self._aliases[head] = head

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        base = _module_name(node.module)
        if node.relative:
            package = self._package
            for _ in range(len(node.relative) - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base and package else (base or package)
        if isinstance(node.names, cst.ImportStar):
            self.facts.star_imports.append(base)
            self.facts.imports.add(base)
            return
        for alias in node.names:
            name = _module_name(alias.name)
            local = alias.asname.name.value if alias.asname is not None else name
            self._aliases[local] = f"{base}.{name}"
            self.facts.imports.add(base)
            self.facts.imports.add(f"{base}.{name}")

    # ------------------------------------------------------------ definitions
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        cls = self._classes[-1]
        qualname = ".".join(p for p in (self.scope, cls, node.name.value) if p) if cls else \
            (f"{self.scope}.{node.name.value}" if self.scope else node.name.value)
        params, defaults = self._params(node.params)
        decorators = tuple(self.value(d.decorator) for d in node.decorators)
        is_static = any(isinstance(d, V.Ref) and d.name == "staticmethod" for d in decorators)
        fn = FunctionFact(qualname, params, defaults, self.scope, cls if cls and not is_static else None,
                          decorators, self._index)
        fn.star, fn.dstar, fn.positional = _splats(node.params)
        self.facts.functions[qualname] = fn
        self._functions.append(fn)
        self._scopes.append(qualname)
        self._classes.append(None)
        self._ctx.append([])
        self._arms.append([])

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        fn = self._functions.pop()
        fn.end = self._index
        self._scopes.pop()
        self._classes.pop()
        self._ctx.pop()
        self._arms.pop()

    def visit_Lambda(self, node: cst.Lambda) -> None:
        name = self._lambda_name(node)
        params, defaults = self._params(node.params)
        fn = FunctionFact(name, params, defaults, self.scope, None, (), self._index, is_lambda=True)
        self.facts.functions[name] = fn
        self._functions.append(fn)
        self._scopes.append(name)
        self._classes.append(None)
        # A lambda runs where it is called (tf.cond calls it in place): keep the with-contexts.
        self._ctx.append(list(self._ctx[-1]))
        self._arms.append(list(self._arms[-1]))

    def leave_Lambda(self, node: cst.Lambda) -> None:
        fn = self._functions.pop()
        fn.end = self._index
        fn.returns.append(self.value(node.body))
        self._scopes.pop()
        self._classes.pop()
        self._ctx.pop()
        self._arms.pop()

    def _params(self, params: cst.Parameters) -> tuple[tuple[str, ...], dict[str, V.Value]]:
        names: list[str] = []
        defaults: dict[str, V.Value] = {}
        for param in (*params.posonly_params, *params.params, *params.kwonly_params):
            names.append(param.name.value)
            if param.default is not None:
                defaults[param.name.value] = self.value(param.default)
        return tuple(names), defaults

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        cls = ClassFact(node.name.value, tuple(self.value(b.value) for b in node.bases), self._index)
        self.facts.classes[node.name.value] = cls
        self._class_stack.append((cls, self._classes[-1]))
        self._classes[-1] = node.name.value

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        cls, previous = self._class_stack.pop()
        cls.end = self._index
        self._classes[-1] = previous

    def visit_Return(self, node: cst.Return) -> None:
        if self._functions and node.value is not None:
            self._functions[-1].returns.append(self.value(node.value))

    # ------------------------------------------------------------ statements
    def _assign(self, target: cst.BaseExpression, value: V.Value) -> None:
        if isinstance(target, (cst.Tuple, cst.List)):
            for i, element in enumerate(target.elements):
                if isinstance(value, V.Seq) and i < len(value.items):
                    item = value.items[i]
                else:
                    item = V.Subscript(value, V.Const(i))
                self._assign(element.value, item)
            return
        name: str | None = None
        scope = self.scope
        if isinstance(target, cst.Name):
            name = target.value
        elif isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) \
                and target.value.value == "self" and self._enclosing_class():
            name = f"self.{target.attr.value}"
            scope = f"{self._enclosing_class()}::self"
        if name is None:
            return
        fact = AssignFact(name, value, scope, self._index, tuple(self._ctx[-1]), self.scope)
        self.facts.assigns.setdefault((scope, name), []).append(fact)
        if scope == self.scope and isinstance(value, V.Dotted) and name not in self._aliases:
            # `slim = tf.contrib.slim`: an alias of an imported module for the rest of the file.
            self._aliases[name] = value.name

    def _enclosing_class(self) -> str | None:
        """The class whose ``self`` a name refers to: the innermost method's, also from a function or
        lambda nested in it (a closure over ``self``), unless a nested function has its own ``self``."""
        for fn in reversed(self._functions):
            if fn.class_name:
                return fn.class_name
            if "self" in fn.params:
                return None
        return None

    def visit_Assign(self, node: cst.Assign) -> None:
        value = self.value(node.value)
        for target in node.targets:
            self._assign(target.target, value)
        if isinstance(node.value, cst.Call) and len(node.targets) == 1 \
                and isinstance(node.targets[0].target, cst.Name):
            self._pending_target = (id(node.value), node.targets[0].target.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._assign(node.target, self.value(node.value))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        op = type(node.operator).__name__.replace("Assign", "").lower()
        self._assign(node.target, V.BinOp(op, self.value(node.target), self.value(node.value)))

    def visit_For(self, node: cst.For) -> None:
        target = node.target.value if isinstance(node.target, cst.Name) else None
        loop = LoopFact(self._index, self.scope, target, self.value(node.iter))
        self.facts.loops.append(loop)
        self._loops.append(loop)
        self._assign_loop_variables(node.target, loop.iter)

    def _loop_names(self, target: cst.BaseExpression, iterable: V.Value) -> dict[str, V.Value]:
        return {name.value: V.Opaque("loop-variable", iterable) for name in _target_names(target)}

    def _enter_comprehension(self, node: cst.BaseComp) -> None:
        """Calls inside ``[f(x) for x in xs]`` see ``x`` as drawn from ``xs`` (the element is walked first)."""
        names: dict[str, V.Value] = {}
        comp: cst.CompFor | None = node.for_in
        while comp is not None:
            names.update(self._loop_names(comp.target, self.value(comp.iter)))
            comp = comp.inner_for_in
        self._comprehension_names.append(names)

    def _leave_comprehension(self, node: cst.BaseComp) -> None:
        self._comprehension_names.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _enter_comprehension
    leave_ListComp = leave_SetComp = leave_GeneratorExp = leave_DictComp = _leave_comprehension

    def _assign_loop_variables(self, target: cst.BaseExpression, iterable: V.Value) -> None:
        """``for x in xs`` / ``for i, (a, b) in enumerate(pairs)``: each name is drawn from the iterable."""
        for name in _target_names(target):
            self._assign(name, V.Opaque("loop-variable", iterable))

    def leave_For(self, node: cst.For) -> None:
        self._loops.pop().end = self._index

    def visit_While(self, node: cst.While) -> None:
        self._test("while", node.test)
        loop = LoopFact(self._index, self.scope, None, V.Opaque("while"))
        self.facts.loops.append(loop)
        self._loops.append(loop)

    def leave_While(self, node: cst.While) -> None:
        self._loops.pop().end = self._index

    def visit_If(self, node: cst.If) -> None:
        self._test("if", node.test)
        self._if_locs[id(node)] = self._index
        self.facts.ifs[self._index] = self.value(node.test)
        for arm, block in ((0, node.body), (1, node.orelse.body if isinstance(node.orelse, cst.Else) else None)):
            if isinstance(block, cst.IndentedBlock) and block.body and _leaves(block.body[-1]):
                self.facts.leaving_arms.add((self._index, arm))

    def leave_If(self, node: cst.If) -> None:
        self.facts.if_ends[self._if_locs[id(node)]] = self._index

    def enter_branch(self, node: cst.If | cst.IfExp, orelse: bool) -> None:
        self._arms[-1].append((self._if_locs[id(node)], int(orelse)))

    def leave_branch(self, node: cst.If) -> None:
        self._arms[-1].pop()

    def visit_IfExp(self, node: cst.IfExp) -> None:
        self._test("ifexp", node.test)
        # `evaluate() if FLAGS.eval else train()` dispatches like an if statement.
        self._if_locs[id(node)] = self._index
        self.facts.ifs[self._index] = self.value(node.test)

    def leave_IfExp(self, node: cst.IfExp) -> None:
        self.facts.if_ends[self._if_locs[id(node)]] = self._index

    def visit_Assert(self, node: cst.Assert) -> None:
        self._test("assert", node.test)

    def visit_UnaryOperation(self, node: cst.UnaryOperation) -> None:
        if isinstance(node.operator, cst.Not):
            self._test("not", node.expression)

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Subtract):
            self.facts.subtractions.append((self._index, self.value(node)))

    def visit_Dict(self, node: cst.Dict) -> None:
        self.facts.dicts.append((self._index, self.value(node)))

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> None:
        kind = "and" if isinstance(node.operator, cst.And) else "or"
        self._test(kind, node.left)
        self._test(kind, node.right)

    def _test(self, kind: str, expr: cst.BaseExpression) -> None:
        if isinstance(expr, (cst.Name, cst.Attribute, cst.Call)):
            self.facts.tests.append(TestFact(self._index, kind, self.value(expr), self.scope))

    def visit_WithItem(self, node: cst.WithItem) -> None:
        alias = node.asname.name.value if node.asname is not None and isinstance(node.asname.name, cst.Name) else None
        value = self.value(node.item)
        ctx = ContextFact(self._index, value, alias, self.scope)
        self.facts.contexts[ctx.loc] = ctx
        if alias:
            self._assign(node.asname.name, value)
        self._with_items.append(ctx)

    def visit_With(self, node: cst.With) -> None:
        self._with_items = []

    def enter_with_body(self, node: cst.With) -> None:
        # The items have been visited; they enclose the body only.
        items = self._with_items
        self._open_ctx.append(items)
        self._ctx[-1].extend(item.loc for item in items)

    def leave_With(self, node: cst.With) -> None:
        items = self._open_ctx.pop()
        for item in items:
            item.end = self._index
            self._ctx[-1].pop()

    # ----------------------------------------------------------------- calls
    def visit_Call(self, node: cst.Call) -> None:
        value = self.value(node)
        target = None
        pending = self._pending_target
        if pending is not None and pending[0] == id(node):
            target = pending[1]
            self._pending_target = None
        fact = CallFact(self._index, value, self.scope, tuple(self._ctx[-1]), tuple(self._calls), target,
                        branches=tuple(self._arms[-1]))
        self.facts.calls.append(fact)
        self._calls.append(fact.loc)
        self._open_calls.append(fact)
        if isinstance(value.func, V.Ref) and value.func.name == "bool" and len(node.args) == 1:
            self._test("bool", node.args[0].value)

    def leave_Call(self, node: cst.Call) -> None:
        fact = self._open_calls.pop()
        fact.end = self._index
        self._calls.pop()


def _leaves(statement: cst.BaseStatement) -> bool:
    """A statement after which the function does not go on: return, raise, sys.exit()/exit()."""
    if not isinstance(statement, cst.SimpleStatementLine) or not statement.body:
        return False
    last = statement.body[-1]
    if isinstance(last, (cst.Return, cst.Raise)):
        return True
    if isinstance(last, cst.Expr) and isinstance(last.value, cst.Call):
        name = _dotted_text(last.value.func)
        return name in ("exit", "quit", "sys.exit", "os._exit")
    return False


def _literal(node: cst.SimpleString | cst.ConcatenatedString) -> str | bytes | None:
    """A string literal's value; None for one libcst accepts but Python rejects (``"\\x4"``,
    ``"\\N{NO SUCH NAME}"``, non-ASCII bytes): an unknown value, not a reason to stop."""
    try:
        return node.evaluated_value
    except (SyntaxError, ValueError, UnicodeError, MemoryError):
        return None


# Integer results wider than this are not folded, as CPython's optimizer refuses to build huge
# constants: ((9**63)**63)**63 would otherwise take the process's memory and time.
MAX_FOLDED_BITS = 256


def _too_wide(op: str, a, b) -> bool:
    if not (isinstance(a, int) and isinstance(b, int)):
        return False
    if op == "**":
        return b > 0 and abs(a) > 1 and a.bit_length() * b > MAX_FOLDED_BITS
    if op == "*":
        return a.bit_length() + b.bit_length() > MAX_FOLDED_BITS
    return False


def _fold(op: str, left: V.Value, right: V.Value) -> V.Value | None:
    if not (isinstance(left, V.Const) and isinstance(right, V.Const)):
        return None
    a, b = left.value, right.value
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)) or _too_wide(op, a, b):
        return None
    try:
        if op == "+":
            return V.Const(a + b)
        if op == "-":
            return V.Const(a - b)
        if op == "*":
            return V.Const(a * b)
        if op == "/":
            return V.Const(a / b)
        if op == "**" and abs(b) < 64:
            return V.Const(a ** b)
        if op == "//":
            return V.Const(a // b)
    except (ArithmeticError, ValueError):
        return None
    return None


def _strings_in(node: cst.CSTNode) -> Iterable[str]:
    if isinstance(node, cst.SimpleString):
        value = _literal(node)
        if isinstance(value, str):
            yield value
        return
    for child in node.children:
        yield from _strings_in(child)


def _has_negation(node: cst.CSTNode) -> bool:
    if isinstance(node, (cst.NotIn, cst.Not)):
        return True
    return any(_has_negation(child) for child in node.children)


def extract(module: cst.Module, path: str, module_name: str, is_package: bool) -> ModuleFacts:
    extractor = Extractor(path, module_name, is_package)
    extractor.walk(module)
    return extractor.facts


class _Locator(Walker):
    def __init__(self, wanted: set[int], positions) -> None:
        super().__init__()
        self.wanted = wanted
        self.positions = positions
        self.found: dict[int, tuple[int, int, int, int]] = {}

    def walk(self, node: cst.CSTNode) -> None:
        if self._index + 1 in self.wanted:
            span = self.positions[node]
            self.found[self._index + 1] = (span.start.line, span.start.column + 1, span.end.line,
                                           span.end.column + 1)
        super().walk(node)


def locate(module: cst.Module, locs: set[int]) -> dict[int, tuple[int, int, int, int]]:
    """Positions (1-based line, column, end line, end column) of the nodes numbered ``locs``."""
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    locator = _Locator(locs, positions)
    locator.walk(module)
    return locator.found


def _splats(params: cst.Parameters) -> tuple[str, str, int]:
    """The names of ``*args`` and ``**kwargs`` ("" when absent), and the number of positional params."""
    star = params.star_arg.name.value if isinstance(params.star_arg, cst.Param) else ""
    dstar = params.star_kwarg.name.value if params.star_kwarg is not None else ""
    return star, dstar, len(params.posonly_params) + len(params.params)

