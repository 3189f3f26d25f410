"""Running one task of a Metaflow-style step: what ``self`` is while the step's method runs.

A task starts from the state it receives (a predecessor's artifacts, or in a join nothing but
``inputs``), runs the method on a fresh instance of the flow class, and ends with its own
state: what it inherited, plus what it set or changed (stored when large), minus what it
deleted. Artifacts load lazily: ``self.x`` loads ``x`` from its reference the first time.
``merge_artifacts`` follows Metaflow's rules exactly and compares values by content digest.

Everything a task needs travels in a :class:`TaskSpec` and plain values, so a task can run in
another process (the local pool, a Dask worker) that opens the store by its location.
Must never import IPython.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import NbflowError
from .flowspec_data import (
    Ref,
    Split,
    TaskState,
    encode_artifact,
    load_ref,
    store_encoded,
)
from .flowspec_graph import RESERVED, is_step
from .parameters import Parameter
from .store import Store, open_store

_CTX = "_nbflow_ctx"


class MergeArtifactsError(NbflowError):
    """``merge_artifacts`` cannot merge: ``artifacts`` names the ambiguous or missing ones."""

    def __init__(self, message: str, artifacts: Sequence[str]) -> None:
        self.artifacts = list(artifacts)
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:  # travels back from pool workers as itself
        return (MergeArtifactsError, (str(self), self.artifacts))


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about a step that its tasks need (picklable, small)."""

    flow: str
    step: str
    store: Any  # how a worker opens the store: a backends.tasks.StoreSpec, or the root path
    is_join: bool
    join: str | None  # "static" | "foreach" | None
    targets: tuple[str, ...]
    foreach: str | None
    hoist: bool  # for a foreach step: leave the list out of the items' states
    steps: tuple[str, ...]  # every step of the flow (artifacts may not take these names)
    params: tuple[str, ...]  # parameters this step reads (given as engine inputs)
    pred_inputs: tuple[str, ...] = ()
    item_input: str | None = None
    providers: tuple[str, ...] = ()


# -- stores by location, per process -----------------------------------------------------------------
_stores: dict[tuple[int, str], Store] = {}


def remember_store(store: Store) -> None:
    """Tasks in this process use ``store`` itself (and its memo) for its location."""
    _stores[(os.getpid(), store.root)] = store


def describe_store(store: Store) -> Any:
    """What a task carries to open ``store`` in another process (the back ends' store spec)."""
    from .backends.tasks import store_spec

    try:
        return store_spec(store)
    except NbflowError:  # a store only this process can reach: tasks then run here
        return store.root


def store_at(spec: Any) -> Store:
    location = spec if isinstance(spec, str) else spec.location
    key = (os.getpid(), location)
    store = _stores.get(key)
    if store is None:
        if isinstance(spec, str):
            store = open_store(spec)
        else:
            from .backends.tasks import open_spec

            store = open_spec(spec)
        _stores[key] = store
    return store


