"""Metaflow-style flows on nbflow's engine: ``FlowSpec``, ``@step``, ``Parameter``, ``JSONType``.

A flow is a class; steps are ``@step`` methods; artifacts are attributes set on ``self``; a run
goes ``start -> ... -> end`` through linear, branch and foreach transitions::

    class ForeachFlow(FlowSpec):
        alpha = Parameter("alpha", help="Learning rate", default=0.01)

        @step
        def start(self):
            self.titles = ["Stranger Things", "House of Cards", "Narcos"]
            self.next(self.a, foreach="titles")
        ...

    run = ForeachFlow.run(alpha=0.6)       # in a notebook: a run record, run["join"].results
    if __name__ == "__main__":
        ForeachFlow()                      # python flow.py run [--alpha 0.6] | show | resume

Unlike Metaflow, every step (and every foreach item) is cached in the nbflow store: a run only
computes what changed, ``resume`` reuses the failed run's finished steps, and past runs stay
inspectable (``nbflow.runs("ForeachFlow")``). Where the parts live: the graph and its rules in
``flowspec_graph`` (what steps read: ``flowspec_reads``), engine steps in ``flowspec_engine``,
task states and artifacts in ``flowspec_data``, what ``self`` is in a step in ``flowspec_task``,
the runs (reused steps for resume, pools) in ``flowspec_pool``, the command line in
``flowspec_cli``. Must never import IPython.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .errors import NbflowError, StepFailed
from .events import Event
from .flowspec_engine import SpecFlow, engine_flow
from .flowspec_graph import parse_flow
from .flowspec_task import _CTX, Inputs, TaskContext, is_step_method
from .parameters import JSONType, Parameter, resolve
from .runs import RunRecord, RunRecorder, get_run, last_run, list_runs

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["FlowSpec", "JSONType", "Parameter", "add_run_hook", "flowspec_step", "step"]

#: called as hook(engine_flow, run_id) when a run starts (the notebook adapter shows its widget)
_run_hooks: list[Callable[[SpecFlow, str], None]] = []


def add_run_hook(hook: Callable[[SpecFlow, str], None]) -> Callable[[], None]:
    """Call ``hook(flow, run_id)`` at the start of every FlowSpec run; returns a remover."""
    _run_hooks.append(hook)
    return lambda: _run_hooks.remove(hook) if hook in _run_hooks else None


def flowspec_step(func: F, **options: Any) -> F:
    """Mark a method of a :class:`FlowSpec` as a step (the function itself is unchanged).

    ``nbflow.step`` hands methods defined in a class body here, so one name serves both kinds of
    steps. Options belong to function steps; a FlowSpec step takes none.
    """
    if options:
        raise NbflowError(
            f"@step on method '{getattr(func, '__name__', func)}' takes no options "
            f"({', '.join(options)}); they are for function steps"
        )
    if not callable(func):
        raise NbflowError("@step decorates a method: @step\n    def start(self): ...")
    func._nbflow_step = True  # type: ignore[attr-defined]
    return func


step = flowspec_step


def _ctx(obj: Any) -> TaskContext | None:
    return obj.__dict__.get(_CTX)


class FlowSpec:
    """Base class of Metaflow-style flows. See the module docstring for the tour."""

    def __init__(self, use_cli: bool = True) -> None:
        """``MyFlow()`` under ``__main__`` runs the command line and exits."""
        if use_cli:
            if any("ipykernel" in a for a in sys.argv[:1]):
                raise NbflowError(
                    f"{type(self).__name__}() runs the command line; in a notebook use "
                    f"{type(self).__name__}.run(...) (or %flow run {type(self).__name__})"
                )
            from .flowspec_cli import main

            sys.exit(main(type(self)))

    # -- inside a running step --------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        ctx = _ctx(self) if name != "__dict__" else None
        if ctx is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__} has no attribute '{name}'")
        return ctx.lookup(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        ctx = _ctx(self)
        if ctx is not None:
            if isinstance(getattr(type(self), name, None), Parameter):
                getattr(type(self), name).__set__(self, value)  # raises: read-only
            ctx.check_settable(type(self), name)
            ctx.assigned.add(name)
            ctx.deleted.discard(name)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        ctx = _ctx(self)
        if ctx is None:
            object.__delattr__(self, name)
            return
        present = name in self.__dict__ or ctx.ref_of(name) is not None
        if not present:
            raise AttributeError(f"step '{ctx.spec.step}' deletes self.{name}, which does not exist")
        self.__dict__.pop(name, None)
        ctx.assigned.discard(name)
        ctx.loaded.pop(name, None)
        ctx.deleted.add(name)

    def _nbflow_parameter_value(self, param: Parameter) -> Any:
        ctx = _ctx(self)
        return param.default if ctx is None else ctx.param(param)

    def next(self, *steps: Any, foreach: str | None = None, **kwargs: Any) -> None:
        """Name the next step(s): ``self.next(self.a)``, ``self.next(self.a, self.b)`` (a
        branch), or ``self.next(self.a, foreach="items")`` (one task per item)."""
        ctx = _ctx(self)
        if ctx is None:
            raise NbflowError("self.next() only works inside a running step")
        if kwargs:
            raise NbflowError(f"self.next() got {', '.join(kwargs)}=; only foreach= is supported")
        names = []
        for s in steps:
            name = is_step_method(s)
            if name is None:
                raise NbflowError(
                    f"step '{ctx.spec.step}': self.next() takes steps (self.<step>), not {s!r}"
                )
            names.append(name)
        ctx.record_next(tuple(names), foreach)

    def merge_artifacts(self, inputs: Inputs, exclude: Iterable[str] | None = None,
                        include: Iterable[str] | None = None) -> None:
        """In a join: take every artifact the branches agree on (same content), as Metaflow does.

        Artifacts already set in this step are left alone; ``exclude`` leaves names out;
        ``include`` takes only the names listed (each must exist somewhere). Branches that set
        one name to different values raise :class:`~nbflow.flowspec_task.MergeArtifactsError`.
        """
        ctx = _ctx(self)
        if ctx is None:
            raise NbflowError("merge_artifacts() only works inside a running join step")
        ctx.merge(self, inputs, list(exclude) if exclude is not None else None,
                  list(include) if include is not None else None)

    @property
    def input(self) -> Any:
        """In a foreach: this task's item (None outside a foreach)."""
        ctx = _ctx(self)
        if ctx is None or not ctx.frames:
            return None
        from .flowspec_data import load_ref

        frame = ctx.frames[-1]
        return load_ref(ctx.store, frame.input, "input", frame.step)

    @property
    def index(self) -> int | None:
        """In a foreach: this task's position in the list (None outside a foreach)."""
        ctx = _ctx(self)
        return ctx.frames[-1].index if ctx is not None and ctx.frames else None

    # -- the class as a whole ---------------------------------------------------------------------
    @classmethod
    def flow(cls, store: Any = None) -> SpecFlow:
        """The engine flow behind this class (status, events, describe, the DAG widget)."""
        return engine_flow(cls, store)

    @classmethod
    def show(cls) -> None:
        """Print the steps, their docstrings and transitions."""
        print(parse_flow(cls).show(), end="")

    @classmethod
    def run(cls, *, max_workers: int | None = None, executor: str | None = None,
            address: str | None = None, store: Any = None, echo: bool = False,
            **params: Any) -> RunRecord:
        """Run the flow in this process; returns the run (``run["step"].x``, ``run.data.x``).

        Only steps (and foreach items) whose code, parameters or received artifacts changed
        run; the rest is served from the store. ``max_workers=N`` runs independent branches and
        foreach items on N local processes; ``executor="dask"`` (``address=``) on Dask. A failing
        step raises :class:`~nbflow.errors.StepFailed` (its ``run`` attribute holds the run).
        """
        return run_flow(cls, params, store=store, max_workers=max_workers, executor=executor,
                        address=address, echo=echo)

    @classmethod
    def resume(cls, step_name: str | None = None, *, origin_run_id: str | None = None,
               max_workers: int | None = None, executor: str | None = None,
               address: str | None = None, store: Any = None, echo: bool = False) -> RunRecord:
        """Rerun from the failed step of the last run (or from ``step_name``), reusing every
        step before it from that run, with that run's parameters."""
        return resume_flow(cls, step_name, origin_run_id=origin_run_id, store=store,
                           max_workers=max_workers, executor=executor, address=address, echo=echo)

    @classmethod
    def runs(cls, store: Any = None) -> list[RunRecord]:
        """Past runs of this flow, newest first."""
        return list_runs(engine_flow(cls, store).store, cls.__name__)


