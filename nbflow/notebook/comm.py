"""Kernel side of the ``nbflow`` comm: cell badges and the JupyterLab side panel.

The kernel opens a comm to target ``nbflow`` when the flow is attached (the front end adopts it,
also after a page reload, by asking the kernel which comms are open) and answers comms the front
end opens to the same target. It sends the full state on ``sync``, a step that starts running
at once, and what a cell's steps became once the kernel is idle after the cell; commands from
the browser (run, rerun, invalidate, run_stale, export, details) are validated by
:mod:`nbflow.protocol` and carried out on the kernel's main thread.

Cells map to steps by the cell id the front end sends with each execute request; steps whose
meta names no cell are mapped to the cell that registered them (cell id, and the cell source
for front ends that send no id). Reads the flow through its public API only.
"""

from __future__ import annotations

import importlib
import inspect
import io
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..mainthread import MainThread
from ..protocol import (
    COMM_TARGET,
    PROTOCOL_VERSION,
    StateMessage,
    StatusInfo,
    details_message,
    result_message,
    status_message,
    steps_message,
    validate_client_message,
)
from ..widget import (
    BUSY,
    Batcher,
    FlowMirror,
    GraphInfo,
    log_to_process_stderr,
    run_command,
    step_details,
)

log = logging.getLogger("nbflow.comm")


def find_exporter() -> Callable[..., Any] | None:
    """The notebook -> flow script exporter, when the export module provides one."""
    try:
        module = importlib.import_module("nbflow.export")
    except Exception:
        return None
    for name in ("export_notebook", "export"):
        fn = getattr(module, name, None)
        if callable(fn) and not inspect.isclass(fn):
            return fn
    return None