# -- the task ----------------------------------------------------------------------------------------
class TaskContext:
    """The running task behind a flow instance (kept in its ``__dict__`` under ``_nbflow_ctx``)."""

    def __init__(
        self,
        spec: TaskSpec,
        store: Store,
        incoming: TaskState | list[TaskState],
        params: Mapping[str, Any],
        providers: Mapping[str, Any],
    ) -> None:
        self.spec = spec
        self.store = store
        self.params = dict(params)
        self.providers = dict(providers)
        if isinstance(incoming, TaskState):
            self.inherited = incoming.refs()
            self.frames = incoming.frames
            self.incoming: list[TaskState] = []
        else:
            self.inherited = {}
            self.incoming = list(incoming)
            first = self.incoming[0].frames if self.incoming else ()
            self.frames = first[:-1] if spec.join == "foreach" else first
        self.passdown: dict[str, tuple[Ref, str]] = {}
        self.assigned: set[str] = set()
        self.loaded: dict[str, str] = {}  # name -> digest it was loaded with (mutation check)
        self.deleted: set[str] = set()
        self.next_call: tuple[tuple[str, ...], str | None] | None = None

    # -- reading ----------------------------------------------------------------------------------
    def hoisted(self, frames: Sequence[Any], name: str) -> tuple[Ref, str] | None:
        """A foreach list left out of item states, found through the split that made it."""
        for depth in range(len(frames) - 1, -1, -1):
            frame = frames[depth]
            if frame.var != name:
                continue
            split = self._split_for(frame.step, tuple(frames[:depth]))
            if split is not None and split.hoist:
                return split.state.refs().get(name)
        return None

    def _split_for(self, step: str, outer: tuple[Any, ...]) -> Split | None:
        value = self.providers.get(step)
        candidates = [value] if isinstance(value, Split) else list(value or ())
        for split in candidates:
            if isinstance(split, Split) and split.state.frames == outer:
                return split
        return None

    def ref_of(self, name: str) -> tuple[Ref, str] | None:
        if name in self.deleted:
            return None
        if name in self.passdown:
            return self.passdown[name]
        if name in self.inherited:
            return self.inherited[name]
        if not self.spec.is_join:
            return self.hoisted(self.frames, name)
        return None

    def lookup(self, obj: Any, name: str) -> Any:
        found = self.ref_of(name)
        if found is None:
            raise AttributeError(self._missing(name))
        ref, origin = found
        value = load_ref(self.store, ref, name, origin)
        object.__setattr__(obj, name, value)
        self.loaded[name] = ref[0]
        return value

    def has(self, obj: Any, name: str) -> bool:
        """Metaflow's ``hasattr(self, name)`` without loading anything."""
        return name in obj.__dict__ or self.ref_of(name) is not None or hasattr(type(obj), name)

    def available(self) -> list[str]:
        names = set(self.passdown) | set(self.inherited)
        return sorted(names - self.deleted)

    def _missing(self, name: str) -> str:
        known = ", ".join(self.available()) or "none"
        if self.spec.is_join:
            return (f"join '{self.spec.step}' has no artifact '{name}' yet: a join starts empty; "
                    f"read it from inputs (inputs.<step>.{name}) or call "
                    f"self.merge_artifacts(inputs) first (artifacts here: {known})")
        if any(f.var == name for f in self.frames):
            return (f"step '{self.spec.step}' reads self.{name}, the list its foreach goes over, "
                    f"in a way nbflow could not see in its source; write self.{name} in the "
                    "step's own code so that its items are keyed on the whole list")
        return (f"step '{self.spec.step}' reads self.{name}, which no earlier step set "
                f"(artifacts here: {known})")

    def param(self, p: Parameter) -> Any:
        if p.attr in self.params:
            return self.params[p.attr]
        raise NbflowError(  # the graph reader follows every self.<name>; this is a bug if seen
            f"step '{self.spec.step}' reads parameter '{p.name}' in a way nbflow did not see "
            f"in its source; read it as self.{p.attr} in the step's own code"
        )

    # -- writing ----------------------------------------------------------------------------------
    def check_settable(self, cls: type, name: str) -> None:
        if name in RESERVED:
            raise NbflowError(
                f"step '{self.spec.step}' sets self.{name}, a name nbflow uses; rename the artifact"
            )
        if name in self.spec.steps:
            raise NbflowError(
                f"step '{self.spec.step}' sets self.{name}, but '{name}' is a step of the flow; "
                "rename the artifact"
            )
        if name.startswith("__") or name == _CTX:
            raise NbflowError(f"step '{self.spec.step}' sets self.{name}; names with __ are not artifacts")

    # -- transitions ------------------------------------------------------------------------------
    def record_next(self, targets: tuple[str, ...], foreach: str | None) -> None:
        step = self.spec.step
        if self.next_call is not None:
            raise NbflowError(f"step '{step}' called self.next() twice; call it once, at the end")
        if not self.spec.targets:
            raise NbflowError(f"step '{step}' is the last step and cannot call self.next()")
        if targets != self.spec.targets or foreach != self.spec.foreach:
            said = ", ".join(f"self.{t}" for t in self.spec.targets)
            raise NbflowError(
                f"step '{step}' called self.next({', '.join('self.' + t for t in targets)}"
                f"{f', foreach={foreach!r}' if foreach else ''}), but its last line says "
                f"self.next({said}{f', foreach={self.spec.foreach!r}' if self.spec.foreach else ''}); "
                "a step's transitions are fixed: branch on data inside a step, not between steps"
            )
        self.next_call = (targets, foreach)

    # -- end of the task --------------------------------------------------------------------------
    def persist(self, obj: Any) -> TaskState:
        spec = self.spec
        refs: dict[str, tuple[Ref, str]] = {} if spec.is_join else dict(self.inherited)
        refs.update(self.passdown)
        for name in self.deleted:
            refs.pop(name, None)
        for name, value in list(obj.__dict__.items()):
            if name == _CTX or name.startswith("__"):
                continue
            if name not in self.assigned and name not in self.loaded:
                continue
            enc = encode_artifact(value, spec.step, name)
            if name not in self.assigned and enc.digest == self.loaded[name]:
                continue  # read, not changed
            old = refs.get(name)
            if old is not None and old[0][0] == enc.digest:
                continue  # same content as what it inherited: keep where it came from
            ref = store_encoded(self.store, enc, flow=spec.flow, step=spec.step, name=name)
            refs[name] = (ref, spec.step)
        return TaskState.build(spec.step, refs, self.frames)

    # -- merge_artifacts --------------------------------------------------------------------------
    def merge(self, obj: Any, inputs: Inputs, exclude: Sequence[str] | None,
              include: Sequence[str] | None) -> None:
        step = self.spec.step
        if not self.spec.is_join:
            raise MergeArtifactsError(
                f"merge_artifacts can only be called in a join step, and '{step}' is not one "
                f"(a join takes inputs: def {step}(self, inputs))", [],
            )
        include = list(include or [])
        exclude = list(exclude or [])
        if include and exclude:
            raise MergeArtifactsError(
                f"step '{step}' calls merge_artifacts with both include= and exclude=; "
                "use one of them", [],
            )
        if not isinstance(inputs, Inputs):
            raise MergeArtifactsError(
                f"step '{step}': merge_artifacts takes the join's inputs argument", []
            )
        to_merge: dict[str, tuple[Ref, str]] = {}
        unresolved: list[str] = []
        for view in inputs:
            for name, found in view._artifacts().items():
                if (name not in include) if include else (name in exclude):
                    continue
                if self.has(obj, name):
                    continue
                previous = to_merge.setdefault(name, found)
                if previous[0][0] != found[0][0] and name not in unresolved:
                    unresolved.append(name)
        missing = [v for v in include if v not in to_merge and not self.has(obj, v)]
        if unresolved:
            names = ", ".join(unresolved)
            raise MergeArtifactsError(
                f"step '{step}' cannot merge the artifact{'s' if len(unresolved) > 1 else ''} "
                f"{names}: the incoming branches set {'them' if len(unresolved) > 1 else 'it'} "
                f"to different values. Set {'them' if len(unresolved) > 1 else 'it'} before "
                f"calling merge_artifacts (e.g. self.{unresolved[0]} = inputs[0].{unresolved[0]})"
                f", or leave {'them' if len(unresolved) > 1 else 'it'} out with exclude=",
                unresolved,
            )
        if missing:
            raise MergeArtifactsError(
                f"step '{step}' asks merge_artifacts to include {', '.join(missing)}, which no "
                f"incoming branch has and the step does not set; remove "
                f"{'them' if len(missing) > 1 else 'it'} from include= or set "
                f"{'them' if len(missing) > 1 else 'it'} in a branch",
                missing,
            )
        self.passdown.update(to_merge)


