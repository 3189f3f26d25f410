from __future__ import annotations

import pytest

from nbflow.errors import CycleError, DuplicateOutputError, MissingInputError, UnknownStepError
from nbflow.graph import Graph, Step


def mk(name: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] | None = None) -> Step:
    return Step(name, inputs, outputs or (name,), lambda v: {}, code=name)


def graph(*steps: Step) -> Graph:
    g = Graph()
    for s in steps:
        g.add(s)
    return g


def test_topological_order_parents_first_and_stable() -> None:
    g = graph(mk("c", ("a", "b")), mk("a"), mk("b", ("a",)), mk("d"))
    order = g.topological_order()
    assert order.index("a") < order.index("b") < order.index("c")
    assert set(order) == {"a", "b", "c", "d"}
    assert g.topological_order(["b"]) == ["a", "b"]


def test_upstream_downstream_edges() -> None:
    g = graph(mk("a", outputs=("x", "y")), mk("b", ("x",)), mk("c", ("y", "b")), mk("z"))
    assert g.upstream("c") == ["a", "b"]
    assert g.downstream("a") == ["b", "c"]
    assert g.downstream("z") == []
    assert sorted(g.edges()) == [("a", "b", ("x",)), ("a", "c", ("y",)), ("b", "c", ("b",))]


def test_cycle_reports_whole_path() -> None:
    g = graph(mk("a", ("c",)), mk("b", ("a",)), mk("c", ("b",)))
    with pytest.raises(CycleError) as e:
        g.topological_order()
    path = e.value.path
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"} and len(path) == 4
    # the path follows the data: each step produces what the next one reads
    for producer, consumer in zip(path, path[1:], strict=False):
        assert producer in g.parents(consumer)
    assert " -> " in str(e.value)


def test_missing_input_names_step_and_fix() -> None:
    g = graph(mk("clean", ("df",)))
    with pytest.raises(MissingInputError, match="step 'clean' reads 'df', which no step defines"):
        g.check()


def test_duplicate_output_names_both_steps() -> None:
    g = graph(mk("a", outputs=("x",)), mk("b", outputs=("x",)))
    with pytest.raises(DuplicateOutputError, match="'a' and 'b' both define 'x'"):
        _ = g.producers


def test_unknown_step_lists_known() -> None:
    g = graph(mk("a"))
    with pytest.raises(UnknownStepError, match="no step named 'nope'; known steps: a"):
        g.get("nope")


def test_replacing_a_step_updates_edges() -> None:
    g = graph(mk("a"), mk("b", ("a",)))
    assert g.downstream("a") == ["b"]
    g.add(mk("b", ()))
    assert g.downstream("a") == []


def test_an_edit_that_keeps_the_edges_keeps_what_derives_from_them() -> None:
    """Editing a step's code bumps the revision; orders and children are reused only while
    the step's reads and binds are the same, and an edit that rewires them is seen at once."""
    g = graph(mk("a"), mk("b", ("a",)), mk("c", ("b",)))
    order, rev = g.topological_order(), g.revision
    edited = Step("b", ("a",), ("b",), lambda v: {}, code="b + 1")
    assert g.add(edited) is not None and g.revision == rev + 1
    assert g.steps["b"] is edited and g.topological_order() == order
    assert g.children("a") == ["b"] and g.descendants("a") == ["b", "c"]
    g.add(Step("b", (), ("b",), lambda v: {}, code="b"))  # no longer reads a
    assert g.children("a") == [] and g.descendants("a") == [] and g.upstream("c") == ["b"]
    g.add(Step("b", ("c",), ("b",), lambda v: {}, code="b"))  # now a cycle
    with pytest.raises(CycleError):
        g.topological_order()
    g.add(Step("a", (), ("a", "b"), lambda v: {}, code="a"))  # binds what b binds
    with pytest.raises(DuplicateOutputError):
        g.producers  # noqa: B018
