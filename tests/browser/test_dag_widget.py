"""Issue 7 in a real browser: the live DAG widget (``%flow show``) of a real example notebook.

Run all -> every node `done`; edit a cell and run it -> its descendants `stale`; click a node ->
"Rerun from here" -> running -> done/cached; names and values render as text; hover tooltip;
pan/zoom; a screenshot in test-artifacts/.
"""

from __future__ import annotations

import uuid
from typing import Any

from lab_helpers import (
    cell_index,
    copy_example,
    node_statuses,
    open_notebook,
    run_all,
    run_cell,
    screenshot,
    scroll_to,
    set_source,
    source_of,
    wait_idle,
    wait_statuses,
)

DAG = ".jp-Notebook .nbflow-dag"
STEPS = ("load", "clean", "monthly", "chart", "top_products", "report")
MARKUP = "<b>bold</b><script>window.__pwned = 1</script>"


def test_dag_widget_live(page: Any, lab: Any) -> None:
    folder = f"dag_{uuid.uuid4().hex[:6]}"
    copy_example(lab, "sales_analysis.ipynb", folder, extra_cells=["%flow show"])
    open_notebook(page, lab, f"{folder}/sales_analysis.ipynb")
    run_all(page)

    # the DAG, laid out in the browser by WebAssembly Graphviz, every node done
    page.wait_for_selector(f"{DAG}[data-rendered='true'] g.node", timeout=60_000)
    wait_statuses(page, node_statuses, dict.fromkeys(STEPS, "done"), timeout=60)
    assert set(node_statuses(page)) == set(STEPS)
    # edges carry the variable names that flow along them
    edges = page.evaluate(
        """(dag) => [...document.querySelectorAll(dag + ' g.edge')].map(g =>
            [g.dataset.from, g.dataset.to, [...g.querySelectorAll('text')].map(t => t.textContent).join(',')])""",
        DAG,
    )
    assert sorted(map(tuple, edges)) == sorted([
        ("load", "clean", "sales"), ("clean", "monthly", "orders"),
        ("monthly", "chart", "by_month"), ("clean", "top_products", "orders"),
        ("top_products", "report", "top_products"),
    ])
    # every node shows its status as an icon and a word (readable without colour)
    words = page.evaluate(
        "(dag) => [...document.querySelectorAll(dag + ' g.node text.nbflow-node-status')].map(t => t.textContent)",
        DAG,
    )
    assert words == ["✓ done"] * len(STEPS)

    # hover: last duration and output sizes
    page.hover(f"{DAG} g.node[data-step='clean']")
    tip = page.locator(f"{DAG} .nbflow-dag-tooltip")
    tip.wait_for(state="visible")
    assert "last run" in tip.inner_text() and "orders" in tip.inner_text()

    # edit a cell and run it: its descendant turns stale, the rest stays done
    wait_idle(page, lab)
    monthly = cell_index(page, "%%step monthly")
    set_source(page, monthly, source_of(page, monthly).replace(
        "%%step monthly\n", "%%step monthly\nimport time\ntime.sleep(0.8)\n"))
    run_cell(page, monthly)
    wait_statuses(page, node_statuses, {
        "monthly": "done", "chart": "stale",
        "load": "done", "clean": "done", "top_products": "done", "report": "done",
    }, timeout=30)
    wait_idle(page, lab)

    # click a node: details pane with code, inputs/outputs and the three buttons
    scroll_to(page, -1, "end")
    page.click(f"{DAG} g.node[data-step='monthly']")
    details = page.locator(f"{DAG} .nbflow-details[data-step='monthly']")
    details.wait_for(state="visible")
    page.wait_for_selector(f"{DAG} .nbflow-details .nbflow-details-code")
    assert "time.sleep(0.8)" in details.locator(".nbflow-details-code").inner_text()
    assert details.locator(".nbflow-details-inputs code").all_inner_texts() == ["orders"]
    assert details.locator(".nbflow-details-outputs code").all_inner_texts() == ["by_month"]
    for label in ("Run", "Rerun from here", "Invalidate"):
        assert details.get_by_role("button", name=label, exact=True).count() == 1

    # "Rerun from here": monthly goes running, then done/cached; so does its descendant
    page.evaluate(
        """(dag) => {
            const g = document.querySelector(dag + " g.node[data-step='monthly']");
            window.__seen = [g.dataset.status];
            new MutationObserver(() => window.__seen.push(g.dataset.status))
                .observe(g, {attributes: true, attributeFilter: ['data-status']});
        }""",
        DAG,
    )
    details.get_by_role("button", name="Rerun from here", exact=True).click()
    wait_statuses(page, node_statuses, {"monthly": "done", "chart": {"done", "cached"}}, timeout=30)
    seen = page.evaluate("() => window.__seen")
    assert "running" in seen, seen
    assert seen.index("running") < len(seen) - 1 and seen[-1] == "done", seen
    wait_idle(page, lab)

    # values render as text: an output holding markup shows literally and runs nothing
    report = cell_index(page, "%%step report")
    set_source(page, report, source_of(page, report) + f"\nbanner = {MARKUP!r}")
    run_cell(page, report)
    wait_idle(page, lab)
    scroll_to(page, -1, "end")
    page.click(f"{DAG} g.node[data-step='report']")
    page.wait_for_selector(f"{DAG} .nbflow-details[data-step='report'] .nbflow-details-outputs")
    page.wait_for_function(
        """(dag) => [...document.querySelectorAll(dag + ' .nbflow-details-outputs .nbflow-var-preview')]
            .some(p => p.textContent.includes('<script>'))""",
        arg=DAG,
    )
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(f"{DAG} .nbflow-details b").count() == 0

    # pan/zoom and fit-to-view
    svg = f"{DAG} svg.nbflow-dag-svg"
    fitted = page.get_attribute(svg, "viewBox")
    page.click(f"{DAG} .nbflow-dag-zoom-in")
    assert page.get_attribute(svg, "viewBox") != fitted
    page.click(f"{DAG} .nbflow-dag-fit")
    assert page.get_attribute(svg, "viewBox") == fitted

    page.click(f"{DAG} g.node[data-step='monthly']")
    page.hover(f"{DAG} g.node[data-step='clean']")
    screenshot(page, "dag_widget.png")
    assert not page.console.errors, page.console.errors  # type: ignore[attr-defined]
    console_errors = [m for m in page.console.messages if m.startswith("error:")]  # type: ignore[attr-defined]
    assert not console_errors, console_errors


