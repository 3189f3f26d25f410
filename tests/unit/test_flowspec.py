"""Metaflow-style flows in this process: the guide's flows (printed values and artifacts),
merge_artifacts semantics, parameters, caching per step and per foreach item (proven by a log
each task appends to), resume, past runs, the engine flow behind a class, errors."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

import nbflow
from nbflow.errors import StepFailed
from nbflow.flowspec_data import MissingArtifact, TaskState, artifact_key
from nbflow.flowspec_task import MergeArtifactsError
from nbflow.parameters import ParameterError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"


def load_file(path: Path) -> Any:
    name = f"flowmod_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)  # pool workers cannot import it by name
    return module


def load_source(tmp_path: Path, source: str) -> Any:
    path = tmp_path / f"src_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(source))
    return load_file(path)


def example(name: str) -> Any:
    return load_file(EXAMPLES / f"{name}.py")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


# -- the guide's flows --------------------------------------------------------------------------
def test_linear(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = example("linear").LinearFlow.run(store=store)
    assert capsys.readouterr().out == (
        "the data artifact is: hello world\nthe data artifact is still: hello world\n"
    )
    assert run.status == "done" and run.steps == ["start", "a", "end"]
    assert run.data.my_var == "hello world"
    assert run["a"].my_var == "hello world" and run["start"].data.keys() == ["my_var"]


def test_branch(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = example("branch").BranchFlow.run(store=store)
    assert capsys.readouterr().out == "a is 1\nb is 2\ntotal is 3\n"
    assert run["a"].x == 1 and run["b"].x == 2
    assert "x" not in run["join"].data  # ambiguous: a join starts empty


def test_foreach(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = example("foreach").ForeachFlow
    run = flow.run(alpha=0.6, store=store)
    expected = ["Stranger Things processed", "House of Cards processed", "Narcos processed"]
    assert capsys.readouterr().out == "\n".join(expected) + "\n"
    assert run["join"].results == expected and run.data.results == expected
    assert [t.data.title for t in run["a"]] == expected
    assert [t.index for t in run["a"]] == [0, 1, 2]
    assert run.params == {"alpha": 0.6, "gdp": {"US": 1939}} and run.data.alpha == 0.6
    with pytest.raises(nbflow.NbflowError, match=r"has 3 tasks \(a foreach step\)"):
        _ = run["a"].title


def test_merge_artifacts_guide(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = example("merge_artifacts").MergeArtifactsFlow.run(store=store)
    assert capsys.readouterr().out == (
        "x is 1\npass_down is a\ncommon is 5\nfrom_a is 6\nOnly pass_down and common exist here\n"
    )
    join = run["join"].data
    assert (join.x, join.pass_down, join.common, join.from_a) == (1, "a", 5, 6)
    assert "y" not in join  # excluded
    assert run["join2"].data.keys() == ["common", "pass_down"]
    assert run.data.keys() == ["common", "pass_down"]  # end inherits join2's


MERGE_TEMPLATE = """
from nbflow import FlowSpec, step

class M(FlowSpec):
    @step
    def start(self):
        self.shared = [1, 2]
        self.next(self.a, self.b)

    @step
    def a(self):
        self.x, self.y, self.same = 1, 3, {"k": 1}
        self.next(self.join)

    @step
    def b(self):
        self.x, self.y, self.same = 2, 4, {"k": 1}
        self.next(self.join)

    @step
    def join(self, inputs):
        CALL
        self.next(self.end)

    @step
    def end(self):
        pass
