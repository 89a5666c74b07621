"""The whole program: names resolved across functions and files, batch norms instantiated.

Per-file facts say *what is written*; this module says *what it means*:
which function a call reaches, what a parameter is bound to at each call site,
which batch-norm layers a program builds and with which effective arguments
(explicit, ``**params``, ``normalizer_params``, ``slim.arg_scope``,
``functools.partial``, wrappers), under which ``with`` contexts.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Iterator

from bnaudit import catalogue
from bnaudit.catalogue import BatchNormAPI
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ContextFact, FunctionFact, ModuleFacts
from bnaudit.source.imports import ImportResolver, normalize

# Python 2's builtins that Python 3 renamed or dropped count too (``xrange`` is a ``range``).
_BUILTINS = frozenset(dir(builtins)) | {"xrange", "unicode", "long", "raw_input", "basestring", "unichr"}
# Dotted callees that can build a batch norm (directly or as a slim layer's normalizer).
_BN_NAMES = frozenset(name for api in catalogue.APIS for name in api.qualnames) \
    | catalogue.SLIM_NORMALIZED_LAYERS | catalogue.PARTIAL
_MAPPING_METHODS = frozenset(dir(dict)) | {"__dict__", "__class__"}
_MISSING = object()
MAX_DEPTH = 16          # steps when following a value through names and parameters
MAX_CALL_DEPTH = 8      # caller levels when instantiating a function's calls
MAX_INSTANCES = 96      # instantiations of one call site
MAX_NESTING = 64        # values being followed at once (attribute chains, bases of calls)


@dataclass(eq=False)
class Frame:
    """One activation of a function: where it was called from and what its parameters are."""
    module: ModuleFacts
    function: str                                  # qualname ("" for module level)
    bindings: dict[str, tuple[V.Value, "Frame | None"]] | None = None  # None: callers unknown
    parent: "Frame | None" = None                  # the caller's frame
    site: CallFact | None = None                   # the call in the caller that created this frame
    made_by: V.Call | None = None                  # the call value, for frames made while reading values

    def chain(self) -> Iterator["Frame"]:
        frame: Frame | None = self
        while frame is not None:
            yield frame
            frame = frame.parent


@dataclass(frozen=True)
class Located:
    """A value together with the frame its names are resolved in."""
    value: V.Value
    frame: Frame | None


@dataclass(eq=False)
class Site:
    """A call, seen through one instantiation of the function it is in."""
    module: ModuleFacts
    call: CallFact
    frame: Frame

    def contexts(self) -> list[tuple[ContextFact, Frame]]:
        """Every enclosing ``with`` item, outermost first, across the call chain."""
        out: list[tuple[ContextFact, Frame]] = []
        site_call: CallFact | None = self.call
        frame: Frame | None = self.frame
        layers = []
        while frame is not None and site_call is not None:
            layers.append([(frame.module.contexts[loc], frame) for loc in site_call.ctx])
            site_call, frame = frame.site, frame.parent
        for layer in reversed(layers):
            out.extend(layer)
        return out

    @cached_property
    def root(self) -> Frame:
        return list(self.frame.chain())[-1]

    @cached_property
    def chain(self) -> list[tuple[ModuleFacts, CallFact]]:
        """The call sites from the program's top level down to this call."""
        out = [(frame.parent.module, frame.site) for frame in reversed(list(self.frame.chain()))
               if frame.site is not None and frame.parent is not None]
        out.append((self.module, self.call))
        return out


@dataclass(eq=False)
class BatchNormUse:
    """One batch-norm layer built by the program (one instantiation of its call)."""
    api: BatchNormAPI
    site: Site
    how: str        # direct, normalizer_fn, partial; construct/apply for layer classes
    args: dict[str, Located] = field(default_factory=dict)
    unknown_args: bool = False                    # **kwargs or an arg_scope we could not read
    # Arguments set away from the call (a params dict, an arg_scope): (module, loc) of where.
    sources: dict[str, tuple[ModuleFacts, int]] = field(default_factory=dict)

    @property
    def module(self) -> ModuleFacts:
        return self.site.module

    @property
    def chain(self) -> list[tuple[ModuleFacts, CallFact]]:
        """The call sites from the program's top level down to the batch-norm call."""
        return self.site.chain

    @property
    def call(self) -> CallFact:
        return self.site.call


