"""The live DAG widget (``%flow show`` / ``nbflow.show()``) and the view model it shares.

:class:`DagWidget` draws the graph it is given: the DOT layout source comes from the flow's
graph (written directly as DOT text; laid out in the browser by a WebAssembly Graphviz),
statuses come from the flow's event bus, and commands from the browser go back through
:func:`nbflow.protocol.validate_client_message` before they touch the flow.

Invariants: the DOT never contains a status, so a status change never re-lays-out the graph;
every name is escaped before it enters DOT; the browser renders all strings as text.

This is the only module that imports ipywidgets. It reads the graph, statuses and previews
through the flow's public API and never reaches into the store or the executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import graphviz
import ipywidgets
import traitlets

from .errors import NbflowError
from .mainthread import MainThread
from .protocol import (
    PROTOCOL_VERSION,
    STATUSES,
    Details,
    GraphInfo,
    ResultMessage,
    StatusInfo,
    StepInfo,
    result_message,
    status_message,
    validate_client_message,
)

log = logging.getLogger("nbflow.widget")

WIDGET_MODULE = "nbflow"
WIDGET_MODULE_VERSION = "0.1.0"

STATUS_ICONS: dict[str, str] = {
    "stale": "○",
    "queued": "⋯",
    "running": "◐",
    "cached": "◆",
    "done": "✓",
    "failed": "✗",
}
# fill colours of the server-side (system ``dot``) fallback; the browser styles nodes by CSS
STATUS_FILLS: dict[str, str] = {
    "stale": "#fff1c2",
    "queued": "#e4e6eb",
    "running": "#cfe2ff",
    "cached": "#d3f0ee",
    "done": "#d1ecd9",
    "failed": "#f8d3d6",
}
# the widest status line; sizes every node so that any status fits without a re-layout
STATUS_PLACEHOLDER = "◐ running"
LARGE_GRAPH = 150  # above this many steps, trade a little layout quality for speed
SVG_FALLBACK_LIMIT = 300  # above this many steps the fallback is the text table only
MAX_ERROR_CHARS = 20_000
MAX_SOURCE_CHARS = 50_000
BUSY = frozenset({"queued", "running"})


# -- view model ---------------------------------------------------------------------------------
def status_info(row: Any) -> StatusInfo:
    """A :class:`StatusInfo` from anything with the fields of ``flow.status()`` rows or events."""
    status: Any = getattr(row, "status", "stale")
    info: StatusInfo = {"status": status if status in STATUSES else "stale"}
    for name in ("time", "duration", "saved"):
        value = getattr(row, name, None)
        if isinstance(value, int | float):
            info[name] = float(value)
    sizes = getattr(row, "sizes", None)
    if isinstance(sizes, Mapping):
        info["sizes"] = {str(k): int(v) for k, v in sizes.items()}
    error = getattr(row, "error", None)
    if error:
        info["error"] = _clip(str(error), MAX_ERROR_CHARS)
    return info


def merge_status(previous: StatusInfo | None, event: Any, ledger: SessionLedger | None = None) -> StatusInfo:
    """Fold one event into the last known info: figures the event lacks are kept.

    Written out field by field rather than through :func:`status_info`: a view folds every
    event of every run, and this is most of what its subscription costs a cell.
    """
    status = event.status
    if status not in STATUSES:
        status = "stale"
    elif ledger is not None and ledger.computed(event.step, status, getattr(event, "key", None)):
        status = "done"
    info: StatusInfo = StatusInfo(**previous) if previous else StatusInfo()
    info["status"] = status
    when = getattr(event, "time", None)
    info["time"] = float(when) if isinstance(when, int | float) else time.time()
    duration = getattr(event, "duration", None)
    if isinstance(duration, int | float):
        info["duration"] = float(duration)
    sizes = getattr(event, "sizes", None)
    if isinstance(sizes, Mapping):
        info["sizes"] = {str(k): int(v) for k, v in sizes.items()}
    if status == "cached":
        saved = getattr(event, "saved", None)
        info["saved"] = float(saved) if isinstance(saved, int | float) else info.get("duration")
    else:
        info.pop("saved", None)
    if status == "failed":
        error = getattr(event, "error", None)
        info["error"] = _clip(str(error), MAX_ERROR_CHARS) if error else "failed"
    else:
        info.pop("error", None)
    return info


def _same_but_time(a: StatusInfo, b: StatusInfo) -> bool:
    return len(a) == len(b) and all(k == "time" or b.get(k) == v for k, v in a.items())


class SessionLedger:
    """Which version (key) of each step this process computed: what a view calls ``done``.

    The engine reports a step ``cached`` whenever a run finds its entry in the store, also when
    this same kernel computed it a moment ago (a later cell re-validates its ancestors). A view
    says ``done`` for a step whose current key was computed in this session, and ``cached`` for
    one served from the store without computing it here (a fresh kernel, another process).
    """

    def __init__(self, flow: Any) -> None:
        self._keys: dict[str, str] = {}
        self._unsubscribe = flow.events.subscribe(self._on_event, repeats=False)

    def _on_event(self, event: Any) -> None:
        if event.status == "done" and event.key and getattr(event, "item", None) is None:
            self._keys[event.step] = event.key

    def computed(self, step: str, status: str, key: str | None) -> bool:
        """True when a ``cached`` step's key is one this session computed."""
        return status == "cached" and key is not None and self._keys.get(step) == key


