"""Run steps on a ``dask.distributed`` cluster: a LocalCluster started once, or an existing one.

Each step, foreach split, foreach item and join is one Dask task, submitted as soon as its inputs
are ready. A task logs a "started" event on its worker (``Worker.log_event``); the driver
subscribes to the run's topic, so the widget shows a step running when a worker picks it up, and
done/failed as each future completes. Item results stay on the workers: the join task receives
the item futures and Dask moves any inline values between workers, not through the notebook.

A worker that dies mid-task: the scheduler reschedules the task on another worker (up to its
``allowed-failures``), and ``retries=`` also re-runs tasks that raised; past that the step is
reported failed (``KilledWorker``). Either way nothing is half-written: a task's entry appears
only when its manifest is written, after all its blobs.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import NbflowError
from ..store import Store
from .base import Scheduler
from .cell import RemoteCell
from .tasks import StoreSpec, store_spec

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _traced(topic: str | None, step: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Runs on the worker: note that ``step`` started (unless ``topic`` is None: the step is
    already running, e.g. for its foreach items), then run the task."""
    if topic is not None:
        try:
            from distributed import get_worker

            get_worker().log_event(topic, {"step": step})
        except Exception:  # noqa: BLE001 - events are a view, never a reason to fail a step
            pass
    return fn(*args)


class DaskPool:
    """A :class:`~nbflow.backends.parallel.Pool` over a ``distributed.Client``."""

    limit = None
    pickles = True
    reports_start = True

    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries
        self._inboxes: dict[str, queue.Queue[tuple[Any, ...]]] = {}

    def store_ref(self, store: Store) -> StoreSpec | Store:
        return store_spec(store)

    def begin(self, run_id: str, inbox: queue.Queue[tuple[Any, ...]]) -> None:
        self._inboxes[run_id] = inbox

        def started(event: Any) -> None:
            msg = event[1] if isinstance(event, tuple | list) else event
            inbox.put(("started", run_id, msg["step"]))

        self.client.subscribe_topic(f"nbflow-{run_id}", started)

    def end(self, run_id: str) -> None:
        try:
            self.client.unsubscribe_topic(f"nbflow-{run_id}")
        except Exception:  # noqa: BLE001 - the client may already be closing
            pass
        self._inboxes.pop(run_id, None)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], *, run_id: str,
               step: str, item: int | None, token: int) -> Any:
        inbox = self._inboxes[run_id]
        part = fn.__name__.replace("_", "-")
        key = f"nbflow-{step}-{part}{'' if item is None else f'-{item}'}-{uuid.uuid4().hex[:8]}"
        topic = f"nbflow-{run_id}" if item is None and part != "join-foreach" else None
        future = self.client.submit(_traced, topic, step, fn, *args, key=key,
                                    retries=self.retries, pure=False)
        future.add_done_callback(lambda _f: inbox.put(("done", token)))
        return future

    def share(self, value: Any) -> Any:
        return self.client.scatter(value, hash=False)

    def result(self, handle: Any) -> Any:
        return handle.result()

    def peek(self, handle: Any) -> Any:
        return None  # item results stay on the workers; the join task receives them

    def error(self, handle: Any) -> BaseException | None:
        if handle.status == "finished":
            return None
        if handle.status == "cancelled":
            return NbflowError("the task was cancelled on the cluster")
        return handle.exception()

    def forward(self, handle: Any) -> Any:
        return handle

    def cancel(self, handles: Iterable[Any]) -> None:
        futures = [h for h in handles if h is not None]
        if futures:
            try:
                self.client.cancel(futures)
            except Exception:  # noqa: BLE001
                pass

    def broken(self, error: BaseException) -> str | None:
        from distributed.scheduler import KilledWorker

        if isinstance(error, KilledWorker):
            return ("the Dask workers running this step died (killed, or out of memory) more "
                    "times than the cluster allows; nothing partial was stored")
        return None


