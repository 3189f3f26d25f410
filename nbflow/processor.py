"""Typed processors (process graphs): classes whose ``process(...)`` is one node of a flow.

A :class:`Processor` is built and ``setup()`` only when its node really runs — a node served from
the store never loads its model — and ``release()`` frees what setup took (models, GPU memory),
per node or for the whole flow. ``add_node`` checks the bindings against ``process``'s signature
and type hints before anything runs; each run checks the real values again. A node's key covers
its class's code (every method, normalized), its significant constructor arguments and its
inputs; arguments named in ``ignore=``, in the class's ``insignificant`` tuple or declared as
dataclass fields with ``compare=False`` (alexflow's convention) stay out of the key.
Must never import IPython or widget code.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from . import keys
from .errors import NbflowError, NbflowWarning
from .graph import Step
from .nodes import (
    Input,
    Node,
    Output,
    assemble,
    bind,
    check_argument,
    check_bound_types,
    check_signature,
    node_name,
    precheck_inputs,
)
from .store.codec import value_digest
from .typecheck import BindingError, hints_of

if TYPE_CHECKING:
    from .flow import Flow


class Processor:
    """Base class of a typed node. Override ``process`` (with type hints); ``setup`` and
    ``release`` are optional. The constructor stores keyword arguments as attributes, so
    ``init_kwargs={"model": "small"}`` is ``self.model`` unless the class defines ``__init__``.
    """

    #: constructor or ``process`` arguments that do not change the result (e.g. ``verbose``)
    insignificant: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            setattr(self, k, v)

    def setup(self) -> None:
        """Load heavy resources; called once before the first ``process`` that really runs."""

    def process(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define process(self, ...)")

    def release(self) -> None:
        """Free what ``setup`` loaded; ``setup`` runs again if the node runs again."""


class ProcessorNode(Node):
    """A node running a :class:`Processor`; owns the (lazily built) processor instance."""

    processor_class: type[Processor]
    init_kwargs: dict[str, Any]
    _instance: Processor | None
    _ready: bool

    def __new__(cls, name: str, owner: int | None = None,
                outputs: Mapping[str, Output] | None = None, kind: str = "processor",
                processor_class: type[Processor] = Processor,
                init_kwargs: Mapping[str, Any] | None = None) -> ProcessorNode:
        obj = super().__new__(cls, name, owner, outputs, kind)
        assert isinstance(obj, ProcessorNode)
        obj.processor_class = processor_class
        obj.init_kwargs = dict(init_kwargs or {})
        obj._instance = None
        obj._ready = False
        return obj

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_instance=None, _ready=False)  # a loaded model never travels
        return state

    @property
    def is_set_up(self) -> bool:
        return self._ready

    @property
    def processor(self) -> Processor:
        """The processor instance (built on first use; not set up)."""
        if self._instance is None:
            self._instance = self.processor_class(**self.init_kwargs)
        return self._instance

    def acquire(self) -> Processor:
        """The processor, set up (that is: lazily, only when the node really runs)."""
        proc = self.processor
        if not self._ready:
            proc.setup()
            self._ready = True
        return proc

    def release_resources(self) -> bool:
        """Release this node's processor (``release()``, then drop it); True if it was set up."""
        was = self._ready
        inst, self._instance, self._ready = self._instance, None, False
        if was and inst is not None:
            inst.release()
        return was

    def __repr__(self) -> str:
        state = "set up" if self._ready else "idle"
        return f"ProcessorNode({str(self)!r}, {self.processor_class.__name__}, {state})"


# -- the code of a processor class -------------------------------------------------------------
_SKIP_ATTRS = frozenset({
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__", "__annotations__",
    "__dataclass_fields__", "__dataclass_params__", "__match_args__", "__hash__",
    "__orig_bases__", "__parameters__", "__firstlineno__", "__static_attributes__",
    "__abstractmethods__", "_abc_impl", "__slotnames__",
})


def _methods(cls: type) -> list[tuple[str, types.FunctionType]]:
    out: list[tuple[str, types.FunctionType]] = []
    for klass in cls.__mro__:
        if klass is Processor or klass is object:
            continue
        for attr, value in sorted(vars(klass).items()):
            fn = value
            if isinstance(fn, staticmethod | classmethod):
                fn = fn.__func__
            elif isinstance(fn, property):
                fn = fn.fget
            if isinstance(fn, types.FunctionType):
                out.append((f"{klass.__qualname__}.{attr}", fn))
    return out


