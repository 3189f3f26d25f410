"""The scheduler interface: what a flow holds to run its steps somewhere other than in order here.

A scheduler owns a pool (processes, threads, a Dask cluster) for as long as it lives and hands the
engine a ``run_factory``: ``execute`` builds each run with it, so a parallel run is just another
:class:`~nbflow.executor.Run`. Must never import Dask or IPython.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..executor import Run


class Scheduler:
    """Base class: subclasses provide :meth:`pool`; :meth:`close` releases it."""

    name = "serial"
    #: only steps marked ``meta["placement"] == "remote"`` leave this process
    only_remote = False

    def pool(self) -> Any:
        raise NotImplementedError

    def run_factory(self) -> Callable[..., Run]:
        from .parallel import ParallelRun

        return functools.partial(ParallelRun, pool=self.pool(), only_remote=self.only_remote)

    def close(self) -> None:
        """Release workers (a later run starts them again)."""

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<nbflow scheduler {self.describe()}>"