"""


@pytest.mark.parametrize(
    "call,words,artifacts",
    [
        ("self.merge_artifacts(inputs)", ["cannot merge the artifacts x, y", "different values",
                                          "self.x = inputs[0].x"], ["x", "y"]),
        ("self.x = 0; self.merge_artifacts(inputs)", ["cannot merge the artifact y"], ["y"]),
        ("self.merge_artifacts(inputs, include=['nope'])",
         ["include nope", "which no incoming branch has"], ["nope"]),
        ("self.merge_artifacts(inputs, include=['x'], exclude=['y'])",
         ["both include= and exclude="], []),
    ],
)
def test_merge_artifacts_errors(tmp_path: Path, store: Path, call: str, words: list[str],
                                artifacts: list[str]) -> None:
    cls = load_source(tmp_path, MERGE_TEMPLATE.replace("CALL", call)).M
    with pytest.raises(StepFailed) as info:
        cls.run(store=store)
    error = info.value.error
    assert isinstance(error, MergeArtifactsError) and error.artifacts == artifacts
    for w in words:
        assert w in str(error)
    assert info.value.step == "join"


def test_merge_artifacts_rules(tmp_path: Path, store: Path) -> None:
    source = MERGE_TEMPLATE.replace(
        "CALL", "self.x = inputs.b.x; self.merge_artifacts(inputs, exclude=['y'])")
    run = load_source(tmp_path, source).M.run(store=store)
    join = run["join"].data
    # set before merging: kept; identical content in both branches: propagated (by digest)
    assert join.x == 2 and join.same == {"k": 1} and join.shared == [1, 2]
    assert "y" not in join
    include = MERGE_TEMPLATE.replace("CALL", "self.merge_artifacts(inputs, include=['same'])")
    run = load_source(tmp_path, include).M.run(store=tmp_path / "s2")
    assert run["join"].data.keys() == ["same"]


def test_merge_artifacts_outside_a_join(tmp_path: Path, store: Path) -> None:
    cls = load_source(tmp_path, """
        from nbflow import FlowSpec, step
        class M(FlowSpec):
            @step
            def start(self):
                self.merge_artifacts([])
                self.next(self.end)
            @step
            def end(self):
                pass
    """).M
    with pytest.raises(StepFailed, match="merge_artifacts can only be called in a join step, and "
                                         "'start' is not one"):
        cls.run(store=store)


# -- parameters -----------------------------------------------------------------------------------
def test_parameters(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = example("parameter_flow").ParameterFlow
    run = flow.run(alpha=0.6, store=store)
    assert capsys.readouterr().out == "alpha is 0.600000\nalpha is still 0.600000\n"
    assert run.params == {"alpha": 0.6}
    flow.run(store=store)
    assert capsys.readouterr().out == "alpha is 0.010000\nalpha is still 0.010000\n"
    with pytest.raises(ParameterError, match="parameter 'alpha' expects a number, got 'fast'"):
        flow.run(alpha="fast", store=store)
    with pytest.raises(ParameterError, match="flow ParameterFlow has no parameter 'beta'"):
        flow.run(beta=1, store=store)
    required = example("required_parameter_flow").RequiredParameterFlow
    with pytest.raises(ParameterError, match="parameter 'num_components' is required"):
        required.run(store=store)
    assert required.run(num_components=3, store=store)["start"].components == [0, 1, 2]
    js = example("json_parameter_flow").JSONParameterFlow
    capsys.readouterr()
    js.run(store=store)
    js.run(gdp='{"US": 1}', store=store)
    js.run(gdp={"FR": 2}, country="FR", store=store)
    assert capsys.readouterr().out == (
        "The GDP of US is $1939B\nThe GDP of US is $1B\nThe GDP of FR is $2B\n"
    )


def test_parameters_are_read_only_and_key_only_their_readers(tmp_path: Path, store: Path) -> None:
    module = load_source(tmp_path, f"""
        from nbflow import FlowSpec, Parameter, step
        LOG = {str(tmp_path / "log.txt")!r}

        def log(msg):
            with open(LOG, "a") as f:
                f.write(msg + "\\n")

        class P(FlowSpec):
            alpha = Parameter("alpha", default=1.0)
            beta = Parameter("beta", default=2)

            @step
            def start(self):
                log("start")
                self.a = self.alpha * 2
                self.next(self.b)

            @step
            def b(self):
                log("b")
                self.c = self.beta + 1
                self.next(self.end)

            @step
            def end(self):
                log("end")
    """)
    log = tmp_path / "log.txt"
    module.P.run(store=store)
    assert log.read_text().split() == ["start", "b", "end"]
    log.unlink()
    module.P.run(beta=5, store=store)  # only b reads beta: start stays cached
    assert log.read_text().split() == ["b", "end"]
    bad = load_source(tmp_path, """
        from nbflow import FlowSpec, Parameter, step
        class Q(FlowSpec):
            alpha = Parameter("alpha", default=1.0)
            @step
            def start(self):
                self.alpha = 3
                self.next(self.end)
            @step
            def end(self):
                pass
    """)
    with pytest.raises(StepFailed, match="parameter 'alpha' is read-only inside a step"):
        bad.Q.run(store=store)


# -- caching per step and per foreach item --------------------------------------------------------
ITEMS_FLOW = """
import os
from nbflow import FlowSpec, step

