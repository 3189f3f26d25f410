"""References into a flow's graph, and how bindings of a node become engine inputs.

A reference *is* the engine name it stands for (a ``str`` subclass): an :class:`Input` is the name
of a flow input, an :class:`Output` the name of one output of a step, a :class:`Node` the name of
its step. So every ``Flow`` method that takes a step or output name also takes a reference
(``flow.run(n2)``, ``flow.describe(n1)``, ``flow.topological_order(n2)``), references hash and
compare like their names, and reprs say what they are.

Bindings (``x=flow.inputs["x"]``, ``b=200``, ``a=[n1, n2]``) become a *spec*: plain JSON data that
maps each argument to engine names. Constants are step parameters named ``"<step>.<arg>"`` (not
identifiers, so they never collide with an output or flow input); the spec is part of the step's
code, so swapping two bindings changes the key. Must never import IPython or widget code.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .typecheck import BindingError, FlowTypeError, compatible, mismatch, type_name

if TYPE_CHECKING:
    from .flow import Flow

_MISSING: Any = object()


class Ref(str):
    """Base of every reference: the engine name, plus the identity of the flow that made it."""

    _owner: int | None

    def __new__(cls, name: str, owner: int | None = None) -> Ref:
        obj = super().__new__(cls, name)
        obj._owner = owner
        return obj

    def __getnewargs__(self) -> tuple[str, int | None]:  # type: ignore[override]
        return (str(self), self._owner)

    @property
    def name(self) -> str:
        return str(self)


class Input(Ref):
    """A flow input (Flyte's workflow input; a process graph's constant node).

    ``set_value`` gives it the value the next ``flow.run``/``run_upto``/batch item uses, checked
    against the declared type.
    """

    _flow: Flow | None

    def __new__(cls, name: str, flow: Flow | None = None) -> Input:
        obj = super().__new__(cls, name, id(flow) if flow is not None else None)
        assert isinstance(obj, Input)
        obj._flow = flow
        return obj

    def __getnewargs__(self) -> tuple[str, None]:  # type: ignore[override]
        return (str(self), None)

    def __getstate__(self) -> dict[str, Any]:
        return {"_owner": None, "_flow": None}  # a flow never travels with a reference

    @property
    def spec(self) -> dict[str, Any]:
        if self._flow is None:
            return {}
        return dict(self._flow.graph.inputs.get(str(self)) or {})

    @property
    def type(self) -> Any:
        return self.spec.get("type", Any)

    @property
    def default(self) -> Any:
        return self.spec.get("default", _MISSING)

    @property
    def value(self) -> Any:
        """The value the next run uses (raises if none was set and there is no default)."""
        flow = self._attached()
        if str(self) in flow.params:
            return flow.params[str(self)]
        raise NbflowValueMissing(flow.name, str(self))

    def set_value(self, value: Any) -> Input:
        """Set the value the next run uses; raises :class:`FlowTypeError` if it has the wrong type."""
        flow = self._attached()
        check_input_value(flow.name, str(self), self.type, value)
        flow.params[str(self)] = value
        return self

    def _attached(self) -> Flow:
        if self._flow is None:
            raise BindingError(f"input '{self}' is not attached to a flow (it was copied)")
        return self._flow

    def __repr__(self) -> str:
        tp = self.type
        return f"Input({str(self)!r}" + ("" if tp is Any else f": {type_name(tp)}") + ")"


class Output(Ref):
    """One output of a node: ``node.outputs["o0"]``. Its string is the engine output name."""

    node: str
    label: str
    type: Any

    def __new__(cls, name: str, owner: int | None = None, node: str = "", label: str = "o0",
                type: Any = Any) -> Output:  # noqa: A002 - mirrors Flyte's wording
        obj = super().__new__(cls, name, owner)
        assert isinstance(obj, Output)
        obj.node = node or name
        obj.label = label
        obj.type = type
        return obj

    def __getnewargs__(self) -> tuple[str, int | None, str, str]:  # type: ignore[override]
        return (str(self), self._owner, self.node, self.label)

    def __repr__(self) -> str:
        return f"Output({self.node}.{self.label} -> {str(self)!r})"


class Node(Ref):
    """A step added by ``add_step``/``add_node``/``add_output``; its string is the step name."""

    outputs: dict[str, Output]
    kind: str

    def __new__(cls, name: str, owner: int | None = None,
                outputs: Mapping[str, Output] | None = None, kind: str = "function") -> Node:
        obj = super().__new__(cls, name, owner)
        assert isinstance(obj, Node)
        obj.outputs = dict(outputs or {})
        obj.kind = kind
        return obj

    def __getnewargs__(self) -> tuple[str, int | None]:  # type: ignore[override]
        return (str(self), self._owner)

    @property
    def output(self) -> Output:
        """The node's only output (binding a node means binding it)."""
        distinct = {str(o): o for o in self.outputs.values()}
        if len(distinct) != 1:
            labels = ", ".join(sorted({o.label for o in self.outputs.values()}))
            raise BindingError(
                f"node '{self}' has {len(distinct)} outputs ({labels}); bind one of them, "
                f"e.g. {self}.outputs['o0']"
            )
        return next(iter(distinct.values()))

    def __repr__(self) -> str:
        labels = ", ".join(dict.fromkeys(o.label for o in self.outputs.values()))
        return f"Node({str(self)!r}, kind={self.kind}, outputs=[{labels}])"