# -- running ---------------------------------------------------------------------------------------
def run_flow(
    cls: type,
    params: Mapping[str, Any] | None = None,
    *,
    store: Any = None,
    max_workers: int | None = None,
    executor: str | None = None,
    address: str | None = None,
    pinned: Mapping[str, str] | None = None,
    force: Iterable[str] = (),
    meta: Mapping[str, Any] | None = None,
    echo: bool = False,
    source: str = "keyword",
) -> RunRecord:
    """One recorded run of a FlowSpec class (the graph is checked before anything runs)."""
    if max_workers is not None and (not isinstance(max_workers, int) or isinstance(max_workers, bool)
                                    or max_workers < 1):
        raise NbflowError(f"max_workers must be a whole number >= 1, not {max_workers!r}")
    from .backends import select

    scheduler = select(executor, address=address, max_workers=max_workers)
    flow = engine_flow(cls, store)
    assert flow.spec_graph is not None
    values = resolve(flow.spec_graph.params, params or {}, source=source,
                     owner=f"flow {cls.__name__}")
    user_steps = flow.user_steps
    recorder = RunRecorder(
        flow.store, flow.name, values, steps=user_steps,
        meta={"kind": "flowspec", "tasks": "flowspec", "class": cls.__qualname__,
              "executor": scheduler.describe() if scheduler else "serial", **(meta or {})},
    )
    unsubscribe = [recorder.attach(flow.events)]
    if echo:
        print(f"{flow.name}: run {recorder.id} (store {flow.store.root})", file=sys.stderr)
        unsubscribe.append(flow.events.subscribe(_Printer(set(user_steps))))
    for hook in list(_run_hooks):
        hook(flow, recorder.id)
    flow.run_scheduler = scheduler
    flow.pinned = dict(pinned or {})
    try:
        result = flow.run(params=values, force=force, raise_on_failure=False)
    except BaseException:
        recorder.finish("failed")
        raise
    finally:
        for unsub in unsubscribe:
            unsub()
        flow.run_scheduler = None
        flow.pinned = {}
    record = recorder.finish("failed" if result.failed else "done")
    record.result = result
    if result.failed:
        failed = [s for s in flow.graph.topological_order() if s in result.failed]
        first = failed[0]
        error = result.errors[first]
        if echo:
            print(f"{flow.name}: run {record.id} failed at step '{first}'", file=sys.stderr)
        exc = StepFailed(first, error)
        exc.run = record  # type: ignore[attr-defined]
        raise exc from error
    if echo:
        print(f"{flow.name}: run {record.id} done", file=sys.stderr)
    return record


