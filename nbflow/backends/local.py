"""Run steps on a pool of this machine's processes (or threads): ``--max-workers N``.

Processes give real parallelism for CPU-bound steps; they start with ``spawn`` (a clean
interpreter: safe under a Jupyter kernel, whose threads make ``fork`` hazardous) and stay up for
the scheduler's life, so only the first run pays their start. Steps travel cloudpickled and
workers open the same store (a directory on this machine, or a URL). Threads need no pickling
and see this process's objects (side effects included), but share the GIL.
A worker process that dies breaks a ``ProcessPoolExecutor``: the step is reported failed (never
half-written: the store's writes are atomic) and the next run starts a fresh pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import NbflowError
from ..store import Store
from .base import Scheduler
from .tasks import StoreSpec, store_spec

KINDS = ("process", "thread")


def _warm() -> None:
    """Worker initializer: import the task module once, before the first task arrives."""
    from . import tasks  # noqa: F401


class LocalPool:
    """A :class:`~nbflow.backends.parallel.Pool` over a ``concurrent.futures`` executor."""

    reports_start = False

    def __init__(self, scheduler: LocalScheduler) -> None:
        self.scheduler = scheduler
        self.limit = scheduler.max_workers
        self.pickles = scheduler.kind == "process"
        self._inboxes: dict[str, queue.Queue[tuple[Any, ...]]] = {}

    def store_ref(self, store: Store) -> StoreSpec | Store:
        return store_spec(store) if self.pickles else store

    def begin(self, run_id: str, inbox: queue.Queue[tuple[Any, ...]]) -> None:
        self._inboxes[run_id] = inbox

    def end(self, run_id: str) -> None:
        self._inboxes.pop(run_id, None)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], *, run_id: str,
               step: str, item: int | None, token: int) -> Any:
        inbox = self._inboxes[run_id]
        try:
            future = self.scheduler.executor().submit(fn, *args)
        except BrokenProcessPool:
            self.scheduler.close()  # a worker died earlier: start a fresh pool
            future = self.scheduler.executor().submit(fn, *args)
        future.add_done_callback(lambda _f: inbox.put(("done", token)))
        return future

    def share(self, value: Any) -> Any:
        return value

    def result(self, handle: Any) -> Any:
        return handle.result()

    def peek(self, handle: Any) -> Any:
        return handle.result()

    def error(self, handle: Any) -> BaseException | None:
        return handle.exception()

    def forward(self, handle: Any) -> Any:
        return handle.result()

    def cancel(self, handles: Iterable[Any]) -> None:
        for h in handles:
            if h is not None:
                h.cancel()

    def broken(self, error: BaseException) -> str | None:
        if isinstance(error, BrokenProcessPool):
            self.scheduler.close()
            return ("a worker process died while running this step (killed, or out of memory); "
                    "nothing partial was stored, and the next run starts fresh workers")
        return None


class LocalScheduler(Scheduler):
    """``max_workers`` processes (or threads) on this machine."""

    name = "local"

    def __init__(self, max_workers: int | None = None, kind: str = "process") -> None:
        if kind not in KINDS:
            raise NbflowError(f"local pool kind {kind!r} is not one of {', '.join(KINDS)}")
        workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
        if workers < 1:
            raise NbflowError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = workers
        self.kind = kind
        self._executor: cf.Executor | None = None
        self._lock = threading.Lock()

    def executor(self) -> cf.Executor:
        ensure_spawnable_main()
        with self._lock:
            if self._executor is None:
                if self.kind == "thread":
                    self._executor = cf.ThreadPoolExecutor(self.max_workers,
                                                           thread_name_prefix="nbflow")
                else:
                    self._executor = cf.ProcessPoolExecutor(
                        self.max_workers, mp_context=multiprocessing.get_context("spawn"),
                        initializer=_warm,
                    )
            return self._executor

    def pool(self) -> LocalPool:
        return LocalPool(self)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> str:
        return f"local ({self.max_workers} {self.kind}{'es' if self.kind == 'process' else 's'})"


def ensure_spawnable_main() -> None:
    """Let ``spawn`` start workers from an IPython session.

    A spawned child reads ``sys.modules["__main__"].__spec__``; IPython's user module loses it
    on ``%reset`` (and an in-process shell never has it). ``None`` is what plain scripts have, and
    tells the child there is no main module to re-import — right for a notebook.
    """
    main = sys.modules.get("__main__")
    if main is not None and not hasattr(main, "__spec__"):
        main.__spec__ = None