class NbflowValueMissing(FlowTypeError):
    """A flow input has no value and no default."""

    def __init__(self, flow: str, name: str) -> None:
        self.input = name
        super().__init__(
            f"flow '{flow}' input '{name}' has no value; pass it (flow({name}=...)) or set it "
            f"with flow.inputs['{name}'].set_value(...)"
        )


def check_input_value(flow: str, name: str, tp: Any, value: Any) -> None:
    """Raise a :class:`FlowTypeError` naming the flow input when ``value`` is not a ``tp``."""
    why = mismatch(value, tp)
    if why:
        raise FlowTypeError(f"flow '{flow}' input '{name}' expects {type_name(tp)}, {why}")


def check_argument(node: str, arg: str, tp: Any, value: Any, what: str = "node") -> None:
    """Raise a :class:`FlowTypeError` naming the node and argument when ``value`` is not a ``tp``."""
    why = mismatch(value, tp)
    if why:
        raise FlowTypeError(f"{what} '{node}' argument '{arg}' expects {type_name(tp)}, {why}")


# -- bindings -----------------------------------------------------------------------------------
@dataclass
class Bound:
    """Bindings resolved to engine names: what the step reads, its constants, and the spec."""

    inputs: list[str] = field(default_factory=list)  # engine names, in first-use order
    params: dict[str, Any] = field(default_factory=dict)  # constant engine name -> value
    spec: dict[str, Any] = field(default_factory=dict)  # argument -> structure (JSON data)
    refs: dict[str, list[Ref]] = field(default_factory=dict)  # argument -> references it reads

    def code(self) -> str:
        return json.dumps(self.spec, sort_keys=True)

    def names_of(self, arg: str) -> list[str]:
        """Every engine name argument ``arg`` reads (to ``ignore`` it)."""
        out: list[str] = []
        _collect(self.spec[arg], out)
        return out


def _collect(spec: Any, out: list[str]) -> None:
    kind, body = spec
    if kind in ("ref", "const"):
        out.append(body)
    elif kind in ("list", "tuple"):
        for s in body:
            _collect(s, out)
    elif kind == "dict":
        for s in body.values():
            _collect(s, out)


def bind(flow: Flow, step: str, bindings: Mapping[str, Any]) -> Bound:
    """Resolve ``bindings`` (argument -> reference, constant, or list/tuple/dict of them)."""
    bound = Bound()
    for arg, value in bindings.items():
        refs: list[Ref] = []
        bound.spec[arg] = _resolve(flow, step, f"{step}.{arg}", value, bound, refs)
        bound.refs[arg] = refs
    return bound