_ledgers: weakref.WeakKeyDictionary[Any, SessionLedger] = weakref.WeakKeyDictionary()
_ledgers_lock = threading.Lock()


def ledger_for(flow: Any) -> SessionLedger:
    """The flow's ledger, started by its first view (``%load_ext nbflow`` attaches one early)."""
    with _ledgers_lock:
        ledger = _ledgers.get(flow)
        if ledger is None:
            ledger = _ledgers[flow] = SessionLedger(flow)
        return ledger


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


CellOf = Callable[[str], "tuple[str | None, str | None] | None"]


def step_info(step: Any, *, with_source: bool = True, cell: tuple[str | None, str | None] | None = None) -> StepInfo:
    """Static facts of a step; ``cell`` (id, source) fills in when the step's meta has none."""
    meta = getattr(step, "meta", None) or {}
    cell_id = meta.get("cell_id") or (cell[0] if cell else None)
    cell_source = (meta.get("cell_source") or (cell[1] if cell else None)) if with_source else None
    return {
        "name": step.name,
        "inputs": [str(n) for n in step.inputs],
        "outputs": [str(n) for n in step.outputs],
        "kind": str(getattr(step, "kind", "function")),
        "doc": _clip(step.doc, 2000) if getattr(step, "doc", None) else None,
        "cell_id": cell_id if isinstance(cell_id, str) and cell_id else None,
        "cell_source": _clip(cell_source, MAX_SOURCE_CHARS) if isinstance(cell_source, str) else None,
    }


def graph_structure(graph: Any) -> tuple[Any, ...]:
    """What the drawing depends on: steps and their reads and binds (hence the edges)."""
    return tuple((s.name, tuple(s.inputs), tuple(s.outputs)) for s in graph.steps.values())


