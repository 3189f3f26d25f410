"""Graph rules of Metaflow-style flows, checked before anything runs: one case per rule, each with
the words the error must say (the step's name and the fix)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from nbflow.flowspec_graph import FlowGraphError, parse_flow
from nbflow.parameters import ParameterError

HEADER = "from nbflow import FlowSpec, Parameter, JSONType, step\n\n"


def load(tmp_path: Path, body: str) -> Any:
    """Write a module holding ``class F(FlowSpec)`` and import it (sources stay readable)."""
    name = f"flowmod_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.F


def steps(*defs: str) -> str:
    return "class F(FlowSpec):\n" + "".join(textwrap.indent(textwrap.dedent(d), "    ") for d in defs)


START_END = (
    """
    @step
    def start(self):
        self.next(self.end)
    """,
    """
    @step
    def end(self):
        pass
    """,
)

CASES: list[tuple[str, str, list[str]]] = [
    ("no start", steps(START_END[1]), ["no step named 'start'", "def start(self)"]),
    ("no end", steps("""
        @step
        def start(self):
            self.next(self.a)
        @step
        def a(self):
            self.next(self.start)
        """), ["no step named 'end'"]),
    ("no self.next", steps("""
        @step
        def start(self):
            self.x = 1
        """, START_END[1]), ["step 'start' must end with self.next(", "only 'end' has none"]),
    ("self.next not last", steps("""
        @step
        def start(self):
            self.next(self.end)
            self.x = 1
        """, START_END[1]), ["step 'start' must end with self.next("]),
    ("unknown target", steps("""
        @step
        def start(self):
            self.next(self.missing)
        """, START_END[1]), ["step 'start' goes to self.missing", "no step 'missing'", "add @step"]),
    ("target is a plain method", steps("""
        @step
        def start(self):
            self.next(self.helper)
        def helper(self):
            pass
        """, START_END[1]), ["no step 'helper'", "add @step to 'helper'"]),
    ("cycle", steps("""
        @step
        def start(self):
            self.next(self.a)
        @step
        def a(self):
            self.next(self.b)
        @step
        def b(self):
            self.next(self.a)
        """, START_END[1]), ["loops: a -> b -> a", "self.next() in 'b'"]),
    ("back to start", steps("""
        @step
        def start(self):
            self.next(self.a)
        @step
        def a(self):
            self.next(self.start)
        """, START_END[1]), ["step 'a' goes to start"]),
    ("unreachable", steps(*START_END, """
        @step
        def orphan(self):
            self.next(self.end)
        """), ["step 'orphan' is never reached from start"]),
    ("branch never joined", steps("""
        @step
        def start(self):
            self.next(self.a, self.b)
        @step
        def a(self):
            self.next(self.end)
        @step
        def b(self):
            self.next(self.end)
        """, START_END[1]), ["branches from a, b reach 'end' without being joined", "add a join step"]),
    ("join without inputs", steps("""
        @step
        def start(self):
            self.next(self.a, self.b)
        @step
        def a(self):
            self.next(self.join)
        @step
        def b(self):
            self.next(self.join)
        @step
        def join(self):
            self.next(self.end)
        """, START_END[1]), ["meet at step 'join'", "def join(self, inputs)"]),
    ("join missing a branch", steps("""
        @step
        def start(self):
            self.next(self.a, self.b, self.c)
        @step
        def a(self):
            self.next(self.join)
        @step
        def b(self):
            self.next(self.join)
        @step
        def c(self):
            self.next(self.join2)
        @step
        def join(self, inputs):
            self.next(self.join2)
        @step
        def join2(self, inputs):
            self.next(self.end)
        """, START_END[1]), ["join 'join' must join every branch of the split at 'start'", "c never reaches it"]),
    ("join without split", steps("""
        @step
        def start(self):
            self.next(self.join)
        @step
        def join(self, inputs):
            self.next(self.end)
        """, START_END[1]), ["step 'join' takes inputs, so it is a join, but no split comes before it"]),
    ("foreach never joined", steps("""
        @step
        def start(self):
            self.items = [1, 2]
            self.next(self.a, foreach="items")
        @step
        def a(self):
            self.next(self.end)
        """, START_END[1]), ["step 'end' is reached before the split at 'start' is joined", "add a join step"]),
    ("joins different splits", steps("""
        @step
        def start(self):
            self.next(self.a, self.b)
        @step
        def a(self):
            self.next(self.a1, self.a2)
        @step
        def a1(self):
            self.next(self.join)
        @step
        def a2(self):
            self.next(self.join)
        @step
        def b(self):
            self.next(self.join)
        @step
        def join(self, inputs):
            self.next(self.end)
        """, START_END[1]), ["join 'join' joins steps from different splits", "join the inner split first"]),
    ("split straight into its join", steps("""
        @step
        def start(self):
            self.next(self.a, self.join)
        @step
        def a(self):
            self.next(self.join)
        @step
        def join(self, inputs):
            self.next(self.end)
        """, START_END[1]), ["step 'start' splits straight into the join 'join'"]),
    ("foreach with two targets", steps("""
        @step
        def start(self):
            self.items = [1]
            self.next(self.a, self.b, foreach="items")
        """, START_END[1]), ["a foreach goes to exactly one step"]),
    ("foreach name not a literal", steps("""
        @step
        def start(self):
            name = "items"
            self.next(self.end, foreach=name)
        """, START_END[1]), ["foreach= takes the artifact's name as a string"]),
    ("next takes steps", steps("""
        @step
        def start(self):
            nxt = self.end
            self.next(nxt)
        """, START_END[1]), ["self.next() takes steps written as self.<step>"]),
    ("unsupported next option", steps("""
        @step
        def start(self):
            self.next(self.end, num_parallel=4)
        """, START_END[1]), ["num_parallel=", "does not support"]),
    ("end calls next", steps(START_END[0], """
        @step
        def end(self):
            self.next(self.start)
        """), ["step 'end' is the last step; remove its self.next()"]),
    ("bad signature", steps("""
        @step
        def start(self, a, b):
            self.next(self.end)
        """, START_END[1]), ["step 'start' must be def start(self)", "def start(self, inputs) for a join"]),
    ("start is a join", steps("""
        @step
        def start(self, inputs):
            self.next(self.end)
        """, START_END[1]), ["step 'start' takes inputs"]),
    ("reserved step name", steps(*START_END, """
        @step
        def merge_artifacts(self):
            self.next(self.end)
        """), ["step name 'merge_artifacts' is reserved"]),
    ("parameter named like a step", "class F(FlowSpec):\n    x = Parameter('a', default=1)\n"
     + textwrap.indent(textwrap.dedent("""
        @step
        def start(self):
            self.next(self.end)
        @step
        def end(self):
            pass
        """), "    ").replace("def end(self):\n        pass", "def end(self):\n        pass\n    @step\n    def a(self):\n        self.next(self.end)"),
     ["parameter 'a' has the name of a step"]),
    ("parameter shadows run()", "class F(FlowSpec):\n    store = Parameter('store', default='x')\n"
     + textwrap.indent(textwrap.dedent(START_END[0] + START_END[1]), "    "),
     ["parameter 'store' clashes with a name nbflow uses"]),
]


@pytest.mark.parametrize("label,source,words", CASES, ids=[c[0] for c in CASES])
def test_graph_rule(tmp_path: Path, label: str, source: str, words: list[str]) -> None:
    cls = load(tmp_path, source)
    with pytest.raises((FlowGraphError, ParameterError)) as info:
        parse_flow(cls)
    message = str(info.value)
    for w in words:
        assert w in message, f"{label}: {w!r} not in {message!r}"


def test_graph_errors_come_before_any_step_runs(tmp_path: Path) -> None:
    cls = load(tmp_path, steps("""
        @step
        def start(self):
            raise AssertionError("must not run")
            self.next(self.a, self.b)
        @step
        def a(self):
            self.next(self.end)
        @step
        def b(self):
            self.next(self.end)
        """, START_END[1]))
    with pytest.raises(FlowGraphError, match="reach 'end' without being joined"):
        cls.run(store=tmp_path / "store")
    assert not (tmp_path / "store" / "records").exists()


def test_valid_graph_order_stacks_and_show(tmp_path: Path) -> None:
    cls = load(tmp_path, '''
        class F(FlowSpec):
            """A flow with every transition."""
            alpha = Parameter("alpha", help="Learning rate", default=0.01)

            @step
            def start(self):
                """Begin."""
                self.items = [1, 2]
                self.next(self.each, foreach="items")

            @step
            def each(self):
                self.next(self.left, self.right)

            @step
            def left(self):
                self.next(self.both)

            @step
            def right(self):
                self.next(self.both)

            @step
            def both(self, inputs):
                self.next(self.gather)

            @step
            def gather(self, inputs):
                """All items."""
                self.next(self.end)

            @step
            def end(self):
                pass
        ''')
    graph = parse_flow(cls)
    assert list(graph.nodes) == ["start", "each", "left", "right", "both", "gather", "end"]
    assert graph["each"].stack == (("start", ""),) and graph["each"].depth == 1
    assert graph["left"].stack == (("start", ""), ("each", "left"))
    assert graph["both"].stack == (("start", ""),) and graph["gather"].stack == ()
    assert graph["start"].transition == "foreach" and graph["each"].transition == "split"
    text = graph.show()
    assert text.splitlines()[:2] == ["F", "    A flow with every transition."]
    assert "--alpha FLOAT  Learning rate [default: 0.01]" in text
    assert "Step start\n    Begin.\n    => each  (foreach over items)" in text
    assert "Step each\n    ?\n    => left, right" in text
    assert "Step gather  (join)\n    All items.\n    => end" in text
    assert text.rstrip().endswith("Step end\n    ?")


def test_reads_follow_helpers_and_dynamic_use(tmp_path: Path) -> None:
    cls = load(tmp_path, '''
        def outside(flow):
            return flow.alpha

        class F(FlowSpec):
            alpha = Parameter("alpha", default=0.1)
            beta = Parameter("beta", default=0.2)

            @property
            def scaled(self):
                return self.beta * 2

            def helper(self):
                return self.alpha + self.scaled

            @step
            def start(self):
                self.x = self.helper()
                self.next(self.a)

            @step
            def a(self):
                self.y = self.x
                self.next(self.b)

            @step
            def b(self):
                self.z = outside(self)
                self.next(self.end)

            @step
            def end(self):
                pass
        ''')
    graph = parse_flow(cls)
    assert {"alpha", "beta", "helper", "scaled", "x"} <= graph["start"].reads
    assert not graph["start"].dynamic
    assert not graph["a"].reads_name("alpha") and graph["a"].reads_name("x")
    assert graph["b"].dynamic and graph["b"].reads_name("alpha")
