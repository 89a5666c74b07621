"""Which batch-norm layers a train op trains: the data flow from a loss back to the layers.

BN001 asks it of one train op (whose updates must it run?); BN002 and BN011 ask it of a layer (is
this copy of the model the one being trained, or a copy built for evaluation?).  Computed once per
program (``Program.dataflow``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from bnaudit import catalogue
from bnaudit.source import semantics as S
from bnaudit.source import values as V
from bnaudit.source.facts import CallFact, ModuleFacts
from bnaudit.source.program import BatchNormUse, Frame, Program, Site


@dataclass(eq=False)
class SessionRun:
    """``sess.run(fetches, feed_dict)`` as written (read in its function, callers unknown)."""
    module: ModuleFacts
    call: CallFact
    frame: Frame
    fetches: V.Value | None
    feed: V.Dict | None
    feed_frame: Frame | None


class TrainFlow:
    def __init__(self, program: Program) -> None:
        self.program = program
        self._reached: dict[int, tuple[set[tuple[int, ...]], bool, Site]] = {}
        self._feeds: dict[int, bool | None] = {}
        self._runs_train: dict[int, bool] = {}

    @cached_property
    def train_ops(self) -> list[Site]:
        """Every instantiation of every call that builds a train op."""
        program = self.program
        out = []
        for module in program.modules:
            for call in module.calls:
                func = call.value.func
                if isinstance(func, V.Attr) and func.attr in catalogue.TRAIN_OP_METHODS or \
                        isinstance(func, V.Dotted) and func.name in catalogue.UPDATING_TRAIN_OP_BUILDERS:
                    out.extend(program.sites(module, call))
        return out

    def loss(self, site: Site) -> V.Value | None:
        """The loss (or gradients) a train op is built from."""
        call = site.call.value
        func = call.func
        if isinstance(func, V.Dotted) and func.name in catalogue.UPDATING_TRAIN_OP_BUILDERS:
            return call.args[0] if call.args else call.kwarg("total_loss") or call.kwarg("loss")
        return call.args[0] if call.args else call.kwarg("loss") or call.kwarg("grads_and_vars")

    def reached(self, site: Site) -> tuple[set[tuple[int, ...]], bool]:
        """The calls the train op's loss is computed from, and whether the trace is complete."""
        found = self._reached.get(id(site))
        if found is None:
            loss = self.loss(site)
            calls, complete = S.reached_calls(self.program, loss, site.frame) if loss is not None else (set(), False)
            found = self._reached[id(site)] = (calls, complete, site)
        return found[0], found[1]

    def feeds(self, site: Site, use: BatchNormUse) -> bool | None:
        """Whether the layer's output reaches the train op's loss (None: the trace is incomplete)."""
        reached, complete = self.reached(site)
        if S.feeds_from(reached, use.chain):
            return True
        return False if complete else None

    def feeds_training(self, use: BatchNormUse) -> bool | None:
        """Whether this layer is trained: its output reaches the loss of a train op of its execution.
        False only when there are train ops there and every one's loss is fully traced without it."""
        known = self._feeds.get(id(use), 0)
        if known != 0:
            return known  # type: ignore[return-value]
        answer: bool | None = None
        executions = self.program.executions
        candidates = [site for site in executions.near(use.site, self._train_ops_by_entry)
                      if executions.together(site, use.site) is not False]
        if candidates:
            verdicts = [self.feeds(site, use) for site in candidates]
            answer = True if True in verdicts else (False if all(v is False for v in verdicts) else None)
        self._feeds[id(use)] = answer
        return answer

    @cached_property
    def runs(self) -> list[SessionRun]:
        """Every session run: fetches and the feed dict, when it is a dict display."""
        program = self.program
        out = []
        for module in program.modules:
            for call in module.calls:
                func = call.value.func
                if not (isinstance(func, V.Attr) and func.attr in ("run", "eval")):
                    continue
                if func.attr == "eval" and (call.value.args or call.value.kwarg("feed_dict") is None):
                    continue  # tensor.eval(feed_dict=...), not model.eval()
                frame = program.lexical(module, call.scope)
                value = call.value
                if value.args and not value.kwarg("feed_dict") and len(value.args) == 1 and \
                        isinstance(value.args[0], V.Dict):
                    fetches, feed = func.base, value.args[0]   # op.run({x: ...})
                elif not value.args and value.kwarg("fetches") is None:
                    fetches, feed = func.base, value.kwarg("feed_dict")   # train_step.run(feed_dict=...)
                else:
                    fetches = value.args[0] if value.args else value.kwarg("fetches")
                    feed = value.kwarg("feed_dict") or (value.args[1] if len(value.args) > 1 else None)
                located = program.deref(feed, frame) if feed is not None else None
                dict_value = located.value if located is not None and isinstance(located.value, V.Dict) else None
                out.append(SessionRun(module, call, frame, fetches, dict_value,
                                      located.frame if dict_value is not None else None))
        return out

    def runs_train_op(self, run: SessionRun) -> bool:
        """Whether a run fetches a train op (or a group, list or function result holding one)."""
        found = self._runs_train.get(id(run))
        if found is None:
            if run.fetches is None:
                found = False
            else:
                # Each fetch on its own first (`[self._optim, self._loss, ...]`): the walk through a
                # large loss can spend the budget before it reaches the train op beside it.
                trains = self._train_op_ids | self._after_train_op
                found = any(id(self.program.deref(item, run.frame).value) in trains for item in _fetch_items(run.fetches))
                if not found:
                    strings, _ = S.reached_calls(self.program, run.fetches, run.frame, budget=2000)
                    found = any(string[-1] in trains for string in strings)
            self._runs_train[id(run)] = found
        return found

    @cached_property
    def _after_train_op(self) -> set[int]:
        """Calls made under ``tf.control_dependencies([apply_gradient_op, ...])``: running them trains
        (``train_op = tf.no_op(name='train')`` at the end of the CIFAR-10 tutorial's train())."""
        program = self.program
        out: set[int] = set()
        for module in program.modules:
            for call in module.calls:
                for loc in call.ctx:
                    ctx = module.contexts[loc]
                    value = ctx.value
                    if isinstance(value, V.Call) and value.args and program.qualname(
                            value.func, program.lexical(module, ctx.scope)) in catalogue.CONTROL_DEPENDENCIES \
                            and S.contains(program, value.args[0], program.lexical(module, ctx.scope),
                                           lambda v, f: _is_train_op(v)):
                        out.add(id(call.value))
                        break
        return out

    @cached_property
    def _train_op_ids(self) -> set[int]:
        return {id(call.value) for module in self.program.modules for call in module.calls
                if _is_train_op(call.value)}

    @cached_property
    def fits(self) -> list[Site]:
        """Keras training calls (``model.fit(...)``): they train, but have no loss to trace."""
        program = self.program
        return [site for module in program.modules for call in module.calls
                if isinstance(call.value.func, V.Attr) and call.value.func.attr in catalogue.FIT_METHODS
                for site in program.sites(module, call)]

    def trains(self, site: Site) -> bool | None:
        """Whether a model is trained in the execution and graph of a call (None: it may be)."""
        executions = self.program.executions
        verdicts = [executions.together(op, site) for op in executions.near(site, self._training_by_entry)]
        if True in verdicts:
            return True
        return None if None in verdicts else False

    @cached_property
    def _train_ops_by_entry(self):
        return self.program.executions.index(self.train_ops, lambda site: site)

    @cached_property
    def _training_by_entry(self):
        return self.program.executions.index(self.train_ops + self.fits, lambda site: site)


def _is_train_op(value: V.Value) -> bool:
    if not isinstance(value, V.Call):
        return False
    func = value.func
    return isinstance(func, V.Attr) and func.attr in catalogue.TRAIN_OP_METHODS or \
        isinstance(func, V.Dotted) and func.name in catalogue.UPDATING_TRAIN_OP_BUILDERS


def _fetch_items(fetches: V.Value) -> list[V.Value]:
    """The values a ``sess.run`` fetches as written: the items of a list, tuple or dict of fetches."""
    if isinstance(fetches, V.Seq):
        return list(fetches.items)
    if isinstance(fetches, V.Dict):
        return [value for _, value in fetches.items]
    return [fetches]
