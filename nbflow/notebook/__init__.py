"""The notebook adapter: ``%load_ext nbflow`` gives the kernel one live flow.

The flow is named after the notebook file (``__session__``/``JPY_SESSION_NAME``, which Jupyter
sets for the kernels it starts; VS Code's ``__vsc_ipynb_file__``; else ``notebook``) so two
notebooks in one folder keep their own flows, and its store is ``.nbflow`` beside the notebook
(``NBFLOW_STORE`` or ``%flow config store=PATH`` to change it; the store may be shared — keys
are content-addressed, entries are tagged with the flow that wrote them).

This package is the only place in nbflow that imports IPython.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

from ..errors import NbflowWarning
from .session import Session

_session: Session | None = None
_saved_showwarning: Any = None


def current_session() -> Session | None:
    """The live session of this kernel, if the extension is loaded."""
    return _session


def live_flow() -> Any:
    """The notebook's live :class:`~nbflow.flow.Flow` (None when the extension is not loaded)."""
    return _session.flow if _session is not None else None


def materialize() -> list[str]:
    """Load every lazily bound output now (see :mod:`nbflow.notebook.namespace`)."""
    return _session.ns.materialize() if _session is not None else []


def notebook_path(shell: Any) -> str | None:
    """The notebook file this kernel runs, when the front end said so."""
    ns = getattr(shell, "user_ns", {}) or {}
    for candidate in (ns.get("__session__"), os.environ.get("JPY_SESSION_NAME"),
                      ns.get("__vsc_ipynb_file__")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def flow_name(path: str | None) -> str:
    """``analysis.ipynb`` -> ``analysis`` (characters a record name cannot hold become ``_``)."""
    if not path:
        return "notebook"
    stem = os.path.basename(path.rstrip("/"))
    if stem.endswith(".ipynb"):
        stem = stem[: -len(".ipynb")]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip(".") or "notebook"
    return stem[:120]


def store_location(path: str | None) -> str:
    """``$NBFLOW_STORE``, else ``.nbflow`` in the notebook's folder (the kernel's cwd when the
    notebook path is relative or unknown: Jupyter starts kernels in the notebook's folder)."""
    env = os.environ.get("NBFLOW_STORE")
    if env:
        return env
    if path and os.path.isabs(path):
        return os.path.join(os.path.dirname(path), ".nbflow")
    return os.path.join(os.getcwd(), ".nbflow")


def _showwarning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                 line: Any = None) -> None:
    """NbflowWarnings in a notebook: one readable line, not a file:line source dump."""
    if isinstance(category, type) and issubclass(category, NbflowWarning):
        import sys

        text = str(message)
        print(text if text.startswith("nbflow") else f"nbflow: {text}", file=file or sys.stderr)
        return
    _saved_showwarning(message, category, filename, lineno, file, line)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext nbflow``."""
    global _session, _saved_showwarning
    if _session is not None and _session.shell is shell:
        print(f"nbflow is already loaded (flow '{_session.flow.name}')")
        return
    from .. import decorators
    from .magics import NbflowMagics

    path = notebook_path(shell)
    session = Session(shell, flow_name(path), store_location(path), notebook=path)
    _session = session
    shell.register_magics(NbflowMagics(shell, session))
    shell.events.register("pre_run_cell", session.pre_run_cell)
    decorators.set_live_registrar(session.register_function)
    if _saved_showwarning is None:
        _saved_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning
    _attach_comm(session, shell)
    _watch_flowspec_runs(session)
    print(f"nbflow: flow '{session.flow.name}', store {session.flow.store.root}")


def _attach_comm(session: Session, shell: Any) -> None:
    """The JupyterLab badges/panel comm (``nbflow.notebook.comm``), when that module exists."""
    try:
        from . import comm
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.comm":
            raise
        return
    session.comm = comm.attach_comm(session.flow, shell)


def _watch_flowspec_runs(session: Session) -> None:
    """Show the DAG widget when a FlowSpec flow starts a run in this kernel."""
    from .. import flowspec

    def show_run(flow: Any, run_id: str) -> None:
        try:
            from IPython.display import display

            from ..widget import show

            display(show(flow))
        except Exception as e:  # the run matters more than its picture
            print(f"nbflow: cannot show the DAG of {flow.name}: {type(e).__name__}: {e}")

    session.on_close.append(flowspec.add_run_hook(show_run))


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext nbflow``: stop watching cells and take the magics away.

    IPython lists every magics object it was given in ``shell.configurables`` (for its
    configuration) and never drops one, so the unloaded session's object is taken out too:
    each ``%reload_ext nbflow`` would otherwise keep a whole session alive, its flow, its
    cached values and its store's memos."""
    global _session, _saved_showwarning
    from .. import decorators

    session = _session
    if session is None:
        return
    try:
        shell.events.unregister("pre_run_cell", session.pre_run_cell)
    except ValueError:
        pass
    decorators.set_live_registrar(None)
    if _saved_showwarning is not None:
        warnings.showwarning = _saved_showwarning
        _saved_showwarning = None
    detach = getattr(getattr(session, "comm", None), "close", None)
    if callable(detach):
        detach()
    session.close()
    manager = shell.magics_manager
    manager.magics["cell"].pop("step", None)
    for name in ("step", "flow"):
        manager.magics["line"].pop(name, None)
    magics = manager.registry.get("NbflowMagics")
    if getattr(magics, "session", None) is session:
        del manager.registry["NbflowMagics"]
        configurables = getattr(shell, "configurables", None)
        if isinstance(configurables, list) and magics in configurables:
            configurables.remove(magics)
    _session = None


__all__ = [
    "current_session",
    "flow_name",
    "live_flow",
    "load_ipython_extension",
    "materialize",
    "notebook_path",
    "store_location",
    "unload_ipython_extension",
]
