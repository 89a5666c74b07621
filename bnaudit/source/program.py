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
from typing import Iterator

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
MAX_DEPTH = 16          # steps when following a value through names and parameters
MAX_CALL_DEPTH = 4      # caller levels when instantiating a function's calls
MAX_INSTANCES = 16      # instantiations of one call site


@dataclass(eq=False)
class Frame:
    """One activation of a function: where it was called from and what its parameters are."""
    module: ModuleFacts
    function: str                                  # qualname ("" for module level)
    bindings: dict[str, tuple[V.Value, "Frame | None"]] | None = None  # None: callers unknown
    parent: "Frame | None" = None                  # the caller's frame
    site: CallFact | None = None                   # the call in the caller that created this frame

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

    @cached_property
    def chain(self) -> list[tuple[ModuleFacts, CallFact]]:
        """The call sites from the program's top level down to the batch-norm call."""
        frames = list(self.site.frame.chain())
        out = [(frame.parent.module, frame.site) for frame in reversed(frames)
               if frame.site is not None and frame.parent is not None]
        out.append((self.module, self.call))
        return out

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
        self._deref: dict[tuple[int, int], tuple[Located, V.Value, Frame | None]] = {}
        self._methods: dict[int, dict[tuple[str, str], str]] = {}

    # ------------------------------------------------------------ resolving
    def lookup_name(self, module: ModuleFacts, name: str, scope: str, loc: int) -> V.Value:
        """What a bare name means at ``loc`` in ``scope``: an assignment, a parameter, a def."""
        current = scope
        while True:
            assigns = module.assigns.get((current, name))
            if assigns:
                before = [a for a in assigns if a.loc < loc] if current == scope else []
                return (before or assigns)[-1].value if current == scope else assigns[-1].value
            fn = module.functions.get(current) if current else None
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
            if target is not None and (("", name) in target.assigns or name in target.functions):
                return self.lookup_name(target, name, "", 1 << 62)
        if name in _BUILTINS:
            return V.Dotted(f"builtins.{name}")
        return V.UNKNOWN

    def _lookup_self(self, module: ModuleFacts, ref: V.Ref) -> V.Value:
        assigns = module.assigns.get((ref.scope, ref.name))
        if assigns:
            return assigns[-1].value
        methods = self._methods.get(id(module))
        if methods is None:
            methods = self._methods[id(module)] = {
                (fn.class_name, qualname.rsplit(".", 1)[-1]): qualname
                for qualname, fn in module.functions.items() if fn.class_name}
        qualname = methods.get((ref.scope.rsplit("::", 1)[0], ref.name.split(".", 1)[1]))
        return V.FunctionRef(module.path, qualname) if qualname else V.UNKNOWN

    def import_module(self, importer: ModuleFacts, dotted: str) -> ModuleFacts | None:
        """The checked module that ``import dotted`` loads in ``importer`` (None: not a checked file)."""
        path, count = self.resolver.resolve(importer.path, dotted)
        return self._by_norm.get(path) if path is not None and count == dotted.count(".") + 1 else None

    def _lookup_dotted(self, name: str, importer: ModuleFacts | None) -> tuple[V.Value, ModuleFacts] | None:
        """``pkg.model.build`` imported in ``importer`` -> the function/class/assignment it names."""
        if importer is None:
            return None
        path, count = self.resolver.resolve(importer.path, name)
        module = self._by_norm.get(path) if path is not None else None
        if module is None:
            return None
        tail = ".".join(name.split(".")[count:])
        if not tail:
            return None
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
                return Located(self._lookup_self(module, value), frame)
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
        if isinstance(value, V.Dotted):
            found = self._lookup_dotted(value.name, frame.module if frame is not None else None)
            if found is not None:
                return Located(found[0], self.lexical(found[1], ""))
        return None

    def _only_caller_binds(self, param: V.Param) -> Located:
        """A parameter read outside any known activation (``self.model`` set from ``__init__``'s argument):
        when the function has exactly one call site, that call's argument is the value."""
        module = self.by_path.get(param.module)
        if module is None or self._callers is None:  # still indexing the call sites
            return Located(V.UNKNOWN, None)
        sites = self._callers.get((id(module), param.function), [])
        fn = module.functions.get(param.function)
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
            return hit[0]
        result = self._deref_uncached(value, frame)
        self._deref[key] = (result, value, frame)  # the references keep the ids from being reused
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
        init = module.functions.get(f"{ref.function}.__init__")
        if init is not None:
            return module, init
        return None

    def callee(self, call: V.Call, frame: Frame | None) -> tuple[ModuleFacts, FunctionFact, bool] | None:
        """The program function a call reaches, and whether ``self`` is bound implicitly."""
        func = self.deref(call.func, frame)
        if isinstance(func.value, V.FunctionRef):
            found = self.function(func.value)
            if found is None:
                return None
            module, fn = found
            return module, fn, fn.class_name is not None
        if isinstance(func.value, V.Attr):
            base = self.deref(func.value.base, func.frame).value
            if isinstance(base, V.Call):
                cls = self.deref(base.func, func.frame).value
                if isinstance(cls, V.FunctionRef):
                    module = self.by_path.get(cls.module)
                    if module is not None:
                        fn = module.functions.get(f"{cls.function}.{func.value.attr}")
                        if fn is not None:
                            return module, fn, True
        return None

    def bind(self, fn: FunctionFact, call: V.Call, frame: Frame | None, implicit_self: bool
             ) -> dict[str, tuple[V.Value, Frame | None]]:
        params = list(fn.params)
        if implicit_self and params:
            params = params[1:]
        bound: dict[str, tuple[V.Value, Frame | None]] = {}
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
        """(module, function qualname) -> the call sites that reach it, resolved lexically."""
        if self._callers is None:
            callers: dict[tuple[int, str], list[tuple[ModuleFacts, CallFact]]] = {}
            for module in self.modules:
                for call in module.calls:
                    target = self.callee(call.value, self.lexical(module, call.scope))
                    if target is not None:
                        callee_module, fn, _ = target
                        callers.setdefault((id(callee_module), fn.qualname), []).append((module, call))
            self._callers = callers
            # Parameters read outside their activations resolve through call sites from now on.
            self._deref.clear()
        return self._callers

    def frames(self, module: ModuleFacts, scope: str, depth: int = 0) -> list[Frame]:
        """Every known activation of ``scope`` (lambdas run in their enclosing function)."""
        while scope and module.functions.get(scope) is not None and module.functions[scope].is_lambda:
            scope = module.functions[scope].parent
        if not scope:
            return [self.lexical(module, "")]
        fn = module.functions.get(scope)
        sites = self.callers.get((id(module), scope), [])
        if fn is None or not sites or depth >= MAX_CALL_DEPTH:
            return [self.lexical(module, scope)]
        out: list[Frame] = []
        for caller_module, call in sites:
            for parent in self.frames(caller_module, call.scope, depth + 1):
                target = self.callee(call.value, parent)
                implicit_self = target[2] if target is not None else False
                out.append(Frame(module, scope, self.bind(fn, call.value, parent, implicit_self), parent, call))
                if len(out) >= MAX_INSTANCES:
                    return out
        return out

    def sites(self, module: ModuleFacts, call: CallFact) -> list[Site]:
        return [Site(module, call, frame) for frame in self.frames(module, call.scope)]

    # --------------------------------------------------------- batch norms
    @cached_property
    def batch_norms(self) -> list[BatchNormUse]:
        uses: list[BatchNormUse] = []
        for module in self.modules:
            for call in module.calls:
                for site in self._bn_sites(module, call):
                    uses.extend(self._instantiate(site))
        return uses

    def _bn_sites(self, module: ModuleFacts, call: CallFact) -> list[Site]:
        func = call.value.func
        # Cheapest screen: an imported name or a method says what it is by its spelling.
        if isinstance(func, V.Dotted) and func.name not in _BN_NAMES and call.value.kwarg("normalizer_fn") is None \
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
                    or call.value.kwarg("normalizer_fn") is not None:
                return self.sites(module, call)
            return []
        if isinstance(value, V.Call):
            inner = self.deref(value.func, lexical.frame).value
            if isinstance(inner, V.Dotted) and (inner.name in catalogue.PARTIAL or catalogue.lookup(inner.name)):
                return self.sites(module, call)
            return []
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
            elif catalogue.lookup(inner_name) is not None and catalogue.lookup(inner_name).kind == catalogue.LAYER:
                # `BatchNormalization(...)(x, training=...)`: the layer applied where it is built.
                api = catalogue.lookup(inner_name)
                use = BatchNormUse(api, site, "apply")
                self._read_args(use, api.params, value, located.frame)
                self._read_call_args(use, call, site.frame)
                return [use]
        elif isinstance(value, V.Dotted):
            api = catalogue.lookup(value.name)
            if api is None:
                # A slim layer with normalizer_fn=batch_norm, explicitly or from an arg_scope.
                return self._normalized_layer(site, value.name)
        if api is None or api.kind == catalogue.OP and how != "direct":
            return []
        use = BatchNormUse(api, site, how)
        for ctx_value, frame, source in self._arg_scope_defaults(site, api):
            extra.insert(0, (ctx_value, frame, source))
        for defaults, frame, source in extra:
            self._merge_dict(use, defaults, frame, source)
        if api.kind == catalogue.LAYER:
            use.how = "construct"
        self._read_args(use, api.params, target_call, site.frame)
        return [use]

    def _read_args(self, use: BatchNormUse, params: tuple[str, ...], call: V.Call, frame: Frame | None) -> None:
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

    def arg_scopes(self, site: Site) -> list[tuple[tuple[list[V.Value], V.Value, Frame | None], Frame, ContextFact]]:
        out = []
        for ctx, frame in site.contexts():
            value = self.deref(ctx.value, frame)
            if not isinstance(value.value, V.Call):
                continue
            if self.qualname(value.value.func, value.frame) not in catalogue.ARG_SCOPE:
                continue
            call = value.value
            funcs_value = call.args[0] if call.args else call.kwarg("list_ops_or_scope")
            funcs = self.deref(funcs_value, value.frame).value if funcs_value is not None else V.UNKNOWN
            items = list(funcs.items) if isinstance(funcs, V.Seq) else [funcs]
            kwargs = V.Dict(tuple((V.Const(k), v) for k, v in call.kwargs)
                            + tuple((None, d) for d in call.dstar))
            out.append(((items, kwargs, value.frame), frame, ctx))
        return out

    def _normalized_layer(self, site: Site, layer_name: str) -> list[BatchNormUse]:
        call = site.call.value
        normalizer = call.kwarg("normalizer_fn")
        params_value = call.kwarg("normalizer_params")
        frame: Frame | None = site.frame
        params_frame: Frame | None = site.frame
        if normalizer is None:
            for (funcs, kwargs, ctx_frame), _, _ in reversed(self.arg_scopes(site)):
                if any(self.qualname(f, ctx_frame) == layer_name for f in funcs):
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
        for defaults, ctx_frame, source in self._arg_scope_defaults(site, api):
            self._merge_dict(use, defaults, ctx_frame, source)
        if params_value is not None and not self._merge_dict(use, params_value, params_frame):
            if not (isinstance(params_value, V.Const) and params_value.value is None):
                use.unknown_args = True
        return [use]

    # ------------------------------------------------------------- helpers
    def arg(self, use: BatchNormUse, name: str | None) -> Located | None:
        if name is None:
            return None
        located = use.args.get(name)
        if located is None:
            return None
        return self.deref(located.value, located.frame)

    def call_sites_in(self, module: ModuleFacts, start: int, end: int) -> Iterator[CallFact]:
        for call in module.calls:
            if start < call.loc <= end:
                yield call
