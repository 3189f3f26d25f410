"""``Flow``: the user's handle on a graph, a store and an event bus.

Registering a step under an existing name replaces it (that is how an edit arrives) and marks it
and its descendants stale. ``run`` brings targets up to date through the executor; ``status``
answers from a dry walk of keys, so a fresh process already knows what the store holds.
Must never import IPython or widget code.
"""

from __future__ import annotations

import inspect
import keyword
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from . import keys
from .batch import BatchMixin
from .errors import CycleError, NbflowError, NbflowWarning
from .events import Event, EventBus
from .executor import Run, RunResult, StepOutput, StepState, execute
from .graph import Graph, Step
from .imperative import ImperativeMixin
from .processor import ProcessGraphMixin
from .script import ScriptMixin
from .store import Manifest, Store, open_store
from .store.codec import value_digest

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class StepStatus:
    """One row of :meth:`Flow.status`."""

    name: str
    status: str
    duration: float | None
    saved: float | None
    key: str | None
    sizes: dict[str, int] | None = None
    error: str | None = None


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def check_name(name: str, what: str = "step") -> str:
    if not isinstance(name, str) or not _is_identifier(name):
        raise NbflowError(f"{what} name {name!r} is not a Python identifier; use letters, digits and _")
    return name


class Flow(ScriptMixin, ImperativeMixin, ProcessGraphMixin, BatchMixin):
    """A named graph of steps with a store. See the README for the tour."""

    def __init__(self, name: str = "flow", store: Any = None) -> None:
        self.name = name
        self.graph = Graph()
        self.events = EventBus()
        self._store_location = store
        self._store: Store | None = None
        self._defer_writes: Callable[[Callable[[], None]], None] | None = None
        self.params: dict[str, Any] = {}
        self._states: dict[str, StepState] = {}
        self._warned_unknown: set[tuple[str, str]] = set()
        self.last_result: RunResult | None = None

    # -- store ------------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self._store_location)
            if self._defer_writes is not None:
                self._store.defer_writes(self._defer_writes)
        return self._store

    @store.setter
    def store(self, location: Any) -> None:
        if self._store is not None:
            self._store.defer_writes(None)  # what waits goes where it was headed
        self._store_location = location
        self._store = None

    def defer_writes(self, defer: Callable[[Callable[[], None]], None] | None) -> None:
        """Write each new entry's manifest through ``defer`` (see :meth:`Store.defer_writes`);
        None: at once again. For a host that knows when it is idle, such as a notebook kernel."""
        self._defer_writes = defer
        if self._store is not None:
            self._store.defer_writes(defer)

    # -- registration -----------------------------------------------------------------------------
    @overload
    def step(self, func: F) -> F: ...
    @overload
    def step(
        self,
        func: None = None,
        *,
        name: str | None = None,
        outputs: Sequence[str] | str | None = None,
        ignore: Sequence[str] = (),
        cache: bool = True,
        version: str | None = None,
        foreach: str | None = None,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        outputs: Sequence[str] | str | None = None,
        ignore: Sequence[str] = (),
        cache: bool = True,
        version: str | None = None,
        foreach: str | None = None,
    ) -> Any:
        """Register a function as a step: parameters bind by name to outputs of other steps,
        flow parameters, or their defaults; the return value is the output named after the
        function (or unpacked into ``outputs``)."""

        def register(f: F) -> F:
            self.add(function_step(f, name=name, outputs=outputs, ignore=ignore, cache=cache,
                                   version=version, foreach=foreach, flow=self))
            return f

        return register(func) if func is not None else register

    def add(self, step: Step) -> Step:
        """Add or replace a step; a replaced step (and what depends on it) becomes stale."""
        check_name(step.name)
        for out in step.outputs:
            check_name(out, "output")
        old = self.graph.add(step)
        try:
            _ = self.graph.producers  # duplicates and cycles are reported at registration
            # the graph was acyclic before, so a new cycle passes through this step: ordering
            # its ancestors finds it (with its whole path), and is the plan its run reuses
            self.graph.topological_order([step.name])
        except NbflowError as e:
            if old is not None:
                self.graph.add(old)
            else:
                self.graph.remove(step.name)
            if isinstance(e, CycleError) and step.name in e.path[:-1]:
                i = e.path.index(step.name)  # told from the step that closed it
                raise CycleError([*e.path[i:-1], *e.path[:i], step.name]) from None
            raise
        if old is None or old != step:
            self._mark_stale([step.name])
        return step

    def remove(self, name: str) -> None:
        down = self.graph.downstream(name)
        self.graph.remove(name)
        self._states.pop(name, None)
        self._mark_stale(down)

    def param(self, name: str, default: Any = None, **spec: Any) -> Any:
        """Declare a flow parameter (an input no step binds) with a default value."""
        check_name(name, "parameter")
        self.graph.add_input(name, {"default": default, **spec})
        self.params.setdefault(name, default)
        return self.params[name]

    def _mark_stale(self, names: Iterable[str]) -> None:
        for n in names:
            for m in [n, *self.graph.descendants(n)]:
                st = self._states.get(m)
                if st is None:
                    st = self._states[m] = StepState()
                if st.status != "stale":
                    st.status = "stale"
                    st.saved = None
                    self.events.emit(Event(self.name, m, "stale"))

    # -- running ----------------------------------------------------------------------------------
    def _resolve_targets(self, targets: Sequence[str]) -> list[str]:
        if not targets:
            return list(self.graph.steps)
        out = []
        producers = self.graph.producers
        for t in targets:
            if t in self.graph.steps:
                out.append(t)
            elif t in producers:
                out.append(producers[t])
            else:
                self.graph.get(t)  # raises UnknownStepError naming the known steps
        return out

    def run(self, *targets: str, params: Mapping[str, Any] | None = None,
            force: Iterable[str] = (), raise_on_failure: bool = True,
            executor: Any = None, **executor_options: Any) -> RunResult:
        """Bring ``targets`` (step or output names; default: every step) up to date.

        ``executor="local"|"dask"`` (with ``max_workers=``, ``address=``, ``retries=``) runs
        this call's steps in parallel (see :mod:`nbflow.backends`); default: :meth:`config`'s.
        """
        if params:
            self.params.update(params)
        factory = self._run_factory()
        if executor is not None or executor_options:
            from .backends import run_factory, select

            factory = run_factory(select(executor, **executor_options), self.graph)
        result = execute(self.graph, self.store, self.events, self.name, self._states,
                         self.params, self._resolve_targets(targets), force,
                         raise_on_failure=raise_on_failure, run_factory=factory)
        self.last_result = result
        return result

    def config(self, *, store: Any = None, executor: Any = None, **executor_options: Any) -> Flow:
        """Where results live (``store=`` a directory or an fsspec URL) and where steps run
        (``executor="serial"|"local"|"dask"``, ``max_workers=``, ``address=``, ``retries=``)."""
        if store is not None:
            self.store = store
        if executor is not None or executor_options:
            from .backends import select

            self._scheduler = select(executor, **executor_options)
        return self

    def _run_factory(self) -> Callable[..., Run]:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is None and not self._has_remote_steps():
            return Run
        from .backends import run_factory

        return run_factory(scheduler, self.graph)

    def _has_remote_steps(self) -> bool:
        """Whether a step asks to run elsewhere; memoized per graph revision (every run asks)."""
        rev = self.graph.revision
        memo = getattr(self, "_remote_memo", None)
        if memo is None or memo[0] != rev:
            memo = self._remote_memo = (
                rev, any(s.meta.get("placement") == "remote" for s in self.graph.steps.values()))
        return memo[1]

    def rerun(self, step: str, **kw: Any) -> RunResult:
        """Force ``step`` to run, then bring everything downstream of it up to date."""
        self.graph.get(step)
        return self.run(step, *self.graph.downstream(step), force=[step], **kw)

    def invalidate(self, step: str) -> None:
        """Drop the entry of ``step``'s current key; it and its descendants become stale."""
        self.graph.get(step)
        key = self.plan_keys([step]).get(step)
        if key:
            self.store.delete(key)
        st = self._states.get(step)
        if st is not None and st.key and st.key != key:
            self.store.delete(st.key)
        self._states.setdefault(step, StepState()).status = "queued"  # force a stale event
        self._mark_stale([step])

    # -- queries ----------------------------------------------------------------------------------
    def upstream(self, step: str) -> list[str]:
        return self.graph.upstream(step)

    def downstream(self, step: str) -> list[str]:
        return self.graph.downstream(step)

    def topological_order(self, target: str | None = None) -> list[str]:
        return self.graph.topological_order(None if target is None else [target])

    def plan_keys(self, targets: Sequence[str] | None = None) -> dict[str, str | None]:
        """A dry walk: each step's current key where its inputs' digests are known, else None."""
        return {name: key for name, (key, _) in self._plan(targets).items()}

    def _plan(self, targets: Sequence[str] | None) -> dict[str, tuple[str | None, Manifest | None]]:
        """Each step's current key and the store's entry for it (one lookup per step)."""
        order = self.graph.topological_order(targets or None)
        run = Run(self.graph, self.store, EventBus(), self.name, {}, self.params, order)
        out: dict[str, tuple[str | None, Manifest | None]] = {}
        for name in order:
            step = self.graph.steps[name]
            try:
                key, _ = run.key_of(step)
            except Exception:
                key = None
            manifest = self.store.get(key, quiet=True) if key else None
            out[name] = (key, manifest)
            if manifest is not None and all(o in manifest.outputs for o in step.outputs):
                run.take(step, manifest)
        return out

    def status(self) -> dict[str, StepStatus]:
        """Per-step status: running/queued/failed as last seen, else, if the store holds the
        step's current key, done when this process computed it under that key and cached when
        not (a later run that re-checks it, or an edit that keeps its key, does not turn a
        step computed here into one served from the cache), else stale."""
        plan = self._plan(None)
        out: dict[str, StepStatus] = {}
        for name in self.graph.steps:
            st = self._states.get(name, StepState())
            key, manifest = plan.get(name, (None, None))
            status = st.status
            if status not in ("running", "queued", "failed"):
                if manifest is not None:
                    status = "done" if key is not None and st.computed == key else "cached"
                else:
                    status = "stale"
            elif status == "failed" and key is not None and st.key != key:
                status = "stale"
            out[name] = StepStatus(
                name, status,
                st.duration if st.duration is not None else (manifest.duration if manifest else None),
                manifest.duration if (manifest and status == "cached") else st.saved,
                key or st.key,
                st.sizes or ({n: int(o.get("size", 0)) for n, o in manifest.outputs.items()} if manifest else None),
                st.error,
            )
        return out

    def describe(self, step: str) -> dict[str, Any]:
        """JSON-serializable record of what produced ``step``'s current (or last) output."""
        self.graph.get(step)
        key = self.plan_keys([step]).get(step) or self._states.get(step, StepState()).key
        manifest = self.store.get(key) if key else None
        if manifest is None:
            raise NbflowError(f"step '{step}' has no cached output yet; run it first")
        return dict(manifest.record)

    def manifest(self, step: str) -> Manifest | None:
        key = self.plan_keys([step]).get(step)
        return self.store.get(key) if key else None

    def value(self, name: str) -> Any:
        """The current value of output ``name`` (runs what is needed)."""
        return self.run(name)[name]

    def preview(self, step: str, width: int = 80) -> dict[str, str]:
        """Short text previews of a step's cached outputs (repr; shape/dtype for arrays)."""
        manifest = self.manifest(step)
        if manifest is None:
            return {}
        out: dict[str, str] = {}
        for name in manifest.outputs:
            try:
                out[name] = preview_value(self.store.load(manifest, name), width)
            except Exception as e:  # a preview must never break a view
                out[name] = f"<unavailable: {type(e).__name__}>"
        return out

    @property
    def runs(self) -> list[Any]:
        """Recorded runs of this flow in its store, newest first (see :mod:`nbflow.runs`)."""
        from .runs import list_runs

        return list_runs(self.store, self.name)

    @property
    def latest_run(self) -> Any:
        """The newest recorded run of this flow (``latest_run["step"]``, ``.data``), or None."""
        from .runs import last_run

        return last_run(self.store, self.name)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self.graph.steps)})"