def class_code(cls: type) -> str:
    """Normalized code of a processor class: every method's body (formatting, comments and
    docstrings do not count) and every class attribute's content digest, along the MRO.

    Built from methods rather than the class source so it also works for classes defined in a
    notebook cell, where ``inspect.getsource(cls)`` fails.
    """
    parts: list[str] = []
    for klass in cls.__mro__:
        if klass is Processor or klass is object:
            continue
        parts.append(f"class {klass.__qualname__}")
        for attr, value in sorted(vars(klass).items()):
            if attr in _SKIP_ATTRS:
                continue
            fn = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            fn = fn.fget if isinstance(fn, property) else fn
            if isinstance(fn, types.FunctionType):
                parts.append(f"def {attr}: {keys.function_code(fn)}")
                continue
            try:
                parts.append(f"{attr} = {value_digest(value)}")
            except Exception:
                parts.append(f"{attr} = <{type(value).__qualname__}>")
    return "\n".join(parts)


def _externals(cls: type, step_name: str) -> Callable[[], dict[str, str]]:
    warned: set[str] = set()

    def externals() -> dict[str, str]:
        out: dict[str, str] = {}
        unknown: list[str] = []
        for _, fn in _methods(cls):
            fps, bad = keys.function_externals(fn, value_digest)
            for name, fp in fps.items():
                if name != cls.__name__:
                    out.setdefault(name, fp)
            unknown.extend(bad)
        fresh = [n for n in dict.fromkeys(unknown) if n not in warned]
        if fresh:
            warned.update(fresh)
            warnings.warn(
                f"nbflow: node '{step_name}' reads {', '.join(repr(n) for n in fresh)}, which "
                "cannot be fingerprinted; edits to it will not invalidate the cache",
                NbflowWarning, stacklevel=4,
            )
        return out

    return externals


def insignificant_of(cls: type, ignore: Sequence[str]) -> set[str]:
    """Arguments that stay out of the key: ``ignore=``, ``cls.insignificant`` and dataclass
    fields declared with ``compare=False``."""
    names = set(ignore) | set(getattr(cls, "insignificant", ()) or ())
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls) if not f.compare}
    return names


def _check_init(node: str, cls: type, init_kwargs: Mapping[str, Any]) -> None:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(**init_kwargs)
    except TypeError as e:
        raise BindingError(
            f"node '{node}': init_kwargs do not fit {cls.__qualname__}(): {e}"
        ) from None


