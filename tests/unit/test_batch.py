"""Batch runs over processor graphs: per-item entries, failures, depth and breadth order."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import nbflow
from nbflow import NbflowError, Processor

# logged through a module: a module's fingerprint is its name and version, so the growing log
# never enters the processors' keys
blog = types.ModuleType("batchlog")
blog.entries = []  # type: ignore[attr-defined]
blog.loaded = set()  # type: ignore[attr-defined]
blog.peak = [0]  # type: ignore[attr-defined]
LOG: list[str] = blog.entries


class Logged(Processor):
    """Logs setup/process/release and how many processors are loaded at once."""

    def setup(self) -> None:
        blog.entries.append(f"setup {type(self).__name__}")
        blog.loaded.add(id(self))
        blog.peak[0] = max(blog.peak[0], len(blog.loaded))

    def release(self) -> None:
        blog.entries.append(f"release {type(self).__name__}")
        blog.loaded.discard(id(self))


class SumInt(Logged):
    def process(self, a: int, b: int) -> int:
        return a + b


class A(Logged):
    def process(self, x: int) -> int:
        blog.entries.append(f"A {x}")
        if x == 13:
            raise ValueError("unlucky item")
        return x * 10


class B(Logged):
    def process(self, x: int) -> int:
        blog.entries.append(f"B {x}")
        return x + 1


class Join(Logged):
    def process(self, parts: list[int]) -> int:
        blog.entries.append(f"Join {parts}")
        return sum(parts)


@pytest.fixture(autouse=True)
def clear_log() -> None:
    LOG.clear()
    blog.loaded.clear()
    blog.peak[0] = 0


def sums(store: Path) -> tuple[nbflow.Flow, nbflow.Input, nbflow.ProcessorNode]:
    g = nbflow.Flow("sums", store=store)
    const = g.add_constant("MyConst")
    n1 = g.add_node(SumInt, {"a": const, "b": 200}, init_kwargs={})
    return g, const, n1


def test_seed_batch_results_are_per_item_store_entries(tmp_path: Path) -> None:
    g, const, n1 = sums(tmp_path)
    stats = g.run_batch([10, 9, 21, 5], targets=[n1], prepare=lambda i, item: const.set_value(item),
                        progress=False)
    assert stats.failures == [] and stats.ok
    assert [stats.value(i) for i in range(4)] == [210, 209, 221, 205]
    assert stats.executed == 4 and stats.cached == 0
    assert LOG == ["setup SumInt", "release SumInt"]  # one setup for the whole batch
    assert len({k["SumInt"] for k in stats.keys if k}) == 4
    # a new graph over the same store: every item is served from the store, nothing is set up
    LOG.clear()
    g2, const2, m1 = sums(tmp_path)
    again = g2.run_batch([10, 9, 21, 5], targets=[m1], prepare=lambda i, item: const2.set_value(item),
                         progress=False)
    assert (again.executed, again.cached) == (0, 4) and LOG == []
    assert again.keys == stats.keys
    # single values are reachable the ordinary way as well
    const2.set_value(21)
    assert g2.run_upto(m1) == 221


def test_failing_item_is_collected_and_the_batch_goes_on(tmp_path: Path) -> None:
    g = nbflow.Flow("fragile", store=tmp_path)
    item = g.add_constant("item", type=int)
    a = g.add_node(A, {"x": item})
    stats = g.run_batch([1, 13, 2, "three", 4], targets=[a],
                        prepare=lambda i, v: item.set_value(v), progress=False)
    assert [(f.index, f.item) for f in stats.failures] == [(1, 13), (3, "three")]
    index, failed_item, exc = stats.failures[0]
    assert (index, failed_item) == (1, 13)
    assert isinstance(exc, ValueError) and str(exc) == "unlucky item"
    assert isinstance(stats.failures[1].exception, nbflow.FlowTypeError)  # refused by prepare
    assert stats.failed_steps == {1: "A", 3: None}
    assert stats.succeeded == [0, 2, 4]
    assert [stats.value(i) for i in stats.succeeded] == [10, 20, 40]
    assert "A 4" in LOG  # the item after the failures ran
    with pytest.raises(NbflowError, match="item 1 failed"):
        stats.value(1)


def chain(store: Path) -> tuple[nbflow.Flow, nbflow.Input, nbflow.ProcessorNode, nbflow.ProcessorNode]:
    g = nbflow.Flow("chain", store=store)
    item = g.add_constant("item", type=int)
    a = g.add_node(A, {"x": item})
    b = g.add_node(B, {"x": a})
    return g, item, a, b


def test_breadth_first_runs_one_node_for_every_item_then_releases(tmp_path: Path) -> None:
    g, item, a, b = chain(tmp_path / "breadth")
    stats = g.run_batch([1, 2, 3], targets=[b], prepare=lambda i, v: item.set_value(v),
                        order="breadth", progress=False)
    assert stats.ok and [stats.value(i) for i in range(3)] == [11, 21, 31]
    assert LOG == ["setup A", "A 1", "A 2", "A 3", "release A",
                   "setup B", "B 10", "B 20", "B 30", "release B"]
    assert blog.peak[0] == 1  # never two processors loaded at once

    LOG.clear()
    g, item, a, b = chain(tmp_path / "depth")
    stats = g.run_batch([1, 2, 3], targets=[b], prepare=lambda i, v: item.set_value(v),
                        order="depth", progress=False)
    assert [stats.value(i) for i in range(3)] == [11, 21, 31]
    assert LOG == ["setup A", "A 1", "setup B", "B 10", "A 2", "B 20", "A 3", "B 30",
                   "release A", "release B"]
    assert blog.peak[0] == 2


def test_breadth_first_on_the_seed_diamond_sets_up_each_node_once(tmp_path: Path) -> None:
    # 1 -> 2; 2 -> 3, 4, 5; 4 -> 6; 5 -> 6 (the graph of the process-graphs guide)
    g = nbflow.Flow("diamond", store=tmp_path)
    item = g.add_constant("item", type=int)
    n1 = g.add_node(B, {"x": item}, name="n1")
    n2 = g.add_node(B, {"x": n1}, name="n2")
    g.add_node(B, {"x": n2}, name="n3")
    n4 = g.add_node(B, {"x": n2}, name="n4")
    n5 = g.add_node(B, {"x": n2}, name="n5")
    n6 = g.add_node(Join, {"parts": [n4, n5]}, name="n6")
    assert g.topological_order(n6) == ["n1", "n2", "n4", "n5", "n6"]
    stats = g.run_batch([0, 100], targets=[n6], prepare=lambda i, v: item.set_value(v),
                        order="breadth", progress=False)
    assert [stats.value(i) for i in range(2)] == [6, 206]
    setups = [e for e in LOG if e.startswith(("setup", "release"))]
    assert setups == ["setup B", "release B"] * 4 + ["setup Join", "release Join"]
    assert blog.peak[0] == 1
    work = [e for e in LOG if not e.startswith(("setup", "release"))]
    assert work == ["B 0", "B 100", "B 1", "B 101", "B 2", "B 102", "B 2", "B 102",
                    "Join [3, 3]", "Join [103, 103]"]  # node by node, every item each time


def test_breadth_first_skips_items_that_failed_earlier(tmp_path: Path) -> None:
    g, item, a, b = chain(tmp_path)
    stats = g.run_batch([1, 13, 2], targets=[b], prepare=lambda i, v: item.set_value(v),
                        order="breadth", progress=False)
    assert [(f.index, f.item, type(f.exception)) for f in stats.failures] == [(1, 13, ValueError)]
    assert "B 130" not in LOG and LOG.count("setup A") == 1 and LOG.count("setup B") == 1
    assert [stats.value(i) for i in stats.succeeded] == [11, 21]


def test_items_as_input_dicts_and_progress_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    g, item, a, b = chain(tmp_path)
    stats = g.run_batch([{"item": 1}, {"item": 2}, {"nope": 3}, 4], targets=[b])
    err = capfd.readouterr().err
    assert "chain (depth)" in err and "4/4" in err and "2 failed" in err
    assert [f.index for f in stats.failures] == [2, 3]
    assert "no input 'nope'" in str(stats.failures[0].exception)
    assert "pass prepare=" in str(stats.failures[1].exception)
    with pytest.raises(NbflowError, match="order='sideways'"):
        g.run_batch([1], targets=[b], order="sideways")


def test_default_targets_are_the_flow_outputs(tmp_path: Path) -> None:
    g, item, a, b = chain(tmp_path)
    g.add_output("result", b)
    stats = g.run_batch([{"item": 5}], progress=False)
    assert stats.targets == ["result"] and stats.value(0) == 51
