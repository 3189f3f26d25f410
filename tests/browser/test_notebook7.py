"""Notebook 7 uses the same extension system: the same example notebook shows its badges, the
DAG widget, the toolbar commands and the side panel there too."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from lab_helpers import (
    badge_statuses,
    copy_example,
    node_statuses,
    scroll_to,
    wait_idle,
    wait_statuses,
)

STEPS = ("load", "clean", "monthly", "chart", "top_products", "report")


def test_notebook7(page: Any, lab: Any) -> None:
    try:
        import notebook
    except ImportError:
        pytest.fail("Notebook 7 is not installed: `pip install 'notebook>=7'` (test extra)",
                    pytrace=False)
    assert int(notebook.__version__.split(".")[0]) >= 7
    folder = f"nb7_{uuid.uuid4().hex[:6]}"
    copy_example(lab, "sales_analysis.ipynb", folder, extra_cells=["%flow show"])
    page.goto(f"{lab.url}/notebooks/{folder}/sales_analysis.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
    lab.wait_kernels_idle()
    page.wait_for_function(
        "() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel;"
        " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }"
    )
    assert page.locator(".nbflow-run-stale").count() == 1
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_idle(page, lab, timeout=90)
    scroll_to(page, -1, "end")
    page.wait_for_selector(".jp-Notebook .nbflow-dag[data-rendered='true'] g.node", timeout=60_000)
    wait_statuses(page, node_statuses, dict.fromkeys(STEPS, "done"))
    page.evaluate("() => window.jupyterapp.shell.activateById('nbflow-panel')")
    page.wait_for_selector("#nbflow-panel .nbflow-dag[data-rendered='true'] g.node")
    wait_statuses(page, lambda p: node_statuses(p, "#nbflow-panel .nbflow-dag"),
                  dict.fromkeys(STEPS, "done"))
    scroll_to(page, 0)
    wait_statuses(page, badge_statuses, dict.fromkeys(STEPS, "done"))
    nbflow_errors = [e for e in page.console.errors if "nbflow" in e]  # type: ignore[attr-defined]
    assert not nbflow_errors, nbflow_errors