class ProcessGraphMixin:
    """``Flow`` methods for process graphs: constants, processor nodes, run_upto, release."""

    def _me(self) -> Flow:
        return cast("Flow", self)

    def add_constant(self, name: str, value: Any = dataclasses.MISSING, *,
                     type: Any = Any) -> Input:  # noqa: A002
        """A constant node: a flow input whose value is set with ``const.set_value(v)``."""
        from .flow import check_name

        flow = self._me()
        check_name(name, "constant")
        if name in flow.graph.steps or flow.graph.producer_of(name) is not None:
            raise NbflowError(f"flow '{flow.name}' already has a step or output named '{name}'; "
                              "give the constant another name")
        flow.graph.add_input(name, {"kind": "constant", **({} if type is Any else {"type": type})})
        ref = Input(name, flow)
        if value is not dataclasses.MISSING:
            ref.set_value(value)
        return ref

    def add_node(
        self,
        processor: type[Processor],
        inputs: Mapping[str, Any] | None = None,
        *,
        init_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        ignore: Sequence[str] = (),
        version: str | None = None,
        cache: bool = True,
    ) -> ProcessorNode:
        """Add a node running ``processor().process(**inputs)``.

        ``inputs`` maps each argument of ``process`` to a value, a constant, another node (its
        output) or a list of those; they are checked against ``process``'s signature and type
        hints now, and the real values again before each run. The node is named after the class
        (``SumInt``, ``SumInt_2``...) unless ``name=`` is given (replacing a step of that name).
        """
        flow = self._me()
        if not (isinstance(processor, type) and issubclass(processor, Processor)):
            raise BindingError(
                f"add_node expects a subclass of nbflow.Processor, got {processor!r}; "
                "use flow.add_step for a plain function"
            )
        if processor.process is Processor.process:
            raise BindingError(f"{processor.__qualname__} does not define process(self, ...); "
                               "a processor node runs its process method")
        inputs = dict(inputs or {})
        init_kwargs = dict(init_kwargs or {})
        step_name = node_name(flow, name, processor.__name__)
        _check_init(step_name, processor, init_kwargs)
        defaults, _ = check_signature("node", step_name, processor.process, inputs, skip_first=True)
        bound = bind(flow, step_name, {**inputs, **defaults})
        hints = {k: v for k, v in hints_of(processor.process).items() if k != "return"}
        check_bound_types(flow, "node", step_name, hints, inputs, bound)
        skip = insignificant_of(processor, ignore)
        known = set(bound.spec) | set(init_kwargs) | set(getattr(processor, "insignificant", ()))
        if dataclasses.is_dataclass(processor):
            known |= {f.name for f in dataclasses.fields(processor)}
        unknown = [i for i in ignore if i not in known]
        if unknown:
            raise BindingError(f"node '{step_name}': ignore= names '{unknown[0]}', which is neither "
                               "an argument of process nor an init kwarg")
        params = dict(bound.params)
        engine_inputs = list(bound.inputs)
        ignored = [n for arg in bound.spec if arg in skip for n in bound.names_of(arg)]
        for k, v in init_kwargs.items():
            engine = f"{step_name}.__init__.{k}"
            params[engine] = v
            engine_inputs.append(engine)
            if k in skip:
                ignored.append(engine)
        ret = hints_of(processor.process).get("return", Any)
        out = Output(step_name, id(flow), step_name, "o0", ret)
        node = ProcessorNode(step_name, id(flow), {"o0": out}, "processor", processor, init_kwargs)
        spec = bound.spec

        def action(values: dict[str, Any]) -> dict[str, Any]:
            kwargs = assemble(spec, values)
            for arg, tp in hints.items():
                if arg in kwargs:
                    check_argument(step_name, arg, tp, kwargs[arg])
            return {step_name: node.acquire().process(**kwargs)}

        try:
            source = inspect.getsource(processor)
        except (OSError, TypeError):
            source = ""
        code = (f"processor:{class_code(processor)}\n#bind {bound.code()}\n"
                f"#init {json.dumps(sorted(k for k in init_kwargs if k not in skip))}")
        old = flow.graph.steps.get(step_name)
        flow.add(Step(
            name=step_name,
            inputs=tuple(engine_inputs),
            outputs=(step_name,),
            action=action,
            code=code,
            source=source,
            params=params,
            version=version,
            cache=cache,
            ignore=tuple(ignored),
            externals=_externals(processor, step_name),
            doc=inspect.getdoc(processor),
            kind="processor",
            meta={"node": node, "functions": [fn for _, fn in _methods(processor)],
                  "typed": ("node", hints, spec)},
        ))
        if old is not None and isinstance(old.meta.get("node"), ProcessorNode):
            old.meta["node"].release_resources()
        return node

    def run_upto(self, target: str) -> Any:
        """Bring ``target`` (a node, an output, or a name) up to date and return its value
        (a tuple for a node with several outputs). Flow inputs are checked first."""
        flow = self._me()
        name = str(target)
        if name in flow.graph.steps:
            step = flow.graph.steps[name]
            wanted = list(step.outputs)
        elif flow.graph.producer_of(name) is not None:
            step = flow.graph.steps[flow.graph.producers[name]]
            wanted = [name]
        else:
            flow.graph.get(name)  # raises, naming the known steps
            raise AssertionError("unreachable")
        precheck_inputs(flow, [step.name])
        result = flow.run(step.name)
        values = [result[o] for o in wanted]
        return values[0] if len(values) == 1 else tuple(values)

    def processor_nodes(self) -> list[ProcessorNode]:
        """Every processor node of the flow, in registration order."""
        nodes = []
        for step in self._me().graph.steps.values():
            node = step.meta.get("node")
            if isinstance(node, ProcessorNode):
                nodes.append(node)
        return nodes

    def release_resources(self, *nodes: str) -> list[str]:
        """Release the processors of ``nodes`` (default: all); returns the names of those that
        were set up. They are set up again, lazily, if their node runs again."""
        flow = self._me()
        chosen = self.processor_nodes()
        if nodes:
            wanted = {str(n) for n in nodes}
            for n in wanted:
                flow.graph.get(n)
            chosen = [n for n in chosen if str(n) in wanted]
        return [str(n) for n in chosen if n.release_resources()]


__all__ = ["ProcessGraphMixin", "Processor", "ProcessorNode", "class_code", "insignificant_of"]
