"""Batch items as Dask tasks: ``run_batch`` on a flow configured with ``executor="dask"`` runs every
item at once on the cluster, with the serial batch's results, keys and collected failures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbflow
from nbflow.backends.dask import DaskScheduler

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[DaskScheduler]:
    scheduler = DaskScheduler(n_workers=2)
    scheduler.client().wait_for_workers(2, timeout=50)
    scheduler.client().run(__import__, "nbflow.backends.tasks")  # warm: imports on every worker
    yield scheduler
    scheduler.close()


def batch_flow(store: Path) -> tuple[nbflow.Flow, nbflow.Input, nbflow.Node]:
    def slow_square(x: int) -> int:
        if x == 13:
            raise ValueError("unlucky item")
        time.sleep(0.4)
        return x * x

    def plus_pid(square: int) -> tuple[int, int]:
        return square + 1, os.getpid()

    flow = nbflow.Flow("batch", store=store)
    x = flow.add_input("x", int)
    sq = flow.add_step(slow_square, x=x)
    out = flow.add_step(plus_pid, square=sq, outputs=("value", "pid"))
    return flow, x, out


def test_batch_items_run_at_once_on_the_cluster(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    items = [1, 2, 13, 3, 4, 5]
    serial, sx, sout = batch_flow(tmp_path / "serial")
    started = time.perf_counter()
    expected = serial.run_batch(items, targets=[sout], prepare=lambda i, v: sx.set_value(v),
                                progress=False)
    serial_time = time.perf_counter() - started

    flow, x, out = batch_flow(tmp_path / "dask")
    flow.config(executor=dask_scheduler)
    started = time.perf_counter()
    stats = flow.run_batch(items, targets=[out], prepare=lambda i, v: x.set_value(v),
                           progress=False)
    elapsed = time.perf_counter() - started
    assert [(f.index, f.item, str(f.exception)) for f in stats.failures] == \
        [(2, 13, "unlucky item")]
    assert stats.failed_steps == {2: "slow_square"}
    assert stats.succeeded == expected.succeeded == [0, 1, 3, 4, 5]
    got = [stats.value(i, "plus_pid") for i in stats.succeeded]
    want = [expected.value(i, "plus_pid") for i in expected.succeeded]
    assert [g["plus_pid_value"] for g in got] == [w["plus_pid_value"] for w in want]
    assert {g["plus_pid_pid"] for g in got}.isdisjoint({os.getpid()})  # ran on the workers
    assert stats.keys == expected.keys  # the same entries as the serial batch
    assert (stats.executed, stats.cached) == (expected.executed, expected.cached)
    assert elapsed < serial_time * 0.8, f"{elapsed:.2f} s vs {serial_time:.2f} s serially"
    assert flow.params["x"] == 5  # as after a serial batch: the last item's input

    again = flow.run_batch(items, targets=[out], prepare=lambda i, v: x.set_value(v),
                           progress=False)
    assert (again.executed, again.cached) == (0, 10)  # only the failing item ran (and failed)
    assert [f.index for f in again.failures] == [2]