class InputView:
    """One incoming task as a join sees it: ``view.x`` loads artifact ``x`` of that task."""

    def __init__(self, ctx: TaskContext, state: TaskState) -> None:
        self._ctx = ctx
        self._state = state
        self._refs = state.refs()
        self._values: dict[str, Any] = {}

    @property
    def step(self) -> str:
        return self._state.step

    @property
    def index(self) -> int | None:
        return self._state.frames[-1].index if self._state.frames else None

    @property
    def input(self) -> Any:
        frames = self._state.frames
        return load_ref(self._ctx.store, frames[-1].input, "input", frames[-1].step) if frames else None

    def _artifacts(self) -> dict[str, tuple[Ref, str]]:
        out = dict(self._refs)
        for frame in self._state.frames:
            if frame.var not in out:
                found = self._ctx.hoisted(self._state.frames, frame.var)
                if found is not None:
                    out[frame.var] = found
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        found = self._artifacts().get(name)
        if found is None:
            known = ", ".join(sorted(self._artifacts())) or "none"
            raise AttributeError(
                f"the input from step '{self.step}' has no artifact '{name}' (it has: {known})"
            )
        value = load_ref(self._ctx.store, found[0], name, found[1])
        self._values[name] = value
        return value

    def __dir__(self) -> list[str]:
        return sorted(self._artifacts())

    def __repr__(self) -> str:
        where = f"[{self.index}]" if self.index is not None else ""
        return f"<input from {self.step}{where}: {', '.join(sorted(self._artifacts()))}>"


