"""Issue 8 in a real browser: badges on step cells, the "nbflow" side panel, commands.

Run all -> every step cell `done`; fresh kernel -> `cached`; edit a cell and run it -> its
descendants `stale` with dimmed output; "Run all stale steps" from the toolbar -> done/cached;
the side panel shows the same statuses; badges survive scrolling a windowed notebook and a page
reload, and never touch the notebook file. Screenshot in test-artifacts/.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from lab_helpers import (
    badge_statuses,
    node_statuses,
    open_notebook,
    restart_kernel,
    run_all,
    run_cell,
    screenshot,
    set_source,
    wait_idle,
    wait_statuses,
)

PANEL = "#nbflow-panel"
STEP_CELLS = {"load": 1, "clean": 2, "features": 3, "report": 4}
FILLERS = 30


def notebook_cells(store: str) -> list[str]:
    return [
        "import time\n"
        "import nbflow\n"
        "from nbflow.notebook.comm import attach_comm\n"
        f"flow = nbflow.Flow('lab', store={store!r})\n"
        "attach_comm(flow, get_ipython())",
        "@flow.step\ndef load():\n    return list(range(10))\nprint('load: 10 rows')",
        "@flow.step\ndef clean(load):\n    return [x for x in load if x % 2 == 0]\nprint('clean: evens')",
        "@flow.step\ndef features(clean):\n    time.sleep(0.3)\n    return [x * 10 for x in clean]\n"
        "print('features: x10')",
        "@flow.step\ndef report(features):\n    return sum(features)\nprint('report: sum')",
        "flow.run();",
        *[f"# filler cell {i}\n" + "x = 1\n" * 6 for i in range(FILLERS)],
    ]


def panel_statuses(page: Any) -> dict[str, str]:
    return node_statuses(page, f"{PANEL} .nbflow-dag")


def output_opacity(page: Any, index: int) -> float:
    return float(
        page.evaluate(
            """(i) => {
                const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
                return getComputedStyle(cell.node.querySelector('.jp-Cell-outputWrapper')).opacity;
            }""",
            index,
        )
    )


def scroll_to(page: Any, index: int) -> None:
    page.evaluate(
        """async (i) => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            await nb.scrollToItem(i, 'start');
        }""",
        index,
    )
    page.wait_for_timeout(300)


def test_badges_panel_and_commands(page: Any, lab: Any) -> None:
    name = f"lab_{uuid.uuid4().hex[:6]}.ipynb"
    path = lab.write_notebook(name, notebook_cells(f".nbflow-{name}"))
    open_notebook(page, lab, name)
    assert page.locator(".nbflow-run-stale").count() == 1  # the toolbar button is there

    # run all: every step cell carries a badge with its step name and `done`
    run_all(page)
    wait_idle(page, lab)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, {s: "done" for s in STEP_CELLS})
    for step, index in STEP_CELLS.items():
        badge = page.evaluate(
            """(i) => { const b = window.jupyterapp.shell.currentWidget.content.widgets[i]
                .node.querySelector('.nbflow-badge'); return b && b.textContent; }""",
            index,
        )
        assert badge is not None and step in badge and "done" in badge, (step, badge)

    # the side panel shows the same statuses
    page.click(".jp-SideBar.jp-mod-right .lm-TabBar-tab[title*='nbflow']")
    page.wait_for_selector(f"{PANEL} .nbflow-dag[data-rendered='true'] g.node")
    wait_statuses(page, panel_statuses, {s: "done" for s in STEP_CELLS})

    # clicking a node in the panel scrolls to (and activates) its cell
    scroll_to(page, FILLERS)
    page.click(f"{PANEL} g.node[data-step='clean']")
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === 2"
    )
    page.wait_for_selector(f"{PANEL} .nbflow-details[data-step='clean'] .nbflow-details-code")

    # badges survive scrolling a windowed notebook (cells leave and re-enter the DOM)
    scroll_to(page, 5 + FILLERS)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, {s: "done" for s in STEP_CELLS})

    # a fresh kernel: every step is served from the store -> `cached (saved ...)`
    restart_kernel(page, lab)
    run_all(page)
    wait_idle(page, lab)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, {s: "cached" for s in STEP_CELLS})
    features_badge = page.locator(".jp-Notebook .nbflow-badge[data-step='features']").inner_text()
    assert "cached" in features_badge and "(saved" in features_badge, features_badge
    wait_statuses(page, panel_statuses, {s: "cached" for s in STEP_CELLS})

    # edit a cell and run it: its descendants turn stale and their outputs are dimmed
    set_source(page, 2, "@flow.step\ndef clean(load):\n    return [x for x in load if x % 3 == 0]\n"
               "print('clean: thirds')")
    run_cell(page, 2)
    wait_idle(page, lab)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, {"load": "cached", "features": "stale", "report": "stale"})
    assert output_opacity(page, 3) < 0.6 and output_opacity(page, 4) < 0.6
    assert output_opacity(page, 1) == 1.0
    wait_statuses(page, panel_statuses, {"features": "stale", "report": "stale"})

    # "Run all stale steps" from the notebook toolbar brings them back
    page.click(".nbflow-run-stale button, .nbflow-run-stale")
    wait_statuses(page, badge_statuses, {s: {"done", "cached"} for s in STEP_CELLS})
    assert output_opacity(page, 3) == 1.0
    wait_statuses(page, panel_statuses, {s: {"done", "cached"} for s in STEP_CELLS})
    assert badge_statuses(page) == panel_statuses(page)

    # the cell context menu offers the step commands
    page.click(".jp-Notebook .nbflow-badge[data-step='clean']", button="right")
    menu = page.locator(".lm-Menu").last
    menu.wait_for(state="visible")
    labels = menu.locator(".lm-Menu-itemLabel").all_inner_texts()
    assert any(t.startswith("Rerun from This Step") for t in labels), labels
    assert "Run All Stale Steps" in labels, labels
    page.keyboard.press("Escape")

    # the keyboard shortcut for "Run all stale steps"
    set_source(page, 3, "@flow.step\ndef features(clean):\n    return [x * 100 for x in clean]\n"
               "print('features: x100')")
    run_cell(page, 3)
    wait_statuses(page, badge_statuses, {"report": "stale"})
    page.click(".jp-Notebook .jp-Cell:nth-child(6) .jp-InputPrompt")
    page.keyboard.press("Control+Shift+Enter")
    wait_statuses(page, badge_statuses, {s: {"done", "cached"} for s in STEP_CELLS})
    wait_idle(page, lab)

    screenshot(page, "lab_badges_panel.png")

    # reload the page: the badges come back from the kernel
    before = badge_statuses(page)
    page.reload()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
    wait_statuses(page, badge_statuses, before)

    # badges and panels never write to the notebook file
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(500)
    saved = json.loads(path.read_text())
    assert "nbflow" not in json.dumps([c.get("metadata", {}) for c in saved["cells"]])
    assert "nbflow" not in json.dumps(saved.get("metadata", {}))
    assert not page.console.errors, page.console.errors  # type: ignore[attr-defined]