class FlowComm:
    """One flow's channel to every front end of this kernel."""

    def __init__(self, flow: Any, shell: Any = None) -> None:
        import comm as comm_lib

        self.flow = flow
        self.shell = shell
        self._comm_lib = comm_lib
        self._comms: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._cells: dict[str, tuple[str | None, str | None]] = {}
        self._seen: dict[str, int] = {}  # step -> id of its Step when a cell last ended
        self._seen_revision: Any = None  # (the graph, its revision) then
        self._running_cell: tuple[str | None, str | None] = (None, None)
        self._pending_refresh: Any = None  # the timer of the deferred refresh, if armed
        self._refresh_due: float | None = None  # when it is due (monotonic); None: not wanted
        self._last_graph: GraphInfo | None = None  # as last broadcast (what deltas apply to)
        self._last_drawing = -1  # the mirror's drawing number in that broadcast
        self._graph_sent = 0.0  # when the last whole state was broadcast (monotonic)
        self._graph_timer: Any = None  # a whole state due at the end of the interval
        self._main = MainThread(shell)
        log_to_process_stderr()
        self._closed = False
        self._announced = 0
        self._exporter = find_exporter()
        self._batcher = Batcher(self._send_status)
        self._was_busy = False
        self._running_sent = False  # this run's first running step was sent
        self._idle_due: Any = None  # the loop's call of settle(), when one is due
        self._cell_ended = False  # a cell ended and settle() has not done its part yet
        self._mirror = FlowMirror(
            flow, self._on_status, self._send_graph, with_source=True, cell_of=self._cells.get,
            lazy_dot=True, refresh_on_stale=False, quick=self.QUICK, hold=self._hold,
        )
        self._manager = comm_lib.get_comm_manager()
        self._manager.register_target(COMM_TARGET, self._on_open)
        if shell is not None and getattr(shell, "events", None) is not None:
            shell.events.register("pre_run_cell", self._pre_run_cell)
            shell.events.register("post_run_cell", self._post_run_cell)
        self._announce()

    def __repr__(self) -> str:
        with self._lock:
            n = len(self._comms)
        return f"<nbflow comm of flow {self.flow.name!r}: {n} front end comm(s) open>"

    # -- state ------------------------------------------------------------------------------------
    def state_message(self) -> StateMessage:
        self._mirror.settle()
        return {
            "type": "state",
            "version": PROTOCOL_VERSION,
            "flow": str(self.flow.name),
            "graph": self._mirror.full_graph(),
            "statuses": dict(self._mirror.statuses),
            "exporter": self._exporter is not None,
        }

    @property
    def statuses(self) -> dict[str, StatusInfo]:
        self._mirror.settle()
        return dict(self._mirror.statuses)

    @property
    def graph(self) -> GraphInfo:
        return self._mirror.full_graph()

    def refresh(self) -> None:
        """Re-read graph and statuses and tell the front ends what changed."""
        self._mirror.refresh_graph()
        self._mirror.refresh_statuses()

    # -- comms ------------------------------------------------------------------------------------
    QUICK = 0.1  # seconds: a step that last ran faster is not shown queued or running

    MAX_ANNOUNCEMENTS = 3  # unanswered ones: a front end without the extension closes them

    def _announce(self) -> None:
        """Open a comm from the kernel: front ends with the extension adopt it."""
        if self._announced >= self.MAX_ANNOUNCEMENTS:
            return
        self._announced += 1
        try:
            c = self._comm_lib.create_comm(target_name=COMM_TARGET, data=self.state_message())
        except Exception as e:
            log.debug("could not open the nbflow comm: %s", e)
            return
        self._use(c)

    def _on_open(self, c: Any, msg: dict[str, Any]) -> None:
        self._announced = 0  # a front end with the extension is here
        self._use(c)
        data = (msg.get("content") or {}).get("data")
        if data:
            self._on_data(c, data)
        else:
            self._sync(c)

    def _sync(self, c: Any) -> None:
        """Send ``c`` the whole state, made current first (it is not kept current while nobody
        watches). A graph that changed meanwhile goes to every front end, so that all of them
        hold the graph later ``steps`` messages apply to."""
        self._mirror.refresh_graph()
        self._mirror.refresh_statuses(notify=False)
        c.send(self.state_message())

    def _use(self, c: Any) -> None:
        with self._lock:
            self._comms[c.comm_id] = c
        def on_msg(msg: dict[str, Any]) -> None:
            self._announced = 0  # someone answers on this comm
            self._on_data(c, (msg.get("content") or {}).get("data"))

        c.on_msg(on_msg)
        c.on_close(lambda _msg: self._forget(c))

    def _forget(self, c: Any) -> None:
        with self._lock:
            self._comms.pop(c.comm_id, None)

    def _broadcast(self, data: Any) -> None:
        with self._lock:
            comms = list(self._comms.values())
        for c in comms:
            try:
                c.send(data)
            except Exception as e:  # a dead front end must not break a run
                log.debug("nbflow comm send failed: %s", e)
                self._forget(c)

    def _on_status(self, updates: dict[str, StatusInfo]) -> None:
        """Statuses go out once the kernel is idle after a cell (see :meth:`_hold`) or when a
        run ends, with one exception: a step that starts running may run long, so the first one
        of a run is sent at once and later ones go through the batcher's rate limit (its
        thread). A step whose last run took less than ``QUICK`` is not shown running at all
        (the mirror passes over it; a kernel spends ~0.1 ms on each message), so a cell served
        from the cache or re-running a quick step sends one message, and the batcher's thread
        sleeps: woken while the main thread works, it would take the GIL at each of the main
        thread's system calls."""
        running = any(info.get("status") == "running" for info in updates.values())
        if threading.current_thread() is not self._main.thread:
            self._batcher.add(updates)  # a worker's event: only the batcher's thread sends it
        elif running and not self._running_sent:
            self._running_sent = True
            self._batcher.add(updates, wake=False)
            self._batcher.flush()
        else:
            self._batcher.add(updates, wake=running)
        busy = bool(self._mirror.busy)
        if self._was_busy and not busy:
            self._batcher.flush()  # a run ended: its last statuses go out now
            self._running_sent = False
        self._was_busy = busy

    def flush(self) -> None:
        """Send pending status updates now (else they go out when the run ends or the kernel
        is idle)."""
        self._mirror.settle()
        self._batcher.flush()

    def _send_status(self, updates: dict[str, StatusInfo]) -> None:
        self._broadcast(status_message(updates))

    GRAPH_INTERVAL = 0.1  # seconds: at most one whole state per interval while steps appear

    def _send_graph(self, graph: GraphInfo) -> None:
        """Only the steps whose facts changed when steps and edges are the same; else the whole
        state, at most once per ``GRAPH_INTERVAL``.

        An edited cell changes one step's facts (its source): resending every step's source
        and the drawing would cost a notebook of hundreds of steps milliseconds per edit, in
        the kernel and in every front end. "Run all" adds a step per cell, and a whole state
        per cell would make it quadratic, so states that follow each other closely are folded
        into one sent when the kernel is next free (statuses of the new steps come meanwhile,
        and the state carries them too).
        """
        if self._graph_timer is not None:
            return  # a whole state is due: it will carry this change
        previous = self._last_graph
        if previous is not None and self._last_drawing == self._mirror.drawing:
            self._last_graph = graph
            old = previous["steps"]
            changed = {name: info for name, info in graph["steps"].items()
                       if old.get(name) is not info and old.get(name) != info}
            if changed:
                self._broadcast(steps_message(changed))
            return
        wait = self._graph_sent + self.GRAPH_INTERVAL - time.monotonic()
        if wait > 0:
            self._graph_timer = self._main.later(wait, self._flush_graph)
            if self._graph_timer is not None:
                return
        self._flush_graph()

    def _flush_graph(self) -> None:
        self._graph_timer = None
        if self._closed:
            return
        self._graph_sent = time.monotonic()
        state = self.state_message()
        self._last_graph, self._last_drawing = state["graph"], self._mirror.drawing
        self._broadcast(state)

    # -- messages from the browser ------------------------------------------------------------------
    def _on_data(self, c: Any, data: Any) -> None:
        msg = validate_client_message(data, self.flow.graph.steps)
        if msg is None:
            return
        kind = msg["type"]
        if kind == "sync":
            self._sync(c)
        elif kind == "details":
            step = msg["step"]
            self._mirror.settle()
            c.send(details_message(step_details(self.flow, step, self._mirror.statuses.get(step))))
        elif kind == "export":
            self._main.call(lambda: self._broadcast(self._export(msg["notebook"])))
        else:
            self._main.call(lambda: self._command(msg))

    def _command(self, msg: dict[str, Any]) -> None:
        result = run_command(self.flow, msg)
        self.refresh()
        self._batcher.flush()  # the statuses arrive before the result
        self._broadcast(result)

    def _export(self, notebook: str) -> dict[str, Any]:
        exporter = self._exporter
        if exporter is None:
            return dict(result_message("export", None, False, "no exporter is installed"))
        source = Path.cwd() / notebook
        if not source.is_file():
            return dict(result_message("export", None, False, f"{notebook} is not in {Path.cwd()}"))
        target = source.with_name(source.stem + "_flow.py")
        report = io.StringIO()
        try:
            if "report" in inspect.signature(exporter).parameters:
                exporter(source, target, report=report)
            else:
                exporter(source, target)
        except Exception as e:
            return dict(result_message("export", None, False, f"{type(e).__name__}: {e}"))
        warnings = [line for line in report.getvalue().splitlines() if line.strip()]
        note = f" ({len(warnings)} warning(s): {warnings[0]})" if warnings else ""
        return dict(
            result_message("export", None, True, f"exported {notebook} to {target.name}{note}")
        )

    # -- cells --------------------------------------------------------------------------------------
    REFRESH_DELAY = 0.15  # seconds of quiet after a cell before statuses are re-read

    def _hold(self, event: Any) -> bool:
        """Whether the mirror sets ``event`` aside until the kernel is idle.

        What a cell's steps became (stale, done, cached, failed) is told once the cell is over:
        the cell's reply need not wait for the front ends' update (folding the events and
        packing a message cost ~0.1 ms, a sixth of nbflow's work on an edited cell). A step
        starting (``queued``, ``running``) may run long and is told at once (what was set aside
        goes first), and so is whatever another thread reports.
        """
        if event.status in BUSY or threading.current_thread() is not self._main.thread:
            return False
        return self._settle_when_idle()

    def _settle_when_idle(self) -> bool:
        """Arms the loop's call of :meth:`settle`; False where there is no loop to call it."""
        if self._idle_due is None:
            self._idle_due = self._main.later(0, self.settle)
        return self._idle_due is not None

    def settle(self) -> None:
        """Do now what waits for the kernel's idle turn: fold the statuses set aside, do the
        bookkeeping of the cell that ended, and send what changed."""
        due, self._idle_due = self._idle_due, None
        if due is not None:
            due.cancel()  # when called before the loop got to it
        if self._closed:
            return
        self._mirror.settle()
        if self._cell_ended:
            self._cell_ended = False
            self._after_cell()
        self._batcher.flush()

    def _pre_run_cell(self, info: Any) -> None:
        if self._cell_ended:  # "run all" without an idle turn between cells
            self.settle()
        self._refresh_due = None  # a next cell: its own end refreshes
        self._running_sent = False
        self._running_cell = (getattr(info, "cell_id", None), getattr(info, "raw_cell", None))

    def _post_run_cell(self, _result: Any) -> None:
        if self._closed:
            return
        self._cell_ended = True
        if not self._settle_when_idle():
            self.settle()

    def _after_cell(self) -> None:
        """Map the steps the cell added or replaced to it, then re-read statuses soon."""
        graph = self.flow.graph
        revision = (id(graph), graph.revision)
        if revision != self._seen_revision:  # steps were added or replaced: by this cell
            cell_id, source = self._running_cell
            steps = dict(graph.steps)
            for name, step in steps.items():
                if self._seen.get(name) != id(step):
                    self._cells[name] = (cell_id, source)
            for gone in set(self._cells) - set(steps):
                del self._cells[gone]
            self._seen = {name: id(step) for name, step in steps.items()}
            self._seen_revision = revision
        with self._lock:
            has_comm = bool(self._comms)
        if not has_comm:
            if self._announced < self.MAX_ANNOUNCEMENTS:
                self.refresh()
                self._announce()
            return  # nobody watches: a front end that opens a comm is sent a fresh state
        self._refresh_due = time.monotonic() + self.REFRESH_DELAY
        if self._pending_refresh is None:  # else the armed timer finds the new due time
            self._pending_refresh = self._main.later(self.REFRESH_DELAY, self._refresh_timer)
            if self._pending_refresh is None:
                self._refresh_after_cell()

    def _refresh_timer(self) -> None:
        """The timer is armed once and moved along rather than cancelled and made anew for
        every cell of a "run all": a cell only writes down when the refresh is due."""
        self._pending_refresh = None
        due = self._refresh_due
        if due is None:
            return  # a cell is running: its end arms the timer again
        wait = due - time.monotonic()
        if wait > 0.001:  # a later cell moved it along (a timer that fires has a loop to wait on)
            self._pending_refresh = self._main.later(wait, self._refresh_timer)
            return
        self._refresh_after_cell()

    def _refresh_after_cell(self) -> None:
        """Re-read the graph (an edited cell's facts) and every step's status (a cell may have
        rebound or changed a value a step reads).

        Events keep new steps and the statuses of steps that ran current as they run; this
        catches the rest, at the cost of a key and a store lookup per step. So in a kernel it
        runs once the kernel has been idle for ``REFRESH_DELAY`` (a next cell moves it along, so
        "run all" pays it once, at the end), off the path of the cell that triggered it.
        """
        self._refresh_due = None
        if not self._closed:
            self._mirror.refresh_graph()
            self._mirror.refresh_statuses()
            self._batcher.flush()

    def close(self) -> None:
        """Stop: unsubscribe, forget the comm target, close the comms."""
        if self._closed:
            return
        self._closed = True
        for timer in (self._pending_refresh, self._graph_timer, self._idle_due):
            if timer is not None:
                timer.cancel()
        self._pending_refresh = self._graph_timer = self._idle_due = None
        self._mirror.close()
        self._batcher.close()
        if self.shell is not None and getattr(self.shell, "events", None) is not None:
            for name, cb in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
                try:
                    self.shell.events.unregister(name, cb)
                except ValueError:
                    pass
        targets = getattr(self._manager, "targets", {})
        if targets.get(COMM_TARGET) == self._on_open:
            self._manager.unregister_target(COMM_TARGET, self._on_open)
        with self._lock:
            comms = list(self._comms.values())
            self._comms.clear()
        for c in comms:
            try:
                c.close()
            except Exception as e:
                log.debug("closing the nbflow comm failed: %s", e)


_attached: dict[int, FlowComm] = {}


def attach_comm(flow: Any, shell: Any = None) -> FlowComm:
    """Connect ``flow`` to the front ends of this kernel (called by ``%load_ext nbflow``).

    Attaching again (``%reload_ext``, a new flow) replaces the previous connection of ``shell``.
    """
    key = id(shell)
    old = _attached.pop(key, None)
    if old is not None:
        old.close()
    attached = FlowComm(flow, shell)
    _attached[key] = attached
    return attached


def detach_comm(shell: Any = None) -> None:
    """Undo :func:`attach_comm` for ``shell`` (``%unload_ext nbflow``)."""
    old = _attached.pop(id(shell), None)
    if old is not None:
        old.close()
