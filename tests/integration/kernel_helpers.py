"""Helpers for tests that execute real notebooks in real kernels (nbclient + ipykernel).

Imported by ``conftest.py`` (fixtures) and by the tests themselves (plain functions).

``CellIdClient`` sends each cell's id with its execute_request, as JupyterLab does (plain nbclient
does not), so step cells can be mapped to notebook cells. ``run_notebook`` starts a fresh kernel
in the notebook's folder with the repository importable and ``JPY_SESSION_NAME`` set to the
notebook's path, as a Jupyter server would.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


class CellIdClient(NotebookClient):
    """A NotebookClient that puts ``metadata.cellId`` into every execute_request."""

    async def async_execute_cell(self, cell: Any, cell_index: int, execution_count: int | None = None,
                                 store_history: bool = True) -> Any:
        kc = self.kc
        assert kc is not None
        original = kc.execute

        def execute(code: str, silent: bool = False, store_history: bool = True,
                    user_expressions: dict[str, Any] | None = None,
                    allow_stdin: bool | None = None, stop_on_error: bool = True) -> str:
            content = {"code": code, "silent": silent, "store_history": store_history,
                       "user_expressions": user_expressions or {},
                       "allow_stdin": bool(allow_stdin), "stop_on_error": stop_on_error}
            msg = kc.session.msg("execute_request", content, metadata={"cellId": cell.get("id")})
            kc.shell_channel.send(msg)
            return str(msg["header"]["msg_id"])

        kc.execute = execute  # type: ignore[method-assign]
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            kc.execute = original  # type: ignore[method-assign]

    # nbclient binds its sync wrapper to the base class's coroutine: rebind it to ours
    execute_cell = run_sync(async_execute_cell)


def write_notebook(path: Path, cells: Iterable[str], tags: dict[int, list[str]] | None = None) -> Path:
    """A notebook whose code cells are ``cells`` (ids ``c0``, ``c1``, ...)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, source in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source, id=f"c{i}")
        if tags and i in tags:
            cell.metadata["tags"] = tags[i]
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def kernel_env(path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["JPY_SESSION_NAME"] = str(path)
    env.pop("NBFLOW_STORE", None)
    env.update(extra)
    return env


def run_notebook(path: Path, *, allow_errors: bool = False, timeout: int = 60,
                 **env: str) -> nbformat.NotebookNode:
    """Execute ``path`` in a fresh kernel (cwd = its folder); returns the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    client = CellIdClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                          resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=kernel_env(path, **env))
    return nb


def text_of(cell: Any, name: str | None = None) -> str:
    """Concatenated stream text (``stdout``/``stderr`` or both) of a cell."""
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and (name is None or o.get("name") == name))


def plain_of(cell: Any) -> str:
    """Every text/plain of a cell's display outputs (nbflow's notes included)."""
    return "\n".join(str((o.get("data") or {}).get("text/plain", ""))
                     for o in cell.get("outputs", [])
                     if o.get("output_type") in ("display_data", "execute_result"))


def errors_of(cell: Any) -> list[dict[str, Any]]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def is_cached(cell: Any) -> bool:
    return any((o.get("metadata") or {}).get("nbflow", {}).get("cached")
               for o in cell.get("outputs", []))


def user_outputs(cell: Any) -> list[dict[str, Any]]:
    """Outputs other than nbflow's own notes, without volatile fields, adjacent streams
    joined: the demo's comparison of two runs, which the tests make too."""
    return list(_demo().user_outputs(cell))


@functools.cache
def _demo() -> Any:
    spec = importlib.util.spec_from_file_location(
        "nbflow_run_demo", ROOT / "example_notebooks" / "run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_log(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class LiveKernel:
    """One kernel kept running while cells are executed one by one, edited in between —
    what a user does in JupyterLab (cell ids are sent, as JupyterLab does)."""

    def __init__(self, path: Path, timeout: int = 60) -> None:
        self.path = path
        self.nb = nbformat.read(path, as_version=4)
        self.client = CellIdClient(self.nb, timeout=timeout, kernel_name="python3",
                                   resources={"metadata": {"path": str(path.parent)}})
        self._ctx: Any = None

    def __enter__(self) -> LiveKernel:
        self._ctx = self.client.setup_kernel(env=kernel_env(self.path))
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)

    def run(self, index: int, source: str | None = None) -> Any:
        """Execute cell ``index`` (after replacing its source); returns the cell."""
        cell = self.nb.cells[index]
        if source is not None:
            cell.source = source
        cell.outputs = []
        self.client.execute_cell(cell, index)
        return cell