HOSTILE = '''\
import nbflow
from nbflow.graph import Step
from nbflow.widget import show
evil = "<img src=x onerror=window.__pwned=1>"
flow = nbflow.Flow("hostile", store=".store-hostile")
# names the engine would refuse; a view must still show them as text
flow.graph.add(Step(name=evil, inputs=(), outputs=("<b>v</b>",),
                    action=lambda values: {"<b>v</b>": evil}, code="1"))
flow.graph.add(Step(name='q"\\\\l', inputs=("<b>v</b>",), outputs=("y",),
                    action=lambda values: {"y": 1}, code="2"))
show(flow)'''


def test_names_render_as_text(page: Any, lab: Any) -> None:
    name = f"hostile_{uuid.uuid4().hex[:6]}.ipynb"
    lab.write_notebook(name, [HOSTILE])
    open_notebook(page, lab, name)
    run_all(page)
    page.wait_for_selector(f"{DAG}[data-rendered='true'] g.node", timeout=60_000)
    names = page.evaluate(
        "(dag) => [...document.querySelectorAll(dag + ' g.node text.nbflow-node-name')].map(t => t.textContent)",
        DAG,
    )
    assert names == ["<img src=x onerror=window.__pwned=1>", 'q"\\l']
    label = page.evaluate(
        "(dag) => document.querySelector(dag + ' g.edge text').textContent", DAG
    )
    assert label == "<b>v</b>"
    page.click(f"{DAG} g.node >> nth=0")
    page.wait_for_selector(f"{DAG} .nbflow-details .nbflow-details-title")
    assert page.locator(f"{DAG} .nbflow-details-title").inner_text().startswith("<img")
    assert page.locator(f"{DAG} img, {DAG} b").count() == 0
    assert page.evaluate("() => window.__pwned") is None
