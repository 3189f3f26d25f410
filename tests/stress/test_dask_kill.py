"""A worker killed (SIGKILL) mid-step, and mid-write: retried, or reported failed — never a
half-written entry. Real LocalClusters and a real local process pool; the victim is found by
the pid its step writes to a file, and killed from a watcher thread.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nbflow
from nbflow.backends.dask import DaskScheduler
from nbflow.backends.local import LocalScheduler
from nbflow.backends.testing import S3Server, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def kill_when(path: Path, condition: Any = None, timeout: float = 40.0) -> threading.Thread:
    """Start a thread that SIGKILLs the pid written to ``path`` once ``condition()`` holds."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().strip() and (condition is None or condition()):
                os.kill(int(path.read_text()), signal.SIGKILL)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def victim_flow(store: Any, work: Path) -> nbflow.Flow:
    """``victim`` sleeps (to be killed) on its first attempt and returns at once on the next."""
    flow = nbflow.Flow("kill", store=store)

    @flow.step
    def before():
        return 20

    @flow.step
    def victim(before):
        first = not (work / "attempted").exists()
        (work / "attempted").touch()
        (work / "pid").write_text(str(os.getpid()))
        if first:
            time.sleep(60)
        return before + 1

    @flow.step
    def after(victim):
        return victim * 2

    return flow


@pytest.fixture(scope="module")
def forgiving() -> Iterator[DaskScheduler]:
    """A cluster that reschedules a task whose worker died (Dask's default allowance)."""
    scheduler = DaskScheduler(n_workers=2, allowed_failures=3)
    scheduler.client().wait_for_workers(2, timeout=50)
    yield scheduler
    scheduler.close()


@pytest.fixture(scope="module")
def strict() -> Iterator[DaskScheduler]:
    """A cluster that gives up on a task the first time its worker dies."""
    scheduler = DaskScheduler(n_workers=2, allowed_failures=0)
    scheduler.client().wait_for_workers(2, timeout=50)
    yield scheduler
    scheduler.close()


def test_killed_worker_the_step_is_rescheduled(forgiving: DaskScheduler, tmp_path: Path) -> None:
    flow = victim_flow(tmp_path / "store", tmp_path)
    statuses: list[tuple[str, str]] = []
    flow.events.subscribe(lambda e: statuses.append((e.step, e.status)))
    killer = kill_when(tmp_path / "pid")
    result = flow.run(executor=forgiving)
    killer.join(1)
    assert (tmp_path / "attempted").exists()
    assert result["after"] == 42 and result.executed == ["before", "victim", "after"]
    assert ("victim", "failed") not in statuses
    report = flow.store.check()
    assert report.entries == 3 and report.clean


def test_killed_worker_the_step_is_reported_failed(strict: DaskScheduler, tmp_path: Path) -> None:
    flow = victim_flow(tmp_path / "store", tmp_path)
    killer = kill_when(tmp_path / "pid")
    result = flow.run(executor=strict, raise_on_failure=False)
    killer.join(1)
    assert result.failed == ["victim"] and result.skipped == ["after"]
    assert result.executed == ["before"]
    assert "nothing partial was stored" in (flow.status()["victim"].error or "")
    key = flow.plan_keys(["victim"])["victim"]
    assert key is not None and flow.store.get(key) is None  # no entry at all, not a bad one
    assert flow.store.check().bad_entries == []
    # resume: the fix is simply to run again (the marker makes the next attempt quick)
    again = flow.run(executor=strict)
    assert again.executed == ["victim", "after"] and again.cached == ["before"]
    assert again["after"] == 42


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.make_bucket("nbflow-kill")
        yield server


def test_killed_mid_write_leaves_no_entry(strict: DaskScheduler, s3: S3Server, tmp_path: Path) -> None:
    url = f"s3://nbflow-kill/{uuid.uuid4().hex[:8]}"
    store = nbflow.open_store(url, cache_dir=str(tmp_path / "cache"), **s3.storage_options)
    fs = store.backend.fs  # type: ignore[attr-defined]
    prefix = f"{url[len('s3://'):]}/blobs"
    flow = nbflow.Flow("midwrite", store=store)
    names = tuple(f"part{i}" for i in range(30))
    work = tmp_path

    @flow.step(outputs=names)
    def big():
        out = tuple(np.full(20_000, i, dtype="f8") for i in range(30))  # 60 blobs to upload
        if not (work / "attempted").exists():
            (work / "attempted").touch()
            (work / "pid").write_text(str(os.getpid()))  # the writes start after this
        return out

    def some_blobs_written() -> bool:
        try:
            return len(fs.find(prefix)) >= 4
        except FileNotFoundError:
            return False

    key = flow.plan_keys()["big"]
    assert key is not None
    killer = kill_when(work / "pid", some_blobs_written)
    result = flow.run(executor=strict, raise_on_failure=False)
    killer.join(1)
    assert result.failed == ["big"], "the worker was not killed during its writes"
    written = len(fs.find(prefix))
    assert 4 <= written < 60  # some blobs are there ...
    assert store.get(key) is None  # ... but no manifest: the entry does not exist
    report = store.check()
    assert report.entries == 0 and report.bad_entries == [] and report.orphan_blobs
    again = flow.run(executor=strict)
    assert float(again["part29"][0]) == 29.0
    assert store.check(fix=True).entries == 1
    assert store.check().clean


def test_killed_local_worker_process(tmp_path: Path) -> None:
    scheduler = LocalScheduler(2, "process")
    try:
        flow = victim_flow(tmp_path / "store", tmp_path)
        killer = kill_when(tmp_path / "pid")
        result = flow.run(executor=scheduler, raise_on_failure=False)
        killer.join(1)
        assert result.failed == ["victim"] and result.skipped == ["after"]
        assert "a worker process died" in (flow.status()["victim"].error or "")
        assert flow.store.check().bad_entries == []
        again = flow.run(executor=scheduler)  # a fresh pool
        assert again["after"] == 42 and again.cached == ["before"]
    finally:
        scheduler.close()
