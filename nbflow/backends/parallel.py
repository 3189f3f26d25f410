"""A :class:`~nbflow.executor.Run` that hands steps to a pool of workers as soon as they are ready.

Same plan, keys, cache checks and early cutoff as the serial walk — the decisions stay here, on
the driver, where the digests are — but a step that must run becomes a task: independent branches
run at once, and a foreach step becomes a *split* (item keys; which items the store holds), one
task per missing item, and a *join* that commits the step's entry. Workers read inputs from the
store and write outputs to it themselves; only keys, digests and small values come back.

Completions and worker "started" notes arrive on one queue (the pool's callbacks put them there)
and are turned into events on the driver's thread, in order, so subscribers (the widget) see the
same event stream as for a serial run. A step that cannot be sent (its action does not pickle, an
input lives only in this process, or ``meta["placement"] == "local"``) runs here, as before.
Must never import Dask or IPython.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import NbflowWarning
from ..executor import Run, RunResult, StepState, _format, _Stale, describe_record
from ..graph import Step
from ..store import Store, encode, not_cached
from .tasks import (
    InputRef,
    ItemResult,
    Payload,
    SplitResult,
    StepResult,
    StepTask,
    StoreSpec,
    WorkerStep,
    join_foreach,
    pickle_step,
    run_item,
    run_step,
    split_foreach,
)


class Pool(Protocol):
    """Where tasks run (a local process or thread pool, a Dask cluster)."""

    #: at most this many tasks in flight (the driver queues the rest); None: the pool queues
    limit: int | None
    #: tasks go to other processes, so steps must pickle and the store travels as a spec
    pickles: bool
    #: the pool reports when a task starts on a worker (else "running" is sent at submission)
    reports_start: bool

    def store_ref(self, store: Store) -> StoreSpec | Store: ...
    def begin(self, run_id: str, inbox: queue.Queue[tuple[Any, ...]]) -> None: ...
    def end(self, run_id: str) -> None: ...
    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], *, run_id: str,
               step: str, item: int | None, token: int) -> Any:
        """Start ``fn(*args)``; when it ends, put ``("done", token)`` on the run's inbox."""
    def share(self, value: Any) -> Any:
        """``value`` as many tasks will receive it (Dask: scattered once to the cluster)."""
    def result(self, handle: Any) -> Any: ...
    def peek(self, handle: Any) -> Any: ...
    def error(self, handle: Any) -> BaseException | None: ...
    def forward(self, handle: Any) -> Any: ...
    def cancel(self, handles: Iterable[Any]) -> None: ...
    def broken(self, error: BaseException) -> str | None: ...


@dataclass
class _Foreach:
    split: SplitResult | None = None
    handles: dict[int, Any] = field(default_factory=dict)  # item index -> handle
    left: int = 0


@dataclass
class _Job:
    kind: str  # "step" | "split" | "item" | "join"
    step: Step
    key: str
    merged: dict[str, str]
    volatile: bool
    task: StepTask
    started: float
    fe: _Foreach | None = None
    index: int | None = None
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    handle: Any = None
    token: int = 0
    shared_task: Any = None  # the task as the pool shares it between items


_tokens = itertools.count(1)  # task tokens, unique across the runs sharing one inbox