def preview_value(value: Any, width: int = 80) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{type(value).__name__} shape={tuple(shape)} dtype={dtype}"
    if shape is not None and hasattr(value, "dtypes"):
        return f"{type(value).__name__} shape={tuple(shape)}"
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- function steps ---------------------------------------------------------------------------------
def function_step(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    outputs: Sequence[str] | str | None = None,
    ignore: Sequence[str] = (),
    cache: bool = True,
    version: str | None = None,
    foreach: str | None = None,
    flow: Flow | None = None,
    kind: str = "function",
) -> Step:
    """A :class:`Step` for a plain function (also used by later adapters)."""
    step_name = name or func.__name__
    if isinstance(outputs, str):
        outputs = (outputs,)
    outs = tuple(outputs) if outputs is not None else (step_name,)  # () : no outputs
    sig = inspect.signature(func)
    inputs: list[str] = []
    defaults: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        inputs.append(p.name)
        if p.default is not p.empty:
            defaults[p.name] = p.default
    unknown = [i for i in ignore if i not in inputs]
    if unknown:
        raise NbflowError(f"step '{step_name}': ignore= names {unknown} that are not parameters")
    if foreach is not None and foreach not in inputs:
        raise NbflowError(f"step '{step_name}': foreach='{foreach}' is not a parameter")
    code = keys.function_code(func, outs)
    multi = len(outs) > 1

    def action(values: dict[str, Any]) -> dict[str, Any] | StepOutput:
        result = func(**values)
        if isinstance(result, StepOutput):
            return result
        if not outs:  # a step run for its effect (a plot, a file), like a cell binding nothing
            return {}
        if not multi:
            return {outs[0]: result}
        if not isinstance(result, tuple | list) or len(result) != len(outs):
            raise NbflowError(
                f"step '{step_name}' declares outputs {outs} but returned "
                f"{type(result).__name__}; return a tuple of {len(outs)} values"
            )
        return dict(zip(outs, result, strict=True))

    warned: set[str] = set()

    def externals() -> dict[str, str]:
        if not isinstance(func, types.FunctionType):
            return {}
        fps, unknown_names = keys.function_externals(func, value_digest)
        fresh = [n for n in unknown_names if n not in warned]
        if fresh:
            warned.update(fresh)
            warnings.warn(
                f"nbflow: step '{step_name}' reads {', '.join(repr(n) for n in fresh)}, which "
                "cannot be fingerprinted; edits to it will not invalidate the cache",
                NbflowWarning, stacklevel=4,
            )
        return fps

    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        source = ""
    return Step(
        name=check_name(step_name),
        inputs=tuple(inputs),
        outputs=outs,
        action=action,
        code=code,
        source=source,
        params=defaults,
        version=version,
        cache=cache,
        ignore=tuple(ignore),
        # a function that reads no globals and closes over nothing has no external values:
        # no call per run (the hot path of a cached tiny step)
        externals=externals if keys.reads_outside(func) else None,
        foreach=foreach,
        doc=inspect.getdoc(func),
        kind=kind,
        meta={"function": func},
    )



__all__ = ["Flow", "StepOutput", "StepStatus", "function_step", "preview_value", "NbflowWarning"]
