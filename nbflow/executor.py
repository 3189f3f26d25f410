"""Plan and run: bring targets up to date, running only steps whose key has no entry.

The plan is the targets plus their ancestors in topological order. Walking it, each step's key is
built from the content digests of its inputs; a key with a verified entry is *cached* (its value
is not even loaded unless a running step needs it), anything else *runs*. A failing step marks its
descendants skipped and nothing else; everything upstream stays cached, so the next run resumes
at the failed step. Must never import IPython or widget code.
"""

from __future__ import annotations

import functools
import math
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import keys
from .errors import MissingInputError, NbflowWarning, StepFailed
from .events import Event, EventBus
from .graph import Graph, KeyMemo, Step
from .store import Encoded, Manifest, Store, StoreWriteError, encode, not_cached
from .store.codec import value_digest

VOLATILE = "volatile:"  # digest prefix of a value that could not be stored: never cache on it
_NO_EXTERNALS: dict[str, str] = {}  # a step without external values (shared: never mutated)


@dataclass
class StepState:
    """What the flow knows of a step (``status`` is one of events.STATUSES)."""

    status: str = "stale"
    key: str | None = None
    duration: float | None = None
    saved: float | None = None
    sizes: dict[str, int] | None = None
    error: str | None = None
    exception: BaseException | None = None
    manifest: Manifest | None = None
    finished: float | None = None
    computed: str | None = None  # the key this process last computed the step under


@dataclass
class StepOutput:
    """What an action may return instead of a plain dict: values plus entry metadata.

    ``meta`` is stored in the manifest (the notebook adapter keeps captured displays there).
    """

    values: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