LOG = os.environ["FLOWSPEC_TEST_LOG"]


def log(msg):
    with open(LOG, "a") as f:
        f.write(msg + "\\n")


class Items(FlowSpec):
    @step
    def start(self):
        log("start")
        self.titles = TITLES
        self.next(self.a, foreach="titles")

    @step
    def a(self):
        log("a:" + self.input)
        self.v = A_EXPR
        self.next(self.b)

    @step
    def b(self):
        log("b:" + self.input)
        self.w = self.v + "!"
        self.next(self.join)

    @step
    def join(self, inputs):
        log("join")
        self.results = [i.w for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        log("end")
"""


def items_flow(tmp_path: Path, titles: list[str], a_expr: str = "self.input.lower()") -> Any:
    source = ITEMS_FLOW.replace("TITLES", repr(titles)).replace("A_EXPR", a_expr)
    return load_source(tmp_path, source).Items


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "log.txt"
    monkeypatch.setenv("FLOWSPEC_TEST_LOG", str(path))
    return path


def ran(log: Path) -> list[str]:
    lines = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_caching_per_step_and_per_item(tmp_path: Path, store: Path, log: Path) -> None:
    run = items_flow(tmp_path, ["X", "Y", "Z"]).run(store=store)
    assert ran(log) == ["start", "a:X", "a:Y", "a:Z", "b:X", "b:Y", "b:Z", "join", "end"]
    assert run.data.results == ["x!", "y!", "z!"]
    assert items_flow(tmp_path, ["X", "Y", "Z"]).run(store=store).data.results == ["x!", "y!", "z!"]
    assert ran(log) == []  # a new class object, same code: everything from the store

    # one item of the list changes: only that item's tasks rerun (and the join)
    run = items_flow(tmp_path, ["X", "Q", "Z"]).run(store=store)
    assert ran(log) == ["start", "a:Q", "b:Q", "join", "end"]
    assert run.data.results == ["x!", "q!", "z!"]
    # an item appended: only it runs
    items_flow(tmp_path, ["X", "Q", "Z", "W"]).run(store=store)
    assert ran(log) == ["start", "a:W", "b:W", "join", "end"]

    # editing a foreach step: all its items rerun; those whose output is unchanged stop there
    items_flow(tmp_path, ["X", "Q", "Z", "W"], "self.input.lower().strip()").run(store=store)
    assert ran(log) == ["a:X", "a:Q", "a:Z", "a:W"]
    items_flow(tmp_path, ["X", "Q", "Z", "W"],
               "self.input.lower() if self.input != 'Z' else 'zz'").run(store=store)
    assert ran(log) == ["a:X", "a:Q", "a:Z", "a:W", "b:Z", "join", "end"]
    # a comment or formatting change reruns nothing
    items_flow(tmp_path, ["X", "Q", "Z", "W"],
               "(self.input.lower()  if self.input != 'Z' else 'zz')  # same").run(store=store)
    assert ran(log) == []


def test_a_step_reading_the_whole_list_keys_each_item_on_it(tmp_path: Path, store: Path,
                                                            log: Path) -> None:
    expr = "self.input.lower() + str(len(self.titles))"
    run = items_flow(tmp_path, ["X", "Y"], expr).run(store=store)
    assert run.data.results == ["x2!", "y2!"]
    ran(log)
    items_flow(tmp_path, ["X", "Y", "Z"], expr).run(store=store)
    assert ran(log)[:4] == ["start", "a:X", "a:Y", "a:Z"]  # every a reads the list: all rerun


def test_rerun_of_a_foreach_step_recomputes_its_items(tmp_path: Path, store: Path, log: Path) -> None:
    cls = items_flow(tmp_path, ["X", "Y"])
    cls.run(store=store)
    ran(log)
    cls.flow(store).rerun("a")
    assert ran(log) == ["a:X", "a:Y"]


NESTED_FLOW = """
import os
from nbflow import FlowSpec, step

LOG = os.environ["FLOWSPEC_TEST_LOG"]


def log(msg):
    with open(LOG, "a") as f:
        f.write(msg + "\\n")


class Nested(FlowSpec):
    @step
    def start(self):
        self.groups = GROUPS
        self.next(self.outer, foreach="groups")

    @step
    def outer(self):
        self.members = self.input
        self.next(self.inner, foreach="members")

    @step
    def inner(self):
        log("inner:%s" % self.input)
        self.sq = self.input ** 2
        self.next(self.p, self.q)

    @step
    def p(self):
        self.pv = self.sq + 1
        self.next(self.pq)

    @step
    def q(self):
        self.qv = self.sq + 2
        self.next(self.pq)

    @step
    def pq(self, inputs):
        log("pq")
        self.merge_artifacts(inputs)
        self.both = (self.pv, self.qv)
        self.next(self.inner_join)

    @step
    def inner_join(self, inputs):
        self.sums = [i.both for i in inputs]
        self.seen = inputs[0].members
        self.next(self.outer_join)

    @step
    def outer_join(self, inputs):
        self.all = [i.sums for i in inputs]
        self.seen = [i.seen for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        pass
"""


def test_nested_foreach_and_branches_inside_a_foreach(tmp_path: Path, store: Path, log: Path) -> None:
    def flow(groups: list[list[int]]) -> Any:
        return load_source(tmp_path, NESTED_FLOW.replace("GROUPS", repr(groups))).Nested

    run = flow([[1, 2], [3]]).run(store=store)
    assert run.data.all == [[(2, 3), (5, 6)], [(10, 11)]]
    assert run.data.seen == [[1, 2], [3]]
    assert sorted(ran(log)) == ["inner:1", "inner:2", "inner:3", "pq", "pq", "pq"]
    assert len(run["inner"]) == 3 and [t.data.sq for t in run["inner"]] == [1, 4, 9]
    # adapters reshape tasks for the nested split and the joins inside the foreach
    adapters = [s.name for s in flow([[1, 2], [3]]).flow(store).graph.steps.values()
                if s.kind == "adapter"]
    assert adapters == ["inner__in", "pq__in", "inner_join__in"]
    run = flow([[1, 2], [3, 4]]).run(store=store)
    assert run.data.all == [[(2, 3), (5, 6)], [(10, 11), (17, 18)]]
    assert sorted(ran(log)) == ["inner:3", "inner:4", "pq", "pq"]  # the first group: cached


def test_resume_after_a_failure(tmp_path: Path, store: Path, log: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    source = """
        import os
        from nbflow import FlowSpec, Parameter, step
        LOG = os.environ["FLOWSPEC_TEST_LOG"]

        def log(msg):
            with open(LOG, "a") as f:
                f.write(msg + "\\n")

        class R(FlowSpec):
            n = Parameter("n", default=2)

            @step
            def start(self):
                log("start" + TAG)
                self.items = list(range(self.n))
                self.next(self.a, foreach="items")

            @step
            def a(self):
                log("a:%d" % self.input)
                if self.input == 1 and os.environ.get("FLOWSPEC_FAIL"):
                    raise RuntimeError("injected failure")
                self.sq = self.input ** 2
                self.next(self.join)

            @step
            def join(self, inputs):
                log("join")
                self.total = sum(i.sq for i in inputs)
                self.next(self.end)

            @step
            def end(self):
                log("end")
    """
    monkeypatch.setenv("FLOWSPEC_FAIL", "1")
    cls = load_source(tmp_path, source.replace("TAG", "''")).R
    with pytest.raises(StepFailed, match="step 'a' failed: RuntimeError: injected failure") as info:
        cls.run(n=3, store=store)
    failed = info.value.run
    assert failed.status == "failed" and failed.failed_step == "a"
    assert failed["join"].status == "skipped" and failed["start"].status == "done"
    assert ran(log) == ["start", "a:0", "a:1"]
    assert "RuntimeError: injected failure" in failed["a"].error

    monkeypatch.delenv("FLOWSPEC_FAIL")
    # the start step is edited meanwhile: resume still reuses the failed run's start (as Metaflow)
    edited = load_source(tmp_path, source.replace("TAG", "'-edited'")).R
    resumed = edited.resume(store=store)
    assert ran(log) == ["a:1", "a:2", "join", "end"]  # item 0 finished before the failure
    assert resumed.status == "done" and resumed.data.total == 5
    assert resumed.params == {"n": 3} and resumed.meta["origin_run"] == failed.id
    assert resumed.meta["resumed_from"] == "a"
    # nothing failed: nothing to resume
    assert edited.resume(store=store).id == resumed.id
    # resume STEP reruns that step (and its items) and reuses what came before it
    edited.resume("join", store=store)
    assert ran(log) == ["join"]
    with pytest.raises(nbflow.NbflowError, match="has no step 'nope'"):
        edited.resume("nope", store=store)


def test_resume_needs_an_earlier_run(tmp_path: Path, store: Path, log: Path) -> None:
    with pytest.raises(nbflow.NbflowError, match="has no earlier run .* start one with `run`"):
        items_flow(tmp_path, ["X"]).resume(store=store)


# -- parallel runs ---------------------------------------------------------------------------------
def _digests(run: Any) -> dict[str, str]:
    out = {}
    for step in run.steps:
        manifest = run[step].manifest()
        out[step] = manifest.digest(step)
    return out


def test_max_workers_gives_the_serial_results(tmp_path: Path, log: Path) -> None:
    flow = items_flow(tmp_path, ["A", "B", "C", "D"])
    serial = flow.run(store=tmp_path / "serial")
    parallel = flow.run(store=tmp_path / "parallel", max_workers=2)
    assert parallel.meta["executor"].startswith("local (2 process")
    assert parallel.data.results == serial.data.results == ["a!", "b!", "c!", "d!"]
    assert _digests(parallel) == _digests(serial)  # same states, same artifacts, byte for byte
    assert sorted(ran(log)) == sorted(2 * ["start", "a:A", "a:B", "a:C", "a:D", "b:A", "b:B",
                                           "b:C", "b:D", "join", "end"])
    again = flow.run(store=tmp_path / "parallel", max_workers=2)
    assert ran(log) == [] and again.data.results == serial.data.results
    branch = example("branch").BranchFlow
    assert _digests(branch.run(store=tmp_path / "b1")) == \
        _digests(branch.run(store=tmp_path / "b2", max_workers=2))


# -- past runs, the engine flow, the store ----------------------------------------------------------
def test_past_runs_and_lazy_data(tmp_path: Path, store: Path) -> None:
    flow = example("foreach").ForeachFlow
    first = flow.run(store=store)
    second = flow.run(alpha=0.5, store=store)
    listed = nbflow.runs("ForeachFlow", store=store)
    assert [r.id for r in listed] == [second.id, first.id]
    assert [r.id for r in nbflow.Flow("ForeachFlow", store=store).runs] == [second.id, first.id]
    assert [r.id for r in flow.runs(store=store)] == [second.id, first.id]
    latest = nbflow.Flow("ForeachFlow", store=store).latest_run
    assert latest.id == second.id and latest.params["alpha"] == 0.5
    assert latest.status == "done" and latest.created <= (latest.finished or 0)
    assert latest["a"].status == "cached"
    tasks = list(latest["a"])
    assert len(tasks) == 3
    data = tasks[1].data
    assert data._loaded == {} and "title" in data
    assert data.title == "House of Cards processed" and list(data._loaded) == ["title"]


def test_engine_flow_status_events_describe(tmp_path: Path, store: Path) -> None:
    cls = example("foreach").ForeachFlow
    engine = cls.flow(store)
    assert isinstance(engine, nbflow.Flow) and cls.flow(store) is engine
    assert list(engine.graph.steps) == ["start", "a", "join", "end"]
    assert engine.graph.steps["a"].foreach == "start"
    assert [(a, b) for a, b, _ in engine.graph.edges()] == [("start", "a"), ("a", "join"),
                                                           ("join", "end")]
    events: list[tuple[str, str, int | None]] = []
    engine.events.subscribe(lambda e: events.append((e.step, e.status, e.item)))
    cls.run(store=store)
    assert ("a", "done", None) in events and ("a", "done", 2) in events
    assert [s for s, st, i in events if st == "done" and i is None] == ["start", "a", "join", "end"]
    assert {n: s.status for n, s in engine.status().items()} == {
        "start": "done", "a": "done", "join": "done", "end": "done"}
    record = engine.describe("join")
    assert record["step"] == "join" and set(record["inputs"]) == {"a"}
    cls.run(store=store)
    assert events[-1][:2] == ("end", "cached")


def test_large_artifacts_live_in_their_own_entries(tmp_path: Path, store: Path) -> None:
    module = load_source(tmp_path, """
        import numpy as np
        from nbflow import FlowSpec, step

        class Big(FlowSpec):
            @step
            def start(self):
                self.arr = np.arange(100_000, dtype=np.float64)
                self.small = 1
                self.next(self.a)

            @step
            def a(self):
                self.total = float(self.arr.sum())
                self.next(self.end)

            @step
            def end(self):
                pass
    """)
    run = module.Big.run(store=store)
    state = run["start"].manifest()
    assert state is not None
    value = nbflow.open_store(store).load(state, "start")
    assert isinstance(value, TaskState)
    refs = value.refs()
    (digest, inline), origin = refs["arr"]
    assert inline == "" and origin == "start" and refs["small"][0][1] != ""
    assert nbflow.open_store(store).get(artifact_key(digest)) is not None
    assert np.array_equal(run.data.arr, np.arange(100_000, dtype=np.float64))
    assert run.data.total == float(np.arange(100_000).sum())
    # the artifact's entry is evicted: the step that set it is recomputed, not a wrong value
    nbflow.open_store(store).delete(artifact_key(digest))
    module.Big.flow(store).rerun("a")
    rerun = module.Big.run(store=store)
    assert rerun.data.total == float(np.arange(100_000).sum())
    assert nbflow.open_store(store).get(artifact_key(digest)) is not None


@pytest.mark.parametrize(
    "body,words",
    [
        ("self.x = 1\n        if self.x:\n            return\n        self.next(self.end)",
         ["step 'start' returned without calling self.next()"]),
        ("self.f = lambda: 0\n        import threading\n        self.lock = threading.Lock()\n"
         "        self.next(self.end)",
         ["step 'start' sets self.lock, which cannot be pickled", "del self.lock"]),
        ("self.items = []\n        self.next(self.each, foreach='items')",
         ["self.items is empty", "at least one item"]),
        ("self.next(self.each, foreach='items')",
         ["goes to foreach='items', but sets no artifact 'items'"]),
        ("self.items = 3\n        self.next(self.each, foreach='items')",
         ["foreach='items' must name a list", "is int"]),
        ("print(self.nothing)\n        self.next(self.end)",
         ["step 'start' reads self.nothing, which no earlier step set"]),
        ("self.end = 1\n        self.next(self.end)",
         ["sets self.end, but 'end' is a step of the flow"]),
    ],
)
def test_step_errors(tmp_path: Path, store: Path, body: str, words: list[str]) -> None:
    each = ("each", "self.next(self.j)") if "foreach" in body else None
    extra = ""
    if each:
        extra = textwrap.dedent("""
            @step
            def each(self):
                self.next(self.j)

            @step
            def j(self, inputs):
                self.next(self.end)
        """)
    source = "from nbflow import FlowSpec, step\n\nclass E(FlowSpec):\n" + textwrap.indent(
        f"@step\ndef start(self):\n    {body.replace(chr(10) + '        ', chr(10) + '    ')}\n"
        + extra + "\n@step\ndef end(self):\n    pass\n", "    ")
    cls = load_source(tmp_path, source).E
    with pytest.raises(StepFailed) as info:
        cls.run(store=store)
    for w in words:
        assert w in str(info.value)


def test_a_notebook_style_redefinition_updates_the_same_engine_flow(tmp_path: Path, store: Path,
                                                                     log: Path) -> None:
    first = items_flow(tmp_path, ["X"])
    first.run(store=store)
    engine = first.flow(store)
    stale: list[str] = []
    engine.events.subscribe(lambda e: stale.append(e.step) if e.status == "stale" else None)
    second = items_flow(tmp_path, ["X"], "self.input + '?'")
    assert second.flow(store) is engine
    assert stale == ["a", "b", "join", "end"]  # exactly the edited step and its descendants


def test_missing_artifact_error_names_the_origin() -> None:
    err = MissingArtifact("arr", "0" * 32, "start")
    assert "artifact 'arr' (set by step 'start') is no longer in the store" in str(err)


def test_flowspec_outside_a_run(store: Path) -> None:
    cls = example("parameter_flow").ParameterFlow
    obj = cls(use_cli=False)
    assert obj.alpha == 0.01 and obj.input is None and obj.index is None
    with pytest.raises(nbflow.NbflowError, match="only works inside a running step"):
        obj.next(obj.end)
    assert os.environ.get("NBFLOW_KEY_FILE")  # the session key, never the user's own
