"""Steps on a real ``dask.distributed`` LocalCluster (two worker processes, loopback only).

The contract: the same results, the same cache entries and the same executed/cached steps as the
serial walk; independent branches at once; per-item caching of foreach steps; workers read and
write the store themselves; events stream back while the cluster works; failures name the step.
One cluster serves the whole module.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nbflow
from nbflow import NbflowWarning, StepFailed
from nbflow.backends import select
from nbflow.backends.cell import RemoteCell
from nbflow.backends.dask import DaskScheduler, run_cell_remote
from nbflow.backends.testing import S3Server, s3_server
from nbflow.flow import function_step

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[DaskScheduler]:
    scheduler = DaskScheduler(n_workers=2)
    client = scheduler.client()
    client.wait_for_workers(2, timeout=50)
    yield scheduler
    scheduler.close()


def build(store: Any, marks: Path, items: list[int] | None = None, sleep: float = 0.0,
          offset: int = 0) -> nbflow.Flow:
    """A flow with a branch, a foreach, a join, several outputs, a parameter and cache=False."""
    flow = nbflow.Flow("dag", store=store)
    flow.param("scale", 3)
    values = list(range(6)) if items is None else items

    @flow.step
    def raw():
        return list(values)

    @flow.step(foreach="raw")
    def square(raw):
        (marks / f"square-{raw}-{uuid.uuid4().hex}").touch()
        time.sleep(sleep)
        return raw * raw + offset

    @flow.step
    def left(raw, scale):
        return [x * scale for x in raw]

    @flow.step
    def right(raw):
        return np.arange(len(raw) * 20_000, dtype="f8")  # out-of-band buffers

    @flow.step(outputs=("total", "n"))
    def join(left, square, right):
        return sum(left) + sum(square) + float(right.sum()), len(square)

    @flow.step(cache=False)
    def report(total, n):
        return f"{n} items, total {total}"

    return flow


def run_and_record(flow: nbflow.Flow, **kw: Any):
    events: list[nbflow.Event] = []
    unsubscribe = flow.events.subscribe(events.append)
    try:
        result = flow.run(**kw)
    finally:
        unsubscribe()
    return result, events


def snapshot(result) -> dict[str, Any]:
    out = {}
    for name in ("raw", "square", "left", "total", "n", "report"):
        out[name] = result[name]
    out["right"] = float(result["right"].sum())
    return out


def test_same_results_and_cache_decisions_as_serial(dask_scheduler: DaskScheduler,
                                                    tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    serial = build(tmp_path / "serial", marks)
    dask = build(tmp_path / "dask", marks)
    s1 = serial.run()
    d1 = dask.run(executor=dask_scheduler)
    assert snapshot(d1) == snapshot(s1)
    assert d1.executed == s1.executed and d1.cached == s1.cached == []
    # the same keys: a serial flow on the store the cluster filled finds everything cached
    again = build(tmp_path / "dask", marks).run()
    assert again.executed == ["report"] and set(again.cached) == set(s1.executed) - {"report"}
    d2 = build(tmp_path / "dask", marks).run(executor=dask_scheduler)
    s2 = serial.run()
    assert (d2.executed, d2.cached) == (s2.executed, s2.cached)
    assert snapshot(d2) == snapshot(s1)
    assert nbflow.open_store(tmp_path / "dask").check().clean


def test_workers_write_the_store_and_values_do_not_travel(dask_scheduler: DaskScheduler,
                                                          tmp_path: Path) -> None:
    flow = build(tmp_path / "store", tmp_path)
    result = flow.run(executor=dask_scheduler)
    run = result._run  # the driver's view of the run
    assert set(run.encoded) == {"report"}  # only the cache=False output came back as a value
    assert set(result.manifests) == {"raw", "square", "left", "right", "join"}
    records = {m.step: m.record for m in flow.store.entries() if m.record}
    assert records["join"]["output_digests"]["total"] == run.digests["total"]


def test_foreach_items_are_cached_one_by_one(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    def run(items: list[int], executor: Any, store: Path, marks: Path) -> tuple[Any, list[str]]:
        before = set(os.listdir(marks))
        result = build(store, marks, items).run(executor=executor)
        made = sorted(n.split("-")[1] for n in set(os.listdir(marks)) - before)
        return result, made

    outcomes = {}
    for kind, executor in (("serial", None), ("dask", dask_scheduler)):
        marks = tmp_path / f"marks-{kind}"
        marks.mkdir()
        store = tmp_path / f"store-{kind}"
        first, made1 = run([1, 2, 3], executor, store, marks)
        second, made2 = run([1, 2, 3, 4, 5], executor, store, marks)  # two new items
        third, made3 = run([2, 5], executor, store, marks)  # every item known
        outcomes[kind] = (made1, made2, made3, second["square"], third["square"],
                          second.executed, third.executed)
    assert outcomes["dask"] == outcomes["serial"]
    assert outcomes["dask"][:3] == (["1", "2", "3"], ["4", "5"], [])


def test_early_cutoff_matches_serial(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    flow = nbflow.Flow("cutoff", store=tmp_path / "s")

    @flow.step
    def base():
        return [1, 2, 3]

    @flow.step
    def doubled(base):
        return [x * 2 for x in base]

    @flow.step
    def total(doubled):
        return sum(doubled)

    flow.run(executor=dask_scheduler)

    @flow.step  # type: ignore[no-redef]
    def doubled(base):  # noqa: F811 - an edit, identical output
        return [x + x for x in base]

    result = flow.run(executor=dask_scheduler)
    assert result.executed == ["doubled"] and result.cached == ["base", "total"]
    assert result["total"] == 12


def test_independent_branches_run_at_once(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    flow = nbflow.Flow("branches", store=tmp_path / "s")
    stamps = tmp_path / "stamps"
    stamps.mkdir()

    def branch(tag: str):
        def action(values: dict[str, Any]) -> dict[str, Any]:
            (stamps / f"{tag}-start").write_text(str(time.time()))
            time.sleep(1.0)
            (stamps / f"{tag}-end").write_text(str(time.time()))
            return {tag: tag}

        return action

    for tag in ("a", "b"):
        flow.add(nbflow.Step(name=tag, inputs=(), outputs=(tag,), action=branch(tag),
                             code=f"branch {tag}"))
    result = flow.run(executor=dask_scheduler)
    assert sorted(result.executed) == ["a", "b"]
    start = {t: float((stamps / f"{t}-start").read_text()) for t in "ab"}
    end = {t: float((stamps / f"{t}-end").read_text()) for t in "ab"}
    assert max(start.values()) < min(end.values()), "the two branches did not overlap"


def test_events_stream_live_and_in_order(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    flow = build(tmp_path / "s", tmp_path, items=list(range(8)), sleep=0.05)
    seen_running_before_done: list[str] = []
    done: set[str] = set()
    lock = threading.Lock()

    def watch(event: nbflow.Event) -> None:
        with lock:
            if event.status == "running" and event.item is None:
                assert event.step not in done
                seen_running_before_done.append(event.step)
            if event.status == "done":
                done.add(event.step)

    flow.events.subscribe(watch)
    result, events = run_and_record(flow, executor=dask_scheduler)
    assert set(seen_running_before_done) == set(result.executed)
    items = sorted(e.item for e in events if e.step == "square" and e.item is not None)
    assert items == list(range(8))
    for step in result.executed:
        statuses = [e.status for e in events if e.step == step and e.item is None]
        assert statuses == ["queued", "running", "done"], (step, statuses)
    assert flow.status()["join"].status == "done"


def test_failure_skips_descendants_and_resumes(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    flow = nbflow.Flow("fails", store=tmp_path / "s")

    @flow.step
    def ok():
        return 41

    @flow.step
    def broken(ok):
        raise ValueError(f"bad value {ok}")

    @flow.step
    def after(broken):
        return broken

    @flow.step
    def sibling(ok):
        return ok + 1

    events: list[nbflow.Event] = []
    flow.events.subscribe(events.append)
    with pytest.raises(StepFailed, match="broken") as info:
        flow.run(executor=dask_scheduler)
    result = info.value.result  # type: ignore[attr-defined]
    assert result.failed == ["broken"] and result.skipped == ["after"]
    assert sorted(result.executed) == ["ok", "sibling"]
    failed = [e for e in events if e.status == "failed"]
    assert failed and "bad value 41" in (failed[0].error or "")
    assert "def broken" in (failed[0].error or "") or "in broken" in (failed[0].error or "")
    assert flow.status()["broken"].status == "failed"

    @flow.step  # type: ignore[no-redef]
    def broken(ok):  # noqa: F811 - the fix
        return ok + 1

    fixed = flow.run(executor=dask_scheduler)
    assert fixed.executed == ["broken", "after"] and sorted(fixed.cached) == ["ok", "sibling"]
    assert fixed["after"] == 42


def test_retries_rerun_a_flaky_step(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    flow = nbflow.Flow("flaky", store=tmp_path / "s")

    @flow.step
    def flaky():
        if not marker.exists():
            marker.touch()
            raise ConnectionError("transient")
        return "ok"

    with pytest.raises(StepFailed):
        flow.run(executor=dask_scheduler)  # no retries: reported failed
    marker.unlink()
    retrying = DaskScheduler(retries=1, client=dask_scheduler.client())
    assert flow.run(executor=retrying)["flaky"] == "ok"


def test_step_that_cannot_be_pickled_runs_here(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    flow = nbflow.Flow("local", store=tmp_path / "s")
    lock = threading.Lock()

    def action(values: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return {"here": os.getpid()}

    flow.add(nbflow.Step(name="here", inputs=(), outputs=("here",), action=action, code="here"))

    @flow.step
    def there(here):
        return (here, os.getpid())

    with pytest.warns(NbflowWarning, match="runs in this process"):
        result = flow.run(executor=dask_scheduler)
    here, there_pid = result["there"]
    assert here == os.getpid() and there_pid != os.getpid()


def test_unpicklable_output_comes_back_by_running_here(dask_scheduler: DaskScheduler,
                                                       tmp_path: Path) -> None:
    flow = nbflow.Flow("unpicklable", store=tmp_path / "s")

    @flow.step
    def handle():
        return threading.Lock()

    with pytest.warns(NbflowWarning) as caught:
        result = flow.run(executor=dask_scheduler)
    messages = " ".join(str(w.message) for w in caught)
    assert "cannot come back from a worker" in messages
    assert hasattr(result["handle"], "acquire")


def test_memory_store_is_refused_with_a_clear_error(dask_scheduler: DaskScheduler,
                                                    tmp_path: Path) -> None:
    store = nbflow.open_store(f"memory://nbflow-{uuid.uuid4().hex}",
                              cache_dir=str(tmp_path / "cache"))
    flow = nbflow.Flow("mem", store=store)

    @flow.step
    def one():
        return 1

    with pytest.raises(nbflow.NbflowError, match="workers cannot reach it"):
        flow.run(executor=dask_scheduler)


def test_remote_cell_step_runs_on_a_worker_from_the_store(dask_scheduler: DaskScheduler,
                                                          tmp_path: Path) -> None:
    flow = nbflow.Flow("cells", store=tmp_path / "s")

    @flow.step
    def data():
        return np.arange(10)

    source = "import os\ntotal = int(data.sum()) * factor\nwhere = os.getpid()\n"
    cell = RemoteCell(source, ("total", "where"), {"factor": 2}, "fit")
    flow.add(nbflow.Step(name="fit", inputs=("data",), outputs=("total", "where"), action=cell,
                         code=source, meta={"placement": "remote"}))
    flow.config(executor=None)  # serial flow: only the remote step leaves this process
    flow._scheduler = DaskScheduler(only_remote=True, client=dask_scheduler.client())
    result = flow.run()
    assert result["total"] == 90 and result["where"] != os.getpid()
    assert result.executed == ["data", "fit"]
    assert flow.run().cached == ["data", "fit"]

    out = run_cell_remote("y = x + 1\n", {"x": 41}, ["y"], scheduler=dask_scheduler)
    assert out == {"y": 42}
    with pytest.raises(nbflow.NbflowError, match="did not bind z"):
        run_cell_remote("y = 1\n", {}, ["z"], scheduler=dask_scheduler)


def test_select_and_config(dask_scheduler: DaskScheduler, tmp_path: Path) -> None:
    assert select() is None and select("serial") is None
    local = select(max_workers=3)
    assert local is not None and local.describe() == "local (3 processes)"
    assert select("dask", address="tcp://127.0.0.1:1") is select(address="tcp://127.0.0.1:1")
    with pytest.raises(nbflow.NbflowError, match="not one of serial, local, dask"):
        select("spark")
    with pytest.raises(nbflow.NbflowError, match="address= is for executor='dask'"):
        select("local", address="tcp://x:1")
    flow = nbflow.Flow("cfg")
    flow.config(store=tmp_path / "s", executor=dask_scheduler)

    @flow.step
    def pid():
        return os.getpid()

    assert flow.run()["pid"] != os.getpid()
    assert flow.store.root == str(tmp_path / "s")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.make_bucket("nbflow-dask")
        yield server


def test_cluster_on_an_s3_store_shares_the_cache(dask_scheduler: DaskScheduler, s3: S3Server,
                                                 tmp_path: Path) -> None:
    url = f"s3://nbflow-dask/{uuid.uuid4().hex[:8]}"

    def store(cache: str) -> nbflow.Store:
        return nbflow.open_store(url, cache_dir=str(tmp_path / cache), **s3.storage_options)

    flow = build(store("driver"), tmp_path, items=[1, 2, 3, 4])
    result = flow.run(executor=dask_scheduler)
    assert result["n"] == 4 and result["square"] == [1, 4, 9, 16]
    # another machine's view: a serial run with an empty local cache finds every entry
    other = build(store("other"), tmp_path, items=[1, 2, 3, 4]).run()
    assert other.executed == ["report"] and other["total"] == result["total"]
    assert store("checker").check().clean


def test_function_steps_from_function_step_helper(dask_scheduler: DaskScheduler,
                                                  tmp_path: Path) -> None:
    """Steps built with the engine's own helper (as adapters do) travel as well."""
    flow = nbflow.Flow("helper", store=tmp_path / "s")

    def base():
        return 5

    def plus(base, k=2):
        return base + k

    flow.add(function_step(base))
    flow.add(function_step(plus))
    assert flow.run(executor=dask_scheduler)["plus"] == 7
