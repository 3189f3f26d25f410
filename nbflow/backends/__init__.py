"""Where steps run: in order in this process (the default), on a local pool, or on Dask.

::

    flow.run(executor="local", max_workers=4)            # processes on this machine
    flow.run(executor="dask")                            # a LocalCluster, started once
    flow.run(executor="dask", address="tcp://host:8786") # an existing cluster
    flow.config(executor="dask", address=..., store="s3://bucket/prefix")

Every choice gives the same results, the same cache entries and the same executed/cached steps
as the serial walk. Workers read and write the store themselves, so it must be one they reach: a
directory on this machine (local pool, LocalCluster) or an fsspec URL (any cluster).

For other parts of nbflow: :func:`select` turns settings into a (shared, long-lived)
:class:`Scheduler`; :func:`run_factory` is what a flow passes to the engine; :func:`add_cli_options`
and :func:`from_cli` give a command line ``--executor``, ``--address`` and ``--max-workers``.
Importing this package is cheap: Dask is imported only when a Dask scheduler starts.
"""

from __future__ import annotations

import argparse
import atexit
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import NbflowError
from .base import Scheduler

if TYPE_CHECKING:
    from ..executor import Run
    from ..graph import Graph

EXECUTORS = ("serial", "local", "dask")

_shared: dict[tuple[Any, ...], Scheduler] = {}
_lock = threading.Lock()


def select(
    executor: str | Scheduler | None = None,
    *,
    address: str | None = None,
    max_workers: int | None = None,
    retries: int | None = None,
    kind: str | None = None,
    **options: Any,
) -> Scheduler | None:
    """The scheduler for these settings (None: the serial walk).

    ``executor``: ``"serial"``, ``"local"`` (``max_workers`` processes; ``kind="thread"`` for
    threads) or ``"dask"`` (``address`` of a running scheduler, else a LocalCluster with
    ``max_workers`` workers; ``retries`` re-runs a failed task). Without ``executor``, an
    ``address`` means Dask and ``max_workers`` > 1 means the local pool. Equal settings share
    one scheduler (and its workers) for the life of the process.
    """
    if isinstance(executor, Scheduler):
        return executor
    if executor is None:
        executor = "dask" if address else ("local" if (max_workers or 1) > 1 else "serial")
    executor = str(executor).lower()
    if executor not in EXECUTORS:
        raise NbflowError(
            f"executor {executor!r} is not one of {', '.join(EXECUTORS)}; "
            "e.g. executor='dask' or executor='local', max_workers=4"
        )
    if executor == "serial":
        if address:
            raise NbflowError("address= needs executor='dask' (the serial walk has no cluster)")
        return None
    if executor == "local" and address:
        raise NbflowError("address= is for executor='dask'; the local pool runs on this machine")
    if max_workers is not None and int(max_workers) < 1:
        raise NbflowError(f"max_workers must be at least 1, got {max_workers}")
    ident = (executor, address, max_workers, retries, kind, tuple(sorted(options.items())))
    with _lock:
        found = _shared.get(ident)
        if found is not None:
            return found
        scheduler: Scheduler
        if executor == "local":
            from .local import LocalScheduler

            scheduler = LocalScheduler(max_workers, kind or "process")
        else:
            from .dask import DaskScheduler

            scheduler = DaskScheduler(address, n_workers=max_workers, retries=retries or 0,
                                      **options)
        _shared[ident] = scheduler
        return scheduler


def run_factory(scheduler: Scheduler | None, graph: Graph | None = None) -> Callable[..., Run]:
    """What a flow hands the engine: the scheduler's runs, else the serial :class:`Run` — unless a
    step asks to run remotely (``meta["placement"] == "remote"``, e.g. ``%%step --remote``), which
    then goes to the default Dask scheduler while every other step runs here."""
    if scheduler is not None:
        return scheduler.run_factory()
    if graph is not None and any(s.meta.get("placement") == "remote" for s in graph.steps.values()):
        from .dask import default_remote

        return default_remote().run_factory()
    from ..executor import Run

    return Run


def shutdown() -> None:
    """Close every shared scheduler (their workers stop; a later run starts new ones)."""
    with _lock:
        schedulers = list(_shared.values())
        _shared.clear()
    for s in schedulers:
        s.close()


atexit.register(shutdown)


# -- command line -----------------------------------------------------------------------------------
def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--executor``, ``--address`` and ``--max-workers`` to a ``run``-like command."""
    group = parser.add_argument_group("where steps run")
    group.add_argument("--executor", choices=EXECUTORS, default=None,
                       help="serial (default), local (a process pool) or dask")
    group.add_argument("--address", metavar="URL", default=None,
                       help="a Dask scheduler, e.g. tcp://host:8786 (implies --executor dask); "
                       "without it, dask starts a LocalCluster")
    group.add_argument("--max-workers", metavar="N", type=_positive_int, default=None,
                       help="parallel workers (implies --executor local without --address)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expects at least 1, got {value}")
    return value


def from_cli(args: argparse.Namespace) -> Scheduler | None:
    """The scheduler the options added by :func:`add_cli_options` ask for (None: serial)."""
    return select(getattr(args, "executor", None), address=getattr(args, "address", None),
                  max_workers=getattr(args, "max_workers", None))


__all__ = [
    "EXECUTORS",
    "Scheduler",
    "add_cli_options",
    "from_cli",
    "run_factory",
    "select",
    "shutdown",
]