class RunResult(Mapping[str, Any]):
    """Outputs of a run by name (loaded lazily), and which steps ran, were cached or failed."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self.executed: list[str] = run.executed
        self.cached: list[str] = run.cached
        self.failed: list[str] = run.failed
        self.skipped: list[str] = run.skipped
        self.targets: list[str] = run.targets
        self.errors: dict[str, BaseException] = run.errors

    @property
    def manifests(self) -> dict[str, Manifest]:
        return dict(self._run.manifests)

    def __getitem__(self, name: str) -> Any:
        return self._run.value(name)

    def __iter__(self) -> Any:
        return iter(self._run.available())

    def __len__(self) -> int:
        return len(self._run.available())

    def __repr__(self) -> str:
        return (
            f"RunResult(executed={self.executed}, cached={self.cached}"
            + (f", failed={self.failed}" if self.failed else "")
            + ")"
        )


class Run:
    """One walk over a plan. Holds digests, entries and (encoded) values produced so far."""

    def __init__(
        self,
        graph: Graph,
        store: Store,
        events: EventBus,
        flow_name: str,
        states: dict[str, StepState],
        params: Mapping[str, Any],
        targets: list[str],
        force: Iterable[str] = (),
        previous: Mapping[str, Manifest] | None = None,
    ) -> None:
        self.graph = graph
        self.store = store
        self.events = events
        self.flow_name = flow_name
        self.states = states
        self.params = dict(params)
        self.targets = targets
        self.force = set(force)
        self.previous = previous or {}
        self.digests: dict[str, str] = {}  # output name -> content digest
        self.encoded: dict[str, Encoded] = {}
        self.raw: dict[str, Any] = {}  # values that could not be encoded
        self.manifests: dict[str, Manifest] = {}  # step -> its entry
        self.owner: dict[str, str] = {}  # output name -> step that produced it in this run
        self.executed: list[str] = []
        self.cached: list[str] = []
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.errors: dict[str, BaseException] = {}
        self._param_digests: dict[str, str] = {}
        self._warned_unknown: set[str] = set()

    # -- keys -------------------------------------------------------------------------------------
    def param_digest(self, name: str, value: Any) -> str:
        d = self._param_digests.get(name)
        if d is None:
            try:
                d = value_digest(value)
            except Exception:
                d = VOLATILE + uuid.uuid4().hex
            self._param_digests[name] = d
        return d

    def input_digests(self, step: Step) -> dict[str, str] | None:
        """Digest of every input the key covers; None if an input is not available."""
        producers = self.graph.producers
        out: dict[str, str] = {}
        ignore = step.ignore
        for name in step.inputs:
            if name in ignore:
                continue
            if name in producers and producers[name] != step.name:
                d = self.digests.get(name)
                if d is None:
                    return None
                out[name] = d
            elif name in self.params:
                out[name] = self.param_digest(name, self.params[name])
            elif name in step.params:
                try:
                    out[name] = value_digest(step.params[name])
                except Exception:
                    out[name] = VOLATILE + uuid.uuid4().hex
            elif name in self.graph.inputs:
                return None  # a flow input without a value
        return out

    def external_digests(self, step: Step) -> dict[str, str]:
        if step.externals is None:
            return _NO_EXTERNALS
        return step.externals()

    def key_of(self, step: Step) -> tuple[str | None, dict[str, str]]:
        memo = self._keyed(step)
        return (None, {}) if memo is None else (memo.key, memo.merged)

    def _keyed(self, step: Step) -> KeyMemo | None:
        """The step's key memo, brought up to date; None if an input is not available.

        Every cell re-checks its ancestors (``make``), so this runs once per ancestor per
        cell, and most of the time nothing changed: a memo of this very step whose inputs all
        came from other steps is checked against the run's digests in place, without building
        the input map again. That holds when the graph changed around the step (each cell of a
        "run all" adds a step): an input whose producer went is in no digest of the run, and
        one taken over by another step is keyed by its content alone."""
        graph = self.graph
        memo = graph.key_memo.get(step.name)
        if memo is not None and memo.step is step and memo.from_steps:
            digests = self.digests
            for name, digest in memo.inputs.items():
                if digests.get(name) != digest:
                    break
            else:
                ext = step.externals() if step.externals is not None else _NO_EXTERNALS
                if ext is memo.ext or ext == memo.ext:
                    return memo
        inputs = self.input_digests(step)
        if inputs is None:
            return None
        ext = self.external_digests(step)
        producers = graph.producers
        from_steps = all(n in producers and producers[n] != step.name
                         for n in step.inputs if n not in step.ignore)
        if memo is not None and memo.step is step and memo.inputs == inputs and memo.ext == ext:
            if memo.from_steps != from_steps:  # the graph changed around the step, not its key
                memo = graph.key_memo[step.name] = memo._replace(from_steps=from_steps)
            return memo
        # the common case: the key map and the record's map are the inputs
        merged = {**{f"~{k}": v for k, v in ext.items() if k not in inputs}, **inputs} if ext else inputs
        key = keys.step_key(step.name, step.code, step.outputs, {},
                            key_map(merged) if ext else merged, step.version)
        # digests are hex, so the marker can only occur as a digest's prefix
        volatile = VOLATILE in "".join(merged.values()) if merged else False
        memo = graph.key_memo[step.name] = KeyMemo(step, inputs, ext, merged, key, volatile,
                                                   from_steps)
        return memo

    # -- values -----------------------------------------------------------------------------------
    def available(self) -> list[str]:
        return [n for n in self.digests if n in self.encoded or n in self.raw or n in self.owner]

    def value(self, name: str) -> Any:
        """A fresh copy of output ``name`` (read-only for large buffers)."""
        if name in self.raw:
            return self.raw[name]
        enc = self.encoded.get(name)
        if enc is not None:
            return enc.decode()
        step = self.owner.get(name)
        if step is None:
            raise KeyError(f"'{name}' is not an output of this run")
        manifest = self.manifests[step]
        values = self.store.load_outputs(manifest, [name])
        if values is None:
            raise _Stale(step)
        return values[name]

    def input_values(self, step: Step) -> dict[str, Any]:
        producers = self.graph.producers
        values: dict[str, Any] = {}
        for name in step.inputs:
            if name in producers and producers[name] != step.name:
                values[name] = self.value(name)
            elif name in self.params:
                values[name] = self.params[name]
            elif name in step.params:
                values[name] = step.params[name]
        return values

    # -- events -----------------------------------------------------------------------------------
    def emit(self, step: str, status: str, **kw: Any) -> None:
        st = self.states.get(step)
        if st is None:
            st = self.states[step] = StepState()
        st.status = status
        for k, v in kw.items():
            if v is not None and k != "item":
                setattr(st, k, v)
        if status == "running" or status == "queued":
            st.error = None
        elif status == "done" and kw.get("item") is None:
            st.computed = kw.get("key")
        if self.events._subscribers:
            self.events.emit(Event(self.flow_name, step, status, **kw))  # type: ignore[arg-type]

    # -- the walk ---------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        order = self.graph.topological_order(self.targets)
        self.graph.check(self.targets)
        # what is known up to date is not announced as queued: most of a plan is cached
        # ancestors, and two events each would tax every cell of a long notebook
        states = self.states
        for name in order:
            st = states.get(name)
            if st is None or st.status not in ("done", "cached") or name in self.force:
                self.emit(name, "queued")
        blocked: set[str] = set()
        steps = self.graph.steps
        for name in order:
            step = steps[name]
            if blocked and any(p in blocked for p in self.graph.parents(name)):
                blocked.add(name)
                self.skipped.append(name)
                self.emit(name, "stale")
                continue
            if not self.run_step(step):
                blocked.add(name)
        return RunResult(self)

    def run_step(self, step: Step) -> bool:
        key, merged, volatile, served = self.serve_cached(step)
        return True if served else self.compute(step, key, merged, volatile)

    def serve_cached(self, step: Step) -> tuple[str, dict[str, str], bool, bool]:
        """Key ``step``; take its entry if the store has one. Returns (key, merged digests,
        volatile, served). Shared by the serial walk and the parallel back ends."""
        memo = self._keyed(step)
        if memo is None:
            unset = [n for n in step.inputs if n in self.graph.inputs and n not in self.params]
            if unset:
                raise MissingInputError(step.name, unset[0], unset=True)
            raise RuntimeError(f"inputs of step '{step.name}' are not ready")
        key, merged, volatile = memo.key, memo.merged, memo.volatile
        if step.cache and not volatile and step.name not in self.force:
            manifest = self.store.get(key)
            if manifest is not None and _has_outputs(manifest, step.outputs):
                st = self.states.get(step.name)
                known = st is not None and st.status == "cached" and st.key == key
                self.take(step, manifest)
                self.cached.append(step.name)
                if known and not self.events.wants_repeats:
                    return key, merged, volatile, True  # nothing new to say about it
                duration = manifest.duration
                self.emit(step.name, "cached", key=key, duration=duration, saved=duration,
                          sizes=_sizes(manifest) if self.events._subscribers else None)
                return key, merged, volatile, True
        return key, merged, volatile, False

    def take(self, step: Step, manifest: Manifest) -> None:
        self.manifests[step.name] = manifest
        st = self.states.get(step.name)
        if st is None:
            st = self.states[step.name] = StepState()
        st.manifest = manifest
        st.key = manifest.key
        digests = manifest.digests
        for out in step.outputs:
            self.digests[out] = digests[out]
            self.owner[out] = step.name
        if self.encoded or self.raw:  # values this run computed, now superseded
            for out in step.outputs:
                self.encoded.pop(out, None)
                self.raw.pop(out, None)

    def compute(self, step: Step, key: str, merged: dict[str, str], volatile: bool) -> bool:
        self.emit(step.name, "running", key=key)
        started = time.perf_counter()
        try:
            if step.foreach is not None:
                values, meta = self.run_foreach(step, merged)
            else:
                result = step.action(self.input_values(step))
                values, meta = _split(step, result)
        except _Stale:
            raise
        except BaseException as e:  # noqa: BLE001 - reported, then raised to the caller
            if isinstance(e, KeyboardInterrupt | SystemExit):
                self.emit(step.name, "failed", error="interrupted")
                raise
            duration = time.perf_counter() - started
            self.failed.append(step.name)
            self.errors[step.name] = e
            st = self.states.setdefault(step.name, StepState())
            st.exception = e
            self.emit(step.name, "failed", key=key, duration=duration, error=_format(e))
            return False
        duration = time.perf_counter() - started
        manifest = self.commit(step, key, merged, values, meta, duration, volatile)
        self.executed.append(step.name)
        sizes = {n: e.size for n, e in self.encoded.items() if n in step.outputs}
        st = self.states.setdefault(step.name, StepState())
        st.manifest = manifest
        st.saved = None
        st.finished = time.time()
        self.emit(step.name, "done", key=key, duration=duration, sizes=sizes)
        return True

    def commit(
        self,
        step: Step,
        key: str,
        merged: dict[str, str],
        values: dict[str, Any],
        meta: dict[str, Any],
        duration: float,
        volatile: bool,
    ) -> Manifest | None:
        """Encode outputs (digests for downstream keys) and store them when allowed."""
        encoded: dict[str, Encoded] = {}
        for out in step.outputs:
            value = values[out]
            self.owner[out] = step.name
            try:
                enc = encode(value)
            except Exception as e:
                warnings.warn(
                    f"nbflow: output '{out}' of step '{step.name}' is not cached: it cannot be "
                    f"pickled ({type(e).__name__}: {e}); the step will rerun next time",
                    NbflowWarning,
                    stacklevel=2,
                )
                self.raw[out] = value
                self.encoded.pop(out, None)
                self.digests[out] = VOLATILE + uuid.uuid4().hex
                volatile = True
                continue
            encoded[out] = enc
            self.encoded[out] = enc
            self.raw.pop(out, None)
            self.digests[out] = enc.digest
        self.manifests.pop(step.name, None)
        if volatile or not step.cache:
            return None
        record = describe_record(self.flow_name, step, key, merged, self.params,
                                 {o: e.digest for o, e in encoded.items()})
        entry_meta = {"step": step.name, "flow": self.flow_name, "duration": duration,
                      "record": record, **meta}
        try:
            manifest = self.store.put(key, encoded, entry_meta)
        except StoreWriteError as e:
            warnings.warn(not_cached(step.name, e), NbflowWarning, stacklevel=2)
            return None
        self.manifests[step.name] = manifest
        return manifest

    def run_foreach(self, step: Step, merged: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the action once per item of the ``foreach`` input; each item has its own entry."""
        assert step.foreach is not None
        inputs = self.input_values(step)
        items = list(inputs[step.foreach])
        results: list[dict[str, Any]] = []
        base = {k: v for k, v in merged.items() if k != step.foreach}
        item_write_failed = False
        for i, item in enumerate(items):
            try:
                item_digest = value_digest(item)
            except Exception:
                item_digest = VOLATILE + uuid.uuid4().hex
            item_key = foreach_item_key(step.name, step.code, step.outputs, step.version, base,
                                        item_digest)
            reuse = step.cache and step.name not in self.force and not item_digest.startswith(VOLATILE)
            manifest = self.store.get(item_key) if reuse else None
            loaded = self.store.load_outputs(manifest) if manifest is not None else None
            if loaded is not None and all(o in loaded for o in step.outputs):
                results.append(loaded)
                self.emit(step.name, "running", item=i, key=item_key)
                continue
            t0 = time.perf_counter()
            values, _meta = _split(step, step.action({**inputs, step.foreach: item}))
            if step.cache and not item_digest.startswith(VOLATILE):
                try:
                    encoded = {o: encode(values[o]) for o in step.outputs}
                    self.store.put(item_key, encoded, {
                        "step": step.name, "flow": self.flow_name, "item": i,
                        "duration": time.perf_counter() - t0,
                    })
                except Exception as e:  # the step's result is still returned; say it once
                    if not item_write_failed:
                        item_write_failed = True
                        warnings.warn(
                            f"nbflow: items of foreach step '{step.name}' were not cached "
                            f"({type(e).__name__}: {e})", NbflowWarning, stacklevel=2)
            results.append(values)
        return {o: [r[o] for r in results] for o in step.outputs}, {}


