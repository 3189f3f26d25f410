"""The messages between the kernel and the front end (the DAG widget and the ``nbflow`` comm).

One versioned message set serves both channels; ``labextension/src/protocol.ts`` mirrors it and
must change with it (bump :data:`PROTOCOL_VERSION` on any incompatible change).

Kernel -> front end: ``state`` (everything, answer to ``sync``), ``status`` (changed steps only),
``steps`` (the facts of edited steps, when steps and edges are unchanged), ``details`` (one step,
answer to ``details``), ``result`` (outcome of a command). A front end that does not know
``steps`` ignores it and is current again after its next ``sync``.
Front end -> kernel: ``sync``, ``details``, ``run``, ``rerun``, ``invalidate``, ``run_stale``,
``export``. Everything from the front end is untrusted: :func:`validate_client_message` accepts
only well-formed messages naming known steps and logs (never raises on) the rest.

Owns only data shapes and validation; must never import IPython, ipywidgets or the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any, Literal, TypedDict

PROTOCOL_VERSION = 1
COMM_TARGET = "nbflow"
STATUSES: tuple[str, ...] = ("stale", "queued", "running", "cached", "done", "failed")

log = logging.getLogger("nbflow.protocol")

Status = Literal["stale", "queued", "running", "cached", "done", "failed"]


class StatusInfo(TypedDict, total=False):
    """What a view shows for one step: status plus the figures for the tooltip."""

    status: Status
    time: float | None  # when the status was reached (seconds since the epoch)
    duration: float | None  # last run time in seconds
    saved: float | None  # time a cache hit saved, in seconds
    sizes: dict[str, int]  # output name -> stored size in bytes
    error: str | None  # traceback text of the last failure
    items: int  # how many foreach items reported so far


class StepInfo(TypedDict):
    """Static facts about one step (change only when the graph changes)."""

    name: str
    inputs: list[str]
    outputs: list[str]
    kind: str
    doc: str | None
    cell_id: str | None  # the notebook cell that defines the step, when known
    cell_source: str | None  # that cell's source, to match cells when no id was sent


class GraphInfo(TypedDict):
    """The layout source and the node order: DOT node ``n{i}`` is step ``nodes[i]``."""

    dot: str
    nodes: list[str]
    steps: dict[str, StepInfo]


class Details(TypedDict, total=False):
    """Everything the details pane shows for one step."""

    step: str
    code: str
    doc: str | None
    inputs: list[str]
    outputs: list[str]
    previews: dict[str, str]  # variable name -> short text preview (repr, shape/dtype)
    status: StatusInfo
    error: str | None


# -- kernel -> front end -------------------------------------------------------------------------
class StateMessage(TypedDict):
    type: Literal["state"]
    version: int
    flow: str
    graph: GraphInfo
    statuses: dict[str, StatusInfo]
    exporter: bool


class StepsMessage(TypedDict):
    """New facts of some steps (an edited cell's source, say): the drawing is unchanged."""

    type: Literal["steps"]
    version: int
    steps: dict[str, StepInfo]


class StatusMessage(TypedDict):
    type: Literal["status"]
    version: int
    updates: dict[str, StatusInfo]


class DetailsMessage(TypedDict):
    type: Literal["details"]
    version: int
    details: Details


class ResultMessage(TypedDict):
    type: Literal["result"]
    version: int
    request: str
    step: str | None
    ok: bool
    message: str


# -- front end -> kernel -------------------------------------------------------------------------
class SyncMessage(TypedDict):
    type: Literal["sync"]
    version: int


class StepMessage(TypedDict):
    type: Literal["details", "run", "rerun", "invalidate"]
    version: int
    step: str


class RunStaleMessage(TypedDict):
    type: Literal["run_stale"]
    version: int


class ExportMessage(TypedDict):
    type: Literal["export"]
    version: int
    notebook: str  # file name of the notebook, in the kernel's working directory


ClientMessage = SyncMessage | StepMessage | RunStaleMessage | ExportMessage

STEP_COMMANDS = frozenset({"details", "run", "rerun", "invalidate"})
# message type -> the keys it carries besides "type" and "version"
_CLIENT_FIELDS: dict[str, frozenset[str]] = {
    "sync": frozenset(),
    "run_stale": frozenset(),
    "export": frozenset({"notebook"}),
    **{name: frozenset({"step"}) for name in STEP_COMMANDS},
}
_MAX_STRING = 4096


def _reject(reason: str, msg: Any) -> dict[str, Any] | None:
    shown = repr(msg)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    log.warning("nbflow ignored a message from the front end (%s): %s", reason, shown)
    return None


def validate_client_message(msg: Any, known_steps: Collection[str]) -> dict[str, Any] | None:
    """Return a clean copy of ``msg`` if it is a well-formed front-end message, else ``None``.

    Rejected (and logged): non-dicts, unknown types, a missing or different protocol version,
    missing or unexpected keys, non-string values, step names not in ``known_steps``, and an
    export target that is not a plain ``.ipynb`` file name.
    """
    if not isinstance(msg, Mapping):
        return _reject("not an object", msg)
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in _CLIENT_FIELDS:
        return _reject("unknown type", msg)
    version = msg.get("version")
    if type(version) is not int or version != PROTOCOL_VERSION:
        return _reject(f"protocol version {version!r}, expected {PROTOCOL_VERSION}", msg)
    fields = _CLIENT_FIELDS[kind]
    extra = set(msg) - fields - {"type", "version"}
    if extra:
        return _reject(f"unexpected keys {sorted(map(str, extra))}", msg)
    missing = fields - set(msg)
    if missing:
        return _reject(f"missing keys {sorted(missing)}", msg)
    clean: dict[str, Any] = {"type": kind, "version": version}
    for name in fields:
        value = msg[name]
        if not isinstance(value, str) or not value or len(value) > _MAX_STRING:
            return _reject(f"{name!r} must be a non-empty string", msg)
        clean[name] = value
    if "step" in clean and clean["step"] not in known_steps:
        return _reject(f"unknown step {clean['step']!r}", msg)
    if "notebook" in clean:
        name = clean["notebook"]
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".ipynb"):
            return _reject("export needs a notebook file name", msg)
    return clean


def status_message(updates: dict[str, StatusInfo]) -> StatusMessage:
    return {"type": "status", "version": PROTOCOL_VERSION, "updates": updates}


def steps_message(steps: dict[str, StepInfo]) -> StepsMessage:
    return {"type": "steps", "version": PROTOCOL_VERSION, "steps": steps}


def details_message(details: Details) -> DetailsMessage:
    return {"type": "details", "version": PROTOCOL_VERSION, "details": details}


def result_message(request: str, step: str | None, ok: bool, message: str) -> ResultMessage:
    return {
        "type": "result",
        "version": PROTOCOL_VERSION,
        "request": request,
        "step": step,
        "ok": ok,
        "message": message,
    }
