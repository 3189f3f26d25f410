"""Metaflow-style flows in a real kernel (nbclient + ipykernel): the guide's flows defined in
notebook cells and run with ``Flow.run()``, their printed values and artifacts, past runs, a
parallel run from the kernel, and a second kernel served entirely from the store."""

from __future__ import annotations

import re
from pathlib import Path

from kernel_helpers import errors_of, run_notebook, text_of, write_notebook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"


def flow_cell(name: str) -> str:
    """An example flow's source as a notebook cell (without its command-line guard)."""
    source = (EXAMPLES / f"{name}.py").read_text()
    return source.split('if __name__ == "__main__":')[0].rstrip() + "\n"


FOREACH = '''
import os
from nbflow import FlowSpec, JSONType, Parameter, step

LOG = os.environ["FLOW_LOG"]


def log(msg):
    with open(LOG, "a") as f:
        f.write(msg + "\\n")


class ForeachFlow(FlowSpec):
    alpha = Parameter("alpha", help="Learning rate", default=0.01)
    gdp = Parameter("gdp", type=JSONType, default='{"US": 1939}')

    @step
    def start(self):
        self.titles = ["Stranger Things", "House of Cards", "Narcos"]
        self.next(self.a, foreach="titles")

    @step
    def a(self):
        log("a:" + self.input)
        self.title = "%s processed" % self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.results = [i.title for i in inputs]
        self.next(self.end)

    @step
    def end(self):
        pass
'''

CELLS = [
    FOREACH,
    'run = ForeachFlow.run(alpha=0.6)\nprint(run["join"].results)\nprint(run.data.results)\n'
    'print(run.params["alpha"], run.status)',
    'import nbflow\nprint([t.data.title for t in nbflow.Flow("ForeachFlow").latest_run["a"]])\n'
    'print(len(nbflow.runs("ForeachFlow")) >= 1, run.id in [r.id for r in ForeachFlow.runs()])',
    'par = ForeachFlow.run(max_workers=2, store="parallel_store")\nprint(par.data.results == '
    'run.data.results, par.meta["executor"])',
    'print({n: s.status for n, s in ForeachFlow.flow().status().items()})\nForeachFlow.show()',
    flow_cell("linear") + "\nLinearFlow.run()",
    flow_cell("branch") + "\nb = BranchFlow.run()\nprint(b['a'].x, b['b'].x)",
    flow_cell("merge_artifacts") + "\nm = MergeArtifactsFlow.run()\nprint(m['join2'].data.keys())",
    flow_cell("parameter_flow") + "\nParameterFlow.run(alpha=0.6)",
    flow_cell("json_parameter_flow") + "\nJSONParameterFlow.run(gdp='{\"US\": 1}')",
    "ForeachFlow()",
]


def test_guide_flows_in_a_kernel(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb" / "flows.ipynb", CELLS)
    log = tmp_path / "log.txt"
    nb = run_notebook(path, allow_errors=True, timeout=180, FLOW_LOG=str(log))
    cells = nb.cells
    for i in range(len(CELLS) - 1):
        assert not errors_of(cells[i]), (i, errors_of(cells[i]))
    expected = "['Stranger Things processed', 'House of Cards processed', 'Narcos processed']"
    assert text_of(cells[1], "stdout") == f"{expected}\n{expected}\n0.6 done\n"
    titles = ["a:House of Cards", "a:Narcos", "a:Stranger Things"]
    assert sorted(log.read_text().splitlines()) == sorted(2 * titles)  # this store, and the parallel one
    assert text_of(cells[2], "stdout") == f"{expected}\nTrue True\n"
    assert re.match(r"True local \(2 process", text_of(cells[3], "stdout"))
    status = text_of(cells[4], "stdout")
    assert "{'start': 'done', 'a': 'done', 'join': 'done', 'end': 'done'}" in status
    assert "Step start\n    ?\n    => a  (foreach over titles)" in status
    assert text_of(cells[5], "stdout") == (
        "the data artifact is: hello world\nthe data artifact is still: hello world\n"
    )
    assert text_of(cells[6], "stdout") == "a is 1\nb is 2\ntotal is 3\n1 2\n"
    assert text_of(cells[7], "stdout") == (
        "x is 1\npass_down is a\ncommon is 5\nfrom_a is 6\nOnly pass_down and common exist here\n"
        "['common', 'pass_down']\n"
    )
    assert text_of(cells[8], "stdout") == "alpha is 0.600000\nalpha is still 0.600000\n"
    assert text_of(cells[9], "stdout") == "The GDP of US is $1B\n"
    # the command-line entry point refuses to parse the kernel's argv
    (error,) = errors_of(cells[10])
    assert "ForeachFlow() runs the command line; in a notebook use ForeachFlow.run(...)" in error["evalue"]

    # a new kernel: the same runs are served from the store (no task appends to the log)
    log.unlink()
    nb = run_notebook(path, allow_errors=True, timeout=180, FLOW_LOG=str(log))
    assert not log.exists()
    assert text_of(nb.cells[1], "stdout") == f"{expected}\n{expected}\n0.6 done\n"
    assert "{'start': 'cached', 'a': 'cached', 'join': 'cached', 'end': 'cached'}" in text_of(
        nb.cells[4], "stdout")
    assert text_of(nb.cells[5], "stdout") == ""  # cached steps do not print again
