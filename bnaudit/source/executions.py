"""Which calls run together, in one graph: the executions of a program.

A batch-norm fault is a fact about one graph in one run: a layer built twice (BN002), update ops
that a train op never runs (BN001), a saver next to a layer (BN004).  A repository is many such
runs: scripts that never import each other, ``train()`` and ``test()`` chosen by a flag, a fresh
graph per ``with tf.Graph().as_default():`` or after ``tf.reset_default_graph()``, test methods that
each build their own model.

A call is reached along a *path*: the calls from an entry (a module's top level, or a function no
checked code calls, such as ``main`` run by a framework or a test method) down to it, one per
activation.  Two calls run together when their paths start at the same entry, they are not in
different arms of one ``if`` at the activation where the paths part (unless a loop there runs both
arms), and they build into the same graph.  Entries that may run inside one another (one function
reaches the other's entry, or one module imports the other) give no answer: ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from bnaudit import catalogue
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import Frame, Program, Site

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Path:
    """The calls from an entry down to a call: ``steps[i]`` runs in the activation ``frames[i]``."""
    frames: tuple[Frame, ...]
    steps: tuple[CallFact, ...]

    @property
    def entry(self) -> tuple[int, str]:
        root = self.frames[0]
        return id(root.module), root.function


def path_of(site: Site) -> Path:
    frames = tuple(reversed(list(site.frame.chain())))
    steps = tuple(frame.site for frame in frames[1:]) + (site.call,)
    return Path(frames, steps)  # type: ignore[arg-type]


class Executions:
    """Computed once per program (``Program.executions``); every answer is memoized."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self._paths: dict[int, tuple[Path, Site]] = {}
        self._graphs: dict[int, tuple[tuple, Path]] = {}
        self._related: dict[tuple[tuple[int, str], tuple[int, str]], bool] = {}
        self._related_sets: dict[tuple[int, str], frozenset[tuple[int, str]]] = {}

    # ------------------------------------------------------------------ entries
    @cached_property
    def _reaches(self) -> dict[tuple[int, str], set[tuple[int, str]]]:
        """Function -> the functions it calls, directly or not (from the lexical call graph)."""
        program = self.program
        direct: dict[tuple[int, str], set[tuple[int, str]]] = {}
        for (module_id, qualname), sites in program.callers.items():
            for caller_module, call in sites:
                scope = _enclosing_function(caller_module, call.scope)
                direct.setdefault((id(caller_module), scope), set()).add((module_id, qualname))
        closure: dict[tuple[int, str], set[tuple[int, str]]] = {}
        for start in direct:
            seen: set[tuple[int, str]] = set()
            todo = list(direct[start])
            while todo:
                node = todo.pop()
                if node not in seen:
                    seen.add(node)
                    todo.extend(direct.get(node, ()))
            closure[start] = seen
        return closure

    @cached_property
    def _imports(self) -> dict[int, set[int]]:
        """Module -> every checked module it imports, transitively."""
        program = self.program
        out: dict[int, set[int]] = {}
        for module in program.modules:
            seen: set[int] = set()
            todo = [module]
            while todo:
                current = todo.pop()
                for name in current.imports:
                    target = program.import_module(current, name)
                    if target is not None and id(target) not in seen:
                        seen.add(id(target))
                        todo.append(target)
            out[id(module)] = seen
        return out

    def related_entries(self, a: tuple[int, str], b: tuple[int, str]) -> bool:
        """Whether one entry may run inside the other (so calls under them may share a graph)."""
        if a == b:
            return True
        key = (a, b)
        found = self._related.get(key)
        if found is None:
            found = self._related[key] = self._related_entries(a, b)
        return found

    def _related_entries(self, a: tuple[int, str], b: tuple[int, str]) -> bool:
        if b in self._reaches.get(a, ()) or a in self._reaches.get(b, ()):
            return True
        if not a[1] and not b[1]:
            return b[0] in self._imports.get(a[0], ()) or a[0] in self._imports.get(b[0], ())
        # Methods of one class run on one object: `model = DCGAN(); model.train()` from a script
        # bnaudit did not read.
        return self._class_of(a) is not None and self._class_of(a) == self._class_of(b)

    def _class_of(self, entry: tuple[int, str]) -> tuple[int, str] | None:
        module = self._modules.get(entry[0])
        fn = module.functions.get(entry[1]) if module is not None and entry[1] else None
        return (entry[0], fn.class_name) if fn is not None and fn.class_name else None

    @cached_property
    def _modules(self) -> dict[int, ModuleFacts]:
        return {id(module): module for module in self.program.modules}

    # ------------------------------------------------------------------ graphs
    def graph_of(self, path: Path) -> tuple:
        """An identity for the graph the path's last call builds into: the innermost
        ``with <graph>.as_default():`` or latest ``tf.reset_default_graph()`` on the way, with the
        activation it happens in; ``()`` for the entry's default graph."""
        graph: tuple = ()
        for level, (frame, step) in enumerate(zip(path.frames, path.steps)):
            prefix = tuple(id(s) for s in path.steps[:level])
            latest = -1
            for ctx_loc in step.ctx:
                identity = self._graph_value(frame, frame.module.contexts[ctx_loc].value)
                if identity is not None and ctx_loc > latest:
                    graph, latest = ("graph", prefix, identity), ctx_loc
            reset = self._last_reset(frame.module, step)
            if reset is not None and reset.loc > latest:
                graph = ("reset", prefix, id(reset))
        return graph

    def _graph_value(self, frame: Frame, value: V.Value) -> int | None:
        """For ``X.as_default()``, an identity of the graph X (one per ``tf.Graph()`` call)."""
        located = self.program.deref(value, frame)
        current = located.value
        if not (isinstance(current, V.Call) and isinstance(current.func, V.Attr)
                and current.func.attr == "as_default"):
            return None
        base = self.program.deref(current.func.base, located.frame).value
        if isinstance(base, V.Call):
            name = self.program.qualname(base.func, located.frame)
            return id(base) if name in catalogue.GRAPHS else None   # not a Session's as_default()
        spelled = current.func.base
        name = spelled.attr if isinstance(spelled, V.Attr) else spelled.name if isinstance(spelled, V.Ref) else ""
        return id(base) if "graph" in name.lower() else None

    def _last_reset(self, module: ModuleFacts, step: CallFact) -> CallFact | None:
        found = None
        for call in self._resets.get((id(module), step.scope), ()):
            if call.loc < step.loc and not _exclusive(module, call, step):
                found = call
        return found

    @cached_property
    def _resets(self) -> dict[tuple[int, str], list[CallFact]]:
        program = self.program
        out: dict[tuple[int, str], list[CallFact]] = {}
        for module, call in program.calls_to(catalogue.RESET_DEFAULT_GRAPH):
            if isinstance(call.value.func, (V.Dotted, V.Ref)):
                out.setdefault((id(module), call.scope), []).append(call)
        return out

    # ------------------------------------------------------------------ together
    def path(self, site: Site) -> Path:
        found = self._paths.get(id(site))
        if found is None:
            found = self._paths[id(site)] = (path_of(site), site)  # the site keeps its id from being reused
        return found[0]

    def near(self, site: Site, others: "SitesByEntry[T]") -> Iterator[T]:
        """The items of ``others`` whose calls may run with ``site`` (``together`` is not False for
        items elsewhere): a repository of many scripts is compared entry by entry, not call by call."""
        related = self._related_to(self.path(site).entry)
        groups = others.groups
        if len(related) < len(groups):
            for other_entry in related:
                yield from groups.get(other_entry, ())
        else:
            for other_entry, items in groups.items():
                if other_entry in related:
                    yield from items

    def _related_to(self, entry: tuple[int, str]) -> frozenset[tuple[int, str]]:
        """Every entry ``related_entries`` pairs with ``entry``, found from indices rather than by
        trying every entry of the program (memoized)."""
        found = self._related_sets.get(entry)
        if found is None:
            out = {entry} | self._reaches.get(entry, set()) | self._reached_by.get(entry, set())
            if not entry[1]:
                out |= {(module, "") for module in self._imports.get(entry[0], ())}
                out |= {(module, "") for module in self._imported_by.get(entry[0], ())}
            cls = self._class_of(entry)
            if cls is not None:
                module = self._modules[entry[0]]
                out |= {(entry[0], name) for name, fn in module.functions.items() if fn.class_name == cls[1]}
            found = self._related_sets[entry] = frozenset(out)
        return found

    @cached_property
    def _reached_by(self) -> dict[tuple[int, str], set[tuple[int, str]]]:
        out: dict[tuple[int, str], set[tuple[int, str]]] = {}
        for start, reached in self._reaches.items():
            for node in reached:
                out.setdefault(node, set()).add(start)
        return out

    @cached_property
    def _imported_by(self) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for importer, imported in self._imports.items():
            for module in imported:
                out.setdefault(module, set()).add(importer)
        return out

    def index(self, items: Iterable[T], site_of: Callable[[T], Site]) -> "SitesByEntry[T]":
        groups: dict[tuple[int, str], list[T]] = {}
        for item in items:
            groups.setdefault(self.path(site_of(item)).entry, []).append(item)
        return SitesByEntry(groups)

    def together(self, a: Site, b: Site) -> bool | None:
        """Whether two calls run in one execution and build into one graph (None: cannot tell)."""
        pa, pb = self.path(a), self.path(b)
        if pa.entry != pb.entry:
            return None if self.related_entries(pa.entry, pb.entry) else False
        for level, (sa, sb) in enumerate(zip(pa.steps, pb.steps)):
            if sa is not sb:
                module = pa.frames[level].module
                if _exclusive(module, sa, sb):
                    return False
                break
        return self.graph(pa) == self.graph(pb)

    def divergence(self, kept: Site, other: Site) -> tuple[ModuleFacts, CallFact] | None:
        """The call that makes ``other`` a copy of its own: where its path leaves ``kept``'s, the last
        call of that first stretch of its own (`eval_logits = inference(images)` inside evaluate(),
        not the call of evaluate() itself; below it both copies run the same model code).  None:
        other entries."""
        stretch = self.own_stretch(kept, other)
        return stretch[-1] if stretch else None

    def own_stretch(self, kept: Site, other: Site) -> list[tuple[ModuleFacts, CallFact]]:
        """The calls of ``other``'s path from where it leaves ``kept``'s to where it joins it again
        (empty: other entries, or the same path)."""
        pa, pb = self.path(kept), self.path(other)
        if pa.entry != pb.entry:
            return []
        shared = {id(step) for step in pa.steps}
        found: list[tuple[ModuleFacts, CallFact]] = []
        for level, step in enumerate(pb.steps):
            if id(step) not in shared:
                found.append((pb.frames[level].module, step))
            elif found:
                break  # the end of the first stretch of its own (below, the model code both run)
        return found

    def graph(self, path: Path) -> tuple:
        key = id(path)
        found = self._graphs.get(key)
        if found is None:
            found = self._graphs[key] = (self.graph_of(path), path)
        return found[0]