def resume_flow(
    cls: type,
    step_name: str | None = None,
    *,
    origin_run_id: str | None = None,
    store: Any = None,
    max_workers: int | None = None,
    executor: str | None = None,
    address: str | None = None,
    echo: bool = False,
) -> RunRecord:
    """Metaflow's ``resume``: steps before the resume point come from the origin run as they were
    (even if their code changed since); the resume point and everything after it run again,
    served from the store where their keys still match."""
    flow = engine_flow(cls, store)
    assert flow.spec_graph is not None
    if origin_run_id is not None:
        origin = get_run(flow.store, flow.name, str(origin_run_id))
        if origin is None:
            raise NbflowError(f"{flow.name} has no run {origin_run_id} in {flow.store.root}; "
                              f"list runs with `runs`")
    else:
        origin = last_run(flow.store, flow.name)
        if origin is None:
            raise NbflowError(f"{flow.name} has no earlier run in {flow.store.root} to resume; "
                              "start one with `run`")
    if step_name is not None:
        if step_name not in flow.spec_graph.nodes:
            raise NbflowError(f"{flow.name} has no step '{step_name}'; its steps: "
                              f"{', '.join(flow.spec_graph.nodes)}")
        start = step_name
    else:
        failed = origin.failed_step
        if failed is None:
            if echo:
                print(f"{flow.name}: run {origin.id} finished successfully; nothing to resume "
                      "(resume STEP reruns from a step)", file=sys.stderr)
            return origin
        start = failed
    again = {start, *flow.graph.downstream(start)}
    pinned = {}
    for name in flow.user_steps:
        info = origin.step_info(name)
        if name not in again and info.get("status") in ("done", "cached") and info.get("key"):
            pinned[name] = str(info["key"])
    declared = {p.attr for p in flow.spec_graph.params}
    params = {k: v for k, v in origin.params.items() if k in declared}
    if echo:
        reused = ", ".join(pinned) or "nothing"
        print(f"{flow.name}: resuming run {origin.id} from step '{start}' (reusing {reused})",
              file=sys.stderr)
    return run_flow(cls, params, store=flow.store, max_workers=max_workers, executor=executor,
                    address=address, pinned=pinned,
                    force=[step_name] if step_name else [], echo=echo,
                    meta={"origin_run": origin.id, "resumed_from": start}, source="the origin run")


class _Printer:
    """Progress lines on stderr for the command line: one per finished step."""

    def __init__(self, steps: set[str]) -> None:
        self.steps = steps
        self.items: dict[str, dict[str, int]] = {}

    def __call__(self, event: Event) -> None:
        if event.step not in self.steps:
            return
        if event.item is not None:
            counts = self.items.setdefault(event.step, {})
            counts[event.status] = counts.get(event.status, 0) + 1
            return
        line = None
        items = self.items.pop(event.step, None) if event.status in ("done", "cached", "failed") else None
        tasks = ""
        n = sum(items.get(k, 0) for k in ("done", "cached", "failed")) if items else 0
        if items and n:  # parallel runs report items as they start only
            tasks = f" {n} tasks ({items.get('done', 0)} ran, {items.get('cached', 0)} cached)"
        if event.status == "done":
            line = f"[{event.step}] done{tasks} in {_secs(event.duration)}"
        elif event.status == "cached":
            line = f"[{event.step}] cached (saved {_secs(event.saved)})"
        elif event.status == "failed":
            line = f"[{event.step}] failed{tasks} after {_secs(event.duration)}"
        elif event.status == "stale":
            line = f"[{event.step}] skipped: an earlier step failed"
        if line:
            print(line, file=sys.stderr, flush=True)


def _secs(t: float | None) -> str:
    return f"{t or 0.0:.2f} s"

