"""Helpers for the browser tests and the widget benchmark: start JupyterLab and Chromium, open
a notebook, run cells, edit a cell's source, read node and badge statuses. JupyterLab runs with
``expose_app_in_browser`` so tests can reach the notebook model the way an extension does."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

CHROMIUM = os.environ.get("NBFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def kernels(self) -> list[dict[str, Any]]:
        # the server can answer 500 while a kernel is still being started; ask again shortly
        for attempt in range(20):
            try:
                return list(_get_json(self.url + "/api/kernels"))
            except urllib.error.HTTPError as e:
                if e.code < 500 or attempt == 19:
                    raise
                time.sleep(0.25)
        raise AssertionError("unreachable")

    def wait_kernels_idle(self, timeout: float = 60, count: int = 1) -> None:
        """Until at least ``count`` kernels are idle with a connected front end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ks = self.kernels()
            if len(ks) >= count and all(
                k.get("execution_state") == "idle" and k.get("connections", 0) > 0 for k in ks
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"kernels not idle after {timeout}s: {self.kernels()}")

    def shutdown_kernels(self) -> None:
        for k in self.kernels():
            req = urllib.request.Request(self.url + f"/api/kernels/{k['id']}", method="DELETE")
            urllib.request.urlopen(req, timeout=10).close()
        for s in _get_json(self.url + "/api/sessions"):
            req = urllib.request.Request(self.url + f"/api/sessions/{s['id']}", method="DELETE")
            try:
                urllib.request.urlopen(req, timeout=10).close()
            except Exception:
                pass

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        path = self.root / name
        nbformat.write(nb, str(path))
        return path


@contextlib.contextmanager
def start_lab(windowing: str = "full") -> Iterator[Lab]:
    """A JupyterLab server on a free loopback port, with private settings, stopped on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="nbflow-lab-"))
    root = tmp / "root"
    settings = tmp / "settings"
    for d in (root, settings, tmp / "runtime", tmp / "workspaces"):
        d.mkdir(parents=True)
    notify = settings / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True)
    (notify / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # the windowed notebook (cells leave the DOM when scrolled away): the hard case for badges
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": windowing}))
    port = _free_port()
    env = dict(os.environ)
    env.update(
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        PYTHONUNBUFFERED="1",
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    log = tmp / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                "--ServerApp.token=", "--ServerApp.password=",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
                "--ServerApp.disable_check_xsrf=True",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.expose_app_in_browser=True",
                "--JupyterNotebookApp.expose_app_in_browser=True",
            ],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()}")
        try:
            _get_json(url + "/api/status")
            break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"JupyterLab did not start in 90 s:\n{log.read_text()}") from None
            time.sleep(0.2)
    try:
        yield Lab(url=url, root=root, proc=proc, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def launch_chromium(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"Chromium is missing at {CHROMIUM}: browser tests need it. Install it with "
            "`apt-get install -y chromium` (scripts/setup.sh does), or point NBFLOW_CHROMIUM at "
            "a Chromium binary."
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


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


EXAMPLES = Path(__file__).resolve().parents[2] / "example_notebooks"


def copy_example(lab: Any, name: str, folder: str, extra_cells: Sequence[str] = ()) -> Path:
    """Copy an example notebook (and its data) into its own folder of the server's root, so its
    ``.nbflow`` store is its own; ``extra_cells`` are appended. Returns the notebook's path."""
    target = lab.root / folder
    target.mkdir(parents=True)
    if (EXAMPLES / "data").is_dir():
        shutil.copytree(EXAMPLES / "data", target / "data")
    nb = nbformat.read(str(EXAMPLES / name), as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in extra_cells]
    path = target / name
    nbformat.write(nb, str(path))
    return path


def cell_index(page: Any, needle: str) -> int:
    """The index of the first cell whose source contains ``needle``."""
    index = page.evaluate(
        """(needle) => window.jupyterapp.shell.currentWidget.content.widgets
            .findIndex(c => c.model.sharedModel.getSource().includes(needle))""",
        needle,
    )
    assert index >= 0, f"no cell contains {needle!r}"
    return int(index)


def source_of(page: Any, index: int) -> str:
    return str(
        page.evaluate(
            "(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource()",
            index,
        )
    )


def scroll_to(page: Any, index: int, align: str = "start") -> None:
    """Scroll the notebook so that cell ``index`` is in view (a windowed notebook renders it)."""
    page.evaluate(
        """async ([i, align]) => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            await nb.scrollToItem(i < 0 ? nb.widgets.length + i : i, align);
        }""",
        [index, align],
    )
    page.wait_for_timeout(300)
