"""The front-end message protocol: what is accepted, what is rejected (and logged)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from nbflow import protocol
from nbflow.protocol import PROTOCOL_VERSION, validate_client_message

STEPS = {"load", "clean"}
V = PROTOCOL_VERSION

ACCEPTED: list[tuple[Any, dict[str, Any]]] = [
    ({"type": "sync", "version": V}, {"type": "sync", "version": V}),
    ({"type": "run_stale", "version": V}, {"type": "run_stale", "version": V}),
    ({"type": "run", "version": V, "step": "load"}, {"type": "run", "version": V, "step": "load"}),
    ({"type": "rerun", "version": V, "step": "clean"}, {"type": "rerun", "version": V, "step": "clean"}),
    ({"type": "invalidate", "version": V, "step": "load"},
     {"type": "invalidate", "version": V, "step": "load"}),
    ({"type": "details", "version": V, "step": "clean"},
     {"type": "details", "version": V, "step": "clean"}),
    ({"type": "export", "version": V, "notebook": "analysis.ipynb"},
     {"type": "export", "version": V, "notebook": "analysis.ipynb"}),
]

REJECTED: list[tuple[Any, str]] = [
    (None, "not an object"),
    ("run load", "not an object"),
    ([{"type": "sync"}], "not an object"),
    ({"version": V}, "unknown type"),
    ({"type": "exec", "version": V, "code": "import os"}, "unknown type"),
    ({"type": 3, "version": V}, "unknown type"),
    ({"type": "sync"}, "protocol version"),
    ({"type": "sync", "version": V + 1}, "protocol version"),
    ({"type": "sync", "version": "1"}, "protocol version"),
    ({"type": "sync", "version": True}, "protocol version"),
    ({"type": "sync", "version": V, "step": "load"}, "unexpected keys"),
    ({"type": "run", "version": V}, "missing keys"),
    ({"type": "run", "version": V, "step": "nope"}, "unknown step"),
    ({"type": "run", "version": V, "step": "<script>"}, "unknown step"),
    ({"type": "run", "version": V, "step": ["load"]}, "non-empty string"),
    ({"type": "run", "version": V, "step": ""}, "non-empty string"),
    ({"type": "rerun", "version": V, "step": "load", "force": True}, "unexpected keys"),
    ({"type": "export", "version": V, "notebook": "../secret.ipynb"}, "notebook file name"),
    ({"type": "export", "version": V, "notebook": "/etc/passwd"}, "notebook file name"),
    ({"type": "export", "version": V, "notebook": "notes.txt"}, "notebook file name"),
    ({"type": "export", "version": V, "notebook": ".hidden.ipynb"}, "notebook file name"),
    ({"type": "export", "version": V, "notebook": "x" * 5000 + ".ipynb"}, "non-empty string"),
]


@pytest.mark.parametrize("msg, expected", ACCEPTED)
def test_accepted(msg: Any, expected: dict[str, Any]) -> None:
    assert validate_client_message(msg, STEPS) == expected


@pytest.mark.parametrize("msg, reason", REJECTED)
def test_rejected_and_logged(msg: Any, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nbflow.protocol"):
        assert validate_client_message(msg, STEPS) is None
    assert len(caplog.records) == 1
    assert reason in caplog.records[0].getMessage()


def test_result_is_a_copy() -> None:
    msg = {"type": "run", "version": V, "step": "load"}
    clean = validate_client_message(msg, STEPS)
    assert clean == msg and clean is not msg


def test_kernel_messages_are_json() -> None:
    for msg in (
        protocol.status_message({"load": {"status": "done", "duration": 1.5, "sizes": {"x": 3}}}),
        protocol.details_message({"step": "load", "code": "x = 1", "inputs": [], "outputs": ["x"]}),
        protocol.result_message("run", "load", True, "ran 1 step(s)"),
        protocol.steps_message({"load": {"name": "load", "inputs": [], "outputs": ["x"],
                                         "kind": "cell", "doc": None, "cell_id": "c1",
                                         "cell_source": "%%step load\nx = 2"}}),
    ):
        assert json.loads(json.dumps(msg)) == msg
        assert msg["version"] == V


def test_typescript_mirror_agrees() -> None:
    """labextension/src/protocol.ts carries the same version, target, statuses and types."""
    ts = (Path(__file__).resolve().parents[2] / "labextension" / "src" / "protocol.ts").read_text()
    assert re.search(rf"PROTOCOL_VERSION = {V};", ts)
    assert f"COMM_TARGET = '{protocol.COMM_TARGET}'" in ts
    for status in protocol.STATUSES:
        assert f"'{status}'" in ts
    for kind in ("sync", "details", "run", "rerun", "invalidate", "run_stale", "export"):
        assert f"'{kind}'" in ts
    for kind in ("state", "steps", "status", "details", "result"):
        assert f"type: '{kind}'" in ts