def _text(text: str) -> str:
    """``text`` for inside a DOT double-quoted label, shown literally: backslashes (DOT's label
    escapes such as ``\\l``) and quotes are escaped. Labels are never HTML-like."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _attrs(attrs: Mapping[str, str]) -> str:
    return " ".join(f'{k}="{_text(v)}"' for k, v in attrs.items())


def _edge_label(names: Iterable[str]) -> str:
    names = list(names)
    shown = names if len(names) <= 5 else [*names[:4], f"+{len(names) - 4} more"]
    return "\\n".join(_text(n) for n in shown)


GRAPH_ATTRS = {"rankdir": "TB", "nodesep": "0.3", "ranksep": "0.35", "pad": "0.12",
               "bgcolor": "transparent"}
LARGE_GRAPH_ATTRS = {"mclimit": "0.3", "nslimit": "2", "nslimit1": "2", "searchsize": "20"}
NODE_ATTRS = {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff", "color": "#5f6b7a",
              "fontname": "Helvetica", "fontsize": "11", "margin": "0.14,0.05", "height": "0.3"}
EDGE_ATTRS = {"fontname": "Helvetica", "fontsize": "9", "color": "#7d8896", "fontcolor": "#4a5360",
              "arrowsize": "0.6"}


def build_digraph(
    graph: Any, statuses: Mapping[str, StatusInfo] | None = None
) -> tuple[str, list[str]]:
    """(DOT source, nodes). Node ``n{i}`` is step ``nodes[i]``; edges carry the variable names.

    Without ``statuses`` every node carries the same status placeholder (the browser fills in the
    live status); with them the labels and fills show the statuses (the server-side fallback).
    The source is written directly, every value quoted: it is rebuilt whenever a step appears
    (each cell of a fresh kernel's run-all), and a DOT library's generic quoting cost ~20 µs a
    node.
    """
    nodes = list(graph.steps)
    return dot_source(nodes, graph.edges(), statuses), nodes


def dot_source(nodes: list[str], edges: list[tuple[str, str, tuple[str, ...]]],
               statuses: Mapping[str, StatusInfo] | None = None) -> str:
    """The DOT source of :func:`build_digraph` from the steps and ``Graph.edges()``, so that a
    view can keep both and write the source later, only when someone needs it."""
    index = {name: i for i, name in enumerate(nodes)}
    attrs = {**GRAPH_ATTRS, **(LARGE_GRAPH_ATTRS if len(nodes) > LARGE_GRAPH else {})}
    lines = [
        "digraph nbflow {",
        f"\tgraph [{_attrs(attrs)}]",
        f"\tnode [{_attrs(NODE_ATTRS)}]",
        f"\tedge [{_attrs(EDGE_ATTRS)}]",
    ]
    placeholder = _text(STATUS_PLACEHOLDER)
    for name, i in index.items():
        if statuses is None:
            lines.append(f'\tn{i} [label="{_text(name)}\\n{placeholder}"]')
            continue
        status = statuses.get(name, {}).get("status", "stale")
        extra = {"fillcolor": STATUS_FILLS[status]}
        if status == "stale":
            extra["style"] = "rounded,filled,dashed"
        elif status == "failed":
            extra["penwidth"] = "2"
        label = f"{_text(name)}\\n{_text(f'{STATUS_ICONS[status]} {status}')}"
        lines.append(f'\tn{i} [label="{label}" {_attrs(extra)}]')
    for producer, consumer, names in edges:
        lines.append(f'\tn{index[producer]} -> n{index[consumer]} [label="{_edge_label(names)}"]')
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_info(graph: Any, *, with_source: bool = True, cell_of: CellOf | None = None) -> GraphInfo:
    dot, nodes = build_digraph(graph)
    return {
        "dot": dot,
        "nodes": nodes,
        "steps": {
            n: step_info(
                graph.steps[n], with_source=with_source, cell=cell_of(n) if cell_of else None
            )
            for n in nodes
        },
    }


def step_details(flow: Any, name: str, status: StatusInfo | None = None) -> Details:
    """What the details pane shows: code, inputs/outputs with previews, the traceback."""
    step = flow.graph.steps[name]
    meta = getattr(step, "meta", None) or {}
    code = meta.get("cell_source") or getattr(step, "source", "") or ""
    previews: dict[str, str] = {}
    preview = getattr(flow, "preview", None)
    if callable(preview):
        try:
            previews = {str(k): _clip(str(v), 500) for k, v in preview(name).items()}
        except Exception as e:  # a preview must never break the pane
            log.debug("no preview for step %r: %s", name, e)
    for upstream in flow.graph.parents(name) if hasattr(flow.graph, "parents") else ():
        if callable(preview):
            try:
                for k, v in preview(upstream).items():
                    if k in step.inputs:
                        previews.setdefault(str(k), _clip(str(v), 500))
            except Exception as e:
                log.debug("no preview for step %r: %s", upstream, e)
    info: StatusInfo = StatusInfo(**(status or {"status": "stale"}))
    details: Details = {
        "step": name,
        "code": _clip(str(code), MAX_SOURCE_CHARS),
        "doc": step.doc if getattr(step, "doc", None) else None,
        "inputs": [str(n) for n in step.inputs],
        "outputs": [str(n) for n in step.outputs],
        "previews": previews,
        "status": info,
        "error": info.get("error"),
    }
    return details


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def status_table(flow_name: str, graph: Any, statuses: Mapping[str, StatusInfo]) -> str:
    """A readable text table of steps and statuses (the fallback without a front end)."""
    rows = [("step", "status", "last run", "saved", "outputs")]
    for name, step in graph.steps.items():
        info = statuses.get(name, {})
        status = info.get("status", "stale")
        sizes = info.get("sizes") or {}
        outputs = ", ".join(
            f"{o} ({_bytes(sizes[o])})" if o in sizes else o for o in step.outputs
        )
        saved = _seconds(info.get("saved")) if status == "cached" else "-"
        rows.append((name, f"{STATUS_ICONS[status]} {status}", _seconds(info.get("duration")), saved, outputs))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"flow {flow_name!r}: {len(graph.steps)} step{'s' if len(graph.steps) != 1 else ''}"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return "\n".join(line.rstrip() for line in lines)


def render_svg(graph: Any, statuses: Mapping[str, StatusInfo]) -> str | None:
    """SVG through the system ``dot`` when it is installed (else None)."""
    if not graph.steps or len(graph.steps) > SVG_FALLBACK_LIMIT or shutil.which("dot") is None:
        return None
    dot, _ = build_digraph(graph, statuses)
    try:
        return graphviz.Source(dot).pipe(format="svg", encoding="utf-8")
    except Exception as e:  # the fallback of a fallback: the text table still shows
        log.debug("system dot failed: %s", e)
        return None


# -- commands -----------------------------------------------------------------------------------
def run_command(flow: Any, msg: Mapping[str, Any]) -> ResultMessage:
    """Carry out a validated ``run``/``rerun``/``invalidate``/``run_stale`` message."""
    kind = msg["type"]
    step = msg.get("step")
    try:
        if kind == "run":
            result = flow.run(step)
        elif kind == "rerun":
            result = flow.rerun(step)
        elif kind == "invalidate":
            flow.invalidate(step)
            return result_message(kind, step, True, f"invalidated {step}")
        elif kind == "run_stale":
            result = flow.run()
        else:
            return result_message(kind, step, False, f"unsupported command {kind!r}")
    except Exception as e:
        log.info("nbflow %s %s failed: %s", kind, step or "", e)
        return result_message(kind, step, False, _clip(f"{type(e).__name__}: {e}", 2000))
    executed = list(getattr(result, "executed", []))
    cached = list(getattr(result, "cached", []))
    return result_message(
        kind, step, True, f"ran {len(executed)} step(s), {len(cached)} from cache"
    )


_KERNEL_LOGGERS = ("nbflow.protocol", "nbflow.widget", "nbflow.comm")


class _ProcessLogHandler(logging.Handler):
    """Writes to the kernel process's own stderr, which a Jupyter server keeps in its log.

    A kernel forwards ``sys.stderr`` to the front end (into whatever cell is running), and
    usually file descriptor 2 as well; then ipykernel keeps a copy of the original descriptor,
    which is used here.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
            fd = getattr(sys.stderr, "_original_stdstream_copy", None)
            if isinstance(fd, int):
                os.write(fd, line)
            elif sys.__stderr__ is not None:
                sys.__stderr__.write(line.decode("utf-8"))
                sys.__stderr__.flush()
        except Exception:  # logging must never break a handler of browser messages
            pass


def log_to_process_stderr() -> None:
    """In a kernel, send this module family's records to the kernel's log, never into a cell's
    output. Elsewhere (tests, scripts) logging stays as configured."""
    if not type(sys.stderr).__module__.startswith("ipykernel"):
        return
    for name in _KERNEL_LOGGERS:
        logger = logging.getLogger(name)
        if any(isinstance(h, _ProcessLogHandler) for h in logger.handlers):
            continue
        handler = _ProcessLogHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s | %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


class Throttle:
    """Calls ``fn`` at most once per ``interval`` seconds.

    A poke after a quiet spell calls at once (no added latency); pokes during the interval are
    folded into one call at its end, made from a helper thread (the kernel's main thread may be
    busy running steps). One thread per throttle, started on first need and then waiting on a
    condition: starting a timer thread per interval would cost every cell a thread start.
    ``flush`` makes a pending call now.

    ``poke(wake=False)`` only marks a call pending, for the caller's next ``flush`` (or a later
    waking poke): a helper thread woken while the main thread works takes the GIL from it at
    every system call, which cost a kernel's cells 0.3 ms each. Callers that flush when a burst
    ends wake the throttle only for what must go out while the main thread is busy.
    """

    def __init__(self, fn: Callable[[], None], interval: float) -> None:
        self._fn = fn
        self.interval = interval
        self._cond = threading.Condition(threading.Lock())
        self._call_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending = False
        self._armed = False  # the helper knows of the pending call and makes it at the interval's end
        self._last = 0.0
        self._closed = False

    def poke(self, wake: bool = True) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending = True
            if not wake:
                return
            if self._last + self.interval > time.monotonic():
                if not self._armed:
                    self._armed = True
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._run, name="nbflow-throttle",
                                                        daemon=True)
                        self._thread.start()
                    self._cond.notify()
                return
        self.flush()

    def flush(self) -> None:
        with self._call_lock:
            with self._cond:
                if not self._pending or self._closed:
                    return
                self._pending = self._armed = False
                self._last = time.monotonic()
            self._fn()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if not (self._pending and self._armed):
                        self._cond.wait()
                        continue
                    wait = self._last + self.interval - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
            try:
                self.flush()
            except Exception as e:  # a failed send must not end the thread
                log.debug("nbflow: a throttled call failed: %s", e)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Batcher:
    """Coalesces status updates for one channel to the browser: the latest status per step wins,
    and a message goes out at most every ``interval`` seconds (the first at once, unless
    ``add(..., wake=False)``: see :class:`Throttle`). A fast run of hundreds of steps then stays
    far below the server's IOPub rate limits."""

    def __init__(
        self, send: Callable[[dict[str, StatusInfo]], None], interval: float = 0.02
    ) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._pending: dict[str, StatusInfo] = {}
        self._throttle = Throttle(self._drain, interval)

    def add(self, updates: Mapping[str, StatusInfo], wake: bool = True) -> None:
        """Queue ``updates``; ``wake=False``: the caller flushes soon (see :class:`Throttle`)."""
        with self._lock:
            self._pending.update(updates)
        self._throttle.poke(wake)

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        if batch:
            self._send(batch)

    def flush(self) -> None:
        self._throttle.flush()

    def close(self) -> None:
        self._throttle.close()


