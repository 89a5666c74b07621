"""Questions rules ask about values: is it a tensor, the UPDATE_OPS collection, a scope?

Each answer is True, False, or (for three-valued helpers) None when bnaudit
cannot tell; rules report only on definite answers.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from bnaudit import catalogue
from bnaudit.signatures import GET_COLLECTION, LAYER_CALL, VARIABLE_SCOPE, arg
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Frame, Located, Program, Site

_TENSOR_METHODS = frozenset({"placeholder", "placeholder_with_default", "Variable", "get_variable"})


def contains(program: Program, value: V.Value, frame: Frame | None,
             predicate: Callable[[V.Value, Frame | None], bool], depth: int = 0,
             opaque: V.Value | None = None) -> bool:
    """Whether ``value`` or anything it is built from (lists, sums, call arguments) satisfies ``predicate``.

    ``opaque`` is a value whose own ingredients do not count (a train op's loss is not run with it).
    """
    if depth > 8:
        return False
    located = program.deref(value, frame)
    current, current_frame = located.value, located.frame
    if predicate(current, current_frame):
        return True
    if isinstance(value, V.Ref) and isinstance(current, (V.Seq, V.Dict)) and any(
            contains(program, added.value, added.frame, predicate, depth + 1, opaque)
            for added in program.appended(value, frame)):
        return True   # `outputs = []` ... `outputs.append(head(x))`
    if current is not opaque and isinstance(
            current, (V.Seq, V.Starred, V.BinOp, V.Call, V.Dict, V.Subscript, V.Comprehension, V.Opaque)):
        return any(contains(program, child, current_frame, predicate, depth + 1, opaque)
                   for child in current.children())
    return False


ANY_COLLECTION = "*"


def update_collection(program: Program, value: V.Value, frame: Frame | None) -> str | None:
    """Which updates a value holds: ``update_ops`` for tf.GraphKeys.UPDATE_OPS, a custom collection's
    name, ``*`` for Keras ``model.updates`` (all of them), or None when it is not update ops."""
    if isinstance(value, V.Attr) and value.attr == "updates":
        return ANY_COLLECTION
    if not isinstance(value, V.Call) or program.qualname(value.func, frame) not in catalogue.GET_COLLECTION:
        return None
    key_value = arg(value, GET_COLLECTION, "key")
    key = program.deref(key_value, frame).value if key_value is not None else None
    if isinstance(key, V.Dotted) and key.name in catalogue.UPDATE_OPS_KEYS:
        return catalogue.UPDATE_OPS_LITERAL
    if isinstance(key, V.Const) and isinstance(key.value, str):
        return key.value
    return None


def update_collections_in(program: Program, value: V.Value, frame: Frame | None,
                          opaque: V.Value | None = None) -> list[tuple[str, V.Value]]:
    """Every update-ops value inside ``value`` (not looking inside ``opaque``), with its collection."""
    found: list[tuple[str, V.Value]] = []

    def predicate(v: V.Value, f: Frame | None) -> bool:
        key = update_collection(program, v, f)
        if key is not None:
            found.append((key, v))
        return False

    contains(program, value, frame, predicate, opaque=opaque)
    return found


def is_tensor(program: Program, value: V.Value, frame: Frame | None) -> bool:
    """A value that is a tensor while the graph is built: a placeholder, a variable, an op's result."""
    located = program.deref(value, frame)
    current = located.value
    if isinstance(current, V.Call):
        name = program.qualname(current.func, located.frame)
        if name is None:
            return False
        if name in catalogue.TENSOR_FACTORIES:
            return True
        return name.startswith(("tensorflow.math.", "tensorflow.nn.")) \
            or name.rsplit(".", 1)[-1] in _TENSOR_METHODS and name.startswith("tensorflow.")
    return False


def const_value(program: Program, located: Located | None, default=None):
    """The Python literal a value resolves to, or ``default``."""
    if located is None:
        return default
    final = program.deref(located.value, located.frame).value
    return final.value if isinstance(final, V.Const) else default


def is_auto_reuse(program: Program, located: Located | None) -> bool:
    if located is None:
        return False
    final = program.deref(located.value, located.frame).value
    return isinstance(final, V.Dotted) and final.name in catalogue.AUTO_REUSE


def reuse_state(program: Program, located: Located | None) -> bool | None:
    """True (reuse), False (create), or None (not a Python constant)."""
    if located is None:
        return False
    if is_auto_reuse(program, located):
        return True
    final = program.deref(located.value, located.frame).value
    if isinstance(final, V.Const) and final.value in (True, False, None):
        return bool(final.value)
    return None


def variable_scopes(program: Program, site: Site) -> list[tuple[V.Call, Frame | None, int]]:
    """The ``tf.variable_scope(...)`` items around a site, outermost first, with their with-item locs."""
    out = []
    for ctx, frame in site.contexts():
        located = program.deref(ctx.value, frame)
        if isinstance(located.value, V.Call) and \
                program.qualname(located.value.func, located.frame) in catalogue.VARIABLE_SCOPE:
            out.append((located.value, located.frame, ctx.loc))
    return out


def scope_name(program: Program, value: V.Value | None, frame: Frame | None, depth: int = 0) -> str | None:
    """The name a scope argument gives variables, or None when unknown.

    A ``VariableScope`` object (``with tf.variable_scope('x') as vs``) names by its own name.
    """
    if value is None or depth > 4:
        return None
    located = program.deref(value, frame)
    final = located.value
    if isinstance(final, V.Const) and isinstance(final.value, str):
        return final.value
    if isinstance(final, V.Call) and program.qualname(final.func, located.frame) in catalogue.VARIABLE_SCOPE:
        inner = arg(final, VARIABLE_SCOPE, "name_or_scope")
        return scope_name(program, inner, located.frame, depth + 1)
    return None


def is_name_scope(program: Program, value: V.Value | None, frame: Frame | None) -> bool:
    if value is None:
        return False
    located = program.deref(value, frame)
    return isinstance(located.value, V.Call) and \
        program.qualname(located.value.func, located.frame) in catalogue.NAME_SCOPE


def full_scope(program: Program, use: BatchNormUse) -> str | None:
    """``outer/inner/bn``: where the layer's variables live, or None when any part is unknown/automatic."""
    own = use.args.get(use.api.scope) if use.api.scope else None
    if own is None:
        return None
    outer = enclosing_scope(program, use)
    name = scope_name(program, own.value, own.frame)
    if outer is None or name is None:
        return None
    return "/".join(p for p in (outer, name.strip("/")) if p)


def scope_pattern(program: Program, use: BatchNormUse) -> tuple[str, str] | None:
    """``(shown, key)`` for a layer named in a loop (``scope='bn%d' % i``, the ``i`` of a loop or a
    comprehension): ``shown`` is ``outer/bn%d``; two builds of one layer call whose keys are equal ask
    for the same series of names. None when a part is neither a constant nor such a variable."""
    own = use.args.get(use.api.scope) if use.api.scope else None
    outer = enclosing_scope(program, use)
    if own is None or outer is None:
        return None
    key = _name_key(program, own.value, own.frame, 0)
    if key is None:
        return None
    shown = _shown(key)
    return "/".join(p for p in (outer, shown.strip("/")) if p), f"{outer}|{key!r}"


def _name_key(program: Program, value: V.Value, frame: Frame | None, depth: int) -> tuple | None:
    if depth > 6:
        return None
    located = program.deref(value, frame)
    final = located.value
    if isinstance(final, V.Const) and isinstance(final.value, (str, int)):
        return ("const", final.value)
    if isinstance(final, V.Ref) or isinstance(final, V.Opaque) and final.kind == "loop-variable":
        return ("each", final)  # a comprehension's (unbound here) or a loop's variable
    parts: list[tuple | None] = []
    if isinstance(final, V.BinOp) and final.op in ("%", "+"):
        op, parts = final.op, [_name_key(program, v, located.frame, depth + 1) for v in (final.left, final.right)]
    elif isinstance(final, V.Seq):
        op, parts = "seq", [_name_key(program, v, located.frame, depth + 1) for v in final.items]
    elif isinstance(final, V.Call) and isinstance(final.func, V.Attr) and final.func.attr == "format" \
            and not final.kwargs:
        op = "format"
        parts = [_name_key(program, v, located.frame, depth + 1) for v in (final.func.value, *final.args)]
    else:
        return None
    return None if None in parts else (op, *parts)


def _shown(key: tuple) -> str:
    kind = key[0]
    if kind == "const":
        return str(key[1])
    if kind == "each":
        return "*"
    if kind == "%" and key[1][0] == "const":
        return str(key[1][1])
    if kind in ("+", "format"):
        return "".join(_shown(part) for part in key[1:]) if kind == "+" else _shown(key[1])
    return "*"


def enclosing_scope(program: Program, use: BatchNormUse) -> str | None:
    """``outer/inner``: the variable scopes a layer is built in, opened by name ("" for none), or None
    when one is unknown or automatic (a ``default_name``, a scope object)."""
    parts: list[str] = []
    for call, frame, _ in variable_scopes(program, use.site):
        name = scope_name(program, arg(call, VARIABLE_SCOPE, "name_or_scope"), frame)
        if name is None:
            return None
        parts.append(name.strip("/"))
    if use.how == "normalizer_fn" and \
            program.qualname(use.call.value.func, use.site.frame) in catalogue.SLIM_NORMALIZED_LAYERS:
        # `slim.conv2d(..., normalizer_fn=slim.batch_norm, scope='conv1')` builds the batch norm inside
        # the layer's own scope; without `scope=`, inside a default name (Conv, Conv_1, ...) that,
        # like the batch norm's own, restarts only when the enclosing scope is entered again.
        host = use.call.value.kwarg(catalogue.SLIM_LAYER_SCOPE)
        if host is not None:
            name = scope_name(program, host, use.site.frame)
            if name is None:
                return None
            parts.append(name.strip("/"))
    return "/".join(p for p in parts if p)


def layer_label(program: Program, use: BatchNormUse) -> str:
    """How a message names a layer: its scope if known, else the API and the function it is built in."""
    scope = full_scope(program, use)
    if scope:
        return f"`{scope}`"
    own = use.args.get(use.api.scope) if use.api.scope else None
    name = scope_name(program, own.value, own.frame) if own is not None else None
    if name:
        return f"`{name}`"
    where = use.call.scope.split(".<lambda")[0]
    short = use.api.qualnames[0].rsplit(".", 1)[-1]
    return f"`{short}` in `{where}()`" if where else f"`{short}`"


def is_bn_class_call(program: Program, value: V.Value, frame: Frame | None) -> bool:
    """``BatchNormalization(...)``: constructing a batch-norm layer object."""
    if not isinstance(value, V.Call):
        return False
    api = program.api_of(value.func, frame) or program.layer_subclass(program.deref(value.func, frame).value)
    return api is not None and api.kind == catalogue.LAYER


def holds_batch_norm(program: Program, value: V.Value, frame: Frame | None, depth: int = 0) -> bool:
    """Whether a Keras layer/model object contains batch norm (a BN layer, a model built from one,
    a subclassed model whose methods build one, a keras.applications network)."""
    if depth > 4:
        return False
    located = program.deref(value, frame)
    current = located.value
    if not isinstance(current, V.Call):
        return False
    if is_bn_class_call(program, current, located.frame):
        return True
    name = program.qualname(current.func, located.frame)
    if name in catalogue.KERAS_MODELS:
        # A functional model: its outputs are computed by a batch-norm layer or a helper that builds one.
        building = building_functions(program)

        def builds(v: V.Value, f: Frame | None) -> bool:
            if is_bn_class_call(program, v, f):
                return True
            target = program.callee(v, f) if isinstance(v, V.Call) else None
            return target is not None and (id(target[0]), target[1].qualname) in building and \
                not configured_without_batch_norm(program, v, f)
        return contains(program, current, located.frame, builds)
    if name and name.startswith(catalogue.KERAS_APPLICATION_MODULES) and \
            name.rsplit(".", 1)[-1].startswith(catalogue.KERAS_APPLICATION_PREFIXES):
        return True
    cls = program.deref(current.func, located.frame).value
    if isinstance(cls, V.FunctionRef):
        module = program.module_at(cls.module)
        if module is not None and cls.function in module.classes:
            return class_builds_batch_norm(program, cls) and \
                not configured_without_batch_norm(program, current, located.frame)
        # A function of the program that builds the model (`model = resnet18()`, `G = get_G(shape)`).
        target = program.function(cls)
        return target is not None and (id(target[0]), target[1].qualname) in building_functions(program)
    return False


def configured_without_batch_norm(program: Program, construct: V.Value, frame: Frame | None, depth: int = 0) -> bool:
    """``ResnetBlock(64, mode='down')`` of a class whose ``__init__`` builds its batch norms only under
    ``if mode == 'up':`` (or ``if bn:``, ``if norm == 'batch':``): this object holds none.  Only when
    everything in the class that builds batch norm is in its ``__init__``, and each piece is either
    under an ``if`` that goes the other way for this call's arguments or, in turn, an object of such a
    class configured without it (a ``Critic`` made of ``ResnetBlock(mode='down')``)."""
    if not isinstance(construct, V.Call) or depth > 4:
        return False
    found = program.callee(construct, frame)
    if found is None or not found[1].qualname.endswith(".__init__"):
        return False
    module, init = found[0], found[1]
    prefix = init.qualname[: -len("__init__")]
    uses = [use for use in program.batch_norms if use.module is module and use.call.scope.startswith(prefix)]
    building = building_functions(program)
    own = {id(use.call) for use in uses}
    pieces = [use.call for use in uses]
    for call in module.calls:
        if call.scope.startswith(prefix) and id(call) not in own:
            target = program.callee(call.value, program.lexical(module, call.scope))
            if target is not None and (id(target[0]), target[1].qualname) in building:
                pieces.append(call)
    if not pieces or any(call.scope != init.qualname for call in pieces):
        return False
    activation = program.activation(construct, frame)
    if activation is None:
        return False
    return all(program.live(module, call, activation) is False
               or (id(call) not in own and configured_without_batch_norm(program, call.value, activation, depth + 1))
               for call in pieces)


def class_builds_batch_norm(program: Program, cls: V.FunctionRef) -> bool:
    """A class defined in the program whose methods construct batch-norm layers (memoized; a class
    whose attributes hold, in turn, an object of that class is asked once)."""
    memo = program.__dict__.setdefault("_class_builds_batch_norm", {})
    key = (cls.module, cls.function)
    if key not in memo:
        memo[key] = False
        memo[key] = _class_builds_batch_norm(program, cls)
    return memo[key]


def _class_builds_batch_norm(program: Program, cls: V.FunctionRef) -> bool:
    module = program.module_at(cls.module)
    if module is None or cls.function not in module.classes:
        return False
    building = building_functions(program)
    for owner, owner_cls in program.mro(module, cls.function):
        prefix = f"{owner_cls}."
        if any(module_id == id(owner) and scope.startswith(prefix) for module_id, scope in building):
            return True
    for (scope, _name), assigns in module.assigns.items():
        if scope == f"{cls.function}::self":
            for assign in assigns:
                if holds_batch_norm(program, assign.value, program.lexical(module, ""), 1):
                    return True
    return False


def graph_mode(program: Program, module) -> bool:
    """Whether a module builds TF1-style graphs (placeholders, sessions), where tensors have no truth value."""
    cache = program.__dict__.setdefault("_graph_mode", {})
    if id(module) not in cache:
        cache[id(module)] = any(
            isinstance(call.value.func, V.Dotted) and call.value.func.name in catalogue.GRAPH_MODE_MARKERS
            for call in module.calls)
    return cache[id(module)]


def is_graph_tensor(program: Program, value: V.Value, frame: Frame | None) -> bool:
    """A placeholder, variable or op result in graph-mode code (eager tensors do have a truth value)."""
    located = program.deref(value, frame)
    if not isinstance(located.value, V.Call) or located.frame is None:
        return False
    name = program.qualname(located.value.func, located.frame)
    if name is not None and "learning_phase" in name:
        return True
    return is_tensor(program, value, frame) and graph_mode(program, located.frame.module)


def reached_calls(program: Program, value: V.Value, frame: Frame | None, budget: int = 20000
                  ) -> tuple[set[tuple[int, ...]], bool]:
    """The calls ``value`` is computed from, each as its *call string*: the ids of the call values
    entered on the way to it (from the function where the trace found it lexically) and its own id;
    and whether the trace is complete.  Call strings tell the instances of one function apart:
    ``self.g_bn0(h)`` reached inside ``generator()`` is not the same call reached inside ``sampler()``.

    Incomplete means the value itself is unknown (an unbound parameter) or the trace ran out of budget.
    Unknown names met on the way (a layer's `ksize`, a `regularizer_prob` nobody passes) are taken
    for what they nearly always are, configuration, not another model's output.
    """
    seen: set[tuple[int, tuple[int, ...]]] = set()
    strings: set[tuple[int, ...]] = set()
    entered: dict[int, tuple[tuple[int, ...], Frame]] = {}   # frames the trace made -> their call string
    complete = True
    # Each item: a value, its frame, its call string, and the field read from it (`model.outputs`
    # of `Model(outputs=..., train=...)`, a namedtuple: only that field's value is computed from).
    todo: list[tuple[V.Value, Frame | None, tuple[int, ...], str | None]] = [(value, frame, (), None)]
    expanded: set[tuple[int, int, tuple[int, ...]]] = set()
    steps = 0
    while todo:
        steps += 1
        if len(seen) > budget or steps > 8 * budget:
            return strings, False
        current, current_frame, context, field = todo.pop()
        if isinstance(current, V.Ref) and (ref_key := (id(current), id(current_frame), context)) not in expanded:
            expanded.add(ref_key)
            # Every assignment the name may hold (branches), each traced on its own, and what was
            # appended to the list it holds.
            todo.extend((other.value, other.frame, context, field)
                        for other in program.alternatives(current, current_frame))
            todo.extend((item.value, item.frame, context, field) for item in program.appended(current, current_frame))
        located = program.deref(current, current_frame)
        final = located.value
        if located.frame is not current_frame:
            made = entered.get(id(located.frame)) if located.frame is not None else None
            if made is not None:
                context = made[0]
            elif located.frame is not None and located.frame.made_by is not None:
                # Into a function while reading a value (`a, b = f(x)`): the call string goes on
                # from the frame that made the call.
                parent = located.frame.parent
                known = entered.get(id(parent)) if parent is not None else None
                base = known[0] if known is not None else (context if parent is current_frame else ())
                context = base + (id(located.frame.made_by),)
                entered[id(located.frame)] = (context, located.frame)
                strings.add(context)  # the call itself is reached too
            else:
                context = ()
        key = (id(final), context) if field is None else (id(final), context, field)
        if key in seen:
            continue
        seen.add(key)
        if field is not None:
            if isinstance(final, V.Call):
                child = program.activation(final, located.frame)
                fn = child.module.functions[child.function] if child is not None else None
                if fn is not None and fn.returns and len(context) < 24:
                    string = context + (id(final),)
                    strings.add(string)
                    entered[id(child)] = (string, child)
                    todo.extend((ret, child, string, field) for ret in fn.returns)
                    continue
                given = final.kwarg(field)
                if child is None and given is not None:
                    strings.add(context + (id(final),))
                    todo.append((given, located.frame, context, None))
                    continue
            field = None   # anything else: the whole value
        if isinstance(final, V.Attr):
            todo.append((final.base, located.frame, context, final.attr))
            continue
        if final is V.UNKNOWN and isinstance(current, (V.Ref, V.Param)) and not strings:
            complete = False  # the loss itself is unknown (a parameter nothing binds)
        if isinstance(final, V.Call):
            string = context + (id(final),)
            strings.add(string)
            name = program.qualname(final.func, located.frame)
            if name in catalogue.DATA_FREE_OPS or isinstance(final.func, V.Attr) and \
                    final.func.attr in catalogue.DATA_FREE_METHODS:
                continue  # its output carries none of its inputs' data (a placeholder's shape, a tensor's)
            if name in catalogue.LOSS_COLLECTION_READERS:
                # tf.losses.get_total_loss(): every loss a tf.losses function added to the collection
                todo.extend((loss, loss_frame, (), None) for loss, loss_frame in program.loss_functions)
            child = program.activation(final, located.frame)
            if child is not None and len(string) < 24:
                # Follow into the function: what it returns is computed from its body.
                entered[id(child)] = (string, child)
                fn = child.module.functions[child.function]
                todo.extend((ret, child, string, None) for ret in fn.returns)
            elif child is None and len(string) < 24 and not isinstance(final.func, V.Ref):
                # tf.map_fn(fn, elems), tf.while_loop(cond, body, ...): computed by the function it runs
                for module, fn in program.run_targets_of(final, located.frame):
                    run = Frame(module, fn.qualname, {}, located.frame, None)
                    entered[id(run)] = (string, run)
                    todo.extend((ret, run, string, None) for ret in fn.returns)
        todo.extend((child, located.frame, context, None) for child in final.children())
    return strings, complete


def feeds_from(strings: set[tuple[int, ...]], chain: list) -> bool:
    """Whether a layer built along ``chain`` (its call sites, outermost first) is among the calls a
    trace reached: some reached call string is the end of the chain's."""
    ids = tuple(id(call.value) for _, call in chain)
    return any(ids[start:] in strings for start in range(len(ids)))


def graph_context(program: Program, site: Site) -> tuple[str, int] | None:
    """The innermost ``with tf.Graph().as_default():`` around a site (a graph of its own), or None."""
    found = None
    for ctx, frame in site.contexts():
        located = program.deref(ctx.value, frame)
        value = located.value
        if isinstance(value, V.Call) and isinstance(value.func, V.Attr) and value.func.attr == "as_default":
            found = (frame.module.path, ctx.loc)
    return found


def variable_scope_reuse(program: Program, call: V.Call, frame: Frame | None) -> Located | None:
    value = arg(call, VARIABLE_SCOPE, "reuse")
    return Located(value, frame) if value is not None else None


def object_call_training(call: V.Call, program: Program | None = None, frame: Frame | None = None
                         ) -> V.Value | None:
    """The ``training`` a Keras object is called with: ``model(x, training=True)``, or positionally
    where its ``call`` takes it: second for Keras's own layers and models, wherever a subclass's
    ``call(self, x, y, training=False)`` puts it, nowhere for ``call(self, x, y)`` (whose ``y`` is
    data, not the flag)."""
    given = call.kwarg("training")
    if given is not None or program is None:
        return given if given is not None else arg(call, LAYER_CALL, "training")
    method = call_method(program, call.func, frame)
    if method is None:
        return arg(call, LAYER_CALL, "training")
    params = method.params[1:]
    limit = len(params) if method.positional < 0 else method.positional - 1
    if "training" not in params[:limit]:
        return None
    index = params.index("training")
    if any(isinstance(a, V.Starred) for a in call.args[:index + 1]):
        return V.UNKNOWN
    return call.args[index] if index < len(call.args) else None


def in_keras_call(program: Program, site: Site) -> bool:
    """The call runs inside the ``call`` method of a Keras layer or model of the program: Keras gives
    the layers it calls the ``training`` its own caller passed, so the flag is the outer call's."""
    for frame in site.frame.chain():
        fn = frame.module.functions.get(frame.function)
        if fn is not None and fn.class_name and fn.qualname == f"{fn.class_name}.call" and \
                keras_class(program, frame.module, fn.class_name):
            return True
    return False


def keras_class(program: Program, module: ModuleFacts, cls: str) -> bool:
    """A class of the program that derives from a Keras layer or model."""
    for owner, owner_cls in program.mro(module, cls):
        fact = owner.classes.get(owner_cls)
        frame = program.lexical(owner, "")
        if fact is not None and any((program.qualname(base, frame) or "").startswith(catalogue.KERAS_MODULES)
                                    for base in fact.bases):
            return True
    return False


def call_method(program: Program, obj: V.Value, frame: Frame | None):
    """The ``call`` method of the program class ``obj`` is an object of (None: not a program class)."""
    located = program.deref(obj, frame)
    if not isinstance(located.value, V.Call):
        return None
    cls = program.deref(located.value.func, located.frame).value
    module = program.module_at(cls.module) if isinstance(cls, V.FunctionRef) else None
    if module is None or cls.function not in module.classes:
        return None
    found = program.method(module, cls.function, "call")
    return found[1] if found is not None else None


def call_chain(use: BatchNormUse) -> list[tuple[ModuleFacts, CallFact]]:
    """The call sites from the program's top level down to the batch-norm call."""
    return use.chain


def reuse_of(program: Program, use: BatchNormUse) -> bool | None:
    states = [reuse_state(program, use.args.get(use.api.reuse)) if use.api.reuse else False]
    for call, frame, _ in variable_scopes(program, use.site):
        states.append(reuse_state(program, variable_scope_reuse(program, call, frame)))
    states += [live for live, _ in reuse_variables_on_the_way(program, use.site)]
    if any(state is True for state in states):
        return True
    if any(state is None for state in states):
        return None
    return False


def reuse_variables_on_the_way(program: Program, site: Site) -> list[tuple[bool | None, CallFact]]:
    """``tf.get_variable_scope().reuse_variables()`` earlier in a function on the way down to the call,
    each one this activation may run, with True, or None under an ``if`` it cannot decide (one under
    ``if reuse:`` with ``reuse=False`` does not run)."""
    states: list[tuple[bool | None, CallFact]] = []
    frames = {id(frame.site): frame.parent for frame in site.frame.chain() if frame.site is not None}
    for module, call in site.chain:
        frame = frames.get(id(call), site.frame) if call is not site.call else site.frame
        for other in module.calls:
            if other.scope == call.scope and other.loc < call.loc and isinstance(other.value.func, V.Attr) \
                    and other.value.func.attr == catalogue.REUSE_VARIABLES_METHOD:
                live = program.live(module, other, frame)
                if live is not False:
                    states.append((live, other))
    return states


def variable_scope_of(program: Program, use: BatchNormUse) -> str | None:
    """The layer's variable scope (its variables' prefix), when known (memoized per program)."""
    memo = program.__dict__.setdefault("_variable_scopes", {})
    found = memo.get(id(use))
    if found is None:
        found = memo[id(use)] = (_variable_scope_of(program, use), use)  # the use keeps its id
    return found[0]


def _variable_scope_of(program: Program, use: BatchNormUse) -> str | None:
    own = use.args.get(use.api.scope) if use.api.scope else None
    if own is not None:
        final = program.deref(own.value, own.frame)
        if isinstance(final.value, V.Call) and \
                program.qualname(final.value.func, final.frame) in catalogue.VARIABLE_SCOPE:
            # A VariableScope object re-enters that scope instead of nesting a new one.
            names = [scope_name(program, arg(c, VARIABLE_SCOPE, "name_or_scope"), f)
                     for c, f, _ in variable_scopes(program, use.site)]
            return "/".join(n.strip("/") for n in names) if names and None not in names else None
    return full_scope(program, use)


def reachable_modules(program: Program, module: ModuleFacts) -> set[int]:
    """The module and every checked module it imports, transitively."""
    seen = {id(module)}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in current.imports:
            target = program.import_module(current, name)
            if target is not None and id(target) not in seen:
                seen.add(id(target))
                todo.append(target)
    return seen


@lru_cache(maxsize=8)
def building_functions(program: Program) -> frozenset[tuple[int, str]]:
    """Functions that build a batch norm themselves or through the functions they call."""
    building = {(id(use.module), use.call.scope.split(".<lambda")[0]) for use in program.batch_norms}
    todo = list(building)
    while todo:  # up the call graph: whoever calls a building function builds too
        for module, call in program.callers.get(todo.pop(), ()):
            for scope in {call.scope, call.scope.split(".<lambda")[0]}:
                if scope and (id(module), scope) not in building:
                    building.add((id(module), scope))
                    todo.append((id(module), scope))
    return frozenset(building)
