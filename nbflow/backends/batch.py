"""Batch items at once: one parallel run per item, all driven by one loop on one inbox.

``Flow.run_batch`` runs its items one after another; with a scheduler configured
(``flow.config(executor="dask")``), :func:`run_items` runs them concurrently instead: each item's
inputs are set (``prepare``) and snapshotted in order, then every item's plan is walked by its own
:class:`~nbflow.backends.parallel.ParallelRun` on the shared pool, so items' steps and foreach
items are all Dask tasks at once. Each item's result is what a serial ``flow.run`` would return:
the same keys and entries. ``prepare`` must only set inputs (it runs before any item starts).
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..batch import set_item_inputs
from ..executor import RunResult, _Stale
from .base import Scheduler
from .parallel import ParallelRun

if TYPE_CHECKING:
    from ..flow import Flow


def run_items(
    flow: Flow,
    scheduler: Scheduler,
    items: Sequence[tuple[int, Any]],
    prepare: Callable[[int, Any], Any] | None,
    targets: list[str],
    *,
    max_active: int | None = None,
) -> dict[int, RunResult | BaseException]:
    """Run ``targets`` for every ``(index, item)`` concurrently; an item whose ``prepare`` or
    run raised maps to that exception (a failed step is in its result, as for a serial run)."""
    from ..nodes import precheck_inputs

    saved = dict(flow.params)
    outcomes: dict[int, RunResult | BaseException] = {}
    params: list[tuple[int, dict[str, Any]]] = []
    try:
        for index, item in items:
            try:
                set_item_inputs(flow, index, item, prepare)
                precheck_inputs(flow, targets)
            except Exception as e:  # noqa: BLE001 - one item's failure never stops the batch
                outcomes[index] = e
                continue
            params.append((index, dict(flow.params)))
    finally:
        last = params[-1][1] if params else saved
        flow.params.clear()
        flow.params.update(last)  # as after a serial batch: the last item's inputs
    factory = scheduler.run_factory()
    inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def make(values: dict[str, Any], force: set[str]) -> ParallelRun:
        run = factory(flow.graph, flow.store, flow.events, flow.name, flow._states, values,
                      targets, force, inbox=inbox)
        assert isinstance(run, ParallelRun)
        return run

    outcomes.update(drive([(i, make(v, set())) for i, v in params], make, max_active))
    return outcomes


def drive(
    runs: Sequence[tuple[int, ParallelRun]],
    remake: Callable[[dict[str, Any], set[str]], ParallelRun],
    max_active: int | None = None,
) -> dict[int, RunResult | BaseException]:
    """Walk several runs that share one pool and one inbox until all have finished."""
    pending: deque[tuple[int, ParallelRun, int]] = deque((i, r, 0) for i, r in runs)
    active: dict[int, tuple[ParallelRun, int]] = {}
    out: dict[int, RunResult | BaseException] = {}
    limit = max_active or len(runs) or 1

    def stop(index: int, error: BaseException | None) -> None:
        run, attempt = active.pop(index)
        if error is not None:
            run._abort(error)
        run.pool.end(run.run_id)
        if isinstance(error, _Stale) and attempt < 2:  # an entry went bad: retry forcing it
            manifest = run.manifests.get(error.step)
            if manifest is not None:
                run.store.forget(manifest.key)
            again = remake(run.params, {*run.force, error.step})
            pending.append((index, again, attempt + 1))
            return
        out[index] = error if error is not None else run.finish()

    def guarded(index: int, action: Callable[[], None]) -> None:
        try:
            action()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - that item's failure, not the batch's
            stop(index, e)

    try:
        while pending or active:
            while pending and len(active) < limit:
                index, run, attempt = pending.popleft()
                active[index] = (run, attempt)
                guarded(index, run.begin)
            for index in list(active):
                guarded(index, active[index][0].pump)
                if index in active and active[index][0].finished:
                    stop(index, None)
            if not any(r._inflight for r, _ in active.values()):
                continue
            msg = inbox_of(active).get()
            while True:
                route(active, msg, guarded)
                try:
                    msg = inbox_of(active).get_nowait()
                except queue.Empty:
                    break
    except BaseException as e:
        for index in list(active):
            run, _ = active.pop(index)
            run._abort(e)
            run.pool.end(run.run_id)
        raise
    return out


def inbox_of(active: Mapping[int, tuple[ParallelRun, int]]) -> queue.Queue[tuple[Any, ...]]:
    return next(iter(active.values()))[0].inbox


def route(active: Mapping[int, tuple[ParallelRun, int]], msg: tuple[Any, ...],
          guarded: Callable[[int, Callable[[], None]], None]) -> None:
    """Hand a pool message to the run it belongs to (a late one for a finished run is dropped)."""
    for index, (run, _) in list(active.items()):
        if (msg[0] == "done" and run.owns(msg[1])) or (msg[0] == "started" and msg[1] == run.run_id):
            guarded(index, lambda run=run: run.handle(msg))  # type: ignore[misc]
            return


__all__ = ["drive", "run_items"]