class FlowMirror:
    """A JSON-ready mirror of one flow's graph and statuses, kept current by its event bus.

    ``on_status(updates)`` gets the changed steps after each event; ``on_graph(info)`` gets the
    new graph when steps were added, removed or rewired. ``cell_of(step)`` may supply the
    (cell id, source) of steps whose meta names no cell. Safe to feed from worker threads.
    ``refresh_on_stale=False``: an edited step (a ``stale`` event) does not re-read the graph
    at once; the owner calls :meth:`refresh_graph` (the comm does once the kernel is idle).
    ``quick=seconds``: ``queued`` and ``running`` of a step whose last run took less are
    passed over (its next status follows within moments; should this run be long, the view
    shows the step's previous status until it ends), so that re-running a quick cell costs
    the view two events, not four. ``hold(event)``: True sets the event aside, to be folded
    in order by :meth:`settle` or before the next event that is not held (the owner settles
    once the kernel is idle, off the path of the cell that emitted it).
    """

    def __init__(
        self,
        flow: Any,
        on_status: Callable[[dict[str, StatusInfo]], None],
        on_graph: Callable[[GraphInfo], None],
        *,
        with_source: bool = True,
        cell_of: CellOf | None = None,
        lazy_dot: bool = False,
        refresh_on_stale: bool = True,
        quick: float | None = None,
        hold: Callable[[Any], bool] | None = None,
    ) -> None:
        self.flow = flow
        self._hold = hold
        self._held: list[Any] = []
        self._lazy_dot = lazy_dot
        self._refresh_on_stale = refresh_on_stale
        self._quick = quick
        self._dot_due = False  # lazy_dot: graph["dot"] is out of date until full_graph()
        self.drawing = 0  # bumped whenever steps or edges change (the drawing does)
        self._on_status = on_status
        self._on_graph = on_graph
        self._with_source = with_source
        self._cell_of = cell_of
        self._ledger = ledger_for(flow)
        self._lock = threading.RLock()
        self.statuses: dict[str, StatusInfo] = {}
        self._shown: dict[str, str] = {}  # step -> key of the entry its cached/done info shows
        self.busy: set[str] = set()
        self._structure: tuple[Any, ...] | None = None
        self._edges: list[tuple[str, str, tuple[str, ...]]] = []  # Graph.edges() of the drawing
        self._revision: Any = None
        self._shape: Any = None
        self._infos: dict[str, tuple[Any, Any, StepInfo]] = {}  # name -> (step, cell, facts)
        self.graph: GraphInfo = {"dot": "", "nodes": [], "steps": {}}
        self.refresh_graph(notify=False)
        self.refresh_statuses(notify=False)
        self._unsubscribe: Callable[[], None] | None = flow.events.subscribe(
            self._on_event, repeats=False)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def refresh_graph(self, notify: bool = True, *, force: bool = True) -> bool:
        """Re-read the graph; returns (and reports) whether what views show of it changed.

        The drawing is rebuilt only when steps or edges change, and a step's facts only when
        its Step or its cell changed, so an edited cell costs one ``step_info``, not a graph.
        ``force=False`` returns at once while the graph's revision is unchanged: an edit emits
        one event per stale descendant, and only the first needs a look.
        """
        with self._lock:
            graph = self.flow.graph
            revision = getattr(graph, "revision", None)
            if not force and revision is not None and revision == self._revision:
                return False
            self._revision = revision
            shape = getattr(graph, "shape", None)
            if shape is not None and shape == self._shape:
                changed = False  # the same steps and edges: only a step's facts may differ
            else:
                structure = graph_structure(graph)
                changed = structure != self._structure
                self._structure, self._shape = structure, shape
            dot, nodes = self.graph["dot"], self.graph["nodes"]
            if changed:
                self.drawing += 1
                nodes = list(graph.steps)
                self._edges = graph.edges()
                self._dot_due = self._lazy_dot
                if not self._lazy_dot:
                    dot = dot_source(nodes, self._edges)
            steps: dict[str, StepInfo] = {}
            for n in nodes:
                step = graph.steps[n]
                cell = self._cell_of(n) if self._cell_of else None
                memo = self._infos.get(n)
                if memo is not None and memo[0] is step and memo[1] == cell:
                    steps[n] = memo[2]
                    continue
                info = step_info(step, with_source=self._with_source, cell=cell)
                self._infos[n] = (step, cell, info)
                changed = changed or info != self.graph["steps"].get(n)
                steps[n] = info
            for gone in set(self._infos) - set(nodes):
                del self._infos[gone]
            if not changed:
                return False
            self.graph = {"dot": dot, "nodes": nodes, "steps": steps}
            known = set(nodes)
            for gone in set(self.statuses) - known:
                del self.statuses[gone]
                self._shown.pop(gone, None)
                self.busy.discard(gone)
            for name in known - set(self.statuses):
                self.statuses[name] = {"status": "stale"}
            graph_now = self.graph
        if notify:
            self._on_graph(graph_now)
        return True

    def full_graph(self) -> GraphInfo:
        """``graph`` with its DOT source written. With ``lazy_dot``, the source is written
        here, when a view needs it, not on every change: a fresh kernel's run-all adds a step
        per cell, and a whole drawing per cell would make it quadratic."""
        with self._lock:
            if self._dot_due:
                dot = dot_source(self.graph["nodes"], self._edges)
                self.graph = {**self.graph, "dot": dot}
                self._dot_due = False
            return self.graph

    def refresh_statuses(self, notify: bool = True) -> dict[str, StatusInfo]:
        """Re-read every status from ``flow.status()``; reports and returns what changed."""
        self.settle()  # else an older event set aside would overwrite what is read now
        try:
            rows = self.flow.status()
        except Exception as e:  # e.g. a graph with a cycle while the user is editing
            log.debug("flow.status() failed: %s", e)
            return {}
        changed: dict[str, StatusInfo] = {}
        with self._lock:
            for name, row in rows.items():
                if name not in self.statuses:
                    continue
                info = status_info(row)
                if self._ledger.computed(name, info["status"], getattr(row, "key", None)):
                    info["status"] = "done"
                    info.pop("saved", None)
                old = self.statuses.get(name, {})
                if "time" in old:
                    info.setdefault("time", old["time"])
                if info != old:
                    self.statuses[name] = info
                    changed[name] = info
                self._shows(name, info, getattr(row, "key", None))
                self._track_busy(name, info["status"])
        if changed and notify:
            self._on_status(changed)
        return changed

    def _track_busy(self, name: str, status: str) -> None:
        if status in BUSY:
            self.busy.add(name)
        else:
            self.busy.discard(name)

    def _shows(self, name: str, info: StatusInfo, key: str | None) -> None:
        """Remember which entry a cached/done step's info describes (see ``_on_event``)."""
        if key and info["status"] in ("cached", "done"):
            self._shown[name] = key
        else:
            self._shown.pop(name, None)

    def _on_event(self, event: Any) -> None:
        if getattr(event, "item", None) is not None:
            return  # per-item progress of a foreach step: the step's own events follow
        status = event.status
        if (status == "cached" and event.key and self._shown.get(event.step) == event.key
                and not self._held):
            return  # a cached ancestor checked again: its view shows this very entry already
        if (status == "queued" or status == "running") and self._quick is not None:
            last = self.statuses.get(event.step, {}).get("duration")
            if isinstance(last, int | float) and last < self._quick:
                return
        if self._hold is not None:
            if self._hold(event):
                with self._lock:
                    self._held.append(event)
                return
            if self._held:
                self.settle()  # what was set aside comes first
        self._fold(event)

    def settle(self) -> None:
        """Fold the events ``hold`` set aside, in the order they came."""
        with self._lock:
            held, self._held = self._held, []
        for event in held:
            self._fold(event)

    def _fold(self, event: Any) -> None:
        if event.status == "cached" and event.key and self._shown.get(event.step) == event.key:
            return  # (checked here too: what was set aside may have shown this entry since)
        with self._lock:
            if event.step not in self.statuses or (event.status == "stale"
                                                   and self._refresh_on_stale):
                self.refresh_graph(force=False)
            if event.step not in self.statuses:
                return
            old = self.statuses.get(event.step)
            info = merge_status(old, event, self._ledger)
            if old is not None and _same_but_time(old, info):
                return  # no news (a cached ancestor checked again): nothing to send
            self.statuses[event.step] = info
            self._shows(event.step, info, event.key)
            self._track_busy(event.step, info["status"])
        self._on_status({event.step: info})


