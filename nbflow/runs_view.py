"""Reading run records: a run, its steps, their tasks, and each task's data, loaded lazily.

:class:`RunRecord` wraps one record written by :class:`nbflow.runs.RunRecorder`. A step's data is
found through its cache key (the store entry of the step), and loaded name by name only when read.
Flow kinds whose step values hold several tasks (Metaflow-style foreach steps) register a task
decoder, named in the record's ``meta["tasks"]``. Must never import IPython.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import NbflowError
from .store import Manifest, Store

#: task decoders by name: (store, step, manifest, run) -> tasks. Only nbflow modules may be named.
_DECODERS: dict[str, Callable[[Store, str, Manifest, RunRecord], list[TaskRecord]]] = {}
_DECODER_MODULES = {"flowspec": "nbflow.flowspec_data:decode_tasks"}


def register_task_decoder(
    name: str, decoder: Callable[[Store, str, Manifest, RunRecord], list[TaskRecord]]
) -> None:
    """Let records with ``meta["tasks"] == name`` turn a step's stored value into tasks."""
    _DECODERS[name] = decoder


def _decoder(name: str) -> Callable[[Store, str, Manifest, RunRecord], list[TaskRecord]] | None:
    if name in _DECODERS:
        return _DECODERS[name]
    target = _DECODER_MODULES.get(name)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    _DECODERS[name] = fn
    return fn


def _ago(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


class RunRecord:
    """One past (or running) run: ``run.id``, ``run.params``, ``run.status``, ``run["step"]``,
    ``run.data`` (the data of the ``end`` step, or of the last step)."""

    def __init__(self, store: Store, data: Mapping[str, Any]) -> None:
        self.store = store
        self._data = dict(data)
        self._steps: dict[str, StepRecord] = {}
        self.result: Any = None  # the engine's RunResult, when this process ran it

    # -- fields -----------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return str(self._data["id"])

    @property
    def flow(self) -> str:
        return str(self._data["flow"])

    @property
    def pathspec(self) -> str:
        return f"{self.flow}/{self.id}"

    @property
    def created(self) -> float:
        return float(self._data.get("created") or 0.0)

    @property
    def created_at(self) -> str:
        return _ago(self.created)

    @property
    def finished(self) -> float | None:
        f = self._data.get("finished")
        return float(f) if f is not None else None

    @property
    def status(self) -> str:
        return str(self._data.get("status", "running"))

    @property
    def successful(self) -> bool:
        return self.status == "done"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._data.get("params") or {})

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._data.get("meta") or {})

    @property
    def steps(self) -> list[str]:
        return list(self._data.get("order") or self._data.get("steps", {}))

    def step_info(self, name: str) -> dict[str, Any]:
        return dict(self._data.get("steps", {}).get(name) or {})

    @property
    def failed_step(self) -> str | None:
        """The first step that failed; for a run that never finished, the first unfinished one."""
        infos = self._data.get("steps", {})
        for name in self.steps:
            if infos.get(name, {}).get("status") == "failed":
                return name
        if self.status != "done":
            for name in self.steps:
                if infos.get(name, {}).get("status") not in ("done", "cached"):
                    return name
        return None

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    # -- steps and data ---------------------------------------------------------------------------
    def __getitem__(self, step: str) -> StepRecord:
        if step not in self._data.get("steps", {}):
            known = ", ".join(self.steps) or "none"
            raise KeyError(f"run {self.pathspec} has no step '{step}'; its steps: {known}")
        if step not in self._steps:
            self._steps[step] = StepRecord(self, step)
        return self._steps[step]

    def __contains__(self, step: object) -> bool:
        return step in self._data.get("steps", {})

    def __iter__(self) -> Iterator[StepRecord]:
        return (self[s] for s in self.steps)

    @property
    def end_step(self) -> str | None:
        names = self.steps
        if "end" in names:
            return "end"
        return names[-1] if names else None

    @property
    def data(self) -> DataView:
        """Data of the ``end`` step (Metaflow's ``run.data``), or of the last step."""
        end = self.end_step
        if end is None:
            raise NbflowError(f"run {self.pathspec} has no steps")
        return self[end].data

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Run('{self.pathspec}', status={self.status}, created={self.created_at}" + (
            f", params=({params}))" if params else ")"
        )