class Program:
    """The linked program.  Modules are identified by their path (``FunctionRef.module`` and
    ``Param.module`` hold it): two scripts' ``model.py`` are two modules, and imports are resolved
    from the importing file (see ``imports.py``)."""

    def __init__(self, modules: list[ModuleFacts], files: list[str] | None = None) -> None:
        self.modules = modules
        self.by_path: dict[str, ModuleFacts] = {module.path: module for module in modules}
        self._by_norm = {normalize(module.path): module for module in modules}
        self.resolver = ImportResolver([*(files or ()), *self.by_path])
        self.calls_by_loc: dict[int, dict[int, CallFact]] = {
            id(module): {call.loc: call for call in module.calls} for module in modules
        }
        self._callers: dict[tuple[int, str], list[tuple[ModuleFacts, CallFact]]] | None = None
        self._lexical: dict[tuple[int, str], Frame] = {}
        self._deref: dict[tuple[int, int], tuple[Located, V.Value, Frame | None, bool]] = {}
        self._wanted_callers = False
        self._dotted: dict[tuple[str, int], tuple[V.Value, ModuleFacts] | None] = {}
        self._methods: dict[int, dict[tuple[str, str], str]] = {}
        self._runners: set[int] = set()   # calls that run a function in place (see run_targets)
        self._targets: dict[int, list[tuple[ModuleFacts, FunctionFact]]] = {}
        self._frames: dict[tuple[int, str, int], list[Frame]] = {}
        self._sites: dict[int, tuple[list[Site], CallFact]] = {}
        self._parsing: set[int] = set()
        self._resolving: set[tuple[int, int]] = set()
        self._mros: dict[tuple[int, str], list[tuple[ModuleFacts, str]]] = {}
        self._layer_bases: dict[tuple[int, str], BatchNormAPI | None] = {}
        self._mutations: dict[int, dict[tuple[str, str], list[tuple[V.Value, str]]]] = {}

    def call_fact(self, value: V.Call) -> tuple[ModuleFacts, CallFact] | None:
        """Where a call value is written."""
        return self._call_facts.get(id(value))

    @cached_property
    def _call_facts(self) -> dict[int, tuple[ModuleFacts, CallFact]]:
        return {id(call.value): (module, call) for module in self.modules for call in module.calls}

    @cached_property
    def _callable_names(self) -> frozenset[str]:
        """Last components of every function, method and class name, and the method names that run a
        function: a method call by another name cannot reach program code."""
        names = set(catalogue.RUNS_FUNCTION_METHODS)
        for module in self.modules:
            names.update(qualname.rsplit(".", 1)[-1] for qualname in module.functions)
            names.update(module.classes)
        return frozenset(names)

    @cached_property
    def dataflow(self):
        """Which layers each train op trains (see dataflow.py)."""
        from bnaudit.source.dataflow import TrainFlow
        return TrainFlow(self)

    @cached_property
    def loss_functions(self) -> list[tuple[V.Value, "Frame"]]:
        """Calls of tf.losses/slim.losses functions: what the LOSSES collection holds."""
        out = []
        for module in self.modules:
            for call in module.calls:
                frame = self.lexical(module, call.scope)
                name = self.qualname(call.value.func, frame) if isinstance(call.value.func, (V.Dotted, V.Attr)) else None
                if name and name.startswith(catalogue.LOSS_FUNCTION_MODULES) and \
                        name not in catalogue.LOSS_COLLECTION_READERS and not name.rsplit(".", 1)[-1].startswith("get_"):
                    out.append((call.value, frame))
        return out

    @cached_property
    def restores_and_exports(self) -> list["Site"]:
        """Sites that load trained weights into the graph or write the model out for serving."""
        out = []
        for module in self.modules:
            for call in module.calls:
                func = call.value.func
                name = func.attr if isinstance(func, V.Attr) else None
                if name in catalogue.RESTORE_METHODS or name in catalogue.EXPORT_METHODS or (
                        isinstance(func, V.Dotted) and func.name in catalogue.RESTORE_FUNCTIONS | catalogue.SAVED_MODEL_SAVE):
                    out.extend(self.sites(module, call))
        return out

    @cached_property
    def executions(self):
        """Which calls run together in one graph (see executions.py)."""
        from bnaudit.source.executions import Executions
        return Executions(self)

    # ------------------------------------------------------------ resolving
    def lookup_name(self, module: ModuleFacts, name: str, scope: str, loc: int) -> V.Value:
        """What a bare name means at ``loc`` in ``scope``: an assignment, a parameter, a def."""
        current = scope
        while True:
            assigns = module.assigns.get((current, name))
            fn = module.functions.get(current) if current else None
            if assigns:
                if current != scope:
                    return assigns[-1].value
                for assign in reversed(assigns):
                    if assign.loc < loc:
                        return assign.value
                # Read before its first assignment here: the parameter (`x = conv(x)` on a
                # function's first line), else the last assignment (a loop that wraps around).
                if not (fn is not None and name in fn.params):
                    return assigns[-1].value
            if fn is not None and name in fn.params:
                return V.Param(module.path, current, name)
            qualname = f"{current}.{name}" if current else name
            if qualname in module.functions:
                return V.FunctionRef(module.path, qualname)
            if not current:
                if name in module.classes:
                    return V.FunctionRef(module.path, name)
                break
            current = fn.parent if fn is not None else ""
        for star in module.star_imports:
            candidate = catalogue.canonical(f"{star}.{name}")
            if catalogue.lookup(candidate) is not None:
                return V.Dotted(candidate)
            target = self.import_module(module, star)
            if target is not None and name in target.aliases and not name.startswith("_"):
                return V.Dotted(catalogue.canonical(target.aliases[name]))
            if target is not None and (("", name) in target.assigns or name in target.functions
                                       or name in target.classes):
                return self.lookup_name(target, name, "", 1 << 62)
        if name in _BUILTINS:
            return V.Dotted(f"builtins.{name}")
        return V.UNKNOWN

    def mro(self, module: ModuleFacts, cls: str, depth: int = 0) -> list[tuple[ModuleFacts, str]]:
        """The class and its base classes defined in the program, nearest first."""
        key = (id(module), cls)
        found = self._mros.get(key)
        if found is not None:
            return found
        out = [(module, cls)]
        fact = module.classes.get(cls)
        if fact is not None and depth < 6:
            self._mros[key] = out  # cycles stop here
            frame = self.lexical(module, "")
            for base in fact.bases:
                target = self.deref(base, frame).value
                if isinstance(target, V.FunctionRef) and (base_module := self.by_path.get(target.module)) is not None \
                        and target.function in base_module.classes:
                    out.extend(entry for entry in self.mro(base_module, target.function, depth + 1) if entry not in out)
        self._mros[key] = out
        return out

    def layer_subclass(self, value: V.Value) -> BatchNormAPI | None:
        """The batch-norm layer a program class derives from (``class BatchNormalization(
        tf.keras.layers.BatchNormalization)``, a "frozen" variant): its objects are that layer."""
        if not isinstance(value, V.FunctionRef) or (module := self.by_path.get(value.module)) is None \
                or value.function not in module.classes:
            return None
        key = (id(module), value.function)
        if key not in self._layer_bases:
            self._layer_bases[key] = None
            for owner, cls in self.mro(module, value.function):
                frame = self.lexical(owner, "")
                for base in owner.classes[cls].bases:
                    api = self.api_of(base, frame)
                    if api is not None and api.kind == catalogue.LAYER:
                        self._layer_bases[key] = api
                        break
                if self._layer_bases[key] is not None:
                    break
        return self._layer_bases[key]

    def method(self, module: ModuleFacts, cls: str, name: str) -> tuple[ModuleFacts, FunctionFact] | None:
        """``cls.name`` looked up as Python does, through the base classes in the program."""
        for owner, owner_cls in self.mro(module, cls):
            fn = owner.functions.get(f"{owner_cls}.{name}")
            if fn is not None:
                return owner, fn
        return None

    def _step_self(self, module: ModuleFacts, ref: V.Ref, frame: Frame) -> Located:
        """``self.x`` in a method: what the object's attribute was set to (in this class or a base).
        When the activation knows its receiver and the attribute is set in ``__init__``, the
        constructor call's arguments bind it (``self.d_bn1 = batch_norm(name='d_bn1')`` ...
        ``self.name`` is 'd_bn1' for that object)."""
        cls = ref.scope.rsplit("::", 1)[0]
        attr = ref.name.split(".", 1)[1]
        for owner, owner_cls in self.mro(module, cls):
            assigns = owner.assigns.get((f"{owner_cls}::self", ref.name))
            if assigns and owner is module:
                assigns = _seen_here(assigns, frame.function, ref.loc)
            if assigns:
                break
        else:
            found = self.method(module, cls, attr)
            if found is None:
                given = self._dict_updated(module, cls, attr, frame)
                if given is not None:
                    return given
            return Located(V.FunctionRef(found[0].path, found[1].qualname) if found else V.UNKNOWN, frame)
        assign = assigns[-1]
        if owner is module and _flipped_later(owner.assigns[(f"{owner_cls}::self", ref.name)], assign, frame.function,
                                              ref.loc):
            return Located(V.UNKNOWN, frame)
        where = assign.function
        for candidate in frame.chain():
            if candidate.module is owner and candidate.function == where:
                return Located(assign.value, candidate)
        if where.endswith(".__init__"):
            constructed = self._constructor_frame(owner, cls, frame, where)
            if constructed is not None:
                return Located(assign.value, constructed)
        if owner is module and (not where or where == frame.function):
            return Located(assign.value, frame)
        return Located(assign.value, self.lexical(owner, where))

    def alternatives(self, ref: V.Ref, frame: Frame | None) -> list[Located]:
        """Every assignment a name may hold where it is read, not only the last one that ``deref``
        follows: ``if y_dim: self.D = ... else: self.D = ...`` (for data flow, which must not miss one)."""
        if frame is None:
            return []
        module = frame.module
        if "::" in ref.scope:
            cls = ref.scope.rsplit("::", 1)[0]
            out = []
            for owner, owner_cls in self.mro(module, cls):
                assigns = owner.assigns.get((f"{owner_cls}::self", ref.name), ())
                for assign in _seen_here(assigns, frame.function, ref.loc) if owner is module else assigns:
                    out.append(Located(assign.value, frame if owner is module and assign.function == frame.function
                                       else self.lexical(owner, assign.function)))
            return out if len(out) > 1 else []
        assigns = [a for a in module.assigns.get((ref.scope, ref.name), ()) if a.loc < ref.loc]
        return [Located(a.value, frame) for a in assigns] if len(assigns) > 1 else []

    def appended(self, ref: V.Ref, frame: Frame | None) -> list[Located]:
        """What was added to a list (or set, dict) held by a name: ``losses.append(loss)``,
        ``towers.extend(...)``, ``grads.insert(0, g)`` in the same function, or on ``self.x`` anywhere."""
        if frame is None:
            return []
        module = frame.module
        index = self._mutations.get(id(module))
        if index is None:
            index = self._mutations[id(module)] = {}
            for call in module.calls:
                func = call.value.func
                if isinstance(func, V.Attr) and func.attr in catalogue.CONTAINER_MUTATORS and \
                        isinstance(func.base, V.Ref) and call.value.args:
                    key = (func.base.scope, func.base.name)
                    index.setdefault(key, []).append((call.value.args[-1], call.scope))
        return [Located(value, frame if scope == frame.function else self.lexical(module, scope))
                for value, scope in index.get((ref.scope, ref.name), ())]

    def _dict_updated(self, module: ModuleFacts, cls: str, attr: str, frame: Frame) -> Located | None:
        """``self.__dict__.update(kwargs)`` in ``__init__(self, **kwargs)``: the attribute is the keyword
        of that name in the call that built the object (``WGAN(gen=generator, disc=discriminator)``)."""
        for owner, owner_cls in self.mro(module, cls):
            init = owner.functions.get(f"{owner_cls}.__init__")
            if init is None or not init.dstar:
                continue
            if not any(call.scope == init.qualname and isinstance(call.value.func, V.Attr)
                       and call.value.func.attr == "update" and isinstance(call.value.func.base, V.Ref)
                       and call.value.func.base.name == "self.__dict__" and call.value.args
                       and isinstance(call.value.args[0], V.Ref) and call.value.args[0].name == init.dstar
                       for call in owner.calls):
                continue
            for candidate in frame.chain():
                if not candidate.bindings or "self" not in candidate.bindings:
                    continue
                value, value_frame = candidate.bindings["self"]
                located = self.deref(value, value_frame)
                if isinstance(located.value, V.Call) and located.value.kwarg(attr) is not None:
                    return Located(located.value.kwarg(attr), located.frame)
                return None
            callers = self._callers.get((id(owner), init.qualname), []) if self._callers is not None else []
            if len(callers) == 1 and callers[0][1].value.kwarg(attr) is not None:
                caller_module, call = callers[0]
                return Located(call.value.kwarg(attr), self.lexical(caller_module, call.scope))
            return None
        return None

    def _constructor_frame(self, module: ModuleFacts, cls: str, frame: Frame, init: str) -> Frame | None:
        """The ``init`` activation (``__init__`` of the class or a base) that built the receiver of the
        method running in ``frame``."""
        for candidate in frame.chain():
            fn = candidate.module.functions.get(candidate.function)
            if fn is None or fn.class_name is None or not candidate.bindings or "self" not in candidate.bindings:
                continue
            if not any(owner_cls == cls for _, owner_cls in self.mro(candidate.module, fn.class_name)):
                continue
            value, value_frame = candidate.bindings["self"]
            located = self.deref(value, value_frame)
            if isinstance(located.value, V.Call):
                found = self._callee(located.value, located.frame)
                if found is not None and found[1].qualname == init and found[0] is module:
                    return Frame(module, init, self.bind(found[1], found[3], located.frame, True, located.value),
                                 located.frame, None)
            return None
        return None

    def import_module(self, importer: ModuleFacts, dotted: str) -> ModuleFacts | None:
        """The checked module that ``import dotted`` loads in ``importer`` (None: not a checked file)."""
        path, count = self.resolver.resolve(importer.path, dotted)
        return self._by_norm.get(path) if path is not None and count == dotted.count(".") + 1 else None

    def _lookup_dotted(self, name: str, importer: ModuleFacts | None) -> tuple[V.Value, ModuleFacts] | None:
        """``pkg.model.build`` imported in ``importer`` -> the function/class/assignment it names
        (memoized: a module spells the same dotted names over and over)."""
        if importer is None:
            return None
        key = (name, id(importer))
        found = self._dotted.get(key, _MISSING)
        if found is _MISSING:
            found = self._dotted[key] = self._lookup_dotted_uncached(name, importer)
        return found

    def _lookup_dotted_uncached(self, name: str, importer: ModuleFacts) -> tuple[V.Value, ModuleFacts] | None:
        path, count = self.resolver.resolve(importer.path, name)
        module = self._by_norm.get(path) if path is not None else None
        if module is None:
            return None
        tail = ".".join(name.split(".")[count:])
        if not tail:
            return None
        head, _, rest = tail.partition(".")
        if head in module.aliases and module.aliases[head] != name.rpartition(".")[0]:
            # `tfv1 = tf.compat.v1` in a compat module: `compat.tfv1.square` is tensorflow.square
            target = module.aliases[head]
            return V.Dotted(catalogue.canonical(f"{target}.{rest}" if rest else target)), module
        if tail in module.functions or tail in module.classes:
            return V.FunctionRef(module.path, tail), module
        if ("", tail) in module.assigns:
            return module.assigns[("", tail)][-1].value, module
        return None

    def lexical(self, module: ModuleFacts, scope: str) -> Frame:
        """A frame for reading a function's code without knowing its callers (one per scope)."""
        key = (id(module), scope)
        frame = self._lexical.get(key)
        if frame is None:
            frame = self._lexical[key] = Frame(module, scope, None if scope else {})
        return frame

    def module_at(self, path: str) -> ModuleFacts | None:
        return self.by_path.get(path)

    def step(self, located: Located) -> Located | None:
        """Follow one name or parameter; None when the value is already final."""
        value, frame = located.value, located.frame
        if isinstance(value, V.Ref):
            module = frame.module if frame is not None else None
            if module is None:
                return Located(V.UNKNOWN, None)
            if "::" in value.scope:
                return self._step_self(module, value, frame)
            resolved = self.lookup_name(module, value.name, value.scope, value.loc)
            return Located(resolved, frame)
        if isinstance(value, V.Param):
            for candidate in (frame.chain() if frame is not None else ()):
                if candidate.module.path == value.module and candidate.function == value.function:
                    if candidate.bindings is None:
                        return self._only_caller_binds(value)
                    bound = candidate.bindings.get(value.name)
                    if bound is not None:
                        return Located(bound[0], bound[1])
                    fn = candidate.module.functions.get(value.function)
                    default = fn.defaults.get(value.name) if fn is not None else None
                    return Located(default if default is not None else V.UNKNOWN, candidate)
            return self._only_caller_binds(value)
        if isinstance(value, V.Attr):
            # `tf.variable_scope` where `tf` is a name that resolves to a module (a star import)
            base = self.deref(value.base, frame)
            if isinstance(base.value, V.Dotted):
                if base.value.name in catalogue.FLAG_CONTAINERS:
                    return self.option_default(value.attr, frame.module if frame is not None else None)
                return Located(V.Dotted(catalogue.canonical(f"{base.value.name}.{value.attr}")), base.frame)
            if self._is_parsed_arguments(base):
                return self.option_default(value.attr, base.frame.module if base.frame is not None else None)
            if value.attr not in _MAPPING_METHODS:
                # `layers.g_bn0` of an attribute dictionary built from (name, layer) pairs
                return self._pairs_value(base)
            return None
        if isinstance(value, V.Subscript) and isinstance(value.index, V.Const) and \
                isinstance(value.index.value, int) and not isinstance(value.index.value, bool):
            return self._item(value, frame)
        if isinstance(value, V.Subscript):
            return self._element(value, frame)
        if isinstance(value, V.Call) and value.args and frame is not None and \
                self.qualname(value.func, frame) in catalogue.IMPORT_MODULE:
            # importlib.import_module(args.model_def) with the option's default a module name
            name = self.deref(value.args[0], frame).value
            if isinstance(name, V.Const) and isinstance(name.value, str) and name.value:
                return Located(V.Dotted(name.value), frame)
            return None
        if isinstance(value, V.Dotted) and value.name.rpartition(".")[0] in catalogue.FLAG_CONTAINERS:
            # `from absl.flags import FLAGS` ... `FLAGS.train_steps`, already spelled out by the import
            return self.option_default(value.name.rpartition(".")[2], frame.module if frame is not None else None)
        if isinstance(value, V.Dotted):
            found = self._lookup_dotted(value.name, frame.module if frame is not None else None)
            if found is not None:
                return Located(found[0], self.lexical(found[1], ""))
        return None

    def _item(self, value: V.Subscript, frame: Frame | None) -> Located | None:
        """``seq[2]`` of a tuple display, and ``f(...)[2]`` (``a, b, c = f(...)``) of what a program
        function returns: the item itself, not the whole tuple."""
        index = value.index.value
        if isinstance(value.base, V.Ref) and self.appended(value.base, frame):
            return None  # a list that grows (`self.outputs.append(out)` ... `self.outputs[-1]`)
        base = self.deref(value.base, frame)
        candidates: list[Located] = []
        if isinstance(base.value, V.Seq):
            candidates = [base]
        elif isinstance(base.value, V.Call):
            child = self.activation(base.value, base.frame)
            if child is not None:
                fn = child.module.functions[child.function]
                candidates = [self.deref(ret, child) for ret in fn.returns]
        if len(candidates) != 1 or not isinstance(candidates[0].value, V.Seq):
            return None
        items = candidates[0].value.items
        if any(isinstance(item, V.Starred) for item in items) or not -len(items) <= index < len(items):
            return None
        return Located(items[index], candidates[0].frame)

    def _element(self, value: V.Subscript, frame: Frame | None) -> Located | None:
        """An element of a container built by a comprehension, whatever the index: ``[bn(i) for i in
        ...][k]``, and the value of a mapping built from (key, value) pairs, ``AttributeDict([("g_bn%i"
        % i, batch_norm(...)) for i in ...])["g_bn%i" % k]``."""
        base = self.deref(value.base, frame)
        found = base.value
        if isinstance(found, V.Call):
            return self._pairs_value(base)
        if isinstance(found, V.Comprehension):
            return Located(found.elt, base.frame)
        return None

    def _pairs_value(self, base: Located) -> Located | None:
        """The value of a mapping built by a call from a comprehension of (key, value) pairs."""
        found = base.value
        if isinstance(found, V.Call) and _pairs_argument(found) is not None:
            maker = self.deref(found.func, base.frame).value
            if isinstance(maker, V.Dotted) and maker.name.split(".", 1)[0] in catalogue.LIBRARY_ROOTS:
                return None   # np.array(pairs), tf.stack(pairs): an array, not a mapping
            pairs = self.deref(found.args[0], base.frame)
            if isinstance(pairs.value, V.Comprehension) and isinstance(pairs.value.elt, V.Seq) and \
                    len(pairs.value.elt.items) == 2:
                return Located(pairs.value.elt.items[1], pairs.frame)
        return None

    @cached_property
    def _options(self) -> dict[str, list[Located]]:
        """Command-line options' defaults: ``parser.add_argument('--steps', default=1000)`` and
        ``tf.app.flags.DEFINE_integer('steps', 1000, ...)``, by option name."""
        found: dict[str, list[Located]] = {}
        for module in self.modules:
            for call in module.calls:
                func = call.value.func
                value = call.value
                if isinstance(func, V.Attr) and func.attr == "add_argument":
                    names = [V.const(arg) for arg in value.args if isinstance(V.const(arg), str)]
                    dest = V.const(value.kwarg("dest")) if value.kwarg("dest") is not None else None
                    option = dest or next((n.lstrip("-").replace("-", "_") for n in names if n.startswith("--")),
                                          names[0].lstrip("-").replace("-", "_") if names else None)
                    default = value.kwarg("default")
                elif isinstance(func, (V.Dotted, V.Attr)) and (func.name if isinstance(func, V.Dotted) else func.attr
                                                               ).rsplit(".", 1)[-1].startswith("DEFINE_"):
                    option = V.const(value.args[0]) if value.args else V.const(value.kwarg("name"))
                    default = value.args[1] if len(value.args) > 1 else value.kwarg("default")
                else:
                    continue
                if isinstance(option, str) and default is not None:
                    found.setdefault(option, []).append(Located(default, self.lexical(module, call.scope)))
        return found

    def option_default(self, name: str, module: ModuleFacts | None = None) -> Located:
        """The default of a command-line option: as the reading module defines it, else as the program
        defines it once (scripts side by side define `--batch_size` each their own way)."""
        defaults = self._options.get(name, [])
        local = [d for d in defaults if module is not None and d.frame is not None and d.frame.module is module]
        for candidates in (local, defaults):
            if candidates:
                finals = {repr(self.deref(d.value, d.frame).value) for d in candidates}
                return candidates[0] if len(finals) == 1 else Located(V.UNKNOWN, None)
        return Located(V.UNKNOWN, None)

    def _is_parsed_arguments(self, located: Located, depth: int = 0) -> bool:
        """``parser.parse_args()`` (or a function of the program that returns it)."""
        value = located.value
        if isinstance(value, V.Subscript) and V.const(value.index) == 0:   # parse_known_args()[0]
            value = self.deref(value.base, located.frame).value
        if not isinstance(value, V.Call):
            return False
        if isinstance(value.func, V.Attr) and value.func.attr in ("parse_args", "parse_known_args"):
            return True
        if depth < 2 and isinstance(value.func, V.Ref) and id(value) not in self._parsing:
            self._parsing.add(id(value))
            try:
                target = self.activation(value, located.frame)
                if target is not None:
                    fn = target.module.functions[target.function]
                    return any(self._is_parsed_arguments(self.deref(ret, target), depth + 1) for ret in fn.returns)
            finally:
                self._parsing.discard(id(value))
        return False

    def _only_caller_binds(self, param: V.Param) -> Located:
        """A parameter read outside any known activation (``self.model`` set from ``__init__``'s argument):
        when the function has exactly one call site, that call's argument is the value; when it has
        several and none passes the parameter, its default."""
        module = self.by_path.get(param.module)
        if module is None or self._callers is None:  # still indexing the call sites
            self._wanted_callers = True
            return Located(V.UNKNOWN, None)
        sites = self._callers.get((id(module), param.function), [])
        fn = module.functions.get(param.function)
        if fn is not None and len(sites) > 1 and param.name in fn.defaults and not any(
                call.value.star or call.value.dstar or param.name in
                self.bind(fn, call.value, self.lexical(caller, call.scope), fn.class_name is not None)
                for caller, call in sites):
            return Located(fn.defaults[param.name], self.lexical(module, param.function))
        if len(sites) != 1 or fn is None:
            return Located(V.UNKNOWN, None)
        caller_module, call = sites[0]
        frame = self.lexical(caller_module, call.scope)
        bound = self.bind(fn, call.value, frame, fn.class_name is not None).get(param.name)
        if bound is not None:
            return Located(bound[0], bound[1])
        default = fn.defaults.get(param.name)
        return Located(default, self.lexical(module, param.function)) if default is not None \
            else Located(V.UNKNOWN, None)

    def deref(self, value: V.Value, frame: Frame | None) -> Located:
        """Follow names and parameters until a value that says what it is (memoized)."""
        key = (id(value), id(frame))
        hit = self._deref.get(key)
        if hit is not None:
            if hit[3]:
                self._wanted_callers = True
            return hit[0]
        if key in self._resolving or len(self._resolving) > MAX_NESTING:
            return Located(V.UNKNOWN, None)   # a value defined through itself (`self.a = self.a.b`)
        self._resolving.add(key)
        outer, self._wanted_callers = self._wanted_callers, False
        try:
            result = self._deref_uncached(value, frame)
        finally:
            self._resolving.discard(key)
            wanted, self._wanted_callers = self._wanted_callers, outer or self._wanted_callers
        # The references keep the ids from being reused; `wanted`: read while the call sites were
        # still being indexed, and so to be read again once they are.
        self._deref[key] = (result, value, frame, wanted)
        return result

    def _deref_uncached(self, value: V.Value, frame: Frame | None) -> Located:
        located = Located(value, frame)
        for _ in range(MAX_DEPTH):
            nxt = self.step(located)
            if nxt is None:
                return located
            located = nxt
        return Located(V.UNKNOWN, None)

    def qualname(self, value: V.Value, frame: Frame | None) -> str | None:
        """The dotted name a callee or constant refers to (``tensorflow.train.Saver``)."""
        final = self.deref(value, frame).value
        if isinstance(final, V.Dotted):
            return final.name
        return None

    def api_of(self, value: V.Value, frame: Frame | None) -> BatchNormAPI | None:
        return catalogue.lookup(self.qualname(value, frame))

    # ------------------------------------------------------------ functions
    def function(self, ref: V.FunctionRef) -> tuple[ModuleFacts, FunctionFact] | None:
        module = self.by_path.get(ref.module)
        if module is None:
            return None
        fn = module.functions.get(ref.function)
        if fn is not None:
            return module, fn
        if ref.function in module.classes:
            return self.method(module, ref.function, "__init__")
        return None

    def callee(self, call: V.Call, frame: Frame | None) -> tuple[ModuleFacts, FunctionFact, bool] | None:
        """The program function a call reaches, and whether ``self`` is bound implicitly."""
        found = self._callee(call, frame)
        return (found[0], found[1], found[2]) if found is not None else None

    def _callee(self, call: V.Call, frame: Frame | None, depth: int = 0
                ) -> tuple[ModuleFacts, FunctionFact, bool, V.Call, V.Value | None] | None:
        """``callee``, the call as the function receives it (a partial's arguments prepended), and the
        object bound to ``self`` (the receiver of a method, the object a constructor builds)."""
        func = self.deref(call.func, frame)
        if isinstance(func.value, V.FunctionRef):
            found = self.function(func.value)
            if found is None:
                return None
            module, fn = found
            if fn.class_name is None:
                return module, fn, False, call, None
            if fn.qualname.endswith(".__init__") and func.value.function in self.by_path[func.value.module].classes:
                return module, fn, True, call, call              # Class(...): self is the new object
            if isinstance(call.func, V.Attr):
                return module, fn, True, call, call.func.base    # obj.method(...)
            if isinstance(call.func, V.Ref) and "::" in call.func.scope and frame is not None:
                return module, fn, True, call, V.Param(frame.module.path, frame.function, "self")
            return module, fn, True, call, None
        if isinstance(func.value, V.Attr):
            base = self.deref(func.value.base, func.frame).value
            if isinstance(base, V.Call):
                cls = self.deref(base.func, func.frame).value
                if isinstance(cls, V.FunctionRef):
                    module = self.by_path.get(cls.module)
                    if module is not None and cls.function in module.classes:
                        found = self.method(module, cls.function, func.value.attr)
                        if found is not None:
                            return found[0], found[1], True, call, base
        if isinstance(func.value, V.Call) and depth < 3:
            inner_func = self.deref(func.value.func, func.frame)
            if isinstance(inner_func.value, V.FunctionRef):
                # Calling an object: `self.d_bn1(h)` with `self.d_bn1 = batch_norm(name='d_bn1')`.
                module = self.by_path.get(inner_func.value.module)
                cls = inner_func.value.function
                if module is not None and cls in module.classes:
                    method = self.method(module, cls, "__call__") or self.method(module, cls, "call")
                    if method is not None:
                        return method[0], method[1], True, call, call.func
            # `tf.make_template('net', net)(x)`, `functools.partial(block, 64)(x)`, `tf.function(step)(x)`
            wrapper = func.value
            spec = catalogue.WRAPS_FUNCTION.get(self.qualname(wrapper.func, func.frame) or "")
            if spec is not None:
                index, keyword = spec
                wrapped = wrapper.kwarg(keyword) or (wrapper.args[index] if len(wrapper.args) > index else None)
                if wrapped is not None:
                    partial = spec is catalogue.WRAPS_FUNCTION["functools.partial"]
                    inner = V.Call(wrapped, (wrapper.args[index + 1:] if partial else ()) + call.args,
                                   (wrapper.kwargs if partial else ()) + call.kwargs, call.star, call.dstar)
                    return self._callee(inner, func.frame, depth + 1)
        return None

    def activation(self, call: V.Call, frame: Frame | None, site: CallFact | None = None) -> Frame | None:
        """The frame of the program function a call runs, with its parameters bound."""
        found = self._callee(call, frame)
        if found is None:
            return None
        module, fn, implicit_self, received, receiver = found
        return Frame(module, fn.qualname, self.bind(fn, received, frame, implicit_self, receiver), frame, site,
                     made_by=call)

    def run_targets(self, module: ModuleFacts, call: CallFact, frame: Frame | None = None
                    ) -> list[tuple[ModuleFacts, FunctionFact]]:
        """The functions a call runs in place without calling them by name: ``tf.map_fn(fn, ...)``,
        ``tf.while_loop(cond, body, ...)``, ``tf.app.run(main)`` (or the module's ``main``)."""
        return self.run_targets_of(call.value, frame or self.lexical(module, call.scope), module, callbacks=True)

    def run_targets_of(self, value: V.Call, frame: Frame | None, module: ModuleFacts | None = None,
                       callbacks: bool = False) -> list[tuple[ModuleFacts, FunctionFact]]:
        module = module or (frame.module if frame is not None else None)
        if module is None:
            return []
        name = self.qualname(value.func, frame) if isinstance(value.func, V.Dotted) else None
        given: list[V.Value] = []
        if name in catalogue.RUNS_FUNCTION:
            for index, keyword in catalogue.RUNS_FUNCTION[name]:
                arg = value.kwarg(keyword) or (value.args[index] if len(value.args) > index else None)
                if arg is not None:
                    given.append(arg)
            if not given and name in catalogue.APP_RUN and "main" in module.functions:
                return [(module, module.functions["main"])]
        elif isinstance(value.func, V.Attr) and value.func.attr in catalogue.RUNS_FUNCTION_METHODS and value.args:
            given.append(value.args[0])
        elif callbacks:
            # A function handed to a framework runs later in the same program:
            # `tf.train.Supervisor(init_fn=restore_fn)`, `threading.Thread(target=worker)`.
            # Handed over by its own name: `x` or `shape` can name no function of the program.
            names = self._callable_names
            given.extend(arg for arg in (*value.args, *(v for _, v in value.kwargs))
                         if isinstance(arg, V.Ref) and arg.name.rpartition(".")[2] in names)
        out = []
        for arg in given:
            target = self.deref(arg, frame).value
            if isinstance(target, V.FunctionRef) and (target.module, target.function) and \
                    target.function not in (self.by_path[target.module].classes if target.module in self.by_path else ()):
                found = self.function(target)
                if found is not None and not found[1].is_lambda:
                    out.append(found)
        return out

    def bind(self, fn: FunctionFact, call: V.Call, frame: Frame | None, implicit_self: bool,
             receiver: V.Value | None = None) -> dict[str, tuple[V.Value, Frame | None]]:
        params = list(fn.params)
        bound: dict[str, tuple[V.Value, Frame | None]] = {}
        if implicit_self and params:
            if receiver is not None:
                bound[params[0]] = (receiver, frame)
            params = params[1:]
        for name, arg in zip(params, call.args):
            bound[name] = (arg, frame)
        for name, arg in call.kwargs:
            bound[name] = (arg, frame)
        for splat in call.dstar:
            located = self.deref(splat, frame)
            if isinstance(located.value, V.Dict):
                for key, item in located.value.items:
                    if isinstance(key, V.Const) and isinstance(key.value, str):
                        bound.setdefault(key.value, (item, located.frame))
        return bound

    @property
    def callers(self) -> dict[tuple[int, str], list[tuple[ModuleFacts, CallFact]]]:
        """(module, function qualname) -> the call sites that reach it, resolved lexically; calls that
        run a function in place (``tf.map_fn(fn)``, ``tf.app.run(main)``) count, with unknown arguments."""
        if self._callers is None:
            # Two rounds, because resolving a callee can need the callers: in `vae = vae_def.Vae(...)`,
            # `vae_def` comes from main's parameter `args`, bound where main is called.  The first round
            # resolves what needs no call site; the second retries the rest with the first's callers.
            callers: dict[tuple[int, str], list[tuple[ModuleFacts, CallFact]]] = {}
            unresolved: list[tuple[ModuleFacts, CallFact]] = []
            for module in self.modules:
                for call in module.calls:
                    self._wanted_callers = False
                    if not self._index_call(callers, module, call) and self._wanted_callers:
                        unresolved.append((module, call))
            self._callers = callers
            self._wanted_callers = False
            # Names that needed a call site are looked up again; the rest stand.
            self._deref = {key: hit for key, hit in self._deref.items() if not hit[3]}
            indexed, standing = sum(map(len, callers.values())), set(self._deref)
            for module, call in unresolved:
                self._index_call(callers, module, call)
            if sum(map(len, callers.values())) != indexed:
                # What the second round read, it read with part of its own call sites.
                self._deref = {key: hit for key, hit in self._deref.items() if key in standing}
        return self._callers

    def targets(self, call: CallFact) -> list[tuple[ModuleFacts, FunctionFact]]:
        """The program functions a call may reach, resolved lexically (computed once, with ``callers``)."""
        self.callers
        return self._targets.get(id(call), [])

    def _index_call(self, callers: dict, module: ModuleFacts, call: CallFact) -> bool:
        targets = self._possible_callees(module, call)
        if targets:
            self._targets[id(call)] = targets
        for callee_module, fn in targets:
            callers.setdefault((id(callee_module), fn.qualname), []).append((module, call))
        if not targets and isinstance(call.value.func, (V.Dotted, V.Attr)):
            for callee_module, fn in self.run_targets(module, call):
                callers.setdefault((id(callee_module), fn.qualname), []).append((module, call))
                self._runners.add(id(call))
                targets.append((callee_module, fn))
        return bool(targets)

    def _possible_callees(self, module: ModuleFacts, call: CallFact) -> list[tuple[ModuleFacts, FunctionFact]]:
        """Every function a call may reach: one, or for ``self.forward(...)`` each method the attribute
        is set to (``self.forward = self.forward_conv`` in one branch, ``self.forward_fc`` in another)."""
        func = call.value.func
        if isinstance(func, V.Attr) and func.attr not in self._callable_names and not (
                isinstance(func.base, V.Ref) and any(isinstance(a.value, V.Call) and _pairs_argument(a.value)
                                                     for a in module.assigns.get((func.base.scope, func.base.name), ()))):
            return []  # `x.get_shape()`: no function or class of the program has that name
        if isinstance(func, V.Ref) and "::" in func.scope:
            assigns = module.assigns.get((func.scope, func.name), ())
            if len(assigns) > 1:
                out = []
                for assign in assigns:
                    found = self.deref(assign.value, self.lexical(module, assign.function)).value
                    if isinstance(found, V.FunctionRef) and (target := self.function(found)) is not None \
                            and target not in out:
                        out.append(target)
                if out:
                    return out
        target = self.callee(call.value, self.lexical(module, call.scope))
        return [(target[0], target[1])] if target is not None else []

    def frames(self, module: ModuleFacts, scope: str, depth: int = 0) -> list[Frame]:
        """Every known activation of ``scope`` (lambdas run in their enclosing function), at most
        MAX_INSTANCES, taken in turn from each call site so that every site is represented."""
        while scope and module.functions.get(scope) is not None and module.functions[scope].is_lambda:
            scope = module.functions[scope].parent
        if not scope:
            return [self.lexical(module, "")]
        key = (id(module), scope, depth)
        memo = self._frames.get(key)
        if memo is not None:
            return memo
        fn = module.functions.get(scope)
        sites = self.callers.get((id(module), scope), [])
        if fn is None or not sites or depth >= MAX_CALL_DEPTH:
            out = [self.lexical(module, scope)]
        else:
            self._frames[key] = [self.lexical(module, scope)]  # recursion stops here
            per_site = [(caller_module, call, self.frames(caller_module, call.scope, depth + 1))
                        for caller_module, call in sites]
            out = []
            for turn in range(max(len(parents) for _, _, parents in per_site)):
                for caller_module, call, parents in per_site:
                    if turn < len(parents) and len(out) < MAX_INSTANCES:
                        out.append(self._activation_frame(module, fn, call, parents[turn]))
        self._frames[key] = out
        return out

    def _activation_frame(self, module: ModuleFacts, fn: FunctionFact, call: CallFact, parent: Frame) -> Frame:
        if id(call) in self._runners:
            bindings: dict[str, tuple[V.Value, Frame | None]] = {}
        else:
            target = self._callee(call.value, parent)
            bindings = self.bind(fn, target[3], parent, target[2], target[4]) if target is not None \
                else self.bind(fn, call.value, parent, False)
        return Frame(module, fn.qualname, bindings, parent, call)

    def sites(self, module: ModuleFacts, call: CallFact) -> list[Site]:
        """Every instantiation of a call, memoized: the same Site objects each time, so analyses keyed
        by a site (its path, its graph) are computed once."""
        key = id(call)
        found = self._sites.get(key)
        if found is None:
            found = self._sites[key] = ([Site(module, call, frame) for frame in self.frames(module, call.scope)], call)
        return found[0]

    # --------------------------------------------------------- batch norms
    @cached_property
    def batch_norms(self) -> list[BatchNormUse]:
        """Every layer the program builds: one per activation of each batch-norm call, less those under
        an ``if`` that activation does not take (``if in_place_update: ... else: batch_norm(...)``)."""
        uses: list[BatchNormUse] = []
        for module in self.modules:
            for call in module.calls:
                for site in self._bn_sites(module, call):
                    if call.branches and self.live(module, call, site.frame) is False:
                        continue
                    uses.extend(self._instantiate(site))
        return uses

    def _bn_sites(self, module: ModuleFacts, call: CallFact) -> list[Site]:
        func = call.value.func
        # Cheapest screen: an imported name or a method says what it is by its spelling.
        if isinstance(func, V.Dotted) and func.name not in _BN_NAMES and call.value.kwarg("normalizer_fn") is None \
                and not func.name.startswith(catalogue.SLIM_NETS_PREFIXES) \
                and self._lookup_dotted(func.name, module) is None:  # (a name defined in a checked module may be a partial)
            return []
        if isinstance(func, V.Attr) and func.attr not in catalogue.BN_WORDS \
                and call.value.kwarg("normalizer_fn") is None:
            return []
        # Then a lexical reading, before instantiating anything.
        lexical = self.deref(func, self.lexical(module, call.scope))
        value = lexical.value
        if isinstance(value, V.Dotted):
            if value.name in catalogue.ARG_SCOPE:
                return []  # configures layers; the layers it configures are the uses
            if catalogue.lookup(value.name) is not None or value.name in catalogue.SLIM_NORMALIZED_LAYERS \
                    or call.value.kwarg("normalizer_fn") is not None or value.name.startswith(catalogue.SLIM_NETS_PREFIXES):
                return self.sites(module, call)
            return []
        if isinstance(value, V.Call):
            inner = self.deref(value.func, lexical.frame).value
            if isinstance(inner, V.Dotted) and (inner.name in catalogue.PARTIAL or catalogue.lookup(inner.name)) \
                    or self.layer_subclass(inner) is not None:
                return self.sites(module, call)
            return []
        if self.layer_subclass(value) is not None:
            return self.sites(module, call)
        if call.value.kwarg("normalizer_fn") is not None:
            return self.sites(module, call)
        return []

    def _instantiate(self, site: Site) -> list[BatchNormUse]:
        call = site.call.value
        located = self.deref(call.func, site.frame)
        value = located.value
        extra: list[tuple[V.Value, Frame | None, tuple | None]] = []  # dicts of defaults, lowest priority first
        how = "direct"
        api: BatchNormAPI | None = None
        target_call = call
        if isinstance(value, V.Call):
            inner = self.deref(value.func, located.frame)
            inner_name = inner.value.name if isinstance(inner.value, V.Dotted) else None
            if inner_name in catalogue.PARTIAL and value.args:
                api = self.api_of(value.args[0], located.frame)
                how = "partial"
                extra.append((V.Dict(tuple((V.Const(k), v) for k, v in value.kwargs)), located.frame, None))
            elif (layer := catalogue.lookup(inner_name) or self.layer_subclass(inner.value)) is not None \
                    and layer.kind == catalogue.LAYER:
                # `BatchNormalization(...)(x, training=...)`: the layer applied where it is built.
                api = layer
                use = BatchNormUse(api, site, "apply")
                self._read_args(use, api.params, value, located.frame)
                self._read_call_args(use, call, site.frame)
                return [use]
        elif isinstance(value, V.Dotted):
            api = catalogue.lookup(value.name)
            if api is None and value.name.startswith(catalogue.SLIM_NETS_PREFIXES):
                # A slim network from the library: its conv layers take the arg_scope's normalizer.
                return self._normalized_layer(site, value.name, library=True)
            if api is None:
                # A slim layer with normalizer_fn=batch_norm, explicitly or from an arg_scope.
                return self._normalized_layer(site, value.name)
        else:
            api = self.layer_subclass(value)
        if api is None or api.kind == catalogue.OP and how != "direct":
            return []
        use = BatchNormUse(api, site, how)
        use.unknown_args = self._unreadable_arg_scope(site)
        for ctx_value, frame, source in self._arg_scope_defaults(site, api):
            extra.insert(0, (ctx_value, frame, source))
        for defaults, frame, source in extra:
            self._merge_dict(use, defaults, frame, source)
        if api.kind == catalogue.LAYER:
            use.how = "construct"
        self._read_args(use, api.params, target_call, site.frame)
        return [use]

    def _read_args(self, use: BatchNormUse, params: tuple[str, ...], call: V.Call, frame: Frame | None) -> None:
        forwarded = self._forwarded(call, frame)
        if forwarded is not None:
            call, frame = forwarded
        for name, arg in zip(params, call.args):
            use.args[name] = Located(arg, frame)
            use.sources.pop(name, None)
        if call.star:
            use.unknown_args = True
        for name, arg in call.kwargs:
            use.args[name] = Located(arg, frame)
            use.sources.pop(name, None)
        for splat in call.dstar:
            if not self._merge_dict(use, splat, frame):
                use.unknown_args = True

    def _forwarded(self, call: V.Call, frame: Frame | None) -> tuple[V.Call, Frame | None] | None:
        """``tf.layers.batch_normalization(*args, **kwargs)`` in ``def batch_normalization(*args,
        **kwargs)``: the call as its caller made it (the wrapper's own arguments first, then what it
        forwards).  None when the call forwards nothing, or nothing is known of the caller."""
        if frame is None or frame.site is None or frame.parent is None or not (call.star or call.dstar):
            return None
        fn = frame.module.functions.get(frame.function)
        if fn is None or len(call.star) > 1 or len(call.dstar) > 1:
            return None
        star = call.star[0] if call.star else None
        dstar = call.dstar[0] if call.dstar else None
        if star is not None and not (isinstance(star, V.Ref) and fn.star and star.name == fn.star) or \
                dstar is not None and not (isinstance(dstar, V.Ref) and fn.dstar and dstar.name == fn.dstar):
            return None
        outer = frame.site.value
        if outer.star or outer.dstar:
            return None
        taken = (fn.positional if fn.positional >= 0 else len(fn.params)) - (1 if fn.class_name else 0)
        args = tuple(Located(a, frame) for a in call.args)
        if star is not None:
            args += tuple(Located(a, frame.parent) for a in outer.args[max(taken, 0):])
        kwargs = [(k, Located(v, frame)) for k, v in call.kwargs]
        if dstar is not None:
            kwargs += [(k, Located(v, frame.parent)) for k, v in outer.kwargs if k not in fn.params]
        frames = {id(located.frame) for located in (*args, *(v for _, v in kwargs))}
        if len(frames) > 1:
            return None   # arguments from two frames: not one call to read
        return V.Call(call.func, tuple(a.value for a in args), tuple((k, v.value) for k, v in kwargs),
                      loc=call.loc), (frame.parent if frames == {id(frame.parent)} else frame)

    def _read_call_args(self, use: BatchNormUse, call: V.Call, frame: Frame | None) -> None:
        """Arguments given when a layer object is applied (Keras: ``layer(x, training=...)``)."""
        for name, arg in zip(use.api.call_params, call.args):
            use.args[f"call:{name}"] = Located(arg, frame)
        for name, arg in call.kwargs:
            use.args[f"call:{name}"] = Located(arg, frame)

    def _merge_dict(self, use: BatchNormUse, value: V.Value, frame: Frame | None,
                    source: tuple[ModuleFacts, int] | None = None) -> bool:
        located = self.deref(value, frame)
        if not isinstance(located.value, V.Dict):
            return False
        if source is None and located.frame is not None:
            loc = next((loc for loc, d in located.frame.module.dicts if d is located.value), None)
            source = (located.frame.module, loc) if loc is not None else None
        for key, item in located.value.items:
            if key is None:
                if not self._merge_dict(use, item, located.frame):
                    use.unknown_args = True
            elif isinstance(key, V.Const) and isinstance(key.value, str):
                use.args[key.value] = Located(item, located.frame)
                if source is not None:
                    use.sources[key.value] = source
                else:
                    use.sources.pop(key.value, None)
        return True

    def _arg_scope_defaults(self, site: Site, api: BatchNormAPI
                            ) -> list[tuple[V.Value, Frame | None, tuple[ModuleFacts, int]]]:
        """``slim.arg_scope([slim.batch_norm], decay=...)`` around the call, innermost first."""
        found: list[tuple[V.Value, Frame | None, tuple[ModuleFacts, int]]] = []
        for (funcs, kwargs, ctx_frame), frame, ctx in self.arg_scopes(site):
            if any(self.api_of(f, ctx_frame) is api for f in funcs):
                found.append((kwargs, ctx_frame, (frame.module, ctx.loc)))
        found.reverse()
        return found

    def _unreadable_arg_scope(self, site: Site) -> bool:
        """An arg_scope around the call whose contents bnaudit cannot read (a library's scope)."""
        return any(funcs == [V.UNKNOWN] for (funcs, _, _), _, _ in self.arg_scopes(site))

    def arg_scopes(self, site: Site) -> list[tuple[tuple[list[V.Value], V.Value, Frame | None], Frame, ContextFact]]:
        out = []
        for ctx, frame in site.contexts():
            value = self.deref(ctx.value, frame)
            if not isinstance(value.value, V.Call):
                continue
            if self.qualname(value.value.func, value.frame) not in catalogue.ARG_SCOPE:
                continue
            scopes = [value]
            first = value.value.args[0] if value.value.args else None
            inner = self.deref(first, value.frame) if first is not None else None
            if inner is not None and isinstance(inner.value, V.Call):
                # `with slim.arg_scope(resnet_arg_scope(is_training=False)):` -- the scope a function
                # returns (`with slim.arg_scope(...) as sc: return sc`), with its outer scopes; one that
                # cannot be read sets unknown arguments.
                scopes = self._returned_arg_scopes(inner)
                if not scopes:
                    out.append((([V.UNKNOWN], V.Dict(()), value.frame), frame, ctx))
                    continue
            for scope in scopes:
                call = scope.value
                funcs_value = call.args[0] if call.args else call.kwarg("list_ops_or_scope")
                funcs = self.deref(funcs_value, scope.frame).value if funcs_value is not None else V.UNKNOWN
                items = list(funcs.items) if isinstance(funcs, V.Seq) else [funcs]
                kwargs = V.Dict(tuple((V.Const(k), v) for k, v in call.kwargs)
                                + tuple((None, d) for d in call.dstar))
                out.append(((items, kwargs, scope.frame), frame, ctx))
        return out

    def _returned_arg_scopes(self, located: Located) -> list[Located]:
        child = self.activation(located.value, located.frame)
        if child is None:
            return []
        module, fn = child.module, child.module.functions[child.function]
        for ret in fn.returns:
            if not isinstance(ret, V.Ref):
                continue
            for assign in module.assigns.get((fn.qualname, ret.name), ()):
                if not (isinstance(assign.value, V.Call) and self.qualname(assign.value.func, child)
                        in catalogue.ARG_SCOPE):
                    continue
                outer = [Located(module.contexts[loc].value, child) for loc in assign.ctx]
                return [scope for scope in outer if isinstance(scope.value, V.Call) and
                        self.qualname(scope.value.func, child) in catalogue.ARG_SCOPE] + [Located(assign.value, child)]
        return []

    def _normalized_layer(self, site: Site, layer_name: str, library: bool = False) -> list[BatchNormUse]:
        call = site.call.value
        normalizer = None if library else call.kwarg("normalizer_fn")
        params_value = None if library else call.kwarg("normalizer_params")
        frame: Frame | None = site.frame
        params_frame: Frame | None = site.frame
        if normalizer is None or params_value is None:
            # arg_scope supplies each keyword the call does not give (`conv2d(..., normalizer_fn=fn)`
            # still takes the scope's normalizer_params).
            for (funcs, kwargs, ctx_frame), _, _ in reversed(self.arg_scopes(site)):
                if any(self.qualname(f, ctx_frame) == layer_name or library and self.qualname(f, ctx_frame)
                       in catalogue.SLIM_NORMALIZED_LAYERS for f in funcs):
                    assert isinstance(kwargs, V.Dict)
                    for key, item in kwargs.items:
                        if isinstance(key, V.Const) and key.value == "normalizer_fn" and normalizer is None:
                            normalizer, frame = item, ctx_frame
                        if isinstance(key, V.Const) and key.value == "normalizer_params" and params_value is None:
                            params_value, params_frame = item, ctx_frame
        if normalizer is None:
            return []
        api = self.api_of(normalizer, frame)
        if api is None or api.kind == catalogue.OP:
            return []
        use = BatchNormUse(api, site, "normalizer_fn")
        use.unknown_args = self._unreadable_arg_scope(site)
        for defaults, ctx_frame, source in self._arg_scope_defaults(site, api):
            self._merge_dict(use, defaults, ctx_frame, source)
        if params_value is not None and not self._merge_dict(use, params_value, params_frame):
            if not (isinstance(params_value, V.Const) and params_value.value is None):
                use.unknown_args = True
        return [use]

    # ------------------------------------------------------------- helpers
    def truth(self, value: V.Value, frame: Frame | None) -> bool | None:
        """The truth value of a condition in an activation, when it is a Python constant there."""
        if isinstance(value, V.Unary) and value.op == "not":
            inner = self.truth(value.operand, frame)
            return None if inner is None else not inner
        if isinstance(value, V.Compare):
            left, right = self.deref(value.left, frame).value, self.deref(value.right, frame).value
            if not (isinstance(left, V.Const) and isinstance(right, V.Const)) or \
                    self._either_way(value.left, frame) or self._either_way(value.right, frame):
                return None
            a, b = left.value, right.value
            return {"==": a == b, "!=": a != b, "is": a is b, "is not": a is not b}[value.op]
        final = self.deref(value, frame).value
        if isinstance(final, V.Const) and not self._either_way(value, frame):
            return bool(final.value)
        return None

    def _either_way(self, value: V.Value, frame: Frame | None) -> bool:
        """A name on the way to the value holds different constants by the branch that set it
        (``if args.bn == "1": bn = True`` / ``else: bn = False``), which ``deref``'s last assignment hides."""
        located = Located(value, frame)
        for _ in range(MAX_DEPTH):
            if isinstance(located.value, V.Ref):
                held = {repr(V.const(self.deref(option.value, option.frame).value, V.UNKNOWN))
                        for option in self.alternatives(located.value, located.frame)}
                if len(held) > 1:
                    return True
            located = self.step(located)
            if located is None:
                return False
        return False

    def live(self, module: ModuleFacts, call: CallFact, frame: Frame | None) -> bool | None:
        """Whether the call runs in this activation: False when an ``if`` around it takes the other arm
        (``if reuse: scope.reuse_variables()`` with ``reuse=False``), None when a condition is unknown."""
        state: bool | None = True
        for if_loc, arm in call.branches:
            condition = module.ifs.get(if_loc)
            taken = self.truth(condition, frame) if condition is not None else None
            if taken is None:
                state = None
            elif taken != (arm == 0):
                return False
        return state

    def arg(self, use: BatchNormUse, name: str | None) -> Located | None:
        if name is None:
            return None
        located = use.args.get(name)
        if located is None:
            return None
        return self.deref(located.value, located.frame)

    @cached_property
    def _calls_by_name(self) -> dict[str, list[tuple[ModuleFacts, CallFact]]]:
        self.callers  # names that need a call site resolve only once the call sites are known
        out: dict[str, list[tuple[ModuleFacts, CallFact]]] = {}
        for module in self.modules:
            for call in module.calls:
                name = self.qualname(call.value.func, self.lexical(module, call.scope))
                if name is not None:
                    out.setdefault(name, []).append((module, call))
        return out

    def calls_to(self, names: Iterable[str], module: ModuleFacts | None = None
                 ) -> list[tuple[ModuleFacts, CallFact]]:
        """The calls whose callee reads, lexically, as one of ``names`` (``tensorflow.cond``), in program
        order: an index built once, so that rules need not resolve every call of every module."""
        found = [hit for name in names for hit in self._calls_by_name.get(name, ())
                 if module is None or hit[0] is module]
        if len(found) > 1 and len(names) > 1:
            order = self._module_order
            found.sort(key=lambda hit: (order[id(hit[0])], hit[1].loc))
        return found

    def calls_named(self, predicate) -> list[tuple[ModuleFacts, CallFact]]:
        """The calls whose callee's dotted name satisfies ``predicate`` (``endswith("TrainSpec")``)."""
        return self.calls_to([name for name in self._calls_by_name if predicate(name)])

    @cached_property
    def _module_order(self) -> dict[int, int]:
        return {id(module): index for index, module in enumerate(self.modules)}

    def call_sites_in(self, module: ModuleFacts, start: int, end: int) -> Iterator[CallFact]:
        for call in module.calls:
            if start < call.loc <= end:
                yield call