# -- the widget ---------------------------------------------------------------------------------
class DagWidget(ipywidgets.DOMWidget):
    """The live DAG of one flow: statuses update while steps run; click a node to inspect it."""

    _model_name = traitlets.Unicode("DagModel").tag(sync=True)
    _model_module = traitlets.Unicode(WIDGET_MODULE).tag(sync=True)
    _model_module_version = traitlets.Unicode(f"^{WIDGET_MODULE_VERSION}").tag(sync=True)
    _view_name = traitlets.Unicode("DagView").tag(sync=True)
    _view_module = traitlets.Unicode(WIDGET_MODULE).tag(sync=True)
    _view_module_version = traitlets.Unicode(f"^{WIDGET_MODULE_VERSION}").tag(sync=True)

    protocol_version = traitlets.Int(PROTOCOL_VERSION).tag(sync=True)
    flow_name = traitlets.Unicode("").tag(sync=True)
    dot = traitlets.Unicode("").tag(sync=True)
    nodes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    steps = traitlets.Dict().tag(sync=True)
    statuses = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    details = traitlets.Dict().tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    height = traitlets.Unicode("").tag(sync=True)  # CSS height of the graph area; "" = automatic

    FULL_SYNC_INTERVAL = 0.5  # seconds between full ``statuses`` syncs
    BUSY_SYNC_INTERVAL = 5.0  # ... while steps are running

    def __init__(self, flow: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flow = flow
        self._main = MainThread()
        log_to_process_stderr()
        self._batcher = Batcher(lambda updates: self.send(status_message(updates)))
        self._full_sync = Throttle(self._sync_statuses, self.FULL_SYNC_INTERVAL)
        self._busy_sync = Throttle(self._sync_statuses, self.BUSY_SYNC_INTERVAL)
        self._was_busy = False
        self._mirror = FlowMirror(flow, self._on_status, self._push_graph, with_source=False)
        with self.hold_sync():
            self.flow_name = str(flow.name)
            self._push_graph(self._mirror.graph)
            self.statuses = dict(self._mirror.statuses)
        self.on_msg(self._handle_message)

    # kernel -> browser
    def _push_graph(self, graph: GraphInfo) -> None:
        with self.hold_sync():
            self.dot = graph["dot"]
            self.nodes = list(graph["nodes"])
            self.steps = dict(graph["steps"])
            self.statuses = dict(self._mirror.statuses)
            if self.selected and self.selected not in graph["steps"]:
                self.selected = ""
                self.details = {}

    def _on_status(self, updates: dict[str, StatusInfo]) -> None:
        # deltas go out batched; the full dict (what a view created later, a reloaded page or
        # the saved widget state sees) is synced at most twice a second, every few seconds
        # while steps run (a view that appears mid-run asks for it), and at once when a run
        # ends, so that it is current before the cell finishes
        self._batcher.add(updates)
        busy = bool(self._mirror.busy)
        (self._busy_sync if busy else self._full_sync).poke()
        if self._was_busy and not busy:
            self.flush()
        self._was_busy = busy
        if self.selected in updates and updates[self.selected]["status"] not in BUSY:
            self._send_details(self.selected)

    def _sync_statuses(self) -> None:
        self.statuses = dict(self._mirror.statuses)

    def _send_details(self, step: str) -> None:
        if step not in self.flow.graph.steps:
            return
        details = step_details(self.flow, step, self._mirror.statuses.get(step))
        with self.hold_sync():
            self.selected = step
            self.details = dict(details)

    # browser -> kernel
    def _handle_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        msg = validate_client_message(content, self.flow.graph.steps)
        if msg is None:
            return
        kind = msg["type"]
        if kind == "sync":
            # a view appeared (e.g. after a page reload): the mirror is current, send it
            self._mirror.refresh_graph()
            self._batcher.flush()
            self._sync_statuses()
        elif kind == "details":
            self._send_details(msg["step"])
        elif kind in ("run", "rerun", "invalidate", "run_stale"):
            self._main.call(lambda: self._command(msg))
        else:
            log.warning("nbflow: the widget does not handle %r messages", kind)

    def _command(self, msg: Mapping[str, Any]) -> None:
        self.message = ""
        result = run_command(self.flow, msg)
        self._mirror.refresh_graph()
        self._mirror.refresh_statuses()
        self.flush()
        self.message = ("" if result["ok"] else "failed: ") + result["message"]
        self.send(result)
        if self.selected:
            self._send_details(self.selected)

    def select(self, step: str) -> None:
        """Show the details of ``step`` (as a click on its node does)."""
        self.flow.graph.get(step)  # raises, naming the known steps
        self._send_details(step)

    def refresh(self) -> None:
        """Re-read graph and statuses from the flow (events keep them current on their own)."""
        self._mirror.refresh_graph()
        self._mirror.refresh_statuses()
        self._full_sync.poke()
        self.flush()

    def flush(self) -> None:
        """Send pending status updates and the full statuses now (else they follow shortly)."""
        self._batcher.flush()
        self._busy_sync.flush()
        self._full_sync.flush()

    def close(self) -> None:
        self._mirror.close()
        self._batcher.close()
        self._full_sync.close()
        self._busy_sync.close()
        super().close()

    # no front end: an SVG via the system dot, else a text table
    def text(self) -> str:
        return status_table(self.flow_name, self.flow.graph, self._mirror.statuses)

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = self.text()
        svg = render_svg(self.flow.graph, self._mirror.statuses)
        if svg is not None:
            data["image/svg+xml"] = svg
        return data


_shown: dict[int, DagWidget] = {}
_shown_lock = threading.Lock()


def show(flow: Any = None, *, height: str = "") -> DagWidget:
    """The live DAG widget of ``flow`` (one per flow: showing it again adds another view).

    Without ``flow``, the notebook's live flow (``%load_ext nbflow``). Jupyter displays the
    widget when it is a cell's last expression, or pass it to ``display()``.
    """
    if flow is None:
        notebook = sys.modules.get("nbflow.notebook")  # loaded by %load_ext; never imported here
        flow = notebook.live_flow() if notebook is not None else None
        if flow is None:
            raise NbflowError("show() needs a flow: pass one, or run %load_ext nbflow first")
    with _shown_lock:
        widget = _shown.get(id(flow))
        if widget is None or widget.flow is not flow or widget.comm is None:
            widget = DagWidget(flow, height=height)
            _shown[id(flow)] = widget
        elif height:
            widget.height = height
    with contextlib.suppress(Exception):
        widget.refresh()
    return widget


__all__ = [
    "DagWidget",
    "Batcher",
    "FlowMirror",
    "SessionLedger",
    "Throttle",
    "MainThread",
    "build_digraph",
    "graph_info",
    "log_to_process_stderr",
    "render_svg",
    "run_command",
    "show",
    "status_table",
    "step_details",
]