class StepRecord:
    """One step of a run: status, key, duration, error, and its tasks (one, or one per foreach
    item). With a single task, ``step.<name>`` and ``step.data`` read that task's data."""

    def __init__(self, run: RunRecord, name: str) -> None:
        self.run = run
        self.name = name
        self._tasks: list[TaskRecord] | None = None

    @property
    def info(self) -> dict[str, Any]:
        return self.run.step_info(self.name)

    @property
    def status(self) -> str:
        return str(self.info.get("status", "pending"))

    @property
    def key(self) -> str | None:
        return self.info.get("key")

    @property
    def duration(self) -> float | None:
        return self.info.get("duration")

    @property
    def error(self) -> str | None:
        return self.info.get("error")

    @property
    def pathspec(self) -> str:
        return f"{self.run.pathspec}/{self.name}"

    def manifest(self) -> Manifest | None:
        key = self.key
        return self.run.store.get(key) if key else None

    @property
    def tasks(self) -> list[TaskRecord]:
        if self._tasks is None:
            self._tasks = self._load_tasks()
        return self._tasks

    def _load_tasks(self) -> list[TaskRecord]:
        if self.status not in ("done", "cached"):
            return []
        manifest = self.manifest()
        if manifest is None:
            raise NbflowError(
                f"the data of {self.pathspec} is no longer in the store {self.run.store.root} "
                "(cleared or evicted); run the flow again to recompute it"
            )
        decoder = _decoder(str(self.run.meta.get("tasks", "")))
        if decoder is not None:
            return decoder(self.run.store, self.name, manifest, self.run)
        store = self.run.store
        loaders = {n: _output_loader(store, manifest, n) for n in manifest.outputs}
        return [TaskRecord(self, None, DataView(loaders, self.pathspec))]

    def __iter__(self) -> Iterator[TaskRecord]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> TaskRecord:
        return self.tasks[index]

    @property
    def task(self) -> TaskRecord:
        """The step's task; for a foreach step, the first one (iterate for all of them)."""
        tasks = self.tasks
        if not tasks:
            raise NbflowError(f"{self.pathspec} has no finished task (status: {self.status})")
        return tasks[0]

    @property
    def data(self) -> DataView:
        return self._single().data

    def _single(self) -> TaskRecord:
        tasks = self.tasks
        if len(tasks) != 1:
            if not tasks:
                raise NbflowError(f"{self.pathspec} has no finished task (status: {self.status})")
            raise NbflowError(
                f"{self.pathspec} has {len(tasks)} tasks (a foreach step); pick one, e.g. "
                f"run['{self.name}'][0].data, or iterate: [t.data for t in run['{self.name}']]"
            )
        return tasks[0]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._single().data, name)

    def __repr__(self) -> str:
        return f"Step('{self.pathspec}', status={self.status})"


class TaskRecord:
    """One task of a step: its ``index`` among foreach items (None outside a foreach) and its data."""

    def __init__(self, step: StepRecord, index: int | None, data: DataView, **extra: Any) -> None:
        self.step = step
        self.index = index
        self.data = data
        self.extra = extra

    @property
    def pathspec(self) -> str:
        return f"{self.step.pathspec}/{0 if self.index is None else self.index}"

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def __repr__(self) -> str:
        return f"Task('{self.pathspec}')"


class DataView:
    """Lazy data: each name loads from the store when first read (then stays in memory)."""

    def __init__(
        self,
        loaders: Mapping[str, Callable[[], Any]],
        where: str,
        fallback: Mapping[str, Any] | None = None,
    ) -> None:
        self._loaders = dict(loaders)
        self._where = where
        self._fallback = dict(fallback or {})
        self._loaded: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(self._missing(name)) from None

    def _missing(self, name: str) -> str:
        known = ", ".join(self.keys()) or "none"
        return f"{self._where} has no artifact '{name}'; it has: {known}"

    def __getitem__(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        loader = self._loaders.get(name)
        if loader is None:
            if name in self._fallback:
                return self._fallback[name]
            raise KeyError(self._missing(name))
        value = loader()
        self._loaded[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._loaders or name in self._fallback

    def keys(self) -> list[str]:
        return sorted({*self._loaders, *self._fallback})

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __dir__(self) -> list[str]:
        return self.keys()

    def __repr__(self) -> str:
        return f"<data of {self._where}: {', '.join(self.keys())}>"


def _output_loader(store: Store, manifest: Manifest, name: str) -> Callable[[], Any]:
    def load() -> Any:
        values = store.load_outputs(manifest, [name])
        if values is None:
            raise NbflowError(f"output '{name}' of entry {manifest.key[:12]} is damaged; run again")
        return values[name]

    return load