def _resolve(flow: Flow, step: str, const_name: str, value: Any, bound: Bound,
             refs: list[Ref]) -> Any:
    if isinstance(value, Ref):
        ref = _check_owner(flow, step, value)
        name = str(ref)
        if name not in bound.inputs:
            bound.inputs.append(name)
        refs.append(ref)
        return ["ref", name]
    if isinstance(value, list | tuple) and _has_ref(value):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return [kind, [_resolve(flow, step, f"{const_name}[{i}]", v, bound, refs)
                       for i, v in enumerate(value)]]
    if isinstance(value, dict) and _has_ref(list(value.values())):
        return ["dict", {str(k): _resolve(flow, step, f"{const_name}[{k!r}]", v, bound, refs)
                         for k, v in value.items()}]
    bound.params[const_name] = value
    bound.inputs.append(const_name)
    return ["const", const_name]


def _has_ref(values: Any) -> bool:
    for v in values:
        if isinstance(v, Ref):
            return True
        if isinstance(v, list | tuple) and _has_ref(v):
            return True
        if isinstance(v, dict) and _has_ref(list(v.values())):
            return True
    return False


def _check_owner(flow: Flow, step: str, ref: Ref) -> Ref:
    if isinstance(ref, Node):
        out: Ref = ref.output
    else:
        out = ref
    if ref._owner is not None and ref._owner != id(flow):
        raise BindingError(
            f"step '{step}' binds {ref!r}, which belongs to another flow; add that step to "
            f"flow '{flow.name}' first"
        )
    name = str(out)
    if name not in flow.graph.inputs and flow.graph.producer_of(name) is None:
        raise BindingError(
            f"step '{step}' binds '{name}', which flow '{flow.name}' neither has as an input nor "
            "as a step output; add it with add_input/add_constant or add its step first"
        )
    return out


