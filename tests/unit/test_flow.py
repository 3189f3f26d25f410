"""The engine as a user drives it: runs, cache hits, early cutoff, failures, events."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import nbflow
from nbflow.errors import CycleError, MissingInputError, NbflowWarning, StepFailed


class CallLog(list):
    """A side-effect log whose fingerprint does not change as it fills.

    Steps read it as a closure variable, which nbflow fingerprints by content (a changed global
    is a changed input); a log must not count as one.
    """

    def __reduce__(self):  # noqa: ANN204
        return (CallLog, ())


def make_demo(store: Path, calls: list[str] | None = None) -> nbflow.Flow:
    calls = calls if calls is not None else CallLog()
    flow = nbflow.Flow("demo", store=store)

    @flow.step
    def raw():
        calls.append("raw")
        return list(range(10))

    @flow.step
    def doubled(raw):
        calls.append("doubled")
        return [x * 2 for x in raw]

    @flow.step(outputs=("total", "count"))
    def summary(doubled):
        calls.append("summary")
        return sum(doubled), len(doubled)

    return flow


def test_issue_example(store_dir: Path) -> None:
    flow = make_demo(store_dir)
    result = flow.run("total")
    assert result["total"] == 90 and result["count"] == 10
    assert result.executed == ["raw", "doubled", "summary"] and result.cached == []
    again = flow.run("total")
    assert again.executed == [] and again.cached == ["raw", "doubled", "summary"]
    assert again["total"] == 90
    forced = flow.rerun("doubled")
    assert forced.executed == ["doubled"] and set(forced.cached) == {"raw", "summary"}
    status = flow.status()
    assert {s.status for s in status.values()} <= {"done", "cached"}
    assert all(s.key for s in status.values())


def test_a_step_computed_here_stays_done_when_later_runs_recheck_it(store_dir: Path) -> None:
    """Running a step re-checks its ancestors' entries (``make``): that serves them from the
    store, yet this process computed them, and the status says so; another flow object on the
    same store (a fresh kernel) did not, and says cached."""
    flow = make_demo(store_dir)
    flow.run("doubled")
    assert flow.run("total").cached == ["raw", "doubled"]
    assert {n: s.status for n, s in flow.status().items()} == {
        "raw": "done", "doubled": "done", "summary": "done"}
    other = make_demo(store_dir)
    assert other.run("total").cached == ["raw", "doubled", "summary"]
    assert {s.status for s in other.status().values()} == {"cached"}
    assert {s.status for s in flow.status().values()} == {"done"}


def test_new_process_same_store_runs_nothing(store_dir: Path, tmp_path: Path) -> None:
    make_demo(store_dir).run()
    script = tmp_path / "again.py"
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_flow import make_demo
        from pathlib import Path
        flow = make_demo(Path({str(store_dir)!r}))
        print({{n: s.status for n, s in flow.status().items()}})
        r = flow.run("total")
        print(r.executed, r.cached, r["total"])
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert "{'raw': 'cached', 'doubled': 'cached', 'summary': 'cached'}" in out
    assert "[] ['raw', 'doubled', 'summary'] 90" in out


def test_early_cutoff_and_comment_edits(store_dir: Path) -> None:
    calls: list[str] = CallLog()
    flow = make_demo(store_dir, calls)
    flow.run()
    calls.clear()

    @flow.step
    def doubled(raw):
        # a comment, and different formatting
        calls.append( "doubled" )
        return [x*2 for x in raw]

    # the same key, which this process computed: done, as a view of the flow says too
    assert flow.status()["doubled"].status == "done"
    r = flow.run()
    assert r.executed == [] and calls == []

    @flow.step
    def doubled(raw):  # noqa: F811
        calls.append("doubled")
        return [x + x for x in raw]

    assert flow.status()["doubled"].status == "stale"
    r = flow.run()
    assert r.executed == ["doubled"] and "summary" in r.cached  # identical output: cut off

    @flow.step
    def doubled(raw):  # noqa: F811 - undoing the edit is a hit: entries are per code version
        calls.append("doubled")
        return [x * 2 for x in raw]

    assert flow.run().executed == []


def test_helper_function_edit_is_seen(store_dir: Path) -> None:
    ns: dict = {}
    src = "def helper(v):\n    return v + 1\n"

    def define(body: str) -> None:
        import linecache

        name = f"<helper-{abs(hash(body))}>"
        linecache.cache[name] = (len(body), None, body.splitlines(True), name)
        exec(compile(body, name, "exec"), ns)

    define(src)
    flow = nbflow.Flow("h", store=store_dir)
    exec(compile("def uses(raw=1):\n    return helper(raw)\n", "<uses>", "exec"), ns)
    flow.step(ns["uses"])
    assert flow.run()["uses"] == 2
    define(src.replace("v + 1", "v + 100"))
    r = flow.run()
    assert r.executed == ["uses"] and r["uses"] == 101


def test_ignore_keeps_argument_out_of_key(store_dir: Path) -> None:
    flow = nbflow.Flow("ig", store=store_dir)

    @flow.step(ignore=("verbose",))
    def fit(alpha=0.1, verbose=False):
        return alpha * 2

    flow.run()
    k1 = flow.status()["fit"].key

    @flow.step(ignore=("verbose",))
    def fit(alpha=0.1, verbose=True):  # noqa: F811
        return alpha * 2

    assert flow.status()["fit"].key == k1 and flow.run().executed == []

    @flow.step(ignore=("verbose",))
    def fit(alpha=0.2, verbose=True):  # noqa: F811
        return alpha * 2

    assert flow.run().executed == ["fit"]


def test_failure_marks_descendants_only_and_resumes(store_dir: Path) -> None:
    flow = nbflow.Flow("f", store=store_dir)
    calls: list[str] = CallLog()

    @flow.step
    def a():
        calls.append("a")
        return 1

    @flow.step
    def b(a):
        raise ValueError("boom")

    @flow.step
    def c(b):
        return b + 1

    @flow.step
    def side(a):
        calls.append("side")
        return a * 10

    with pytest.raises(StepFailed, match="step 'b' failed: ValueError: boom") as e:
        flow.run()
    result = e.value.result  # type: ignore[attr-defined]
    assert result.failed == ["b"] and result.skipped == ["c"] and "side" in result.executed
    st = flow.status()
    assert st["b"].status == "failed" and "ValueError: boom" in (st["b"].error or "")
    assert st["c"].status == "stale" and st["a"].status in ("done", "cached")
    calls.clear()

    @flow.step
    def b(a):  # noqa: F811 - the fix
        return a + 1

    r = flow.run()
    assert r.executed == ["b", "c"] and calls == [] and r["c"] == 3


def test_cycle_and_missing_input_errors(store_dir: Path) -> None:
    flow = nbflow.Flow("cy", store=store_dir)
    flow.step(lambda y: y, name="x")
    with pytest.raises(CycleError, match="y -> x -> y"):
        flow.step(lambda x: x, name="y")
    assert list(flow.graph.steps) == ["x"]  # the step that closed the cycle was not added
    g = nbflow.Flow("mi", store=store_dir)

    @g.step
    def clean(df):
        return df

    with pytest.raises(MissingInputError, match="step 'clean' reads 'df'"):
        g.run()


def test_events_in_order(store_dir: Path) -> None:
    flow = make_demo(store_dir)
    seen: list[tuple[str, str]] = []
    unsubscribe = flow.events.subscribe(lambda e: seen.append((e.step, e.status)))
    flow.run()
    assert seen[:3] == [("raw", "queued"), ("doubled", "queued"), ("summary", "queued")]
    assert seen[3:] == [("raw", "running"), ("raw", "done"), ("doubled", "running"),
                        ("doubled", "done"), ("summary", "running"), ("summary", "done")]
    seen.clear()
    flow.run()
    assert seen == [("raw", "cached"), ("doubled", "cached"), ("summary", "cached")]  # no queued
    seen.clear()
    fresh = make_demo(store_dir)
    fresh.events.subscribe(lambda e: seen.append((e.step, e.status)))
    fresh.run()  # a new session learns that each step is cached
    assert [s for s in seen if s[1] != "queued"] == [("raw", "cached"), ("doubled", "cached"), ("summary", "cached")]
    seen.clear()
    fresh.rerun("doubled")
    assert ("doubled", "queued") in seen and ("doubled", "running") in seen and ("raw", "queued") not in seen
    seen.clear()
    unsubscribe()
    seen.clear()
    flow.run()
    assert seen == []


def test_unpicklable_output_is_returned_with_one_warning(store_dir: Path) -> None:
    flow = nbflow.Flow("u", store=store_dir)

    @flow.step
    def lock():
        return threading.Lock()

    @flow.step
    def uses(lock):
        return type(lock).__name__

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = flow.run()
    msgs = [str(x.message) for x in w if issubclass(x.category, NbflowWarning)]
    assert len(msgs) == 1 and "output 'lock' of step 'lock' is not cached" in msgs[0]
    assert r["uses"] == "lock" and hasattr(r["lock"], "acquire")


def test_invalidate_and_outputs_are_copies(store_dir: Path) -> None:
    flow = make_demo(store_dir)
    r = flow.run()
    r["doubled"].append(999)  # mutating what we were handed
    assert flow.run()["doubled"][-1] == 18
    flow.invalidate("doubled")
    assert flow.status()["doubled"].status == "stale"
    assert flow.run().executed == ["doubled"]


def test_arrays_are_read_only(store_dir: Path) -> None:
    flow = nbflow.Flow("arr", store=store_dir)

    @flow.step
    def big():
        return np.arange(1_000_000)

    r = flow.run()
    with pytest.raises(ValueError):
        r["big"][0] = 1
    with pytest.raises(ValueError):
        flow.run()["big"][0] = 1


def test_foreach_caches_per_item(store_dir: Path) -> None:
    calls: list[int] = CallLog()
    flow = nbflow.Flow("fe", store=store_dir)
    flow.param("items", [1, 2, 3])

    @flow.step(foreach="items")
    def squared(items):
        calls.append(items)
        return items * items

    @flow.step
    def total(squared):
        return sum(squared)

    assert flow.run()["total"] == 14 and calls == [1, 2, 3]
    calls.clear()
    r = flow.run(params={"items": [1, 2, 4]})
    assert r["total"] == 21 and calls == [4]  # only the new item ran
    assert r.executed == ["squared", "total"]
    calls.clear()
    assert flow.rerun("squared")["total"] == 21 and calls == [1, 2, 4]  # rerun forces every item


def test_params_enter_key(store_dir: Path) -> None:
    flow = nbflow.Flow("p", store=store_dir)
    flow.param("alpha", 0.1)

    @flow.step
    def fit(alpha):
        return alpha * 10

    assert flow.run()["fit"] == 1.0
    r = flow.run(params={"alpha": 0.2})
    assert r.executed == ["fit"] and r["fit"] == 2.0
    assert flow.run(params={"alpha": 0.1}).executed == []


def test_describe_record_is_json(store_dir: Path) -> None:
    import json

    flow = make_demo(store_dir)
    flow.run()
    rec = flow.describe("summary")
    assert json.loads(json.dumps(rec)) == rec
    assert rec["step"] == "summary" and set(rec["inputs"]) == {"doubled"}
    with pytest.raises(nbflow.NbflowError, match="no cached output"):
        nbflow.Flow("x", store=store_dir).step(lambda: 1, name="z") and None
        g = nbflow.Flow("x", store=store_dir)
        g.step(lambda: 1, name="z")
        g.describe("z")


def test_bad_names(store_dir: Path) -> None:
    flow = nbflow.Flow("n", store=store_dir)
    with pytest.raises(nbflow.NbflowError, match="not a Python identifier"):
        flow.step(lambda: 1, name="bad name")
    with pytest.raises(nbflow.UnknownStepError):
        flow.run("nope")


def test_keys_follow_the_inputs_when_the_graph_changes_around_a_step(store_dir: Path) -> None:
    """A step's key memo outlives changes elsewhere in the graph, but not changes to where its
    inputs come from: a producer replaced, removed for a parameter, or giving the same content."""
    calls = CallLog()
    flow = nbflow.Flow("around", store=store_dir)

    def source(value: int) -> None:
        @flow.step(name="make_x", outputs="x")
        def _make() -> int:
            calls.append(f"make_x {value}")
            return value

    source(2)

    @flow.step
    def squared(x):
        calls.append("squared")
        return x * x

    assert flow.run()["squared"] == 4 and calls == ["make_x 2", "squared"]

    @flow.step
    def unrelated():  # the graph changes around 'squared'
        return 0

    calls.clear()
    assert flow.run("squared").cached == ["make_x", "squared"] and calls == []

    source(3)  # the producer of x now gives another value
    calls.clear()
    assert flow.run("squared")["squared"] == 9 and calls == ["make_x 3", "squared"]

    flow.remove("make_x")
    flow.param("x", 5)  # x is a flow parameter now: keyed by its value
    calls.clear()
    assert flow.run("squared")["squared"] == 25 and calls == ["squared"]

    source(3)  # a step gives x again, 3 as before: both entries computed from it serve
    calls.clear()
    result = flow.run("squared")
    assert result["squared"] == 9 and calls == [] and result.cached == ["make_x", "squared"]
