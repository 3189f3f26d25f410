"""The DAG widget at the Python level: DOT, statuses and details after real runs, commands from
the front end, the fallbacks without a front end, and the saved widget state of a notebook
executed by nbclient on a real kernel."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import graphviz
import nbformat
import pytest

import nbflow
from nbflow.graph import Graph, Step
from nbflow.protocol import PROTOCOL_VERSION
from nbflow.widget import (
    STATUS_PLACEHOLDER,
    DagWidget,
    build_digraph,
    render_svg,
    show,
    status_table,
)

V = PROTOCOL_VERSION


def make_flow(store: Path, name: str = "demo") -> nbflow.Flow:
    flow = nbflow.Flow(name, store=store)

    @flow.step
    def raw() -> list[int]:
        return list(range(10))

    @flow.step
    def doubled(raw: list[int]) -> list[int]:
        return [x * 2 for x in raw]

    @flow.step(outputs=("total", "count"))
    def summary(doubled: list[int], raw: list[int]) -> tuple[int, int]:
        return sum(doubled), len(raw)

    return flow


class Sent:
    """Records what the widget sends to the front end (the real send still runs)."""

    def __init__(self, widget: DagWidget) -> None:
        self.messages: list[dict[str, Any]] = []
        original = widget.send

        def send(content: Any, buffers: Any = None) -> None:
            self.messages.append(content)
            original(content, buffers)

        widget.send = send  # type: ignore[method-assign]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


def click(widget: DagWidget, msg: dict[str, Any]) -> None:
    """Deliver a message as the front end would (through the widget's msg callbacks)."""
    widget._handle_custom_msg(msg, [])


def dot_edges(dot: str, nodes: list[str]) -> set[tuple[str, str, str]]:
    found = set()
    for a, b, label in re.findall(r"n(\d+) -> n(\d+) \[label=\"?([^\]\"]*)\"?\]", dot):
        found.add((nodes[int(a)], nodes[int(b)], label.replace("\\n", ",")))
    return found


def test_dot_and_statuses_follow_real_runs(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    w = DagWidget(flow)
    assert w.nodes == ["raw", "doubled", "summary"]
    assert dot_edges(w.dot, w.nodes) == {
        ("raw", "doubled", "raw"),
        ("doubled", "summary", "doubled"),
        ("raw", "summary", "raw"),
    }
    # statuses never enter the DOT: a status change needs no new layout
    assert w.dot.count(STATUS_PLACEHOLDER) == 3 and "done" not in w.dot
    assert {s: i["status"] for s, i in w.statuses.items()} == dict.fromkeys(w.nodes, "stale")

    sent = Sent(w)
    dot_before = w.dot
    flow.run()
    assert {s: i["status"] for s, i in w.statuses.items()} == dict.fromkeys(w.nodes, "done")
    assert w.dot == dot_before
    assert w.statuses["summary"]["sizes"].keys() == {"total", "count"}
    assert w.statuses["doubled"]["duration"] >= 0
    # status changes went out as deltas, in order (several may share one batched message)
    w.flush()
    deltas = [(s, i["status"]) for m in sent.of_type("status") for s, i in m["updates"].items()]
    seen = [st for s, st in deltas if s == "doubled"]
    assert seen[-1] == "done" and seen == [s for s in ("queued", "running", "done") if s in seen]

    # a second flow on the same store (a fresh kernel): everything cached, with the time saved
    again = make_flow(store_dir)
    w2 = DagWidget(again)
    assert {s: i["status"] for s, i in w2.statuses.items()} == dict.fromkeys(w2.nodes, "cached")
    again.run()
    assert all(i["status"] == "cached" and "saved" in i for i in w2.statuses.values())


def test_done_means_computed_in_this_session(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    w = DagWidget(flow)  # watching from the start, as after %load_ext nbflow
    flow.run()
    flow.run()  # the engine reports every step cached: its entries are in the store
    w.flush()
    assert {s: i["status"] for s, i in w.statuses.items()} == dict.fromkeys(w.nodes, "done")
    assert all("saved" not in i for i in w.statuses.values())
    # a widget shown later on the same flow agrees
    assert show(flow).statuses == w.statuses or {
        s: i["status"] for s, i in show(flow).statuses.items()
    } == dict.fromkeys(w.nodes, "done")
    # another session (a fresh kernel) on the same store: served from the store, not computed
    other = make_flow(store_dir)
    w2 = DagWidget(other)
    other.run()
    w2.flush()
    assert {s: i["status"] for s, i in w2.statuses.items()} == dict.fromkeys(w2.nodes, "cached")


def test_an_edit_turns_descendants_stale_and_a_new_step_relayouts(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    flow.run()
    w = DagWidget(flow)

    @flow.step
    def doubled(raw: list[int]) -> list[int]:
        return [x + x for x in raw]

    w.flush()
    assert {s: i["status"] for s, i in w.statuses.items()} == {
        "raw": "done", "doubled": "stale", "summary": "stale"
    }

    @flow.step
    def plot(total: int) -> str:
        return f"total={total}"

    flow.run()
    assert w.nodes == ["raw", "doubled", "summary", "plot"]
    assert ("summary", "plot", "total") in dot_edges(w.dot, w.nodes)
    assert w.statuses["plot"]["status"] == "done"
    # early cutoff: doubled ran again (same output), summary was served from the store
    assert w.statuses["doubled"]["status"] == "done"
    assert w.statuses["summary"]["status"] == "cached"


def test_commands_and_details_from_the_front_end(
    store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow(store_dir)
    w = DagWidget(flow)
    sent = Sent(w)

    click(w, {"type": "run", "version": V, "step": "summary"})
    assert all(i["status"] == "done" for i in w.statuses.values())
    assert sent.of_type("result")[-1]["ok"] is True

    click(w, {"type": "details", "version": V, "step": "summary"})
    d = w.details
    assert w.selected == "summary" and d["step"] == "summary"
    assert d["inputs"] == ["doubled", "raw"] and d["outputs"] == ["total", "count"]
    assert d["previews"]["total"] == "90" and d["previews"]["count"] == "10"
    assert d["previews"]["raw"].startswith("[0, 1, 2")
    assert "def summary" in d["code"]

    click(w, {"type": "invalidate", "version": V, "step": "doubled"})
    assert w.statuses["doubled"]["status"] == "stale" and w.statuses["summary"]["status"] == "stale"
    click(w, {"type": "rerun", "version": V, "step": "doubled"})
    assert w.statuses["doubled"]["status"] == "done"
    assert w.statuses["summary"]["status"] in ("done", "cached")

    # unknown steps and malformed messages are ignored and logged; nothing runs
    before = dict(w.statuses)
    with caplog.at_level(logging.WARNING, logger="nbflow.protocol"):
        click(w, {"type": "rerun", "version": V, "step": "nope"})
        click(w, {"type": "rerun", "version": V + 1, "step": "doubled"})
        click(w, {"type": "exec", "version": V, "code": "1"})
        click(w, "rerun doubled")
    assert len(caplog.records) == 4
    assert w.statuses == before


def test_a_failure_shows_its_traceback(store_dir: Path) -> None:
    flow = nbflow.Flow("bad", store=store_dir)

    @flow.step
    def a() -> int:
        return 1

    @flow.step
    def b(a: int) -> float:
        return a / 0

    @flow.step
    def c(b: float) -> float:
        return b + 1

    w = DagWidget(flow)
    sent = Sent(w)
    click(w, {"type": "run", "version": V, "step": "c"})
    assert w.statuses["a"]["status"] == "done"
    assert w.statuses["b"]["status"] == "failed"
    assert "ZeroDivisionError" in w.statuses["b"]["error"]
    assert w.statuses["c"]["status"] == "stale"
    result = sent.of_type("result")[-1]
    assert result["ok"] is False and "b" in result["message"]
    assert w.message.startswith("failed: ")
    click(w, {"type": "details", "version": V, "step": "b"})
    assert "ZeroDivisionError" in w.details["error"]


def test_a_fast_run_is_batched(store_dir: Path) -> None:
    flow = nbflow.Flow("many", store=store_dir)
    for i in range(200):
        flow.add(Step(name=f"s{i}", inputs=(f"v{i - 1}",) if i else (), outputs=(f"v{i}",),
                      action=lambda values, i=i: {f"v{i}": i}, code=f"v{i} = {i}"))
    w = DagWidget(flow)
    sent = Sent(w)
    flow.run()
    w.flush()
    batches = sent.of_type("status")
    # 600 status changes (queued, running, done for each step), far fewer messages
    assert len(batches) < 60, len(batches)
    assert {s: i["status"] for s, i in w.statuses.items()} == {f"s{i}": "done" for i in range(200)}
    last: dict[str, str] = {}
    for m in batches:
        last.update({s: i["status"] for s, i in m["updates"].items()})
    assert set(last.values()) == {"done"}


def test_events_from_worker_threads(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    w = DagWidget(flow)
    t = threading.Thread(target=flow.run)
    t.start()
    t.join()
    assert all(i["status"] == "done" for i in w.statuses.values())


def test_show_returns_one_widget_per_flow(store_dir: Path) -> None:
    flow = make_flow(store_dir)
    a = show(flow)
    assert show(flow) is a
    a.close()
    b = show(flow)
    assert b is not a and b.comm is not None
    if "nbflow.notebook" not in sys.modules:
        with pytest.raises(nbflow.NbflowError, match="%load_ext nbflow"):
            show()


def weird_graph() -> Graph:
    g = Graph()

    def action(values: dict[str, Any]) -> dict[str, Any]:
        return {}

    g.add(Step(name="<script>", inputs=(), outputs=("<b>x</b>", 'a"b'), action=action, code=""))
    g.add(Step(name='q"\\l', inputs=("<b>x</b>", 'a"b'), outputs=("y",), action=action, code=""))
    return g


def test_names_are_escaped_in_dot() -> None:
    g = weird_graph()
    source, nodes = build_digraph(g, {"<script>": {"status": "done"}})
    assert nodes == ["<script>", 'q"\\l']
    assert "label=<" not in source  # never an HTML-like label
    if shutil.which("dot"):
        svg = graphviz.Source(source).pipe(format="svg", encoding="utf-8")
        assert "&lt;script&gt;" in svg and "<script>" not in svg
        assert "&lt;b&gt;x&lt;/b&gt;" in svg
        assert 'q&quot;\\l' in svg  # the backslash sequence shows literally
    else:  # the layout source still parses: graphviz quoted every name
        assert '"<script>\\n✓ done"' in source


def test_fallbacks_without_a_front_end(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = make_flow(store_dir)
    flow.run("doubled")
    w = DagWidget(flow)
    text = w._repr_mimebundle_()["text/plain"]
    assert text.splitlines()[0] == "flow 'demo': 3 steps"
    rows = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "✓ done" in rows["raw"] and "○ stale" in rows["summary"]
    assert "total, count" in rows["summary"]
    assert repr(w) == text

    if shutil.which("dot"):
        svg = w._repr_mimebundle_()["image/svg+xml"]
        assert svg.lstrip().startswith(("<?xml", "<svg", "<!--")) and "✓ done" in svg
    monkeypatch.setenv("PATH", "")
    bundle = w._repr_mimebundle_()
    assert "image/svg+xml" not in bundle and bundle["text/plain"] == text
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert render_svg(flow.graph, w.statuses) is None
    assert status_table("x", Graph(), {}) == "flow 'x': 0 steps\nstep  status  last run  saved  outputs"


def test_status_table_of_cached_steps_shows_time_saved(store_dir: Path) -> None:
    make_flow(store_dir).run()
    flow = make_flow(store_dir)
    w = DagWidget(flow)
    flow.run()
    rows = {line.split()[0]: line for line in w.text().splitlines()[2:]}
    assert "◆ cached" in rows["doubled"]


EXAMPLES = Path(__file__).resolve().parents[2] / "example_notebooks"


def execute(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the notebook in a fresh kernel in its folder, named as a Jupyter server names it."""
    from nbclient import NotebookClient

    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def dag_state(executed: Any) -> dict[str, Any]:
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    dags = [m["state"] for m in state.values() if m["model_name"] == "DagModel"]
    assert len(dags) == 1
    assert {m["model_module"] for m in state.values()} <= {
        "nbflow", "@jupyter-widgets/base", "@jupyter-widgets/controls"
    }
    return dict(dags[0])


def test_saved_widget_state_of_the_example_notebook_run_by_nbclient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real example notebook with ``%flow show`` at the end, run twice in fresh kernels."""
    shutil.copytree(EXAMPLES / "data", tmp_path / "data")
    nb = nbformat.read(str(EXAMPLES / "sales_analysis.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("%flow show"))
    path = tmp_path / "sales_analysis.ipynb"
    nbformat.write(nb, str(path))
    steps = ["load", "clean", "monthly", "chart", "top_products", "report"]

    first = execute(path, monkeypatch)
    dag = dag_state(first)
    assert dag["flow_name"] == "sales_analysis" and sorted(dag["nodes"]) == sorted(steps)
    assert dot_edges(dag["dot"], dag["nodes"]) == {
        ("load", "clean", "sales"), ("clean", "monthly", "orders"),
        ("monthly", "chart", "by_month"), ("clean", "top_products", "orders"),
        ("top_products", "report", "top_products"),
    }
    assert {s: i["status"] for s, i in dag["statuses"].items()} == dict.fromkeys(steps, "done")
    assert all(i["duration"] is not None for i in dag["statuses"].values())
    assert dag["statuses"]["clean"]["sizes"]["orders"] > 0
    # no front end: the output also carries the text table (and an SVG where dot exists)
    data = first.cells[-1].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"].startswith("flow 'sales_analysis': 6 steps")
    assert ("image/svg+xml" in data) == bool(shutil.which("dot"))

    # nbconvert HTML without the widget state (as JupyterLab saves by default): the fallback
    from nbconvert import HTMLExporter

    first.metadata.pop("widgets", None)
    body, _ = HTMLExporter().from_notebook_node(first)
    if shutil.which("dot"):
        assert 'data-mime-type="image/svg+xml"' in body.split("%flow show")[-1]
    else:
        assert "flow &#39;sales_analysis&#39;: 6 steps" in body

    # a fresh kernel on the same store: the saved state shows every step cached, time saved
    second = execute(path, monkeypatch)
    dag = dag_state(second)
    assert {s: i["status"] for s, i in dag["statuses"].items()} == dict.fromkeys(steps, "cached")
    assert all(i["saved"] is not None for i in dag["statuses"].values())


def test_widget_module_has_no_other_widget_importers() -> None:
    """widget.py is the only module that imports ipywidgets."""
    root = Path(nbflow.__file__).parent
    importers = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if re.search(r"^\s*(import ipywidgets|from ipywidgets)", p.read_text(), re.M)
    )
    assert importers == ["widget.py"]


def test_importing_the_core_does_not_import_widgets() -> None:
    code = "import sys, nbflow; nbflow.Flow('x'); print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_graphviz_escape_is_what_labels_use() -> None:
    # the guarantee the DOT builder relies on: escaped text is never an HTML label
    assert isinstance(graphviz.escape("<b>"), graphviz.quoting.NoHtml)


def test_throttle_calls_at_once_then_folds_pokes_into_one_call_per_interval() -> None:
    import threading
    import time

    from nbflow.widget import Throttle

    calls: list[str] = []
    done = threading.Event()

    def fn() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            done.set()

    t = Throttle(fn, 0.05)
    t.poke()
    assert calls == [threading.current_thread().name]  # a quiet spell: called at once
    for _ in range(50):
        t.poke()  # folded
    assert len(calls) == 1
    assert done.wait(2.0)
    assert calls[1] == "nbflow-throttle" and len(calls) == 2
    t.poke()
    t.flush()  # a pending call made now, on the caller's thread
    assert len(calls) == 3 and calls[2] == threading.current_thread().name
    time.sleep(0.1)
    assert len(calls) == 3  # nothing was pending any more
    t.poke()
    assert len(calls) == 4  # the interval has passed: at once
    t.poke()  # pending, for the helper thread...
    t.close()  # ...which stops without calling
    time.sleep(0.1)
    t.poke()
    assert len(calls) == 4
    thread = t._thread
    assert thread is not None
    thread.join(1.0)
    assert not thread.is_alive()

    # wake=False: pending until a flush or a waking poke; the helper thread is not involved
    calls.clear()
    done.clear()
    t = Throttle(fn, 0.05)
    t.poke(wake=False)
    t.poke(wake=False)
    time.sleep(0.1)
    assert calls == [] and t._thread is None
    t.flush()
    assert calls == [threading.current_thread().name]
    t.poke(wake=False)
    t.poke()  # within the interval: the helper makes the call at its end
    assert done.wait(2.0) and calls[1] == "nbflow-throttle"
    t.close()