class DaskScheduler(Scheduler):
    """Steps as Dask tasks on the cluster at ``address`` (None: a LocalCluster on loopback)."""

    name = "dask"

    def __init__(
        self,
        address: str | None = None,
        *,
        n_workers: int | None = None,
        retries: int = 0,
        only_remote: bool = False,
        client: Any = None,
        allowed_failures: int | None = None,
        **cluster_options: Any,
    ) -> None:
        self.address = address
        self.n_workers = n_workers
        self.retries = int(retries)
        self.only_remote = only_remote
        self._client = client
        self.allowed_failures = allowed_failures
        self.cluster_options = cluster_options

    def client(self) -> Any:
        """The ``distributed.Client`` (connecting, or starting the LocalCluster, on first use)."""
        if self._client is not None:
            return self._client
        # schedulers with the same cluster settings share one client (and one LocalCluster)
        ident = (self.address, self.n_workers, self.allowed_failures,
                 tuple(sorted((k, repr(v)) for k, v in self.cluster_options.items())))
        with _clients_lock:
            client = _clients.get(ident)
            if client is None or client.status in ("closed", "closing"):
                client = _connect(self.address, self.n_workers, self.allowed_failures,
                                  self.cluster_options)
                _clients[ident] = client
        self._client = client
        return client

    def pool(self) -> DaskPool:
        return DaskPool(self.client(), self.retries)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with _clients_lock:
            for k, v in list(_clients.items()):
                if v is client:
                    del _clients[k]
        cluster = getattr(client, "cluster", None) if self.address is None else None
        try:
            client.close()
            if cluster is not None:
                cluster.close()
        except Exception:  # noqa: BLE001 - closing at exit must not raise
            pass

    def describe(self) -> str:
        where = self.address or "a LocalCluster"
        return f"dask on {where}" + (" (remote steps only)" if self.only_remote else "")


def _connect(address: str | None, n_workers: int | None, allowed_failures: int | None,
             options: Mapping[str, Any]) -> Any:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise NbflowError(
            "executor='dask' needs dask.distributed; install it with "
            "`pip install 'nbflow[dask]'`"
        ) from None
    if address is not None:
        try:
            return Client(address, timeout=options.get("timeout", 30))
        except OSError as e:
            raise NbflowError(
                f"cannot reach the Dask scheduler at {address} ({e}); start it "
                "(`dask scheduler`) or check the address, e.g. tcp://host:8786"
            ) from e
    kwargs: dict[str, Any] = {
        "n_workers": n_workers or min(os.cpu_count() or 1, 8),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "silence_logs": logging.ERROR,
    }
    # no dashboard; the scheduler's HTTP routes on a free loopback port, not 0.0.0.0:8787
    scheduler_kwargs: dict[str, Any] = {"dashboard_address": "127.0.0.1:0"}
    if allowed_failures is not None:
        scheduler_kwargs["allowed_failures"] = allowed_failures
    kwargs["scheduler_kwargs"] = scheduler_kwargs
    kwargs.update({k: v for k, v in options.items() if k != "timeout"})
    from .local import ensure_spawnable_main

    ensure_spawnable_main()
    cluster = LocalCluster(**kwargs)
    return Client(cluster)


def default_remote() -> DaskScheduler:
    """The scheduler for steps marked remote when the flow itself runs serially."""
    from . import select

    scheduler = select("dask", only_remote=True)
    assert isinstance(scheduler, DaskScheduler)
    return scheduler


def run_cell_remote(
    source: str,
    inputs: Mapping[str, Any],
    outputs: Sequence[str],
    *,
    namespace: Mapping[str, Any] | None = None,
    name: str = "cell",
    address: str | None = None,
    scheduler: DaskScheduler | None = None,
) -> dict[str, Any]:
    """Run a cell's ``source`` once on the cluster, in a fresh namespace holding ``namespace``
    (imports, helpers) and ``inputs``; return its ``outputs``. The values travel with the task:
    for steps of a flow, give the step a :class:`RemoteCell` action and
    ``meta["placement"] = "remote"`` instead, so inputs are read from the store on the worker.
    """
    if scheduler is None:
        from . import select

        chosen = select("dask", address=address)
        assert isinstance(chosen, DaskScheduler)
        scheduler = chosen
    action = RemoteCell(source, tuple(outputs), dict(namespace or {}), name)
    future = scheduler.client().submit(action, dict(inputs), pure=False)
    return future.result()


__all__ = ["DaskPool", "DaskScheduler", "default_remote", "run_cell_remote"]
