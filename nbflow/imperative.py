"""Imperative flows (what Flyte calls imperative workflows): a flow built by a program.

``add_input`` declares a typed flow input, ``add_step`` adds a function bound to inputs, other
nodes' outputs, constants or lists of them, ``add_output`` names what a call returns, and
``flow(x=..., y=...)`` checks the inputs and runs. Every node is an ordinary engine
:class:`~nbflow.graph.Step`, so it is keyed, memoized, evented and drawn like any other step;
nothing here executes anything itself. Must never import IPython or widget code.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from . import keys
from .errors import NbflowError
from .graph import Step
from .nodes import (
    _MISSING,
    Input,
    NbflowValueMissing,
    Node,
    Output,
    assemble,
    bind,
    check_argument,
    check_bound_types,
    check_input_value,
    check_signature,
    node_name,
    precheck_inputs,
)
from .store.codec import value_digest
from .typecheck import BindingError, FlowTypeError, hints_of, mismatch, type_name

if TYPE_CHECKING:
    from .flow import Flow

_OPTIONS = ("name", "outputs", "ignore", "version", "cache")


class FlowInputs(Mapping[str, Input]):
    """``flow.inputs``: the declared flow inputs by name, as references to bind."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow

    def __getitem__(self, name: str) -> Input:
        if name not in self._flow.graph.inputs:
            known = ", ".join(self._flow.graph.inputs) or "(none yet)"
            raise KeyError(
                f"flow '{self._flow.name}' has no input '{name}'; its inputs are: {known} "
                "(declare one with flow.add_input(name, type))"
            )
        return Input(name, self._flow)

    def __iter__(self) -> Iterator[str]:
        return iter(self._flow.graph.inputs)

    def __len__(self) -> int:
        return len(self._flow.graph.inputs)

    def __repr__(self) -> str:
        return "FlowInputs(" + ", ".join(repr(self[n]) for n in self) + ")"


def output_labels(func: Callable[..., Any], outputs: int | Sequence[str] | None) -> list[str]:
    """Output labels of a function node: ``o0`` for one value, ``o0, o1, ...`` for a tuple
    annotation (``-> tuple[float, int]``), a NamedTuple's field names, or ``outputs=``."""
    if isinstance(outputs, int):
        if outputs < 1:
            raise NbflowError(f"outputs={outputs}: a step has at least one output")
        return [f"o{i}" for i in range(outputs)]
    if outputs is not None:
        labels = [outputs] if isinstance(outputs, str) else list(outputs)
        bad = [o for o in labels if not o.isidentifier()]
        if bad:
            raise NbflowError(f"output label {bad[0]!r} is not a Python identifier")
        return labels
    ret = hints_of(func).get("return")
    if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        return list(ret._fields)
    if typing.get_origin(ret) is tuple:
        args = typing.get_args(ret)
        if len(args) > 1 and args[-1] is not Ellipsis:
            return [f"o{i}" for i in range(len(args))]
    return ["o0"]


def _output_types(func: Callable[..., Any], n: int) -> list[Any]:
    ret = hints_of(func).get("return", Any)
    if n == 1:
        return [ret]
    if isinstance(ret, type) and hasattr(ret, "_fields"):
        hints = typing.get_type_hints(ret) if hasattr(ret, "__annotations__") else {}
        return [hints.get(f, Any) for f in ret._fields]
    args = typing.get_args(ret)
    return list(args) if len(args) == n else [Any] * n


