"""The runs behind Metaflow-style flows: the engine's walks plus what ``resume`` needs.

* ``pinned``: steps whose entries ``resume`` reuses from the origin run, whatever their key is now
  (Metaflow's resume clones the steps before the resume point, even if their code changed).
* a forced step (``resume STEP``, ``flow.rerun``) recomputes its foreach items too, instead of
  taking them from the store;
* in the serial walk, every foreach item reports ``running`` then ``done``/``cached``/``failed``
  (``Event.item`` set) for progress lines and run records.

:class:`SpecRun` extends the serial :class:`~nbflow.executor.Run`; :class:`SpecParallelRun` extends
the back ends' :class:`~nbflow.backends.parallel.ParallelRun` (local process pool, Dask), which
schedules independent branches and foreach items on workers — the same keys, entries and results
as the serial walk. Neither is specific to FlowSpec classes.
Must never import IPython.
"""

from __future__ import annotations

import time
import traceback
import uuid
from typing import Any

from .backends.parallel import ParallelRun
from .errors import NbflowError
from .events import Event
from .executor import VOLATILE, Run, StepOutput, _Stale, foreach_item_key
from .flowspec_data import MissingArtifact
from .graph import Step
from .store import Manifest, encode
from .store.codec import value_digest


def _values_of(step: Step, result: Any) -> dict[str, Any]:
    values = result.values if isinstance(result, StepOutput) else result
    missing = [o for o in step.outputs if o not in values]
    if missing:
        raise NbflowError(f"step '{step.name}' did not produce {', '.join(missing)}")
    return dict(values)


def _sizes(manifest: Manifest) -> dict[str, int]:
    return {n: int(o.get("size", 0)) for n, o in manifest.outputs.items()}


def _format(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


class _Pinning:
    """Serve pinned steps from the named entries (mixed into a Run)."""

    pinned: dict[str, str]

    def take_pinned(self: Any, step: Step) -> bool:
        if step.name in self.force:
            return False
        key = self.pinned.get(step.name)
        manifest = self.store.get(key) if key else None
        if manifest is None or not all(o in manifest.outputs for o in step.outputs):
            return False
        self.take(step, manifest)
        self.cached.append(step.name)
        self.emit(step.name, "cached", key=manifest.key, duration=manifest.duration,
                  saved=manifest.duration, sizes=_sizes(manifest))
        return True

    def item_event(self: Any, step: str, status: str, item: int, **kw: Any) -> None:
        if self.events._subscribers:
            self.events.emit(Event(self.flow_name, step, status, item=item, **kw))  # type: ignore[arg-type]

    def run_foreach(self: Any, step: Step, merged: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The engine's per-item loop (same item keys), honouring force, reporting each item."""
        assert step.foreach is not None
        inputs = self.input_values(step)
        items = list(inputs[step.foreach])
        base = {k: v for k, v in merged.items() if k != step.foreach}
        forced = step.name in self.force
        results: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            try:
                digest = value_digest(item)
            except Exception:
                digest = VOLATILE + uuid.uuid4().hex
            usable = step.cache and not digest.startswith(VOLATILE)
            key = foreach_item_key(step.name, step.code, step.outputs, step.version, base, digest)
            manifest = self.store.get(key) if usable and not forced else None
            loaded = self.store.load_outputs(manifest) if manifest is not None else None
            if loaded is not None and all(o in loaded for o in step.outputs):
                results.append(loaded)
                self.item_event(step.name, "cached", i, key=key)
                continue
            self.item_event(step.name, "running", i, key=key)
            t0 = time.perf_counter()
            try:
                values = _values_of(step, step.action({**inputs, step.foreach: item}))
            except BaseException as e:
                self.item_event(step.name, "failed", i, key=key, error=_format(e))
                raise
            duration = time.perf_counter() - t0
            if usable:
                try:
                    encoded = {o: encode(values[o]) for o in step.outputs}
                    self.store.put(key, encoded, {"step": step.name, "flow": self.flow_name,
                                                  "item": i, "duration": duration})
                except Exception:
                    pass  # the step's own commit warns about what cannot be stored
            self.item_event(step.name, "done", i, key=key, duration=duration)
            results.append(values)
        return {o: [r[o] for r in results] for o in step.outputs}, {}


    def lost_artifact(self: Any, step: str) -> _Stale | None:
        """A step failed because an artifact's entry is gone (evicted, cleared): the engine's
        retry recomputes the step that set it (whose entry this run took from the store)."""
        error = self.errors.get(step)
        origin = getattr(error, "origin", None)
        if not isinstance(error, MissingArtifact) or origin not in self.manifests:
            return None
        self.failed.remove(step)
        del self.errors[step]
        return _Stale(str(origin))


class SpecRun(_Pinning, Run):
    """The serial walk with pinned steps, forced foreach items and item events."""

    def __init__(self, *args: Any, pinned: dict[str, str] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pinned = dict(pinned or {})

    def run_step(self, step: Step) -> bool:
        return self.take_pinned(step) or super().run_step(step)

    def compute(self, step: Step, key: str, merged: dict[str, str], volatile: bool) -> bool:
        ok = super().compute(step, key, merged, volatile)
        stale = None if ok else self.lost_artifact(step.name)
        if stale is not None:
            raise stale
        return ok


class SpecParallelRun(_Pinning, ParallelRun):
    """The parallel walk (local pool, Dask) with pinned steps; a forced foreach step runs its
    items here, so that none of them is taken from the store."""

    def __init__(self, *args: Any, pinned: dict[str, str] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.pinned = dict(pinned or {})

    def start(self, step: Step) -> bool | None:
        if self.take_pinned(step):
            return True
        if step.foreach is not None and step.name in self.force:
            key, merged = self.key_of(step)
            if key is not None:
                volatile = any(v.startswith(VOLATILE) for v in merged.values())
                return self.compute(step, key, merged, volatile)
        return super().start(step)

    def _failed(self, job: Any, e: BaseException) -> None:
        super()._failed(job, e)
        stale = self.lost_artifact(job.step.name)
        if stale is not None:
            self._abort(None)
            raise stale