class Inputs(Sequence[InputView]):
    """A join's ``inputs``: iterate over all of them, index them, or name a branch
    (``inputs.a``) after a static split."""

    def __init__(self, views: list[InputView], foreach: bool, step: str) -> None:
        self._views = views
        self._foreach = foreach
        self._step = step

    def __getitem__(self, i: Any) -> Any:
        return self._views[i]

    def __len__(self) -> int:
        return len(self._views)

    def __iter__(self) -> Iterator[InputView]:
        return iter(self._views)

    def __getattr__(self, name: str) -> InputView:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._foreach:
            raise AttributeError(
                f"join '{self._step}' closes a foreach; its {len(self._views)} inputs have no "
                f"names: iterate over them ([i.x for i in inputs]) or index them (inputs[0])"
            )
        for view in self._views:
            if view.step == name:
                return view
        known = ", ".join(v.step for v in self._views)
        raise AttributeError(f"join '{self._step}' has no input from step '{name}'; its inputs: {known}")

    def __repr__(self) -> str:
        return f"<inputs of {self._step}: {len(self)}>"


def run_task(
    cls: type,
    spec: TaskSpec,
    incoming: TaskState | list[TaskState],
    params: Mapping[str, Any],
    providers: Mapping[str, Any],
    store: Store,
) -> TaskState | Split:
    """Run step ``spec.step`` of ``cls`` on ``incoming``; its new state (a split after foreach)."""
    ctx = TaskContext(spec, store, incoming, params, providers)
    obj: Any = object.__new__(cls)
    object.__setattr__(obj, _CTX, ctx)
    method = getattr(cls, spec.step)
    try:
        if spec.is_join:
            views = [InputView(ctx, s) for s in ctx.incoming]
            method(obj, Inputs(views, spec.join == "foreach", spec.step))
        else:
            method(obj)
        if spec.targets and ctx.next_call is None:
            raise NbflowError(
                f"step '{spec.step}' returned without calling self.next(); every path through "
                "a step must end in self.next(...)"
            )
        state = ctx.persist(obj)
        if spec.foreach is None:
            return state
        return _split(obj, ctx, state)
    finally:
        object.__setattr__(obj, _CTX, None)


def _split(obj: Any, ctx: TaskContext, state: TaskState) -> Split:
    spec = ctx.spec
    var = spec.foreach
    assert var is not None
    try:
        value = getattr(obj, var)
    except AttributeError:
        raise NbflowError(
            f"step '{spec.step}' goes to foreach='{var}', but sets no artifact '{var}'; set "
            f"self.{var} to a list before self.next(...)"
        ) from None
    try:
        items = list(value)
    except TypeError:
        raise NbflowError(
            f"step '{spec.step}': foreach='{var}' must name a list (or another iterable), but "
            f"self.{var} is {type(value).__name__}"
        ) from None
    if not items:
        raise NbflowError(
            f"step '{spec.step}': self.{var} is empty, so the foreach would have no tasks; a "
            "foreach needs at least one item"
        )
    refs = tuple(
        store_encoded(ctx.store, encode_artifact(item, spec.step, f"{var}[{i}]"),
                      flow=spec.flow, step=spec.step, name=f"{var}[{i}]")
        for i, item in enumerate(items)
    )
    return Split(state, var, refs, hoist=spec.hoist)


def is_step_method(value: Any) -> str | None:
    """The step name of a bound step method (what self.next() receives), else None."""
    func = getattr(value, "__func__", None)
    if func is not None and is_step(func):
        return str(func.__name__)
    return None
