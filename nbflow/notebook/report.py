"""Text tables for ``%flow status``, ``%flow cache ls`` and the line after ``%flow run``.

Pure formatting of what the flow and store answered; no IPython, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..events import Event
from ..flow import Flow, StepStatus
from ..store import Manifest

_MARK = {"cached": "yes", "done": "yes", "stale": "no", "failed": "no", "running": "-",
         "queued": "-"}


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(round(value)), 60)
    return f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def status_table(flow: Flow, statuses: Mapping[str, StepStatus], mode: str, notebook: str) -> str:
    """``step  status  cached  last run  saved`` for every step, in the flow's order."""
    head = f"flow '{flow.name}' ({notebook}) · store {flow.store.root} · mode {mode}"
    if not statuses:
        return head + "\nno steps yet: add %%step NAME at the top of a cell and run it"
    order = flow.topological_order()
    rows = []
    for name in order:
        st = statuses[name]
        rows.append([name, st.status, _MARK.get(st.status, "-"), seconds(st.duration),
                     seconds(st.saved) if st.status == "cached" else "-",
                     size(sum(st.sizes.values())) if st.sizes else "-"])
    return head + "\n" + _table(["step", "status", "cached", "last run", "saved", "size"], rows)


def cache_table(flow_name: str, entries: Iterable[Manifest], current: set[str], root: str) -> str:
    """This flow's entries, newest first; ``*`` marks the entries the current code uses."""
    items = sorted(entries, key=lambda m: m.created, reverse=True)
    head = f"cache of flow '{flow_name}' in {root}: {len(items)} entr{'y' if len(items) == 1 else 'ies'}"
    if not items:
        return head
    now = time.time()
    rows = [[("* " if m.key in current else "  ") + m.step, m.key[:12], size(m.size),
             seconds(m.duration), _age(now - m.created)] for m in items]
    total = sum(m.size for m in items)
    return (head + f", {size(total)} (* = current)\n"
            + _table(["step", "key", "size", "run time", "age"], rows))


def _age(delta: float) -> str:
    if delta < 60:
        return f"{int(delta)} s ago"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    return f"{int(delta // 86400)} d ago"


def run_summary(result: Any, events: list[Event], elapsed: float) -> str:
    """``ran 2 steps (load 1.2 s, fit 0.3 s); 3 from cache (saved 4.1 s)``."""
    durations = {e.step: e.duration for e in events if e.status == "done"}
    manifests = result.manifests
    saved = sum(manifests[s].duration for s in result.cached if s in manifests)
    parts = []
    if result.executed:
        ran = ", ".join(f"{s} {seconds(durations.get(s))}" for s in result.executed)
        parts.append(f"ran {len(result.executed)} step{'s' if len(result.executed) != 1 else ''}"
                     f" ({ran})")
    if result.cached:
        parts.append(f"{len(result.cached)} from cache (saved {seconds(saved)})")
    if result.failed:
        parts.append(f"failed: {', '.join(result.failed)}")
    if result.skipped:
        parts.append(f"not run: {', '.join(result.skipped)}")
    return ("; ".join(parts) or "nothing to do") + f" — {seconds(elapsed)}"


__all__ = ["cache_table", "run_summary", "seconds", "size", "status_table"]
