"""Issue 7 in a real browser: the live DAG widget in JupyterLab.

Run all -> every node `done`; edit a cell -> its descendants `stale`; click a node ->
"Rerun from here" -> running -> done/cached; names and values render as text; hover tooltip;
pan/zoom; a screenshot in test-artifacts/.
"""

from __future__ import annotations

import uuid
from typing import Any

from lab_helpers import (
    node_statuses,
    open_notebook,
    run_all,
    run_cell,
    screenshot,
    set_source,
    wait_idle,
    wait_statuses,
)

DAG = ".jp-Notebook .nbflow-dag"


def notebook_cells(store: str) -> list[str]:
    return [
        "import time\n"
        "import nbflow\n"
        "from nbflow.notebook.comm import attach_comm\n"
        "from nbflow.widget import show\n"
        f"flow = nbflow.Flow('e2e', store={store!r})\n"
        "attach_comm(flow, get_ipython())",
        "@flow.step\ndef load():\n    return list(range(10))",
        "@flow.step\ndef clean(load):\n    return [x for x in load if x % 2 == 0]",
        "@flow.step\ndef features(clean):\n    time.sleep(0.8)\n    return [x * 10 for x in clean]",
        '@flow.step(outputs=("total", "label"))\n'
        "def report(features, clean):\n"
        '    return sum(features), "<b>bold</b><script>window.__pwned = 1</script>"',
        "flow.run();",
        "show(flow)",
    ]


def test_dag_widget_live(page: Any, lab: Any) -> None:
    name = f"dag_{uuid.uuid4().hex[:6]}.ipynb"
    lab.write_notebook(name, notebook_cells(f".nbflow-{name}"))
    open_notebook(page, lab, name)
    run_all(page)

    # the DAG, laid out in the browser, every node done
    page.wait_for_selector(f"{DAG}[data-rendered='true'] g.node", timeout=60_000)
    steps = {"load", "clean", "features", "report"}
    wait_statuses(page, node_statuses, {s: "done" for s in steps})
    # edges carry the variable names that flow along them
    edges = page.evaluate(
        """(dag) => [...document.querySelectorAll(dag + ' g.edge')].map(g =>
            [g.dataset.from, g.dataset.to, [...g.querySelectorAll('text')].map(t => t.textContent).join(',')])""",
        DAG,
    )
    assert sorted(map(tuple, edges)) == sorted(
        [("load", "clean", "load"), ("clean", "features", "clean"),
         ("clean", "report", "clean"), ("features", "report", "features")]
    )
    # every node shows its status as a word (readable without colour)
    words = page.evaluate(
        "(dag) => [...document.querySelectorAll(dag + ' g.node text.nbflow-node-status')].map(t => t.textContent)",
        DAG,
    )
    assert words == ["✓ done"] * 4

    # hover: last duration, output sizes
    page.hover(f"{DAG} g.node[data-step='features']")
    tip = page.locator(f"{DAG} .nbflow-dag-tooltip")
    tip.wait_for(state="visible")
    assert "last run" in tip.inner_text() and "features" in tip.inner_text()

    # edit a cell and run it: it and its descendants turn stale, the ancestor stays done
    wait_idle(page, lab)
    set_source(page, 2, "@flow.step\ndef clean(load):\n    return [x for x in load if x % 3 == 0]")
    run_cell(page, 2)
    wait_statuses(
        page, node_statuses,
        {"load": "done", "clean": "stale", "features": "stale", "report": "stale"},
    )
    # the layout was not redone for status changes: same SVG element as before the edit?
    # (the graph did not change shape, so the drawing is reused)
    wait_idle(page, lab)

    # click a node: details pane with code, inputs/outputs and the three buttons
    page.click(f"{DAG} g.node[data-step='features']")
    details = page.locator(f"{DAG} .nbflow-details[data-step='features']")
    details.wait_for(state="visible")
    page.wait_for_selector(f"{DAG} .nbflow-details .nbflow-details-code")
    assert "time.sleep(0.8)" in details.locator(".nbflow-details-code").inner_text()
    assert details.locator(".nbflow-details-inputs code").all_inner_texts() == ["clean"]
    for label in ("Run", "Rerun from here", "Invalidate"):
        assert details.get_by_role("button", name=label, exact=True).count() == 1

    # "Rerun from here": features goes running, then done/cached; so do its descendants
    page.evaluate(
        """(dag) => {
            const g = document.querySelector(dag + " g.node[data-step='features']");
            window.__seen = [g.dataset.status];
            new MutationObserver(() => window.__seen.push(g.dataset.status))
                .observe(g, {attributes: true, attributeFilter: ['data-status']});
        }""",
        DAG,
    )
    details.get_by_role("button", name="Rerun from here", exact=True).click()
    wait_statuses(
        page, node_statuses,
        {s: {"done", "cached"} for s in steps}, timeout=30,
    )
    seen = page.evaluate("() => window.__seen")
    assert "running" in seen, seen
    assert seen[-1] in ("done", "cached"), seen

    # values render as text: a preview holding markup shows literally and runs nothing
    page.click(f"{DAG} g.node[data-step='report']")
    page.wait_for_selector(f"{DAG} .nbflow-details[data-step='report'] .nbflow-details-outputs")
    previews = page.locator(f"{DAG} .nbflow-details-outputs .nbflow-var-preview").all_inner_texts()
    assert any("<script>window.__pwned = 1</script>" in p for p in previews), previews
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(f"{DAG} .nbflow-details b").count() == 0

    # pan/zoom and fit-to-view
    vb0 = page.get_attribute(f"{DAG} svg.nbflow-dag-svg", "viewBox")
    page.click(f"{DAG} .nbflow-dag-zoom-in")
    vb1 = page.get_attribute(f"{DAG} svg.nbflow-dag-svg", "viewBox")
    assert vb1 != vb0
    page.click(f"{DAG} .nbflow-dag-fit")
    assert page.get_attribute(f"{DAG} svg.nbflow-dag-svg", "viewBox") == vb0

    page.hover(f"{DAG} g.node[data-step='report']")
    page.locator(DAG).first.scroll_into_view_if_needed()
    screenshot(page, "dag_widget.png")
    assert not page.console.errors, page.console.errors  # type: ignore[attr-defined]
