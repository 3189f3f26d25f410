"""Metaflow-style steps as engine steps: one engine :class:`~nbflow.graph.Step` per ``@step``.

Each step's engine output (named after the step) is its task state — a
:class:`~nbflow.flowspec_data.TaskState`, a :class:`~nbflow.flowspec_data.Split` when it ends in
a foreach, or inside a foreach the list of those, one per item. Its engine inputs are its
predecessors' states, the parameters it reads, and (for a join) the splits whose lists it may
see. So the engine's key of a step covers its code, those parameters and the digest of every
artifact it receives, with no second executor.

Foreach uses the engine's own ``Step.foreach``: the step after a split runs once per seed of
the split, and every later step inside the foreach maps over the previous step's list, so each
item has its own cache entry whose key covers that item's state only — an item whose inputs
did not change is served from the store, and the engine (or a Dask executor) schedules items
independently. Where a list must change shape — a split inside a foreach (flatten), a join
inside a foreach (group or zip) — a small hidden adapter step (``<step>__in``) reshapes the
states, so even nested foreach items are cached one by one.
Must never import IPython.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import types
import warnings
from collections.abc import Callable
from typing import Any

from . import keys
from .errors import NbflowError, NbflowWarning
from .flow import Flow
from .flowspec_data import Split, TaskState
from .flowspec_graph import FlowGraph, Node, Parameter, is_step, parse_flow
from .flowspec_task import TaskSpec, describe_store, remember_store, run_task, store_at
from .graph import Step
from .hashing import digest_parts
from .store import Store, open_store
from .store.codec import value_digest

RUNTIME_VERSION = "flowspec-1"  # bump when the meaning of stored states changes
ADAPTER_SUFFIX = "__in"


# -- actions (picklable: they run in pool workers and on Dask) ------------------------------------
class TaskAction:
    """The engine action of one ``@step``: inputs in, the step's new state out."""

    def __init__(self, cls: type, spec: TaskSpec) -> None:
        self.cls = cls
        self.spec = spec

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec
        incoming: TaskState | list[TaskState]
        if spec.item_input is not None:
            item = values[spec.item_input]
            incoming = list(item) if isinstance(item, tuple | list) else item
        elif spec.is_join:
            if spec.join == "foreach":
                incoming = list(values[spec.pred_inputs[0]])
            else:
                incoming = [values[p] for p in spec.pred_inputs]
        elif spec.pred_inputs:
            incoming = values[spec.pred_inputs[0]]
        else:
            incoming = TaskState("")
        params = {a: values[a] for a in spec.params}
        providers = {s: values[s] for s in spec.providers}
        store = store_at(spec.store)
        return {spec.step: run_task(self.cls, spec, incoming, params, providers, store)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskAction) and other.spec == self.spec and other.cls is self.cls

    def __hash__(self) -> int:
        return hash(self.spec)


class AdapterAction:
    """A hidden reshaping step: ``flatten`` splits into seeds, ``group`` items by their outer
    foreach item (for a join inside a foreach), ``zip`` branch lists (a static join inside one)."""

    def __init__(self, kind: str, sources: tuple[str, ...], output: str) -> None:
        self.kind = kind
        self.sources = sources
        self.output = output

    def __call__(self, values: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "flatten":
            seeds = [seed for split in values[self.sources[0]] for seed in split]
            return {self.output: seeds}
        if self.kind == "group":
            groups: list[tuple[TaskState, ...]] = []
            last: Any = None
            for state in values[self.sources[0]]:
                outer = state.frames[:-1]
                if groups and outer == last:
                    groups[-1] = (*groups[-1], state)
                else:
                    groups.append((state,))
                    last = outer
            return {self.output: groups}
        lists = [values[s] for s in self.sources]
        if len({len(v) for v in lists}) != 1:
            raise NbflowError(f"branches joined by '{self.output}' have different numbers of tasks")
        zipped = []
        for row in zip(*lists, strict=True):
            if len({s.frames for s in row}) != 1:
                raise NbflowError(f"branches joined by '{self.output}' are out of step")
            zipped.append(tuple(row))
        return {self.output: zipped}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AdapterAction) and (other.kind, other.sources) == (self.kind, self.sources)

    def __hash__(self) -> int:
        return hash((self.kind, self.sources))