class ImperativeMixin:
    """``Flow`` methods for imperative flows; state lives in the flow's graph and params."""

    def _me(self) -> Flow:
        return cast("Flow", self)

    # -- inputs -----------------------------------------------------------------------------------
    def add_input(self, name: str, type: Any = Any, default: Any = _MISSING, *,  # noqa: A002
                  doc: str | None = None) -> Input:
        """Declare a flow input of ``type`` (``list[int]``...), optionally with a default.

        Re-declaring an input replaces its type and default (re-running a notebook cell).
        """
        from .flow import check_name

        flow = self._me()
        check_name(name, "input")
        if name in flow.graph.steps or flow.graph.producer_of(name) is not None:
            raise NbflowError(
                f"flow '{flow.name}' already has a step or output named '{name}'; "
                "give the input another name"
            )
        spec: dict[str, Any] = {"kind": "input", "doc": doc}
        if type is not Any:
            spec["type"] = type
        if default is not _MISSING:
            check_input_value(flow.name, name, type, default)
            spec["default"] = default
            flow.params[name] = default
        else:
            spec["required"] = True
            if name in flow.params and mismatch(flow.params[name], type):
                del flow.params[name]
        flow.graph.add_input(name, spec)
        return Input(name, flow)

    @property
    def inputs(self) -> FlowInputs:
        """The declared inputs: ``flow.inputs["x"]`` is a reference to bind in ``add_step``."""
        return FlowInputs(self._me())

    # -- steps ------------------------------------------------------------------------------------
    def add_step(
        self,
        func: Callable[..., Any],
        bindings: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        outputs: int | Sequence[str] | None = None,
        ignore: Sequence[str] = (),
        version: str | None = None,
        cache: bool = True,
        **kw_bindings: Any,
    ) -> Node:
        """Add ``func`` as a node; each keyword binds one of its arguments to a flow input, a
        node's output (``n1.outputs["o0"]``, or the node itself if it has one output), a
        constant, or a list/tuple/dict of those (one argument).

        The node is named after the function (``slope``, then ``slope_2``...) unless ``name=``
        is given (an existing step of that name is replaced). Its outputs are ``o0``, ``o1``...
        for a tuple return annotation, a NamedTuple's fields, or ``outputs=``. Arguments whose
        names clash with these options go in the ``bindings`` dict.
        """
        from .flow import check_name, function_step

        flow = self._me()
        if not callable(func):
            raise BindingError(f"add_step expects a function, got {type(func).__name__}")
        all_bindings = {**(bindings or {}), **kw_bindings}
        base_name = getattr(func, "__name__", None) or type(func).__name__
        if not base_name.isidentifier():
            if name is None:
                raise BindingError(
                    f"add_step: a {base_name} has no usable name; pass name='...' for the step"
                )
        step_name = node_name(flow, name, base_name)
        try:
            defaults, _ = check_signature("step", step_name, func, all_bindings)
        except BindingError as e:
            clash = [o for o in _OPTIONS if f"argument '{o}'" in str(e)]
            if clash:
                raise BindingError(
                    f"{e}; '{clash[0]}=' sets add_step's own option, so pass that argument in "
                    f"a dict: flow.add_step({base_name}, {{'{clash[0]}': ...}})"
                ) from None
            raise
        bound = bind(flow, step_name, {**all_bindings, **defaults})
        hints = {k: v for k, v in hints_of(func).items() if k != "return"}
        check_bound_types(flow, "step", step_name, hints, all_bindings, bound)
        unknown = [i for i in ignore if i not in bound.spec]
        if unknown:
            raise BindingError(f"step '{step_name}': ignore= names '{unknown[0]}', which is not "
                               f"one of its arguments ({', '.join(bound.spec)})")
        labels = output_labels(func, outputs)
        types = _output_types(func, len(set(labels)))
        engine = [step_name] if len(labels) == 1 else [f"{step_name}_{lb}" for lb in labels]
        for out_name in engine:
            check_name(out_name, "output")
        node_outputs = {lb: Output(out_name, id(flow), step_name, lb, tp)
                        for lb, out_name, tp in zip(labels, engine, types, strict=False)}
        if len(labels) > 1 and labels[0] != "o0":  # NamedTuple fields: o0, o1... too
            node_outputs.update({f"o{i}": node_outputs[lb] for i, lb in enumerate(labels)})
        node = Node(step_name, id(flow), node_outputs, "function")

        spec, outs, multi = bound.spec, tuple(engine), len(engine) > 1

        def action(values: dict[str, Any]) -> dict[str, Any]:
            kwargs = assemble(spec, values)
            for arg, tp in hints.items():
                if arg in kwargs:
                    check_argument(step_name, arg, tp, kwargs[arg], "step")
            result = func(**kwargs)
            if not multi:
                return {outs[0]: result}
            if not isinstance(result, tuple | list) or len(result) != len(outs):
                raise NbflowError(
                    f"step '{step_name}' declares {len(outs)} outputs ({', '.join(labels)}) but "
                    f"returned {type(result).__name__}; return a tuple of {len(outs)} values"
                )
            return dict(zip(outs, result, strict=True))

        template = function_step(func, name=step_name, outputs=outs, cache=cache,
                                 version=version, flow=flow)
        ignored = tuple(n for arg in ignore for n in bound.names_of(arg))
        step = template.with_(
            inputs=tuple(bound.inputs),
            action=action,
            code=_code(callable_code(func), bound.code(), labels),
            params=bound.params,
            ignore=ignored,
            meta={"function": func, "node": node, "typed": ("step", hints, spec)},
        )
        flow.add(step)
        return node

    def add_output(self, name: str, value: Any, python_type: Any = None) -> Output:
        """Name a flow output: a reference, or a list of references (one list-valued output),
        checked against ``python_type`` when given. ``flow(...)`` returns every output by name."""
        from .flow import check_name

        flow = self._me()
        check_name(name, "output")
        existing = flow.graph.steps.get(name)
        if existing is not None and existing.kind != "output":
            raise NbflowError(
                f"flow '{flow.name}' already has a step named '{name}'; choose another output name"
            )
        producer = flow.graph.producer_of(name)
        if name in flow.graph.inputs or (producer is not None and producer != name):
            raise NbflowError(
                f"'{name}' is already an input or output of flow '{flow.name}'; "
                "choose another output name"
            )
        bound = bind(flow, name, {"value": value})
        if not bound.refs["value"]:
            raise BindingError(
                f"flow output '{name}' binds no node output or input; pass a reference such as "
                "node.outputs['o0'] (or a list of them)"
            )
        spec = bound.spec
        declared = python_type

        def action(values: dict[str, Any]) -> dict[str, Any]:
            result = assemble(spec, values)["value"]
            if declared is not None:
                why = mismatch(result, declared)
                if why:
                    raise FlowTypeError(
                        f"flow output '{name}' expects {type_name(declared)}, {why}"
                    )
            return {name: result}

        out_type = python_type if python_type is not None else (
            getattr(value, "type", Any) if isinstance(value, Output | Input) else Any
        )
        node = Node(name, id(flow), {"o0": Output(name, id(flow), name, "o0", out_type)}, "output")
        flow.add(Step(
            name=name,
            inputs=tuple(bound.inputs),
            outputs=(name,),
            action=action,
            code=_code("flow-output", bound.code(), [type_name(python_type)]),
            source=f"{name} = {_describe(value)}",
            params=bound.params,
            kind="output",
            doc=f"flow output '{name}'",
            meta={"node": node, "python_type": python_type},
        ))
        return node.outputs["o0"]

    def node(self, name: str) -> Node:
        """The node (with its ``outputs``) of a step added by add_step/add_node/add_output."""
        flow = self._me()
        step = flow.graph.get(str(name))
        found = step.meta.get("node")
        if isinstance(found, Node):
            return found
        return Node(step.name, id(flow),
                    {f"o{i}": Output(o, id(flow), step.name, f"o{i}")
                     for i, o in enumerate(step.outputs)}, step.kind)

    def output_names(self) -> list[str]:
        """The flow outputs declared with add_output, in the order they were added."""
        return [s.name for s in self._me().graph.steps.values() if s.kind == "output"]

    # -- calling ----------------------------------------------------------------------------------
    def _call_values(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The input values a call ``flow(**inputs)`` runs with: given values, else defaults
        (else, for constants and parameters, their current value), each type-checked."""
        flow = self._me()
        declared = flow.graph.inputs
        unknown = [k for k in inputs if k not in declared]
        if unknown:
            known = ", ".join(declared) or "(none)"
            raise FlowTypeError(
                f"flow '{flow.name}' has no input '{unknown[0]}'; its inputs are: {known}"
            )
        values: dict[str, Any] = {}
        for name, raw_spec in declared.items():
            spec = raw_spec if isinstance(raw_spec, Mapping) else {}
            if name in inputs:
                value = inputs[name]
            elif "default" in spec and spec.get("kind") != "constant":
                value = spec["default"]
            elif name in flow.params and spec.get("kind") != "input":
                value = flow.params[name]
            else:
                raise NbflowValueMissing(flow.name, name)
            if "type" in spec:
                check_input_value(flow.name, name, spec["type"], value)
            values[name] = value
        return values

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        """Run the flow with these inputs; returns ``{output name: value}`` for every flow
        output (or ``{}`` after running every step when no output was declared)."""
        flow = self._me()
        values = self._call_values(inputs)
        outputs = self.output_names()
        targets = outputs or list(flow.graph.steps)
        if targets:
            precheck_inputs(flow, targets, values, declared=False)
        result = flow.run(*targets, params=values)
        return {o: result[o] for o in outputs}


def callable_code(func: Callable[..., Any]) -> str:
    """What a node's key knows of its callable: a function's normalized body; for a
    ``functools.partial``, a bound method or a callable object, also the content digest of what
    it carries (bound arguments, ``self``), so two differently bound callables never share a key.
    """
    if isinstance(func, functools.partial):
        return (f"partial:{callable_code(func.func)}\n"
                f"#bound {_state_digest((func.args, func.keywords))}")
    if isinstance(func, types.MethodType):
        return f"method:{keys.function_code(func.__func__, ())}\n#self {_state_digest(func.__self__)}"
    if isinstance(func, types.FunctionType | types.BuiltinFunctionType):
        return keys.function_code(func, ())
    call = next((vars(k)["__call__"] for k in type(func).__mro__ if "__call__" in vars(k)), None)
    body = keys.function_code(call, ()) if isinstance(call, types.FunctionType) else repr(type(func))
    return f"object:{type(func).__qualname__}:{body}\n#self {_state_digest(func)}"


def _state_digest(value: Any) -> str:
    try:
        return value_digest(value)
    except Exception:  # not picklable: the type's name is all we can say
        return f"<{type(value).__qualname__}>"


def _code(body: str, bind_code: str, labels: Sequence[str]) -> str:
    return f"{body}\n#bind {bind_code}\n#outputs {json.dumps(list(labels))}"


def _describe(value: Any) -> str:
    if isinstance(value, list | tuple):
        inner = ", ".join(_describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return str(value) if isinstance(value, str) else repr(value)


__all__ = ["FlowInputs", "ImperativeMixin", "output_labels"]
