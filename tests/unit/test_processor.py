"""Typed processors (process graphs) on the real engine and a real store."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

import pytest

import nbflow
from nbflow import BindingError, FlowTypeError, Processor, StepFailed

# the processors log through a module: a module is fingerprinted by name and version, so the
# log's growing content never enters the processors' keys (a plain global list would)
proclog = types.ModuleType("proclog")
proclog.entries = []  # type: ignore[attr-defined]
LOG: list[str] = proclog.entries


class SumInt(Processor):
    def setup(self) -> None:
        proclog.entries.append("setup")

    def process(self, a: int, b: int) -> int:
        proclog.entries.append(f"process {a}+{b}")
        return a + b

    def release(self) -> None:
        proclog.entries.append("release")


class Untyped(Processor):
    def process(self, a):
        return str(a)


class ToText(Processor):
    def process(self, a: int) -> str:
        return str(a)


class Scale(Processor):
    factor = 1
    verbose = False

    insignificant = ("verbose",)

    def process(self, a: int) -> int:
        if self.verbose:
            proclog.entries.append(f"scaling {a}")
        return a * self.factor


@dataclasses.dataclass
class Offset(Processor):
    offset: int = 0
    verbose: bool = dataclasses.field(default=False, compare=False)

    def process(self, a: int) -> int:
        return a + self.offset


@pytest.fixture(autouse=True)
def clear_log() -> None:
    LOG.clear()


def seed_graph(store: Path) -> tuple[nbflow.Flow, nbflow.Input, nbflow.ProcessorNode, nbflow.ProcessorNode]:
    g = nbflow.Flow("sums", store=store)
    const = g.add_constant("MyConst")
    n1 = g.add_node(SumInt, {"a": const, "b": 200}, init_kwargs={})
    n2 = g.add_node(SumInt, {"a": 300, "b": n1})
    return g, const, n1, n2


def test_seed_example_is_600_and_setup_is_lazy(tmp_path: Path) -> None:
    g, const, n1, n2 = seed_graph(tmp_path)
    const.set_value(100)
    assert not n1.is_set_up and not n2.is_set_up  # adding a node builds nothing
    assert g.run_upto(n2) == 600
    assert g.topological_order(n2) == ["SumInt", "SumInt_2"]
    assert g.topological_order(n1) == [n1]
    assert repr(n2) == "ProcessorNode('SumInt_2', SumInt, set up)"
    assert LOG == ["setup", "process 100+200", "setup", "process 300+300"]
    # a new graph over the same store: everything cached, no processor is even built
    LOG.clear()
    g2, const2, m1, m2 = seed_graph(tmp_path)
    const2.set_value(100)
    assert g2.run_upto(m2) == 600
    assert LOG == [] and m1._instance is None and m2._instance is None
    # a new value: both nodes run again, each set up once
    const2.set_value(1)
    assert g2.run_upto(m2) == 501
    assert LOG == ["setup", "process 1+200", "setup", "process 300+201"]
    assert g2.run_upto(m1) == 201


def test_release_per_node_and_for_the_graph(tmp_path: Path) -> None:
    g, const, n1, n2 = seed_graph(tmp_path)
    const.set_value(5)
    g.run_upto(n2)
    assert n1.release_resources() is True
    assert n1.release_resources() is False  # already released
    assert LOG[-1] == "release" and not n1.is_set_up and n2.is_set_up
    assert g.release_resources() == ["SumInt_2"]
    assert g.release_resources() == []
    const.set_value(6)
    LOG.clear()
    g.run_upto(n1)
    assert LOG == ["setup", "process 6+200"]  # set up again, lazily
    assert g.release_resources(n1) == ["SumInt"]
    with pytest.raises(nbflow.UnknownStepError):
        g.release_resources("nope")


def test_inputs_are_checked_against_process_signature(tmp_path: Path) -> None:
    g, const, n1, _ = seed_graph(tmp_path)
    with pytest.raises(BindingError, match="node 'SumInt_3' is missing argument 'b' of SumInt.process"):
        g.add_node(SumInt, {"a": 1})
    with pytest.raises(BindingError, match="node 'SumInt_3' gets argument 'c', which SumInt.process does not take"):
        g.add_node(SumInt, {"a": 1, "b": 2, "c": 3})
    with pytest.raises(FlowTypeError, match="node 'SumInt_3' argument 'a' expects int, got str: 'x'"):
        g.add_node(SumInt, {"a": "x", "b": 2})
    text = g.add_node(ToText, {"a": n1})
    with pytest.raises(FlowTypeError, match="node 'check' argument 'b' expects int, but 'ToText' is declared as str"):
        g.add_node(SumInt, {"a": 1, "b": text}, name="check")
    class Empty(Processor):
        pass

    with pytest.raises(BindingError, match="Empty does not define process"):
        g.add_node(Empty, {})
    with pytest.raises(BindingError, match="subclass of nbflow.Processor"):
        g.add_node(dict, {})  # type: ignore[arg-type]
    with pytest.raises(BindingError, match="init_kwargs do not fit Offset"):
        g.add_node(Offset, {"a": 1}, init_kwargs={"nope": 1})
    assert "SumInt_3" not in g.graph.steps and "check" not in g.graph.steps


def test_wrong_values_are_refused_before_running(tmp_path: Path) -> None:
    g, const, n1, n2 = seed_graph(tmp_path)
    const.set_value("100")
    with pytest.raises(FlowTypeError, match="node 'SumInt' argument 'a' expects int, got str: '100'"):
        g.run_upto(n2)
    assert LOG == []  # nothing was set up, nothing ran
    typed = g.add_constant("Typed", type=int)
    with pytest.raises(FlowTypeError, match="input 'Typed' expects int"):
        typed.set_value(1.5)
    # an untyped upstream producing a str: the real value is checked before process runs
    const.set_value(1)
    loose = g.add_node(Untyped, {"a": const})
    bad = g.add_node(SumInt, {"a": loose, "b": 1}, name="bad")
    with pytest.raises(StepFailed) as err:
        g.run_upto(bad)
    assert isinstance(err.value.error, FlowTypeError)
    assert "node 'bad' argument 'a' expects int, got str: '1'" in str(err.value)
    assert not any(entry.startswith("process") for entry in LOG)


def test_constant_without_value_is_a_clear_error(tmp_path: Path) -> None:
    g, _, _, n2 = seed_graph(tmp_path)
    with pytest.raises(FlowTypeError, match="input 'MyConst' has no value"):
        g.run_upto(n2)


def test_init_kwargs_are_significant_unless_declared_otherwise(tmp_path: Path) -> None:
    g = nbflow.Flow("scale", store=tmp_path)
    c = g.add_constant("c", 7)
    s = g.add_node(Scale, {"a": c}, init_kwargs={"factor": 3}, name="s")
    assert g.run_upto(s) == 21
    key = g.plan_keys([s])["s"]
    s = g.add_node(Scale, {"a": c}, init_kwargs={"factor": 3, "verbose": True}, name="s")
    assert g.plan_keys([s])["s"] == key  # Scale.insignificant
    assert g.run_upto(s) == 21 and LOG == []  # served from the store: no "scaling" line
    s = g.add_node(Scale, {"a": c}, init_kwargs={"factor": 4}, name="s")
    assert g.plan_keys([s])["s"] != key
    assert g.run_upto(s) == 28

    o = g.add_node(Offset, {"a": c}, init_kwargs={"offset": 1}, name="o")
    okey = g.plan_keys([o])["o"]
    o = g.add_node(Offset, {"a": c}, init_kwargs={"offset": 1, "verbose": True}, name="o")
    assert g.plan_keys([o])["o"] == okey  # dataclass field with compare=False
    o = g.add_node(Offset, {"a": c}, init_kwargs={"offset": 2}, name="o")
    assert g.plan_keys([o])["o"] != okey
    assert g.run_upto(o) == 9


def test_ignore_keeps_a_process_argument_out_of_the_key(tmp_path: Path) -> None:
    class Echo(Processor):
        def process(self, a: int, note: str = "") -> int:
            return a

    g = nbflow.Flow("echo", store=tmp_path)
    e = g.add_node(Echo, {"a": 1, "note": "first"}, ignore=("note",), name="e")
    key = g.plan_keys([e])["e"]
    e = g.add_node(Echo, {"a": 1, "note": "second"}, ignore=("note",), name="e")
    assert g.plan_keys([e])["e"] == key
    e = g.add_node(Echo, {"a": 1, "note": "second"}, name="e")
    assert g.plan_keys([e])["e"] != key
    with pytest.raises(BindingError, match="ignore= names 'nope'"):
        g.add_node(Echo, {"a": 1}, ignore=("nope",))


def test_replacing_a_named_node_releases_the_old_processor(tmp_path: Path) -> None:
    g = nbflow.Flow("replace", store=tmp_path)
    n = g.add_node(SumInt, {"a": 1, "b": 2}, name="n")
    assert g.run_upto(n) == 3 and n.is_set_up
    m = g.add_node(SumInt, {"a": 1, "b": 3}, name="n")
    assert not n.is_set_up and LOG[-1] == "release"
    assert g.run_upto(m) == 4
    assert [str(x) for x in g.processor_nodes()] == ["n"]


def test_class_edits_change_the_key_comments_do_not(tmp_path: Path) -> None:
    from nbflow.processor import class_code

    def load(name: str, text: str) -> type:
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        ns: dict[str, Any] = {"Processor": Processor}
        exec(compile(text, str(path), "exec"), ns)
        return ns["P"]

    body = "    def process(self, a: int) -> int:\n        return a + 1\n"
    first = class_code(load("p1", "class P(Processor):\n" + body))
    assert "Constant(1)" in first  # from the normalized source, not bytecode
    documented = body.replace("        return", '        """doc"""\n        return')
    commented = load("p2", "class P(Processor):\n    # a comment\n\n" + documented)
    assert class_code(commented) == first
    edited = load("p3", "class P(Processor):\n" + body.replace("a + 1", "a + 2"))
    assert class_code(edited) != first
    attr = load("p4", "class P(Processor):\n    factor = 2\n" + body)
    assert class_code(attr) != first
