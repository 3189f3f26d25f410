"""Batch runs: one flow over many items, each item's results kept in the store.

For each item, ``prepare(index, item)`` sets the flow's inputs (e.g. ``const.set_value(item)``);
then the targets are brought up to date like any run, so each item's entries are ordinary cache
entries (a re-run of the batch is served from the store). A failing item is collected in
``stats.failures`` as ``(index, item, exception)`` and the batch goes on.

Two orders: ``"depth"`` runs every item through the whole plan (models stay loaded across items);
``"breadth"`` runs one node for every item, releases resources, then the next node — for nodes so
heavy that only one fits in memory. In breadth order the ancestors of a node are served from the
store, so their processors are never set up again (a ``cache=False`` ancestor would run again).
Must never import IPython or widget code (the progress bar is tqdm's, loaded lazily).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from .errors import NbflowError
from .nodes import precheck_inputs

if TYPE_CHECKING:
    from .executor import RunResult
    from .flow import Flow
    from .store import Store

ORDERS = ("depth", "breadth")


class BatchFailure(NamedTuple):
    """One failed item: its position, the item, and the exception its step (or prepare) raised."""

    index: int  # type: ignore[assignment]  # (index, item, exception), as users unpack it
    item: Any
    exception: BaseException


@dataclass
class BatchStats:
    """What a batch did. ``keys[i]`` maps each target step to the cache key holding item ``i``'s
    result (None for a failed item); :meth:`value` loads it from the store."""

    total: int
    order: str
    targets: list[str]
    failures: list[BatchFailure] = field(default_factory=list)
    failed_steps: dict[int, str | None] = field(default_factory=dict)
    keys: list[dict[str, str | None] | None] = field(default_factory=list)
    executed: int = 0
    cached: int = 0
    duration: float = 0.0
    store: Store | None = field(default=None, repr=False)

    @property
    def succeeded(self) -> list[int]:
        return [i for i, k in enumerate(self.keys) if k is not None]

    @property
    def ok(self) -> bool:
        return not self.failures

    def value(self, index: int, target: str | None = None) -> Any:
        """Item ``index``'s result of ``target`` (default: the only target), from the store."""
        if target is None:
            if len(self.targets) != 1:
                raise NbflowError(f"this batch has targets {self.targets}; name one")
            target = self.targets[0]
        entry = self.keys[index]
        if entry is None:
            raise NbflowError(f"item {index} failed: {self.failures_by_index()[index].exception!r}")
        key = entry.get(str(target))
        manifest = self.store.get(key) if (key and self.store is not None) else None
        if manifest is None:
            raise NbflowError(
                f"item {index}'s result of '{target}' is not in the store (an uncached step, "
                "or the entry was removed); run the batch again"
            )
        values = self.store.load_outputs(manifest) if self.store is not None else None
        if values is None:
            raise NbflowError(f"item {index}'s entry for '{target}' is damaged; run the batch again")
        return values[next(iter(manifest.outputs))] if len(values) == 1 else values

    def failures_by_index(self) -> dict[int, BatchFailure]:
        return {f.index: f for f in self.failures}

    def __repr__(self) -> str:
        return (f"BatchStats({self.total} items, order={self.order}, "
                f"failed={[f.index for f in self.failures]}, executed={self.executed}, "
                f"cached={self.cached}, {self.duration:.2f}s)")


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is a convenience, never a reason to fail a batch
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="item")