def assemble(spec: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of a call from the step's input values (engine name -> value)."""
    return {arg: _build(s, values) for arg, s in spec.items()}


def _build(spec: Any, values: Mapping[str, Any]) -> Any:
    kind, body = spec
    if kind in ("ref", "const"):
        return values[body]
    if kind == "list":
        return [_build(s, values) for s in body]
    if kind == "tuple":
        return tuple(_build(s, values) for s in body)
    return {k: _build(s, values) for k, s in body.items()}


def check_signature(what: str, node: str, func: Callable[..., Any], bindings: Mapping[str, Any],
                    skip_first: bool = False) -> tuple[dict[str, Any], bool]:
    """Check bindings against ``func``'s signature; returns unbound defaults and whether
    ``func`` takes ``**kwargs``. Raises :class:`BindingError` naming node and argument."""
    params = list(inspect.signature(func).parameters.values())
    if skip_first and params:
        params = params[1:]
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    positional_only = [p.name for p in named.values() if p.kind is p.POSITIONAL_ONLY]
    if positional_only:
        raise BindingError(
            f"{what} '{node}': argument(s) {', '.join(positional_only)} are positional-only; "
            "nbflow passes arguments by name, so drop the '/' from the signature"
        )
    extra = [a for a in bindings if a not in named and not var_kw]
    if extra:
        raise BindingError(
            f"{what} '{node}' gets argument '{extra[0]}', which {_fname(func)} does not take; "
            f"its arguments are: {', '.join(named) or '(none)'}"
        )
    missing = [n for n, p in named.items() if n not in bindings and p.default is p.empty]
    if missing:
        raise BindingError(
            f"{what} '{node}' is missing argument '{missing[0]}' of {_fname(func)}; bind it to a "
            "flow input, another node's output, or a value"
        )
    defaults = {n: p.default for n, p in named.items() if n not in bindings}
    return defaults, var_kw


def _fname(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def check_bound_types(flow: Flow, what: str, node: str, hints: Mapping[str, Any],
                      bindings: Mapping[str, Any], bound: Bound) -> None:
    """Check what can be checked before running: constants' values, and declared types of the
    inputs and outputs bound directly to an argument (plain classes only)."""
    for arg, value in bindings.items():
        tp = hints.get(arg)
        if tp is None:
            continue
        spec = bound.spec[arg]
        if spec[0] == "const":
            check_argument(node, arg, tp, value, what)
        elif spec[0] == "ref":
            declared = _declared_type(flow, bound.refs[arg][0])
            if declared is not None and not compatible(declared, tp):
                raise FlowTypeError(
                    f"{what} '{node}' argument '{arg}' expects {type_name(tp)}, but "
                    f"'{spec[1]}' is declared as {type_name(declared)}"
                )


def _declared_type(flow: Flow, ref: Ref) -> Any:
    if isinstance(ref, Input):
        tp = (flow.graph.inputs.get(str(ref)) or {}).get("type")
        return tp
    if isinstance(ref, Output):
        return None if ref.type is Any else ref.type
    return None


def unique_name(flow: Flow, base: str) -> str:
    """``base``, or ``base_2``, ``base_3``... : the first that no step, output or input uses."""
    taken = set(flow.graph.steps) | set(flow.graph.producers) | set(flow.graph.inputs)
    if base not in taken:
        return base
    i = 2
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def node_name(flow: Flow, name: str | None, base: str) -> str:
    """The step name of a new node: ``name`` if given (replacing a step of that name), else the
    first free one of ``base``, ``base_2``... A flow input's name is never a step's name."""
    from .flow import check_name

    if name is None:
        return unique_name(flow, base)
    check_name(name)
    if name in flow.graph.inputs:
        raise BindingError(f"'{name}' is an input of flow '{flow.name}'; give the node another name")
    return name


def precheck_inputs(flow: Flow, targets: list[str],
                    params: Mapping[str, Any] | None = None, *, declared: bool = True) -> None:
    """Before a run: every flow input the plan reads has a value, of its declared type (unless
    ``declared=False``: the caller checked that already) and of the type each typed argument
    bound directly to it expects. Each (input, type) pair is checked once.

    ``params``: the values the run will use (default: the flow's current ones).
    """
    values = flow.params if params is None else params
    inputs = flow.graph.inputs
    producers = flow.graph.producers
    seen: set[tuple[str, Any]] = set()
    for name in flow.graph.topological_order(targets):
        step = flow.graph.steps[name]
        for inp in step.inputs:
            if inp in inputs and inp not in producers and (inp, None) not in seen:
                seen.add((inp, None))
                if inp not in values:
                    raise NbflowValueMissing(flow.name, inp)
                spec = inputs.get(inp) or {}
                if isinstance(spec, Mapping) and "type" in spec:
                    seen.add((inp, _hint_key(spec["type"])))
                    if declared:
                        check_input_value(flow.name, inp, spec["type"], values[inp])
        typed = step.meta.get("typed")
        if typed is not None:
            what, hints, spec_map = typed
            for arg, spec in spec_map.items():
                if spec[0] == "ref" and spec[1] in inputs and arg in hints:
                    pair = (spec[1], _hint_key(hints[arg]))
                    if pair not in seen:
                        seen.add(pair)
                        check_argument(name, arg, hints[arg], values[spec[1]], what)


def _hint_key(tp: Any) -> Any:
    """``list[int]`` written twice gives two equal objects: compare hints by value if we can."""
    try:
        hash(tp)
    except TypeError:
        return id(tp)
    return tp


__all__ = [
    "Bound",
    "Input",
    "NbflowValueMissing",
    "Node",
    "Output",
    "Ref",
    "assemble",
    "bind",
    "check_argument",
    "check_input_value",
    "check_signature",
    "node_name",
    "precheck_inputs",
    "unique_name",
]