class ParallelRun(Run):
    """One walk over a plan, with steps and foreach items running on ``pool``.

    :meth:`execute` drives it alone; :func:`drive` drives several runs that share a pool and an
    inbox (a batch of items): :meth:`begin`, then :meth:`pump` and :meth:`handle` until
    :attr:`finished`, then :meth:`finish`.
    """

    def __init__(self, *args: Any, pool: Pool, only_remote: bool = False,
                 inbox: queue.Queue[tuple[Any, ...]] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pool = pool
        self.only_remote = only_remote
        self.run_id = uuid.uuid4().hex[:12]
        self.inbox: queue.Queue[tuple[Any, ...]] = inbox if inbox is not None else queue.Queue()
        self._inflight: dict[int, _Job] = {}
        self._queued: deque[_Job] = deque()
        self._payloads: dict[str, tuple[bytes, str] | None] = {}
        self._spec: StoreSpec | Store | None = None
        self._running: set[str] = set()
        self._settled: set[str] = set()
        self._steps_of: dict[str, list[_Job]] = {}
        self._index: dict[str, int] = {}
        self._waiting: dict[str, set[str]] = {}
        self._children: dict[str, list[str]] = {}
        self._ready: list[tuple[int, str]] = []
        self._blocked: set[str] = set()

    # -- the walk ---------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        self.begin()
        try:
            while not self.finished:
                self.pump()
                if self._inflight:
                    self.handle(self.inbox.get())
                    while True:
                        try:
                            self.handle(self.inbox.get_nowait())
                        except queue.Empty:
                            break
        except BaseException as e:
            self._abort(e)
            raise
        finally:
            self.pool.end(self.run_id)
        return self.finish()

    def begin(self) -> None:
        """Plan: queue every step; those without parents in the plan are ready."""
        order = self.graph.topological_order(self.targets)
        self.graph.check(self.targets)
        self._index = {n: i for i, n in enumerate(order)}
        for name in order:
            self.emit(name, "queued")
        self._waiting = {n: {p for p in self.graph.parents(n) if p in self._index} for n in order}
        self._children = {n: [] for n in order}
        for n in order:
            for p in self._waiting[n]:
                self._children[p].append(n)
        self._ready = [(self._index[n], n) for n in order if not self._waiting[n]]
        heapq.heapify(self._ready)
        self.pool.begin(self.run_id, self.inbox)

    @property
    def finished(self) -> bool:
        return not (self._ready or self._inflight or self._queued)

    def pump(self) -> None:
        """Start every ready step (served, run here, or submitted), then submit what fits."""
        while self._ready:
            _, name = heapq.heappop(self._ready)
            if any(p in self._blocked for p in self.graph.parents(name)):
                self.skipped.append(name)
                self.emit(name, "stale")
                self._settle(name, False)
                continue
            outcome = self.start(self.graph.steps[name])
            if outcome is not None:
                self._settle(name, outcome)
        self._dispatch()

    def finish(self) -> RunResult:
        for names in (self.executed, self.cached, self.failed, self.skipped):
            names.sort(key=self._index.__getitem__)
        return RunResult(self)

    def _settle(self, name: str, ok: bool) -> None:
        self._settled.add(name)
        if not ok:
            self._blocked.add(name)
        for c in self._children.get(name, ()):
            self._waiting[c].discard(name)
            if not self._waiting[c]:
                heapq.heappush(self._ready, (self._index[c], c))

    def owns(self, token: int) -> bool:
        return token in self._inflight

    def start(self, step: Step) -> bool | None:
        """Serve ``step`` from the store, run it here, or submit it (None: it is in flight)."""
        key, merged, volatile, served = self.serve_cached(step)
        if served:
            return True
        task = self._task(step, key, merged, volatile)
        if task is None:
            return self.compute(step, key, merged, volatile)
        started = time.perf_counter()
        if step.foreach is not None:
            job = _Job("split", step, key, merged, volatile, task, started, fe=_Foreach(),
                       fn=split_foreach)
        else:
            job = _Job("step", step, key, merged, volatile, task, started, fn=run_step)
        self._enqueue(job)
        return None

    # -- building tasks ---------------------------------------------------------------------------
    def _task(self, step: Step, key: str, merged: dict[str, str], volatile: bool) -> StepTask | None:
        """The task for ``step``, or None when it must run in this process."""
        placement = step.meta.get("placement")
        if placement == "local" or (self.only_remote and placement != "remote"):
            return None
        refs = self._refs(step)
        if refs is None:
            return None
        payload = self._payload(step)
        if payload is None:
            return None
        if self._spec is None:
            self._spec = self.pool.store_ref(self.store)
        data, digest = payload
        wstep: bytes | WorkerStep = data if self.pool.pickles else _worker_step(step)
        store_outputs = step.cache and not volatile
        meta: dict[str, Any] = {"step": step.name, "flow": self.flow_name}
        if store_outputs:
            meta["record"] = describe_record(self.flow_name, step, key, merged, self.params, {})
        base = {k: v for k, v in merged.items() if k != step.foreach} if step.foreach else {}
        return StepTask(self.flow_name, self.run_id, wstep, digest, key, refs, meta,
                        store_outputs, base)

    def _refs(self, step: Step) -> dict[str, InputRef] | None:
        """Where a worker finds each input: a store entry, or an inline value."""
        producers = self.graph.producers
        refs: dict[str, InputRef] = {}
        for name in step.inputs:
            if name in producers and producers[name] != step.name:
                owner = self.owner.get(name)
                manifest = self.manifests.get(owner) if owner else None
                if manifest is not None and name in manifest.outputs:
                    refs[name] = ("entry", manifest.key, name)
                elif name in self.encoded:
                    refs[name] = ("inline", Payload.of(self.encoded[name]))
                else:
                    return None  # a value only this process holds
            elif name in self.params or name in step.params:
                value = self.params[name] if name in self.params else step.params[name]
                try:
                    refs[name] = ("inline", Payload.of(encode(value)))
                except Exception:
                    return None
        return refs

    def _payload(self, step: Step) -> tuple[bytes, str] | None:
        if step.name in self._payloads:
            return self._payloads[step.name]
        payload: tuple[bytes, str] | None
        if not self.pool.pickles:
            payload = (b"", f"thread:{id(step)}")
        else:
            try:
                payload = pickle_step(_worker_step(step))
            except Exception as e:
                payload = None
                if step.meta.get("placement") != "local":
                    warnings.warn(
                        f"nbflow: step '{step.name}' runs in this process, not on a worker: it "
                        f"cannot be pickled ({type(e).__name__}: {e})",
                        NbflowWarning, stacklevel=2,
                    )
        self._payloads[step.name] = payload
        return payload

    # -- submitting and waiting -------------------------------------------------------------------
    def _enqueue(self, job: _Job) -> None:
        self._steps_of.setdefault(job.step.name, []).append(job)
        if self.pool.limit is None:
            self._submit(job)
        else:
            self._queued.append(job)

    def _dispatch(self) -> None:
        limit = self.pool.limit
        while self._queued and (limit is None or len(self._inflight) < limit):
            self._submit(self._queued.popleft())

    def _submit(self, job: _Job) -> None:
        assert job.fn is not None and self._spec is not None
        name = job.step.name
        job.token = next(_tokens)
        self._inflight[job.token] = job
        task = job.shared_task if job.shared_task is not None else job.task
        job.handle = self.pool.submit(job.fn, (self._spec, task, *job.args),
                                      run_id=self.run_id, step=name, item=job.index,
                                      token=job.token)
        if not self.pool.reports_start:
            self._started(name)

    def _started(self, name: str) -> None:
        if name not in self._running and name not in self._settled:
            self._running.add(name)
            self.emit(name, "running", key=self._first(name).key)

    def handle(self, msg: tuple[Any, ...]) -> None:
        """One message from the pool: ``("done", token)`` or ``("started", run_id, step)``."""
        if msg[0] == "started":
            if msg[1] == self.run_id:
                self._started(msg[2])
            return
        job = self._inflight.pop(msg[1], None)
        if job is None:
            return  # a late completion of a cancelled task
        if job.kind == "item":
            self._item_done(job)
            return
        try:
            result = self.pool.result(job.handle)
        except BaseException as e:  # noqa: BLE001 - the step failed on the worker
            if isinstance(e, KeyboardInterrupt):
                raise
            self._failed(job, e)
            return
        if job.kind == "split":
            self._split_done(job, result)
        else:
            self._step_done(job, result)

    # -- completions --------------------------------------------------------------------------------
    def _step_done(self, job: _Job, res: StepResult) -> None:
        step = job.step
        if res.stale is not None:
            raise self._stale(res.stale)
        if res.unpicklable:
            warnings.warn(
                f"nbflow: output {', '.join(repr(o) for o in res.unpicklable)} of step "
                f"'{step.name}' cannot be pickled, so it cannot come back from a worker; the "
                "step runs again in this process",
                NbflowWarning, stacklevel=2,
            )
            self._settle(step.name, self.compute(step, job.key, job.merged, job.volatile))
            return
        if res.put_error:
            warnings.warn(not_cached(step.name, res.put_error), NbflowWarning, stacklevel=2)
        manifest = None
        if res.stored:
            manifest = self.store.get(job.key)
            if manifest is None:
                raise RuntimeError(
                    f"step '{step.name}' was stored by a worker but this process cannot read it "
                    f"from the store {self.store.root}; the workers and this process must share "
                    "the store (a directory on this machine, or an fsspec URL)"
                )
            self.take(step, manifest)
        else:
            for out in step.outputs:
                enc = res.inline[out].encoded()
                self.encoded[out] = enc
                self.digests[out] = enc.digest
                self.owner[out] = step.name
                self.raw.pop(out, None)
            self.manifests.pop(step.name, None)
        self.executed.append(step.name)
        st = self.states.setdefault(step.name, StepState())
        st.manifest = manifest
        st.saved = None
        st.finished = time.time()
        self.emit(step.name, "done", key=job.key, duration=res.duration, sizes=res.sizes)
        self._settle(step.name, True)

    def _split_done(self, job: _Job, split: SplitResult) -> None:
        if split.stale is not None:
            raise self._stale(split.stale)
        fe = job.fe
        assert fe is not None
        fe.split = split
        shared = self.pool.share(job.task) if sum(not c for c in split.cached) > 1 else None
        for i in range(split.count):
            if split.cached[i]:
                self.emit(job.step.name, "running", item=i, key=split.keys[i])
                continue
            item = _Job("item", job.step, job.key, job.merged, job.volatile, job.task,
                        time.perf_counter(), fe=fe, index=i, fn=run_item,
                        args=(i, split.keys[i], split.volatile[i]), shared_task=shared)
            fe.left += 1
            self._enqueue(item)
            fe.handles[i] = None  # filled at submission
        if fe.left == 0:
            self._join(job)

    def _item_done(self, job: _Job) -> None:
        fe = job.fe
        assert fe is not None and job.index is not None
        error = self.pool.error(job.handle)
        if error is not None:
            self._cancel_step(job.step.name)
            self._failed(job, error)
            return
        fe.handles[job.index] = job.handle
        res: ItemResult | None = self.pool.peek(job.handle)  # None: the result stays remote
        if res is not None and res.stale is not None:
            raise self._stale(res.stale)
        assert fe.split is not None
        self.emit(job.step.name, "running", item=job.index, key=fe.split.keys[job.index])
        fe.left -= 1
        if fe.left == 0:
            self._join(job)

    def _join(self, job: _Job) -> None:
        fe = job.fe
        assert fe is not None and fe.split is not None
        items = [self.pool.forward(h) for _, h in sorted(fe.handles.items()) if h is not None]
        elapsed = time.perf_counter() - self._first(job.step.name).started
        join = _Job("join", job.step, job.key, job.merged, job.volatile, job.task, job.started,
                    fe=fe, fn=join_foreach, args=(fe.split, items, elapsed))
        self._enqueue(join)

    def _first(self, name: str) -> _Job:
        return self._steps_of[name][0]

    def _failed(self, job: _Job, e: BaseException) -> None:
        name = job.step.name
        hint = self.pool.broken(e)
        if hint:
            e.nbflow_traceback = f"{_text(e)}\n{hint}"  # type: ignore[attr-defined]
        self.failed.append(name)
        self.errors[name] = e
        st = self.states.setdefault(name, StepState())
        st.exception = e
        duration = time.perf_counter() - self._first(name).started
        self.emit(name, "failed", key=job.key, duration=duration, error=_text(e))
        self._settle(name, False)

    def _cancel_step(self, name: str) -> None:
        tokens = [t for t, j in self._inflight.items() if j.step.name == name]
        handles = [self._inflight.pop(t).handle for t in tokens]
        self._queued = deque(j for j in self._queued if j.step.name != name)
        self.pool.cancel(handles)

    def _stale(self, key: str) -> _Stale:
        for name, manifest in self.manifests.items():
            if manifest.key == key:
                self._abort(None)
                return _Stale(name)
        raise RuntimeError(f"a worker found the cache entry {key[:12]} bad, and no step owns it")

    def _abort(self, error: BaseException | None) -> None:
        """Stop: cancel what is in flight; steps that were running are reported interrupted."""
        handles = [j.handle for j in self._inflight.values()]
        self._inflight.clear()
        self._queued.clear()
        self.pool.cancel(handles)
        if isinstance(error, KeyboardInterrupt | SystemExit):
            for name in self._running - self._settled:
                self.emit(name, "failed", error="interrupted")


def _text(e: BaseException) -> str:
    return getattr(e, "nbflow_traceback", None) or _format(e)


def _worker_step(step: Step) -> WorkerStep:
    return WorkerStep(step.name, step.inputs, step.outputs, step.action, step.code, step.version,
                      step.cache, step.foreach)


__all__ = ["ParallelRun", "Pool"]
