"""Imperative flows (Flyte's imperative workflows) on the real engine and a real store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import pytest

import nbflow
from nbflow import BindingError, Event, FlowTypeError, MissingInputError, StepFailed
from nbflow.nodes import NbflowValueMissing

X = [-3, 0, 3]
Y = [7, 4, -2]


def slope(x: list[int], y: list[int]) -> float:
    sum_xy = sum([x[i] * y[i] for i in range(len(x))])
    sum_x_squared = sum([x[i] ** 2 for i in range(len(x))])
    n = len(x)
    return (n * sum_xy - sum(x) * sum(y)) / (n * sum_x_squared - sum(x) ** 2)


def intercept(x: list[int], y: list[int], slope: float) -> float:
    mean_x = sum(x) / len(x)
    mean_y = sum(y) / len(y)
    intercept = mean_y - slope * mean_x
    return intercept


def seed_flow(store: Path, name: str = "imperative_workflow") -> tuple[nbflow.Flow, nbflow.Node, nbflow.Node]:
    flow = nbflow.Flow(name, store=store)
    flow.add_input("x", list[int])
    flow.add_input("y", list[int])
    n1 = flow.add_step(slope, x=flow.inputs["x"], y=flow.inputs["y"])
    n2 = flow.add_step(intercept, x=flow.inputs["x"], y=flow.inputs["y"], slope=n1.outputs["o0"])
    flow.add_output("wf_output", n2.outputs["o0"])
    return flow, n1, n2


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_seed_example_values_and_memoized_across_processes_of_the_flow(store: Path) -> None:
    flow, n1, n2 = seed_flow(store)
    assert flow(x=X, y=Y) == {"wf_output": 3.0}
    assert flow.last_result is not None
    assert flow.last_result.executed == ["slope", "intercept", "wf_output"]
    assert flow.run(n1.outputs["o0"])[n1.outputs["o0"]] == -1.5
    # a fresh flow object over the same store (a new session) runs nothing
    again, _, _ = seed_flow(store)
    assert again(x=X, y=Y) == {"wf_output": 3.0}
    assert again.last_result is not None
    assert again.last_result.executed == []
    assert sorted(again.last_result.cached) == ["intercept", "slope", "wf_output"]
    # other inputs: a new result, entries side by side in the store
    assert again(x=[0, 1, 2], y=[1, 3, 5]) == {"wf_output": 1.0}
    assert again(x=X, y=Y) == {"wf_output": 3.0}
    assert again.last_result.executed == []


def test_list_of_outputs_with_python_type(store: Path) -> None:
    flow, n1, n2 = seed_flow(store)
    out = flow.add_output("list_of_outputs", [n1.outputs["o0"], n2.outputs["o0"]],
                          python_type=list[float])
    assert out == "list_of_outputs"
    assert flow(x=X, y=Y) == {"wf_output": 3.0, "list_of_outputs": [-1.5, 3.0]}
    flow.add_output("as_text", [n1.outputs["o0"]], python_type=list[str])
    with pytest.raises(StepFailed) as err:
        flow(x=X, y=Y)
    assert isinstance(err.value.error, FlowTypeError)
    assert "flow output 'as_text' expects list[str]" in str(err.value)


def test_defaults_and_missing_inputs(store: Path) -> None:
    flow = nbflow.Flow("defaults", store=store)
    x = flow.add_input("x", list[int])
    y = flow.add_input("y", list[int], default=Y)
    assert repr(x) == "Input('x': list[int])" and y.default == Y
    n1 = flow.add_step(slope, x=x, y=y)
    flow.add_output("s", n1)  # a node with one output binds as that output
    assert flow(x=X) == {"s": -1.5}
    assert flow(x=X, y=[1, 2, 3]) == {"s": pytest.approx(1 / 3)}
    assert flow(x=X) == {"s": -1.5}  # a call's values do not become the next call's defaults
    fresh = nbflow.Flow("defaults", store=store)
    fx = fresh.add_input("x", list[int])
    fresh.add_output("s", fresh.add_step(slope, x=fx, y=fresh.add_input("y", list[int], default=Y)))
    with pytest.raises(NbflowValueMissing, match="input 'x' has no value"):
        fresh()
    # the engine itself names the unset input too
    with pytest.raises(MissingInputError, match="flow input 'x', which has no value"):
        fresh.run("s")
    with pytest.raises(FlowTypeError, match="input 'y' expects list\\[int\\]"):
        fresh.add_input("y", list[int], default=["a"])


@pytest.mark.parametrize(
    ("declared", "value", "fragment"),
    [
        (list[int], [1, "a"], "input 'v' expects list[int], got str at [1]: 'a'"),
        (list[int], (1, 2), "expects list[int], got tuple"),
        (dict[str, float], {"a": 1.0, "b": "z"}, "expects dict[str, float], got str at ['b']"),
        (dict[str, float], {1: 1.0}, "got int at [key 1]"),
        (tuple[int, str], (1, 2), "got int at [1]"),
        (int | None, "3", "expects int | None, got str"),
        (float, "1.5", "expects float, got str"),
    ],
)
def test_input_values_are_type_checked(store: Path, declared: object, value: object, fragment: str) -> None:
    flow = nbflow.Flow("typed", store=store)
    v = flow.add_input("v", declared)

    def ident(v: object) -> object:
        return v

    flow.add_output("out", flow.add_step(ident, v=v))
    with pytest.raises(FlowTypeError) as err:
        flow(v=value)
    assert fragment in str(err.value)
    assert "flow 'typed'" in str(err.value)
    assert list(Path(store).glob("manifests/*/*.json")) == []  # nothing ran


@pytest.mark.parametrize(
    ("declared", "value"),
    [(list[int], [1, 2]), (dict[str, float], {"a": 1, "b": 2.5}), (float, 3), (int | None, None),
     (tuple[int, ...], (1, 2, 3)), (set[str], {"a"})],
)
def test_good_values_pass_the_check(store: Path, declared: object, value: object) -> None:
    flow = nbflow.Flow("typed", store=store)
    v = flow.add_input("v", declared)

    def ident(v: object) -> object:
        return v

    flow.add_output("out", flow.add_step(ident, v=v))
    assert flow(v=value) == {"out": value}


def test_unknown_input_names_the_known_ones(store: Path) -> None:
    flow, _, _ = seed_flow(store)
    with pytest.raises(FlowTypeError, match="has no input 'z'; its inputs are: x, y"):
        flow(x=X, y=Y, z=1)
    with pytest.raises(KeyError, match="no input 'w'"):
        flow.inputs["w"]


def total(values: list[float], scale: int = 1) -> float:
    return sum(values) * scale


def test_list_of_references_and_constants_as_one_input(store: Path) -> None:
    flow, n1, n2 = seed_flow(store)
    n3 = flow.add_step(total, values=[n1.outputs["o0"], n2.outputs["o0"], 10.0], scale=2)
    flow.add_output("t", n3.outputs["o0"])
    assert flow(x=X, y=Y)["t"] == (-1.5 + 3.0 + 10.0) * 2
    both = flow.add_step(total, values=[flow.inputs["x"], flow.inputs["y"]], name="both")

    def flat(values: list[list[int]]) -> list[int]:
        return [v for vs in values for v in vs]

    flow.add_output("xy", flow.add_step(flat, values=[flow.inputs["x"], flow.inputs["y"]]))
    assert flow(x=X, y=Y)["xy"] == X + Y
    assert flow.graph.steps[both].inputs == ("x", "y", "both.scale")  # a default is a constant
    step = flow.graph.steps["total"]
    assert set(step.inputs) == {"slope", "intercept", "total.values[2]", "total.scale"}
    assert {("slope", "total"), ("intercept", "total")} <= {(a, b) for a, b, _ in flow.graph.edges()}


def divide(a: int, b: int) -> tuple[int, int]:
    return a // b, a % b


class Stats(NamedTuple):
    mean: float
    spread: float


def stats(values: list[int]) -> Stats:
    return Stats(sum(values) / len(values), max(values) - min(values))


def test_tuple_and_namedtuple_returns_give_several_outputs(store: Path) -> None:
    flow = nbflow.Flow("multi", store=store)
    a = flow.add_input("a", int)
    n = flow.add_step(divide, a=a, b=7)
    assert sorted(n.outputs) == ["o0", "o1"]
    assert n.outputs["o1"] == "divide_o1"
    s = flow.add_step(stats, values=[n.outputs["o0"], n.outputs["o1"]])
    assert s.outputs["mean"] is s.outputs["o0"]
    flow.add_output("q", n.outputs["o0"])
    flow.add_output("r", n.outputs["o1"])
    flow.add_output("spread", s.outputs["spread"])
    assert flow(a=23) == {"q": 3, "r": 2, "spread": 1}
    with pytest.raises(BindingError, match="node 'divide' has 2 outputs"):
        flow.add_step(total, values=n)


def test_names_reprs_and_hashing(store: Path) -> None:
    flow, n1, _ = seed_flow(store)
    again = flow.add_step(slope, x=flow.inputs["x"], y=flow.inputs["y"])
    assert (str(n1), str(again)) == ("slope", "slope_2")
    assert repr(again) == "Node('slope_2', kind=function, outputs=[o0])"
    assert repr(again.outputs["o0"]) == "Output(slope_2.o0 -> 'slope_2')"
    assert len({n1, again, n1}) == 2 and n1 == "slope"
    named = flow.add_step(slope, name="fit", x=flow.inputs["x"], y=flow.inputs["y"])
    assert named == "fit" and flow.graph.steps["fit"].kind == "function"
    # a reference is its engine name: every Flow method takes it
    assert flow.topological_order(named) == ["fit"]
    assert flow.node("slope_2") is again
    with pytest.raises(BindingError, match="'x' is an input of flow"):
        flow.add_step(slope, name="x", x=flow.inputs["x"], y=flow.inputs["y"])


def test_events_status_and_widget_graph(store: Path) -> None:
    flow, n1, n2 = seed_flow(store)
    events: list[Event] = []
    flow.events.subscribe(events.append)
    flow(x=X, y=Y)
    seen = [(e.step, e.status) for e in events if e.status in ("running", "done", "cached")]
    assert seen == [("slope", "running"), ("slope", "done"), ("intercept", "running"),
                    ("intercept", "done"), ("wf_output", "running"), ("wf_output", "done")]
    status = flow.status()
    assert {n: s.status for n, s in status.items()} == {
        "slope": "done", "intercept": "done", "wf_output": "done"}
    events.clear()
    flow(x=X, y=Y)
    assert {e.step for e in events if e.status == "cached"} == {"slope", "intercept", "wf_output"}
    from nbflow.widget import graph_info

    info = graph_info(flow.graph)
    assert info["nodes"] == ["slope", "intercept", "wf_output"]
    assert info["steps"]["wf_output"]["kind"] == "output"
    assert info["dot"].count("->") == 2


def test_binding_errors_name_the_step_and_argument(store: Path) -> None:
    flow, n1, _ = seed_flow(store)
    with pytest.raises(BindingError, match="step 'intercept_2' is missing argument 'slope'"):
        flow.add_step(intercept, x=flow.inputs["x"], y=flow.inputs["y"])
    with pytest.raises(BindingError, match="gets argument 'z', which slope does not take"):
        flow.add_step(slope, x=flow.inputs["x"], y=flow.inputs["y"], z=1)
    with pytest.raises(FlowTypeError, match="step 'slope_2' argument 'x' expects list\\[int\\], got str"):
        flow.add_step(slope, x=[1, "b"], y=flow.inputs["y"])
    other = nbflow.Flow("other", store=store)
    ox = other.add_input("x", list[int])
    with pytest.raises(BindingError, match="belongs to another flow"):
        flow.add_step(slope, x=ox, y=flow.inputs["y"])

    def named(name: str) -> str:
        return name

    with pytest.raises(BindingError, match="pass that argument in a dict"):
        flow.add_step(named, name="n")
    assert flow.add_step(named, {"name": "n"}) == "named"


def test_swapped_bindings_are_a_different_step(store: Path) -> None:
    flow = nbflow.Flow("swap", store=store)
    a = flow.add_input("a", int)
    b = flow.add_input("b", int)

    def minus(p: int, q: int) -> int:
        return p - q

    flow.add_output("d1", flow.add_step(minus, p=a, q=b))
    flow.add_output("d2", flow.add_step(minus, p=b, q=a))
    assert flow(a=5, b=2) == {"d1": 3, "d2": -3}


def test_partial_run_from_an_output(store: Path) -> None:
    flow, n1, _ = seed_flow(store)
    flow.inputs["x"].set_value(X)
    flow.inputs["y"].set_value(Y)
    result = flow.run(n1.outputs["o0"])
    assert result.executed == ["slope"] and result["slope"] == -1.5
    with pytest.raises(FlowTypeError, match="input 'x' expects list\\[int\\]"):
        flow.inputs["x"].set_value("abc")


# -- the checker itself, table-driven -------------------------------------------------------------
CASES: list[tuple[object, object, str | None]] = [
    ([1, 2], list[int], None),
    ([1.5, 2], list[float], None),
    ([1, True], list[float], "got bool at [1]"),
    ([[1], [2, "a"]], list[list[int]], "got str at [1][1]"),
    ({"a": [1.0]}, dict[str, list[float]], None),
    ({"a": [1.0, "x"]}, dict[str, list[float]], "got str at ['a'][1]"),
    ({1, 2}, set[int], None),
    ({1, "a"}, set[int], "got str at {…}"),
    ((1, "a", 2.0), tuple[int, str, float], None),
    ((1, "a"), tuple[int, str, float], "got a tuple of 2 values, expected 3"),
    ([1, None], list[int | None], None),
    ("b", Literal["a", "b"], None),
    ("c", Literal["a", "b"], "got str: 'c'"),
    (int, type[int], None),
    (print, Callable, None),
    (iter([1, "a"]), Iterator[int], None),  # never consumed
]


@pytest.mark.parametrize(("value", "tp", "expected"), CASES)
def test_mismatch_table(value: object, tp: object, expected: str | None) -> None:
    from nbflow.typecheck import mismatch

    got = mismatch(value, tp)
    assert (got is None) if expected is None else (got is not None and expected in got), got


def test_numpy_scalars_and_large_lists_check_fast() -> None:
    import time

    import numpy as np

    from nbflow.typecheck import mismatch

    assert mismatch([np.int64(1), np.float32(2.5)], list[float]) is None
    assert mismatch([np.int64(1)], list[int]) is None
    big = list(range(1_000_000))
    started = time.perf_counter()
    assert mismatch(big, list[int]) is None
    assert time.perf_counter() - started < 1.0  # about as fast as hashing it (~30 ms)
    big[999_999] = "x"
    assert mismatch(big, list[int]) == "got str at [999999]: 'x'"


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def apply(self, v: int) -> int:
        return v * self.factor

    def __call__(self, v: int) -> int:
        return v * self.factor


def scaled(v: int, factor: int) -> int:
    return v * factor


def test_partials_methods_and_callable_objects_key_on_what_they_carry(store: Path) -> None:
    import functools

    flow = nbflow.Flow("callables", store=store)
    v = flow.add_input("v", int)
    for kind, make in [("partial", lambda f: functools.partial(scaled, factor=f)),
                       ("method", lambda f: Scaler(f).apply),
                       ("object", Scaler)]:
        flow.add_output(f"{kind}_out", flow.add_step(make(2), v=v, name=kind))
        assert flow(v=5)[f"{kind}_out"] == 10
        flow.add_step(make(3), v=v, name=kind)  # same step name, different bound state
        assert flow(v=5)[f"{kind}_out"] == 15, kind
    with pytest.raises(BindingError, match="pass name="):
        flow.add_step(lambda v: v, v=v)
    assert flow.add_step(lambda v: v, v=v, name="ident") == "ident"
