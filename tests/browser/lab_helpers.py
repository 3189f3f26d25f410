"""Page helpers for the browser tests: open a notebook, run cells, edit a cell's source, read
node and badge statuses. JupyterLab runs with ``expose_app_in_browser`` so tests can reach the
notebook model the way an extension does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def open_notebook(page: Any, lab: Any, name: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{name}?reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget")
    lab.wait_kernels_idle()
    page.wait_for_function(
        "() => { const p = window.jupyterapp.shell.currentWidget;"
        " const k = p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel;"
        " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }"
    )


def run_all(page: Any) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def run_cell(page: Any, index: int) -> None:
    page.evaluate(
        """async (i) => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.activeCellIndex = i;
            await window.jupyterapp.commands.execute('notebook:run-cell');
        }""",
        index,
    )


def set_source(page: Any, index: int, source: str) -> None:
    page.evaluate(
        """([i, src]) => {
            const panel = window.jupyterapp.shell.currentWidget;
            panel.content.widgets[i].model.sharedModel.setSource(src);
        }""",
        [index, source],
    )


def restart_kernel(page: Any, lab: Any) -> None:
    page.evaluate(
        "async () => { await window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart(); }"
    )
    lab.wait_kernels_idle()


def wait_idle(page: Any, lab: Any, timeout: float = 60) -> None:
    """Until the notebook has no queued or running cells and the kernel is idle."""
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const busy = panel.content.widgets.some(c =>
                c.model.type === 'code' && c.node.querySelector('.jp-InputPrompt')
                && c.node.querySelector('.jp-InputPrompt').textContent.includes('*'));
            return !busy && panel.sessionContext.session.kernel.status === 'idle';
        }""",
        timeout=timeout * 1000,
    )
    lab.wait_kernels_idle(timeout)


def node_statuses(page: Any, root: str = ".jp-Notebook .nbflow-dag") -> dict[str, str]:
    """step -> data-status of every node drawn under ``root`` (the first DAG view found)."""
    return dict(
        page.evaluate(
            """(root) => {
                const dag = document.querySelector(root);
                if (!dag) return {};
                const out = {};
                dag.querySelectorAll('g.node').forEach(g => { out[g.dataset.step] = g.dataset.status; });
                return out;
            }""",
            root,
        )
    )


def badge_statuses(page: Any) -> dict[str, str]:
    """step -> data-status of every cell badge in the current notebook."""
    return dict(
        page.evaluate(
            """() => {
                const out = {};
                document.querySelectorAll('.jp-Notebook .nbflow-badge').forEach(b => {
                    out[b.dataset.step] = b.dataset.status;
                });
                return out;
            }"""
        )
    )


def wait_statuses(
    page: Any, read: Any, expected: dict[str, set[str] | str], timeout: float = 30
) -> dict[str, str]:
    """Poll ``read(page)`` until every step has one of its expected statuses."""
    want = {k: ({v} if isinstance(v, str) else set(v)) for k, v in expected.items()}
    deadline = time.monotonic() + timeout
    got: dict[str, str] = {}
    while time.monotonic() < deadline:
        got = read(page)
        if all(got.get(k) in v for k, v in want.items()):
            return got
        time.sleep(0.1)
    raise AssertionError(f"statuses never became {want}; last seen {got}")


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=False)
    return path