def _seen_here(assigns: list, function: str, loc: int) -> list:
    """The assignments of ``self.x`` a read at ``loc`` in ``function`` sees: those made before it in the
    same function when there are any (`self.d1 = deconv(...)` then `bn(self.d1)`, in both generator()
    and sampler()), none of this function's later ones (`self.sampler = self.sampler(z)` calls the
    method, then replaces it), else every one made elsewhere."""
    here = [a for a in assigns if a.function == function]
    if not here:
        return assigns
    before = [a for a in here if a.loc < loc]
    if before:
        return before
    return [a for a in assigns if a.function != function]


def _flipped_later(assigns: list, seen, function: str, loc: int) -> bool:
    """``self.reuse = True`` after ``reuse=self.reuse`` in the same method: a flag the method sets for
    its next call (``self.reuse = False`` in ``__init__``), so one read holds a different constant on
    the first call and on later ones.  Only constants: ``self.sampler = self.sampler(z)`` replaces a
    method once and is not a flag."""
    if function == seen.function and seen.loc < loc:
        return False
    later = {repr(V.const(a.value)) for a in assigns
             if a.function == function and a.loc > loc and V.is_const(a.value)}
    return bool(later - {repr(V.const(seen.value))}) if later else False


def _pairs_argument(call: V.Call) -> V.Comprehension | None:
    """``Mapping([(key, value) for ...])``: the comprehension of pairs a call is given alone."""
    if len(call.args) == 1 and not call.kwargs and isinstance(call.args[0], V.Comprehension) and \
            isinstance(call.args[0].elt, V.Seq) and len(call.args[0].elt.items) == 2:
        return call.args[0]
    return None