class BatchMixin:
    """``Flow.run_batch``."""

    def _me(self) -> Flow:
        return cast("Flow", self)

    def run_batch(
        self,
        items: Iterable[Any],
        targets: Sequence[str] | None = None,
        *,
        prepare: Callable[[int, Any], Any] | None = None,
        order: str = "depth",
        progress: bool = True,
        release: bool = True,
    ) -> BatchStats:
        """Run ``targets`` (nodes, outputs or names; default: the flow outputs, else every
        step) once per item and collect failures instead of stopping.

        ``prepare(index, item)`` sets the inputs for an item; without it each item must be a
        mapping of input name to value. ``order="breadth"`` runs one node for every item, then
        releases resources, then the next node. ``release`` frees every processor at the end.
        """
        flow = self._me()
        if order not in ORDERS:
            raise NbflowError(f"order={order!r}: use 'depth' or 'breadth'")
        batch = list(items)
        steps = self._batch_targets(targets)
        flow.graph.check(steps)  # a graph error is not an item failure: raise it now
        stats = BatchStats(len(batch), order, steps, keys=[None] * len(batch), store=flow.store)
        started = time.perf_counter()
        plan = flow.graph.topological_order(steps) if order == "breadth" else None
        passes: list[list[str]] = [[p] for p in plan] if plan is not None else [steps]
        bar = _bar(len(batch) * len(passes), f"{flow.name} ({order})", progress)
        alive = list(range(len(batch)))
        found: dict[int, dict[str, str | None]] = {i: {} for i in alive}
        scheduler = getattr(flow, "_scheduler", None)
        try:
            for wanted in passes:
                done = None
                if scheduler is not None:  # every item at once on the flow's pool (e.g. Dask)
                    from .backends.batch import run_items

                    done = run_items(flow, scheduler, [(i, batch[i]) for i in alive], prepare, wanted)
                for i in list(alive):
                    result = self._batch_item(stats, i, batch[i], prepare, wanted,
                                              None if done is None else done[i])
                    if result is None:
                        alive.remove(i)
                    else:
                        manifests = result.manifests
                        for s in wanted:
                            if s in steps:
                                m = manifests.get(s)
                                found[i][s] = m.key if m is not None else None
                    bar.update(1)
                    if stats.failures:
                        bar.set_postfix_str(f"{len(stats.failures)} failed")
                if plan is not None:
                    self._release_all()
        finally:
            bar.close()
            if release:
                self._release_all()
        for i in alive:
            stats.keys[i] = found[i]
        stats.duration = time.perf_counter() - started
        return stats

    def _batch_targets(self, targets: Sequence[str] | None) -> list[str]:
        flow = self._me()
        if targets is None:
            outputs = [s.name for s in flow.graph.steps.values() if s.kind == "output"]
            return outputs or list(flow.graph.steps)
        steps: list[str] = []
        for t in targets:
            name = str(t)
            step = name if name in flow.graph.steps else flow.graph.producer_of(name)
            if step is None:
                flow.graph.get(name)  # raises, naming the known steps
                raise AssertionError("unreachable")
            if step not in steps:
                steps.append(step)
        return steps

    def _batch_item(self, stats: BatchStats, index: int, item: Any,
                    prepare: Callable[[int, Any], Any] | None,
                    steps: list[str], outcome: Any = None) -> RunResult | None:
        """Run one item (or take ``outcome``: its result or exception from a parallel pass)."""
        flow = self._me()
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                result = outcome
            else:
                set_item_inputs(flow, index, item, prepare)
            if outcome is None:
                precheck_inputs(flow, steps)
                result = flow.run(*steps, raise_on_failure=False)
        except Exception as e:  # noqa: BLE001 - one item's failure never stops the batch
            stats.failures.append(BatchFailure(index, item, e))
            stats.failed_steps[index] = None
            return None
        stats.executed += len(result.executed)
        stats.cached += len(result.cached)
        if result.failed:
            step = result.failed[0]
            stats.failures.append(BatchFailure(index, item, result.errors[step]))
            stats.failed_steps[index] = step
            return None
        return result

    def _release_all(self) -> None:
        release = getattr(self, "release_resources", None)
        if release is not None:
            release()


__all__ = ["BatchFailure", "BatchMixin", "BatchStats"]


def set_item_inputs(flow: Any, index: int, item: Any, prepare: Any) -> None:
    """Set a batch item's inputs: through ``prepare(index, item)``, or from a dict of values."""
    if prepare is not None:
        prepare(index, item)
    elif isinstance(item, Mapping):
        for name, value in item.items():
            flow.inputs[name].set_value(value)
    else:
        raise NbflowError(
            f"batch item {index} is a {type(item).__name__}; pass prepare=(index, item) "
            "-> None to set the inputs, or make each item a dict of input values"
        )
