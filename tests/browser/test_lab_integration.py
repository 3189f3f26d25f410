"""Issue 8 in a real browser: badges on step cells, the "nbflow" side panel, commands, on a
real example notebook (``%load_ext nbflow`` and ``%%step`` cells).

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
    cell_index,
    copy_example,
    node_statuses,
    open_notebook,
    restart_kernel,
    run_all,
    run_cell,
    screenshot,
    scroll_to,
    set_source,
    source_of,
    wait_idle,
    wait_statuses,
)

PANEL = "#nbflow-panel"
STEPS = ("load", "clean", "monthly", "chart", "top_products", "report")
FILLERS = 24
# filler cells make the notebook long enough that cells leave the DOM when scrolled away
FILLER = "# a plain cell\n" + "x = 1\n" * 8


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


def step_cell(page: Any, step: str) -> int:
    return cell_index(page, "def top_products" if step == "top_products" else f"%%step {step}")


def badge_text(page: Any, step: str) -> str:
    return str(page.locator(f".jp-Notebook .nbflow-badge[data-step='{step}']").inner_text())


def test_badges_panel_and_commands(page: Any, lab: Any) -> None:
    folder = f"lab_{uuid.uuid4().hex[:6]}"
    path = copy_example(lab, "sales_analysis.ipynb", folder, extra_cells=[FILLER] * FILLERS)
    open_notebook(page, lab, f"{folder}/sales_analysis.ipynb")
    assert page.locator(".nbflow-run-stale").count() == 1  # the toolbar button is there
    last = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length") - 1

    # run all: every step cell carries a badge with its step name and `done`
    run_all(page)
    wait_idle(page, lab, timeout=90)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, dict.fromkeys(STEPS, "done"))
    for step in STEPS:
        badge = page.evaluate(
            """(i) => { const b = window.jupyterapp.shell.currentWidget.content.widgets[i]
                .node.querySelector('.nbflow-badge'); return b && b.textContent; }""",
            step_cell(page, step),
        )
        assert badge is not None and step in badge and "done" in badge, (step, badge)

    # the side panel shows the same statuses
    page.click(".jp-SideBar.jp-mod-right .lm-TabBar-tab[title*='nbflow']")
    page.wait_for_selector(f"{PANEL} .nbflow-dag[data-rendered='true'] g.node")
    wait_statuses(page, panel_statuses, dict.fromkeys(STEPS, "done"))

    # clicking a node in the panel scrolls to (and activates) its cell
    scroll_to(page, last)
    page.click(f"{PANEL} g.node[data-step='clean']")
    clean = step_cell(page, "clean")
    page.wait_for_function(
        f"() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === {clean}"
    )
    page.wait_for_selector(f"{PANEL} .nbflow-details[data-step='clean'] .nbflow-details-code")

    # badges survive scrolling a windowed notebook (cells leave and re-enter the DOM)
    scroll_to(page, last)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, dict.fromkeys(STEPS, "done"))

    # a kernel restart keeps the badges (marked as from the earlier kernel) until the new
    # kernel reports; then every step is served from the store -> `cached (saved ...)`
    restart_kernel(page, lab)
    assert badge_statuses(page) == dict.fromkeys(STEPS, "done")
    page.wait_for_selector(".jp-Notebook .nbflow-badges.nbflow-badges-outdated")
    run_all(page)
    wait_idle(page, lab, timeout=90)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, dict.fromkeys(STEPS, "cached"))
    assert "cached" in badge_text(page, "clean") and "(saved" in badge_text(page, "clean")
    wait_statuses(page, panel_statuses, dict.fromkeys(STEPS, "cached"))

    # edit a cell and run it: its descendants turn stale and their outputs are dimmed
    set_source(page, clean, source_of(page, clean).replace("units >= min_units", "units > min_units"))
    run_cell(page, clean)
    wait_idle(page, lab)
    scroll_to(page, 0)
    descendants = ("monthly", "chart", "top_products", "report")
    wait_statuses(page, badge_statuses, {"load": "cached", "clean": "done",
                                         **dict.fromkeys(descendants, "stale")})
    for step in ("monthly", "chart", "report"):  # (the function-step cell has no output)
        assert output_opacity(page, step_cell(page, step)) < 0.6, step
    assert output_opacity(page, step_cell(page, "load")) == 1.0
    wait_statuses(page, panel_statuses, dict.fromkeys(descendants, "stale"))
    scroll_to(page, clean)
    screenshot(page, "lab_stale_dimmed.png")

    # "Run all stale steps" from the notebook toolbar brings them back
    page.click(".nbflow-run-stale button, .nbflow-run-stale")
    wait_statuses(page, badge_statuses, dict.fromkeys(STEPS, {"done", "cached"}), timeout=60)
    assert output_opacity(page, step_cell(page, "monthly")) == 1.0
    wait_statuses(page, panel_statuses, dict.fromkeys(STEPS, {"done", "cached"}))
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
    wait_idle(page, lab)
    monthly = step_cell(page, "monthly")
    set_source(page, monthly, source_of(page, monthly).replace('"%Y-%m"', '"%Y/%m"'))
    run_cell(page, monthly)
    wait_idle(page, lab)
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, {"monthly": "done", "chart": "stale"})
    page.click(".jp-Notebook .nbflow-badge[data-step='load']")
    page.keyboard.press("Control+Shift+Enter")
    wait_statuses(page, badge_statuses, dict.fromkeys(STEPS, {"done", "cached"}), timeout=60)
    wait_idle(page, lab)

    scroll_to(page, clean)
    screenshot(page, "lab_badges_panel.png")

    # reload the page: the badges come back from the kernel
    before = badge_statuses(page)
    page.reload()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, before)

    # export to a flow script from the toolbar (the kernel reports the exporter)
    page.click(".nbflow-export-script button, .nbflow-export-script")
    script = path.with_name("sales_analysis_flow.py")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-toast-message, .Toastify__toast')]"
        ".some(t => t.textContent.includes('sales_analysis_flow.py'))",
        timeout=30_000,
    )
    assert script.is_file() and "flow" in script.read_text()

    # badges and the panel never write to the notebook file
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(500)
    saved = json.loads(path.read_text())
    assert "nbflow" not in json.dumps([c.get("metadata", {}) for c in saved["cells"]])
    assert "nbflow" not in json.dumps(saved.get("metadata", {}))
    assert not page.console.errors, page.console.errors  # type: ignore[attr-defined]
    console_errors = [m for m in page.console.messages if m.startswith("error:")]  # type: ignore[attr-defined]
    assert not console_errors, console_errors


def test_panel_follows_notebook_and_cells_match_by_source(page: Any, lab: Any) -> None:
    """Without a cell id (a front end that sends none), a step's cell is found by its source;
    badges follow cells that are moved; the panel follows the active notebook."""
    folder = f"src_{uuid.uuid4().hex[:6]}"
    (lab.root / folder).mkdir()
    lab.write_notebook(f"{folder}/a.ipynb", ["%load_ext nbflow",
                                             "%%step one\nimport time\ntime.sleep(0.4)\nx = 1",
                                             "%%step two\ny = x + 1"])
    lab.write_notebook(f"{folder}/b.ipynb", ["1 + 1"])
    open_notebook(page, lab, f"{folder}/a.ipynb")
    run_cell(page, 0)
    wait_idle(page, lab)
    # run the step cells' code as a client without cell ids would
    page.evaluate(
        """async () => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel.sessionContext.session.kernel;
            for (const i of [1, 2]) {
                const code = panel.content.widgets[i].model.sharedModel.getSource();
                await kernel.requestExecute({code}).done;
            }
        }"""
    )
    wait_statuses(page, badge_statuses, {"one": "done", "two": "done"})
    badge_cell = page.evaluate(
        """() => window.jupyterapp.shell.currentWidget.content.widgets
            .findIndex(c => c.node.querySelector(".nbflow-badge[data-step='two']"))"""
    )
    assert badge_cell == 2

    # moving a cell re-creates its widget: the badge follows it
    page.evaluate(
        """async () => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.activeCellIndex = 2;
            await window.jupyterapp.commands.execute('notebook:move-cell-up');
        }"""
    )
    page.wait_for_function(
        """() => window.jupyterapp.shell.currentWidget.content.widgets[1]
            .node.querySelector(".nbflow-badge[data-step='two']") !== null"""
    )

    # the toolbar's step commands act on the active cell's step
    page.click(".jp-Notebook .nbflow-badge[data-step='one']")
    page.click(".nbflow-invalidate-step button, .nbflow-invalidate-step")
    wait_statuses(page, badge_statuses, {"one": "stale", "two": "stale"})
    page.click(".nbflow-run-step button, .nbflow-run-step")
    # `one` runs again; its output is unchanged, so `two` is up to date again (early cutoff)
    wait_statuses(page, badge_statuses, {"one": "done", "two": {"done", "cached"}})
    page.evaluate(
        """() => {
            const b = document.querySelector(".jp-Notebook .nbflow-badge[data-step='one']");
            window.__seen = [b.dataset.status];
            new MutationObserver(() => window.__seen.push(b.dataset.status))
                .observe(b, {attributes: true, attributeFilter: ['data-status']});
        }"""
    )
    page.click(".jp-Notebook .nbflow-badge[data-step='one']")
    page.click(".nbflow-rerun-step button, .nbflow-rerun-step")
    page.wait_for_function("() => window.__seen.includes('running')")
    wait_statuses(page, badge_statuses, {"one": "done", "two": {"done", "cached"}})
    assert page.evaluate("() => window.__seen")[-1] in ("done", "cached")

    # the side panel follows the active notebook
    page.evaluate("() => window.jupyterapp.shell.activateById('nbflow-panel')")
    wait_statuses(page, panel_statuses, {"one": "done", "two": "done"})
    page.evaluate(
        f"() => window.jupyterapp.commands.execute('docmanager:open', {{path: '{folder}/b.ipynb'}})"
    )
    page.wait_for_function(
        "() => document.querySelector('#nbflow-panel .nbflow-panel-title').textContent === 'b.ipynb'"
    )
    assert panel_statuses(page) == {}
    assert "not loaded" in page.locator("#nbflow-panel .nbflow-panel-note").inner_text()
    page.evaluate(
        f"() => window.jupyterapp.commands.execute('docmanager:open', {{path: '{folder}/a.ipynb'}})"
    )
    wait_statuses(page, panel_statuses, {"one": "done", "two": "done"})
    assert not page.console.errors, page.console.errors  # type: ignore[attr-defined]
    console_errors = [m for m in page.console.messages if m.startswith("error:")]  # type: ignore[attr-defined]
    assert not console_errors, console_errors