# -- fingerprints of what a step's code reads besides artifacts ------------------------------------
def _global_reads(func: types.FunctionType) -> set[str]:
    """Free names the body of ``func`` reads (its decorators are not part of what it computes)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return set(func.__code__.co_names)
    fn = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
               and n.name == func.__name__), None)
    if fn is None:
        return set(func.__code__.co_names)
    loads: set[str] = set()
    local: set[str] = set()
    for stmt in fn.body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                (loads if isinstance(node.ctx, ast.Load) else local).add(node.id)
            elif isinstance(node, ast.arg):
                local.add(node.arg)
            elif isinstance(node, ast.alias):
                local.add((node.asname or node.name).partition(".")[0])
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                local.add(node.name)
    local.update(a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs))
    return loads - local


def _members(cls: type) -> dict[str, Any]:
    """Helpers and constants of the flow class (not steps, parameters or FlowSpec's own)."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ == "nbflow.flowspec" or klass is object:
            continue
        for name, value in vars(klass).items():
            if name.startswith("__") or isinstance(value, Parameter) or is_step(value):
                continue
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            out[name] = value
    return out


def _externals(cls: type, node: Node) -> Callable[[], dict[str, str]]:
    warned: set[str] = set()
    func = node.func
    names = _global_reads(func)

    def externals() -> dict[str, str]:
        fp = keys.Fingerprinter(value_digest)
        out = fp.namespace(names, func.__globals__)
        if func.__closure__:
            for var, cell in zip(func.__code__.co_freevars, func.__closure__, strict=True):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                digest = fp.external(var, value)
                if digest is not None:
                    out[var] = digest
        parts = []
        for name, value in sorted(_members(cls).items()):
            digest = fp.external(f"{cls.__name__}.{name}", value)
            if digest is not None:
                parts.append(f"{name}={digest}")
        out["<class>"] = digest_parts(parts)
        fresh = [n for n in fp.unknown if n not in warned]
        if fresh:
            warned.update(fresh)
            warnings.warn(
                f"nbflow: step '{node.name}' of {cls.__name__} reads "
                f"{', '.join(repr(n) for n in fresh)}, which cannot be fingerprinted; edits to "
                "it will not invalidate the cache", NbflowWarning, stacklevel=4,
            )
        return out

    return externals


# -- the mapping ----------------------------------------------------------------------------------
def build_steps(cls: type, graph: FlowGraph, store: Any) -> list[Step]:
    """Engine steps for every ``@step`` of ``cls`` (and the adapters nested foreach needs)."""
    hoist = {
        n.name: not any(m.reads_name(n.foreach) for m in graph.inside(n.name))
        for n in graph if n.foreach is not None
    }
    step_names = tuple(graph.nodes)
    params = [p.attr for p in graph.params]
    out: list[Step] = []
    for node in graph:
        for adapter in _adapters(graph, node):
            if adapter.name in graph.nodes:
                raise NbflowError(
                    f"step '{adapter.name}' clashes with a name nbflow needs for '{node.name}'; "
                    "rename it"
                )
            out.append(adapter)
        spec = _spec(cls, graph, node, store, hoist, step_names, params)
        inputs = (*spec.pred_inputs, *([spec.item_input] if spec.item_input else []),
                  *spec.providers, *spec.params)
        shape = (spec.is_join, spec.join, spec.targets, spec.foreach, spec.hoist, spec.pred_inputs,
                 spec.item_input, spec.providers)
        code = keys.function_code(node.func, ()) + f"\n#flowspec {shape!r}"
        try:
            source = textwrap.dedent(inspect.getsource(node.func))
        except (OSError, TypeError):
            source = ""
        out.append(Step(
            name=node.name, inputs=tuple(dict.fromkeys(inputs)), outputs=(node.name,),
            action=TaskAction(cls, spec), code=code, source=source, version=RUNTIME_VERSION,
            externals=_externals(cls, node), foreach=spec.item_input, doc=node.doc,
            kind="flowspec",
            meta={"flowspec": cls.__qualname__, "transition": node.transition,
                  "targets": list(node.targets), "foreach": node.foreach, "join": spec.join,
                  "depth": node.depth, "line": node.line},
        ))
    return out


def _join_preds(graph: FlowGraph, node: Node) -> tuple[str, ...]:
    """A static join's predecessors in the order of the split's branches."""
    stack = graph.incoming_stack(node.name)
    split, branch = stack[-1]
    if branch == "":
        return tuple(node.in_funcs)
    targets = graph[split].targets
    return tuple(sorted(node.in_funcs, key=lambda p: targets.index(graph.out_stack(p, node.name)[-1][1])))


def _adapters(graph: FlowGraph, node: Node) -> list[Step]:
    name = node.name + ADAPTER_SUFFIX
    if node.is_join and node.depth > 0:
        preds = _join_preds(graph, node)
        kind = "group" if graph.incoming_stack(node.name)[-1][1] == "" else "zip"
    elif not node.is_join and node.in_funcs and graph[node.in_funcs[0]].foreach is not None \
            and graph[node.in_funcs[0]].depth > 0:
        preds, kind = (node.in_funcs[0],), "flatten"
    else:
        return []
    return [Step(
        name=name, inputs=preds, outputs=(name,), action=AdapterAction(kind, preds, name),
        code=f"nbflow-adapter:{kind}", version=RUNTIME_VERSION, kind="adapter",
        doc=f"reshapes the tasks arriving at {node.name}",
        meta={"hidden": True, "for": node.name, "adapter": kind},
    )]


def _spec(cls: type, graph: FlowGraph, node: Node, store: Any, hoist: dict[str, bool],
          step_names: tuple[str, ...], params: list[str]) -> TaskSpec:
    pred_inputs: tuple[str, ...] = ()
    item_input: str | None = None
    providers: tuple[str, ...] = ()
    join: str | None = None
    if node.is_join:
        stack = graph.incoming_stack(node.name)
        join = "foreach" if stack[-1][1] == "" else "static"
        if node.depth == 0:
            pred_inputs = _join_preds(graph, node)
        else:
            item_input = node.name + ADAPTER_SUFFIX
        # a foreach list left out of the items' states reaches a join only if the join names it
        # (inputs[i].titles), or merges all artifacts while closing that foreach
        closing = stack[-1][0] if join == "foreach" else None
        providers = tuple(
            s for s, b in stack
            if b == "" and hoist.get(s) and (
                node.dynamic or graph[s].foreach in node.names
                or (s == closing and node.merges_all)
            )
        )
    elif node.in_funcs:
        pred = graph[node.in_funcs[0]]
        if pred.foreach is not None:
            item_input = pred.name if pred.depth == 0 else node.name + ADAPTER_SUFFIX
        elif node.depth == 0:
            pred_inputs = (pred.name,)
        else:
            item_input = pred.name
    return TaskSpec(
        flow=graph.name, step=node.name, store=store, is_join=node.is_join, join=join,
        targets=node.targets, foreach=node.foreach, hoist=hoist.get(node.name, True),
        steps=step_names, params=tuple(a for a in params if node.reads_name(a)),
        pred_inputs=pred_inputs, item_input=item_input, providers=providers,
    )


# -- the engine flow of a FlowSpec class ----------------------------------------------------------
class SpecFlow(Flow):
    """The engine flow behind a FlowSpec class: status, events, describe and the DAG widget work
    on it as on any flow. Its runs reuse pinned steps (``resume``) and run on the scheduler of
    the current call (``max_workers``, Dask) or of :meth:`config`."""

    def __init__(self, name: str, store: Any = None) -> None:
        super().__init__(name, store)
        self.spec_cls: type | None = None
        self.spec_graph: FlowGraph | None = None
        self.run_scheduler: Any = None  # set for one run by run_flow
        self.pinned: dict[str, str] = {}

    def _run_factory(self) -> Callable[..., Any]:
        from .flowspec_pool import SpecParallelRun, SpecRun

        scheduler = self.run_scheduler or getattr(self, "_scheduler", None)
        if scheduler is None:
            return functools.partial(SpecRun, pinned=dict(self.pinned))
        return functools.partial(SpecParallelRun, pool=scheduler.pool(),
                                 only_remote=scheduler.only_remote, pinned=dict(self.pinned))

    @property
    def user_steps(self) -> list[str]:
        """The flow's own steps (no adapters), in order."""
        return list(self.spec_graph.nodes) if self.spec_graph is not None else [
            n for n, s in self.graph.steps.items() if s.kind != "adapter"
        ]


_flows: dict[tuple[str, str], SpecFlow] = {}


def engine_flow(cls: type, store: Any = None) -> SpecFlow:
    """The (one per class name and store) engine flow of ``cls``, synced with its current code.

    Redefining the class (a notebook cell run again) updates the same flow object, so a widget
    showing it keeps working and sees exactly the edited steps turn stale.
    """
    st = store if isinstance(store, Store) else open_store(store)
    key = (cls.__name__, st.root)
    flow = _flows.get(key)
    if flow is None:
        flow = _flows[key] = SpecFlow(cls.__name__, st)
    sync(flow, cls)
    return flow


def sync(flow: SpecFlow, cls: type) -> None:
    graph = parse_flow(cls)
    steps = build_steps(cls, graph, describe_store(flow.store))
    remember_store(flow.store)
    names = {s.name for s in steps}
    for name in [n for n in flow.graph.steps if n not in names]:
        flow.remove(name)
    for step in steps:
        old = flow.graph.steps.get(step.name)
        if old is not None and _same(old, step):
            flow.graph.add(step)  # same meaning (e.g. the class object was redefined): not stale
        else:
            flow.add(step)
    declared = {p.attr for p in graph.params}
    for name in [n for n in flow.graph.inputs if n not in declared]:
        del flow.graph.inputs[name]
        flow.params.pop(name, None)
    for p in graph.params:
        flow.param(p.attr, p.default)
    flow.spec_cls = cls
    flow.spec_graph = graph


def _same(a: Step, b: Step) -> bool:
    fields = ("inputs", "outputs", "code", "foreach", "kind", "version", "source", "doc")
    if any(getattr(a, f) != getattr(b, f) for f in fields):
        return False
    sa, sb = getattr(a.action, "spec", None), getattr(b.action, "spec", None)
    return sa == sb and type(a.action) is type(b.action)


def split_state(value: Any) -> Any:
    """The state part of an engine value (a split hands on its own state)."""
    return value.state if isinstance(value, Split) else value
