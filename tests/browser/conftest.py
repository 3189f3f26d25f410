"""Real-browser fixtures: one JupyterLab server on a free loopback port and one Debian Chromium
(driven by Playwright) per session; a fresh browser context per test.

These tests never skip: without Chromium they fail and say how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


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
        return list(_get_json(self.url + "/api/kernels"))

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


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
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
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "full"}))
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
    yield Lab(url=url, root=root, proc=proc, log=log)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: browser tests need it. Install it with "
            "`apt-get install -y chromium` (scripts/setup.sh does), or point NBFLOW_CHROMIUM at "
            "a Chromium binary.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Console:
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Any, lab: Lab) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    console = Console()
    pg.on("console", lambda m: console.messages.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: console.errors.append(str(e)))
    pg.console = console  # type: ignore[attr-defined]
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    lab.shutdown_kernels()
