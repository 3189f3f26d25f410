"""Run records: what each run of a flow did, kept in its store, so that past runs can be listed,
inspected and resumed from any process.

One signed record per run (``Store.put_record("runs-<flow>", <run id>, ...)``): id, times,
parameters, status, and per step its status, cache key, duration and error. Step data is never
copied into a record: the step's cache key names the store entry holding it, loaded only when
someone reads ``run["step"].data.<name>``, so a record stays small however big the data.

Works for any :class:`nbflow.Flow` (attach a :class:`RunRecorder` to its event bus around
``flow.run``). This module writes and lists records; :mod:`nbflow.runs_view` reads them (runs,
steps, tasks, lazy data). ``nbflow.runs("MyFlow")`` works too: the module is callable.
Must never import IPython.
"""

from __future__ import annotations

import math
import re
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import NbflowError
from .events import Event, EventBus
from .hashing import digest_parts
from .runs_view import (
    DataView,
    RunRecord,
    StepRecord,
    TaskRecord,
    register_task_decoder,
)
from .store import Store, open_store

RECORD_FORMAT = 1
ERROR_MAX = 20_000  # characters of a traceback kept in a record
_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,150}$")

__all__ = [
    "DataView",
    "RunRecord",
    "RunRecorder",
    "StepRecord",
    "TaskRecord",
    "get_run",
    "last_run",
    "list_runs",
    "new_run_id",
    "register_task_decoder",
    "run_kind",
    "runs",
]


def run_kind(flow: str) -> str:
    """The record kind holding a flow's runs (flow names that are not path-safe are hashed)."""
    return "runs-" + (flow if _SAFE.match(flow) else "h" + digest_parts([flow])[:24])


def new_run_id() -> str:
    """Microseconds since the epoch: unique enough, sortable, and easy to type."""
    return str(time.time_ns() // 1000)


def jsonable(value: Any) -> Any:
    """``value`` as JSON data (unknown objects become their repr)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


# -- writing --------------------------------------------------------------------------------------
_EVENT_STATUS = {"running": "running", "done": "done", "cached": "cached", "failed": "failed"}


class RunRecorder:
    """Writes one run's record as it progresses; every step-level change rewrites it, so a
    killed run still leaves a record saying how far it got (status ``running``)."""

    def __init__(
        self,
        store: Store,
        flow: str,
        params: Mapping[str, Any] | None = None,
        *,
        steps: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.store = store
        self.kind = run_kind(flow)
        run_id = run_id or new_run_id()
        taken = set(store.records(self.kind))
        while run_id in taken:  # two runs in one microsecond (or a reused id): never overwrite
            run_id = str(int(run_id) + 1) if run_id.isdigit() else run_id + "_"
        self.id = run_id
        self.tracked = list(steps) if steps is not None else None
        self.data: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "flow": flow,
            "id": run_id,
            "created": time.time(),
            "finished": None,
            "status": "running",
            "params": jsonable(dict(params or {})),
            "meta": jsonable(dict(meta or {})),
            "order": list(self.tracked or []),
            "steps": {s: {"status": "pending"} for s in self.tracked or []},
        }
        self.save()

    def save(self) -> None:
        self.store.put_record(self.kind, self.id, self.data)

    def attach(self, events: EventBus) -> Callable[[], None]:
        """Record step statuses from ``events`` until the returned function is called."""
        return events.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        if self.tracked is not None and event.step not in self.tracked:
            return
        if event.item is not None:  # foreach items: counted, written with the next step change
            info = self._step(event.step)
            if event.status in ("done", "cached", "failed"):
                counts = info.setdefault("items", {})
                counts[event.status] = counts.get(event.status, 0) + 1
            return
        if event.status == "queued":
            self._step(event.step)  # known, in plan order, before anything runs
            return
        if event.status == "stale":
            if self._step(event.step).get("status") in ("pending", "queued"):
                self.update_step(event.step, status="skipped")
            return
        status = _EVENT_STATUS.get(event.status)
        if status is None:
            return
        fields: dict[str, Any] = {"status": status}
        if event.key:
            fields["key"] = event.key
        if event.duration is not None:
            fields["duration"] = event.duration
        if status == "running":
            fields["started"] = event.time
        else:
            fields["finished"] = event.time
        if event.error:
            fields["error"] = event.error[-ERROR_MAX:]
        self.update_step(event.step, **fields)

    def _step(self, name: str) -> dict[str, Any]:
        steps = self.data["steps"]
        if name not in steps:
            steps[name] = {"status": "pending"}
            self.data["order"].append(name)
        return steps[name]

    def update_step(self, name: str, **fields: Any) -> None:
        info = self._step(name)
        if fields.get("status") in ("running", "done", "cached") and "error" not in fields:
            info.pop("error", None)
        info.update(jsonable(fields))
        self.save()

    def set_meta(self, **meta: Any) -> None:
        self.data["meta"].update(jsonable(meta))
        self.save()

    def finish(self, status: str | None = None) -> RunRecord:
        """Close the record: ``done`` when every tracked step succeeded, else ``failed``."""
        if status is None:
            bad = [s for s, i in self.data["steps"].items() if i.get("status") not in ("done", "cached")]
            status = "failed" if bad else "done"
        self.data["status"] = status
        self.data["finished"] = time.time()
        self.save()
        return self.record()

    def record(self) -> RunRecord:
        return RunRecord(self.store, dict(self.data))


# -- reading --------------------------------------------------------------------------------------
def list_runs(store: Store, flow: str) -> list[RunRecord]:
    """Every recorded run of ``flow`` in ``store``, newest first."""
    kind = run_kind(flow)
    out = []
    for name in store.records(kind):
        data = store.get_record(kind, name)
        if data is not None and data.get("flow") == flow:
            out.append(RunRecord(store, data))
    out.sort(key=lambda r: (r.created, r.id), reverse=True)
    return out


def get_run(store: Store, flow: str, run_id: str) -> RunRecord | None:
    data = store.get_record(run_kind(flow), str(run_id))
    return RunRecord(store, data) if data is not None and data.get("flow") == flow else None


def last_run(store: Store, flow: str, *, status: str | None = None) -> RunRecord | None:
    """The newest run of ``flow`` (with ``status``, if given), or None."""
    for run in list_runs(store, flow):
        if status is None or run.status == status:
            return run
    return None


def runs(flow: Any, store: Any = None) -> list[RunRecord]:
    """``nbflow.runs("ForeachFlow")``: past runs of a flow (a name, a Flow or a flow class),
    newest first, from ``store`` (default: the flow's own store, else ``./.nbflow``)."""
    name = flow if isinstance(flow, str) else getattr(flow, "name", None) or getattr(flow, "__name__", None)
    if not isinstance(name, str):
        raise NbflowError(f"runs() takes a flow name, a Flow or a flow class, not {flow!r}")
    if store is None and hasattr(flow, "store") and isinstance(getattr(flow, "store", None), Store):
        return list_runs(flow.store, name)
    return list_runs(open_store(store), name)


class _RunsModule(types.ModuleType):
    """``nbflow.runs`` is this module *and* the function :func:`runs`: importing the module sets
    the package attribute to it, so the module itself must answer ``nbflow.runs("MyFlow")``."""

    def __call__(self, flow: Any, store: Any = None) -> list[RunRecord]:
        return runs(flow, store)


sys.modules[__name__].__class__ = _RunsModule