@dataclass(frozen=True)
class SitesByEntry(Generic[T]):
    """Items grouped by the entry their call runs under (``Executions.index``)."""
    groups: dict[tuple[int, str], list[T]]


def _enclosing_function(module: ModuleFacts, scope: str) -> str:
    """Lambdas run in the function they are written in."""
    while scope and module.functions.get(scope) is not None and module.functions[scope].is_lambda:
        scope = module.functions[scope].parent
    return scope


def _exclusive(module: ModuleFacts, a: CallFact, b: CallFact) -> bool:
    """Two calls of one activation in different arms of one ``if`` that no loop around it repeats,
    or one in an arm that leaves the function (``return``) and the other after that ``if``."""
    arms_b = dict(b.branches)
    for if_loc, arm in a.branches:
        other = arms_b.get(if_loc)
        if other is not None and other != arm or other is None and _left_before(module, if_loc, arm, b):
            return not any(loop.scope == a.scope and loop.loc < if_loc <= loop.end for loop in module.loops)
    arms_a = dict(a.branches)
    for if_loc, arm in b.branches:
        if if_loc not in arms_a and _left_before(module, if_loc, arm, a):
            return not any(loop.scope == b.scope and loop.loc < if_loc <= loop.end for loop in module.loops)
    return False


def _left_before(module: ModuleFacts, if_loc: int, arm: int, call: CallFact) -> bool:
    """The arm ends the function, and ``call`` comes after the whole ``if`` in the same function."""
    return (if_loc, arm) in module.leaving_arms and call.loc > module.if_ends.get(if_loc, 1 << 62)