def foreach_item_key(
    name: str, code: str, outputs: tuple[str, ...], version: str | None,
    base: Mapping[str, str], item_digest: str,
) -> str:
    """The key of one foreach item: the step's key inputs without the list, plus the item's
    digest. One function, so the serial walk and the parallel back ends share item entries."""
    return keys.step_key(name, code, outputs, {"#item": item_digest}, key_map(base), version)


def key_map(merged: Mapping[str, str]) -> dict[str, str]:
    """The name -> digest map a key covers: the ``~`` that marks an external value in records is
    dropped, so a notebook global ``alpha`` and a flow parameter ``alpha`` with the same content
    give the same key (an exported script shares the notebook's cache)."""
    return {(k[1:] if k.startswith("~") else k): v for k, v in merged.items()}


class _Stale(Exception):
    """An entry went bad between planning and loading: the run is retried once."""

    def __init__(self, step: str) -> None:
        self.step = step


def _split(step: Step, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if isinstance(result, StepOutput):
        values, meta = result.values, result.meta
    else:
        values, meta = result, {}
    missing = [o for o in step.outputs if o not in values]
    if missing:
        raise ValueError(f"step '{step.name}' did not produce {', '.join(missing)}")
    return values, meta


def _has_outputs(manifest: Manifest, outputs: tuple[str, ...]) -> bool:
    stored = manifest.digests
    for o in outputs:
        if o not in stored:
            return False
    return True


def _sizes(manifest: Manifest) -> dict[str, int]:
    return dict(manifest.sizes)


def _format(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


RECORD_ITEMS = 100  # containers longer than this are summarized in records
RECORD_TEXT = 1000  # and texts longer than this are cut


def describe_record(
    flow: str, step: Step, key: str, merged: Mapping[str, str], params: Mapping[str, Any],
    output_digests: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A JSON-serializable account of exactly what produced an entry (and, with the output
    digests, of which content it produced, so an artifact can be traced back to its record)."""
    python, nbflow = _environment()

    def jsonable(v: Any, depth: int = 0) -> Any:
        # parameters are shown by value when small; a large one (a data list passed as a flow
        # input) is summarized, its exact content being named by its digest under "inputs"
        if isinstance(v, str):
            return v if len(v) <= RECORD_TEXT else v[:RECORD_TEXT] + f"… ({len(v)} chars)"
        if isinstance(v, float) and not math.isfinite(v):
            return repr(v)  # JSON has no NaN: the record says "nan" in every encoding
        if isinstance(v, int | float | bool) or v is None:
            return v
        if isinstance(v, list | tuple | dict) and (len(v) > RECORD_ITEMS or depth > 3):
            return f"<{type(v).__name__} of {len(v)} items>"
        if isinstance(v, list | tuple):
            return [jsonable(x, depth + 1) for x in v]
        if isinstance(v, dict):
            return {str(k): jsonable(x, depth + 1) for k, x in v.items()}
        text = repr(v)
        return text if len(text) <= RECORD_TEXT else text[:RECORD_TEXT] + "…"

    return {
        "flow": flow,
        "step": step.name,
        "key": key,
        "code_digest": keys.code_digest(step.code),  # memoized: the key hashed it
        "version": step.version,
        "inputs": {k: v for k, v in merged.items() if not k.startswith("~")},
        "externals": {k[1:]: v for k, v in merged.items() if k.startswith("~")},
        "params": {k: jsonable(v) for k, v in {**step.params, **params}.items()
                   if k in step.inputs and k not in step.ignore},
        "ignored": list(step.ignore),
        "outputs": list(step.outputs),
        "output_digests": dict(output_digests or {}),
        "packages": _packages(step),
        "python": python,
        "nbflow": nbflow,
    }


@functools.lru_cache(maxsize=1)
def _environment() -> tuple[str, str]:
    import platform

    from . import __version__

    return platform.python_version(), __version__


def _packages(step: Step) -> dict[str, str]:
    """Versions of the packages a step's code reads (``meta["packages"]`` may supply them)."""
    try:
        hook = step.meta.get("packages")
        if callable(hook):
            return dict(hook())
        funcs = list(step.meta.get("functions") or ())
        if step.meta.get("function") is not None:
            funcs.append(step.meta["function"])
        return keys.packages_of(funcs)
    except Exception:  # a record is an account, never a reason to lose a result
        return {}


def execute(
    graph: Graph,
    store: Store,
    events: EventBus,
    flow_name: str,
    states: dict[str, StepState],
    params: Mapping[str, Any],
    targets: list[str],
    force: Iterable[str] = (),
    raise_on_failure: bool = True,
    run_factory: Callable[..., Run] = Run,
) -> RunResult:
    """Run a plan; retried once if a cache entry turns out bad while loading it."""
    for attempt in range(3):
        run = run_factory(graph, store, events, flow_name, states, params, targets, force)
        try:
            result = run.execute()
        except _Stale as stale:
            if attempt == 2:
                raise
            store.forget(run.manifests[stale.step].key)
            force = {*force, stale.step}
            continue
        if result.failed and raise_on_failure:
            first = result.failed[0]
            err = StepFailed(first, result.errors[first])
            err.result = result  # type: ignore[attr-defined]
            raise err from result.errors[first]
        return result
    raise AssertionError("unreachable")
