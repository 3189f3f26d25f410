"""Imperative flows, processors and batch runs in a real IPython kernel (nbclient).

The seed examples are typed into notebook cells — so functions and classes are defined in
``__main__`` as in a user's notebook — executed in a real kernel, then executed again in a fresh
kernel over the same store: nothing runs the second time and the record reads back the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import json, nbflow
STORE = {store!r}

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
"""

IMPERATIVE = """
flow = nbflow.Flow("imperative_workflow", store=STORE)
x = flow.add_input("x", list[int]); y = flow.add_input("y", list[int])
n1 = flow.add_step(slope, x=flow.inputs["x"], y=flow.inputs["y"])
n2 = flow.add_step(intercept, x=x, y=y, slope=n1.outputs["o0"])
flow.add_output("wf_output", n2.outputs["o0"])
flow.add_output("list_of_outputs", [n1.outputs["o0"], n2.outputs["o0"]], python_type=list[float])
out = flow(x=[-3, 0, 3], y=[7, 4, -2])
print("RESULT", json.dumps({"out": out, "executed": flow.last_result.executed}))
"""

TYPE_ERROR = """
try:
    flow(x=[-3, "0", 3], y=[7, 4, -2])
except nbflow.FlowTypeError as e:
    print("TYPEERROR", e)
"""

PROCESSORS = """
class SumInt(nbflow.Processor):
    def setup(self):
        print("SETUP", type(self).__name__)
    def process(self, a: int, b: int) -> int:
        return a + b
    def release(self):
        print("RELEASE", type(self).__name__)

g = nbflow.Flow("sums", store=STORE)
const = g.add_constant("MyConst")
p1 = g.add_node(SumInt, {"a": const, "b": 200}, init_kwargs={})
p2 = g.add_node(SumInt, {"a": 300, "b": p1})
const.set_value(100)
print("UPTO", g.run_upto(p2), g.topological_order(p2))
"""

BATCH = """
stats = g.run_batch([10, 9, "x", 5], targets=[p2], order="breadth",
                    prepare=lambda i, item: const.set_value(item))
print("BATCH", json.dumps({"failed": [[f.index, f.item, type(f.exception).__name__] for f in stats.failures],
                           "values": [stats.value(i) for i in stats.succeeded],
                           "executed": stats.executed}))
"""

RECORD = """
print("RECORD", json.dumps(flow.describe(n2)))
"""

WIDGET = """
import nbflow.widget
nbflow.widget.show(flow)
"""


def notebook(store: Path) -> nbformat.NotebookNode:
    cells = [SETUP.format(store=str(store)), IMPERATIVE, TYPE_ERROR, PROCESSORS, BATCH, RECORD,
             WIDGET]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.strip()) for c in cells])


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    return nb


def printed(nb: nbformat.NotebookNode, tag: str) -> list[str]:
    lines = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                lines += [ln[len(tag) + 1:] for ln in out["text"].splitlines() if ln.startswith(tag + " ")]
    return lines


def payload(nb: nbformat.NotebookNode, tag: str) -> Any:
    found = printed(nb, tag)
    assert len(found) == 1, (tag, found)
    return json.loads(found[0])


def test_seed_examples_in_a_real_kernel_then_cached_in_a_fresh_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    store = tmp_path / "store"
    first = execute(notebook(store))
    run1 = payload(first, "RESULT")
    assert run1["out"] == {"wf_output": 3.0, "list_of_outputs": [-1.5, 3.0]}
    assert run1["executed"] == ["slope", "intercept", "wf_output", "list_of_outputs"]
    assert printed(first, "TYPEERROR") == [
        "flow 'imperative_workflow' input 'x' expects list[int], got str at [1]: '0'"]
    assert printed(first, "UPTO") == ["600 ['SumInt', 'SumInt_2']"]
    batch = payload(first, "BATCH")
    assert batch["failed"] == [[2, "x", "FlowTypeError"]]
    assert batch["values"] == [510, 509, 505]
    # run_upto sets up both nodes; breadth order then runs the first node (still set up) for
    # every item, releases both, sets up the second once for every item, and releases it
    assert printed(first, "SETUP") == ["SumInt"] * 3
    assert printed(first, "RELEASE") == ["SumInt"] * 3
    record = payload(first, "RECORD")
    assert record["step"] == "intercept" and record["flow"] == "imperative_workflow"
    widget_out = first.cells[-1]["outputs"][0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in widget_out
    for step in ("slope", "intercept", "wf_output", "list_of_outputs"):
        assert step in widget_out["text/plain"]

    # a fresh kernel, the same store: nothing runs, no processor is set up, same record
    second = execute(notebook(store))
    run2 = payload(second, "RESULT")
    assert run2["out"] == run1["out"] and run2["executed"] == []
    assert printed(second, "UPTO") == ["600 ['SumInt', 'SumInt_2']"]
    assert payload(second, "BATCH")["executed"] == 0
    assert printed(second, "SETUP") == []
    assert payload(second, "RECORD") == record
