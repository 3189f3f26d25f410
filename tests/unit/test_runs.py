"""Run records on a plain engine flow: recorded while running, listed newest first, data lazily
loaded from the store, a failed or killed run's resume point, from another process too."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nbflow
from nbflow.runs import (
    RunRecorder,
    get_run,
    last_run,
    list_runs,
    new_run_id,
    run_kind,
)


def make_flow(store: Path, fail: bool = False) -> nbflow.Flow:
    flow = nbflow.Flow("demo", store=store)
    flow.param("scale", 2)

    @flow.step
    def raw():
        return list(range(5))

    @flow.step(outputs=("total", "count"))
    def summary(raw, scale):
        if fail:
            raise ValueError("boom")
        return sum(raw) * scale, len(raw)

    return flow


def recorded_run(flow: nbflow.Flow, **params: object) -> nbflow.runs.RunRecord:
    recorder = RunRecorder(flow.store, flow.name, {"scale": 2, **params})
    detach = recorder.attach(flow.events)
    try:
        flow.run(params=params or None, raise_on_failure=False)
    finally:
        detach()
    return recorder.finish()


def test_record_of_a_run(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    run = recorded_run(flow)
    assert run.status == "done" and run.successful and run.failed_step is None
    assert run.steps == ["raw", "summary"] and run.params == {"scale": 2}
    assert run["summary"].status == "done" and run["summary"].key
    assert run["summary"].duration is not None
    assert run["summary"].data.total == 20 and run["summary"].count == 5
    assert run.data.total == 20  # no end step: the last step's data
    assert sorted(run["summary"].data.keys()) == ["count", "total"]
    with pytest.raises(AttributeError, match="has no artifact 'nope'; it has: count, total"):
        _ = run["summary"].data.nope
    with pytest.raises(KeyError, match="has no step 'x'; its steps: raw, summary"):
        run["x"]
    again = recorded_run(flow)
    assert again["raw"].status == "cached" and again["summary"].status == "cached"
    assert [r.id for r in list_runs(flow.store, "demo")] == [again.id, run.id]


def test_failed_run_names_the_step_and_keeps_its_error(store_dir: Path) -> None:
    run = recorded_run(make_flow(store_dir, fail=True))
    assert run.status == "failed" and run.failed_step == "summary"
    assert "ValueError: boom" in (run["summary"].error or "")
    assert run["raw"].status == "done"
    assert run["summary"].tasks == []
    # a later successful step record drops the error
    ok = recorded_run(make_flow(store_dir))
    assert ok["summary"].error is None


def test_killed_run_stays_running_with_its_resume_point(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    recorder = RunRecorder(flow.store, "demo", {"scale": 2}, steps=["raw", "summary"])
    recorder.update_step("raw", status="done", key="0" * 32)
    record = get_run(flow.store, "demo", recorder.id)
    assert record is not None and record.status == "running"
    assert record.failed_step == "summary" and record.finished is None


def test_lookups_and_flow_hooks(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    first = recorded_run(flow)
    time.sleep(0.002)
    second = recorded_run(flow, scale=3)
    assert last_run(flow.store, "demo").id == second.id
    assert last_run(flow.store, "demo", status="failed") is None
    assert get_run(flow.store, "demo", first.id).params == {"scale": 2}
    assert get_run(flow.store, "demo", "nope") is None
    assert [r.id for r in flow.runs] == [second.id, first.id]
    assert flow.latest_run.id == second.id
    assert [r.id for r in nbflow.runs("demo", store=store_dir)] == [second.id, first.id]
    assert [r.id for r in nbflow.runs(flow)] == [second.id, first.id]
    assert nbflow.runs("other", store=store_dir) == []
    assert "Run('demo/" in repr(second) and "scale=3" in repr(second)


def test_ids_are_unique_and_flow_names_are_safe(store_dir: Path) -> None:
    store = nbflow.open_store(store_dir)
    a = RunRecorder(store, "my flow/1", {}, run_id="7")
    b = RunRecorder(store, "my flow/1", {}, run_id="7")
    assert a.id == "7" and b.id == "8"
    assert run_kind("my flow/1").startswith("runs-h") and run_kind("Demo") == "runs-Demo"
    assert [r.id for r in list_runs(store, "my flow/1")] == ["8", "7"]
    assert new_run_id().isdigit()


def test_records_are_signed(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    run = recorded_run(flow)
    path = store_dir / "records" / "runs-demo" / f"{run.id}.json"
    doc = json.loads(path.read_text())
    doc["record"]["status"] = "failed"
    path.write_text(json.dumps(doc))
    with pytest.warns(nbflow.NbflowWarning, match="record signature does not match"):
        assert get_run(flow.store, "demo", run.id) is None


def test_another_process_lists_and_loads(store_dir: Path, tmp_path: Path) -> None:
    run = recorded_run(make_flow(store_dir))
    script = tmp_path / "read.py"
    script.write_text(textwrap.dedent(f"""
        import nbflow
        runs = nbflow.runs("demo", store={str(store_dir)!r})
        print(len(runs), runs[0].id, runs[0]["summary"].data.total)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    assert out.split() == ["1", run.id, "20"]
