"""The ``nbflow`` comm on a real kernel, driven the way the JupyterLab extension drives it:
the kernel announces the flow, status updates follow runs, a front end (re)syncs, commands run
steps, and malformed or unknown commands are ignored."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parents[2]
V = 1


def idle_after(m: dict[str, Any], msg_id: str) -> bool:
    return (m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
            and m["parent_header"].get("msg_id") == msg_id)


class Kernel:
    def __init__(self, cwd: Path, notebook: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["JPY_SESSION_NAME"] = str(notebook)
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)
        self.seen: list[dict[str, Any]] = []

    def start(self, code: str, cell_id: str) -> str:
        """Send a cell as JupyterLab does (with its cell id); returns the request's id."""
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}
        msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def execute(self, code: str, cell_id: str) -> None:
        """Run a cell and wait until the kernel is idle after it."""
        msg_id = self.start(code, cell_id)
        reply = self.kc.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        self.wait(lambda m: idle_after(m, msg_id))

    def send(self, comm_id: str, data: Any, msg_type: str = "comm_msg", **extra: Any) -> None:
        msg = self.kc.session.msg(msg_type, {"comm_id": comm_id, "data": data, **extra})
        self.kc.shell_channel.send(msg)

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        for m in self.seen:
            if match(m):
                self.seen.remove(m)
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = self.kc.get_iopub_msg(timeout=0.5)
            except Exception:
                continue
            if match(m):
                return m
            self.seen.append(m)
        raise AssertionError(f"no matching message in {timeout}s")

    def comm_data(self, comm_id: str, kind: str, timeout: float = 30) -> dict[str, Any]:
        m = self.wait(lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
                      and m["content"]["data"].get("type") == kind, timeout)
        return dict(m["content"]["data"])

    def statuses_after(self, comm_id: str) -> dict[str, list[str]]:
        """Every status seen so far on the comm, per step, in order."""
        out: dict[str, list[str]] = {}
        for m in list(self.seen):
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id:
                data = m["content"]["data"]
                if data.get("type") == "status":
                    for step, info in data["updates"].items():
                        out.setdefault(step, []).append(info["status"])
        return out

    def statuses_until(self, comm_id: str, step: str, final: Iterable[str] = ("done", "cached"),
                       timeout: float = 10) -> list[str]:
        """The statuses of ``step`` seen on the comm, in order, once the last is one of
        ``final``: the kernel tells what a cell's steps became when it is idle after the cell,
        so they may follow the cell's idle status."""
        final = set(final)
        deadline = time.monotonic() + timeout
        while True:
            seen = self.statuses_after(comm_id).get(step, [])
            if (seen and seen[-1] in final) or time.monotonic() > deadline:
                return seen
            try:
                self.seen.append(self.kc.get_iopub_msg(timeout=0.2))
            except Exception:
                continue

    def drain(self) -> None:
        """Read what has arrived, then forget it (the next answers are the ones we look for)."""
        while True:
            try:
                self.seen.append(self.kc.get_iopub_msg(timeout=0.3))
            except Exception:
                break
        self.seen.clear()

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    notebook = tmp_path / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src, id=cid) for cid, src in CELLS]
    nbformat.write(nb, str(notebook))
    k = Kernel(tmp_path, notebook)
    yield k
    k.close()


CELLS = [
    ("c0", "%load_ext nbflow"),
    ("c1", "%%step a\nx = 21"),
    ("c2", "%%step b\nimport time\ntime.sleep(0.2)\ny = x * 2"),
]


def test_comm_announces_syncs_and_runs(kernel: Kernel, tmp_path: Path) -> None:
    kernel.execute(CELLS[0][1], "c0")
    opened = kernel.wait(lambda m: m["msg_type"] == "comm_open"
                         and m["content"]["target_name"] == "nbflow")
    comm_id = opened["content"]["comm_id"]
    state = opened["content"]["data"]
    assert state["type"] == "state" and state["version"] == V
    assert state["graph"]["nodes"] == [] and isinstance(state["exporter"], bool)

    for cid, src in CELLS[1:]:
        kernel.execute(src, cid)
    graph = kernel.comm_data(comm_id, "state")["graph"]  # the graph changed: a new full state
    assert kernel.statuses_until(comm_id, "b")[-1] == "done", kernel.statuses_after(comm_id)

    # a front end (a reloaded page) asks for everything on the kernel's comm
    kernel.drain()
    kernel.send(comm_id, {"type": "sync", "version": V})
    state = kernel.comm_data(comm_id, "state")
    assert state["graph"]["nodes"] == ["a", "b"]
    steps = state["graph"]["steps"]
    assert (steps["a"]["cell_id"], steps["b"]["cell_id"]) == ("c1", "c2")
    assert steps["b"]["inputs"] == ["x"] and steps["a"]["outputs"] == ["x"]
    assert {s: i["status"] for s, i in state["statuses"].items()} == {"a": "done", "b": "done"}
    assert "n0 -> n1" in state["graph"]["dot"] and graph["nodes"] in (["a", "b"], ["a"])

    # details of a step: its cell's code and previews of its values
    kernel.send(comm_id, {"type": "details", "version": V, "step": "b"})
    details = kernel.comm_data(comm_id, "details")["details"]
    assert details["code"].startswith("%%step b") and details["previews"].get("y") == "42"

    # an edited cell that reads and binds the same names: only that step's facts are sent
    kernel.drain()
    kernel.execute("%%step b\ny = x * 3", "c2")
    update = kernel.comm_data(comm_id, "steps")["steps"]
    assert list(update) == ["b"] and update["b"]["cell_source"] == "%%step b\ny = x * 3"
    assert not [m for m in kernel.seen if m["msg_type"] == "comm_msg"
                and m["content"]["data"].get("type") == "state"]
    kernel.execute(CELLS[2][1], "c2")  # back as it was: served from the cache

    # "Rerun from here": running, then done, then the result
    kernel.drain()
    kernel.send(comm_id, {"type": "rerun", "version": V, "step": "b"})
    result = kernel.comm_data(comm_id, "result")
    assert result["ok"] is True and result["request"] == "rerun", result
    seen = kernel.statuses_after(comm_id)["b"]
    assert "running" in seen and seen[-1] in ("done", "cached"), seen

    # unknown steps, other versions and junk are ignored: no result comes back
    kernel.drain()
    for bad in ({"type": "rerun", "version": V, "step": "nope"},
                {"type": "rerun", "version": V + 1, "step": "b"},
                {"type": "exec", "version": V, "code": "import os"},
                "run b"):
        kernel.send(comm_id, bad)
    kernel.send(comm_id, {"type": "invalidate", "version": V, "step": "a"})
    result = kernel.comm_data(comm_id, "result")
    assert result["request"] == "invalidate" and result["ok"] is True
    assert not [m for m in kernel.seen if m["msg_type"] == "comm_msg"
                and m["content"]["data"].get("type") == "result"]
    # they are logged to the kernel's log, not into a cell's output
    streams = [m["content"]["text"] for m in kernel.seen if m["msg_type"] == "stream"]
    assert not streams, streams
    assert kernel.statuses_after(comm_id)["b"][-1] == "stale"

    # "Run all stale steps"
    kernel.send(comm_id, {"type": "run_stale", "version": V})
    assert kernel.comm_data(comm_id, "result")["ok"] is True
    kernel.drain()
    kernel.send(comm_id, {"type": "sync", "version": V})
    state = kernel.comm_data(comm_id, "state")
    assert {i["status"] for i in state["statuses"].values()} <= {"done", "cached"}

    # a front end may open its own comm to the same target
    own = uuid.uuid4().hex
    kernel.send(own, {"type": "sync", "version": V}, msg_type="comm_open", target_name="nbflow")
    assert kernel.comm_data(own, "state")["graph"]["nodes"] == ["a", "b"]

    # export, when the exporter is installed: next to the notebook, never elsewhere
    if state["exporter"]:
        kernel.send(comm_id, {"type": "export", "version": V, "notebook": "analysis.ipynb"})
        result = kernel.comm_data(comm_id, "result")
        assert result["ok"] is True, result
        assert (tmp_path / "analysis_flow.py").is_file()
        kernel.drain()
        kernel.send(comm_id, {"type": "export", "version": V, "notebook": "../analysis.ipynb"})
        kernel.send(comm_id, {"type": "sync", "version": V})
        kernel.comm_data(comm_id, "state")
        assert not [m for m in kernel.seen if m["msg_type"] == "comm_msg"
                    and m["content"]["data"].get("type") == "result"]


def test_a_plain_cell_that_changes_a_read_value_turns_the_step_stale(kernel: Kernel,
                                                                     tmp_path: Path) -> None:
    """Events cover steps that run; a plain cell rebinding a global a step reads is caught by
    the status refresh that follows the cell once the kernel is idle. The new cell's parse
    record is written then too."""
    kernel.execute("%load_ext nbflow", "p0")
    opened = kernel.wait(lambda m: m["msg_type"] == "comm_open"
                         and m["content"]["target_name"] == "nbflow")
    comm_id = opened["content"]["comm_id"]
    kernel.send(comm_id, {"type": "sync", "version": V})  # a front end adopts the comm
    kernel.comm_data(comm_id, "state")
    kernel.execute("alpha = 2", "p1")
    kernel.execute("%%step scaled\ny = alpha * 10", "p2")
    assert kernel.statuses_until(comm_id, "scaled")[-1] == "done"
    records = tmp_path / ".nbflow" / "records" / "cells"
    deadline = time.monotonic() + 10
    while not list(records.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(records.glob("*.json"))) == 1
    # an edited quick step: not announced as running on its own, one message for the cell
    kernel.drain()
    kernel.execute("%%step scaled\ny = alpha * 10 + 0", "p2")
    assert kernel.statuses_until(comm_id, "scaled") == ["done"]
    kernel.drain()
    kernel.execute("alpha = 3", "p3")
    update = kernel.wait(lambda m: m["msg_type"] == "comm_msg"
                         and m["content"]["comm_id"] == comm_id
                         and m["content"]["data"].get("type") == "status"
                         and "scaled" in m["content"]["data"]["updates"], timeout=10)
    assert update["content"]["data"]["updates"]["scaled"]["status"] == "stale"
    kernel.drain()
    kernel.execute("alpha = 2", "p4")  # undoing the edit: the entry is there again
    update = kernel.wait(lambda m: m["msg_type"] == "comm_msg"
                         and m["content"]["comm_id"] == comm_id
                         and m["content"]["data"].get("type") == "status"
                         and "scaled" in m["content"]["data"]["updates"], timeout=10)
    assert update["content"]["data"]["updates"]["scaled"]["status"] in ("cached", "done")


def test_a_long_step_is_shown_running_while_its_cell_runs(kernel: Kernel) -> None:
    """What a cell's steps became is told once the kernel is idle after it, but a step that
    starts running is told at once: the front end shows it running while the cell runs."""
    kernel.execute("%load_ext nbflow", "l0")
    opened = kernel.wait(lambda m: m["msg_type"] == "comm_open"
                         and m["content"]["target_name"] == "nbflow")
    comm_id = opened["content"]["comm_id"]
    kernel.send(comm_id, {"type": "sync", "version": V})
    kernel.comm_data(comm_id, "state")
    kernel.drain()
    msg_id = kernel.start("%%step slow\nimport time\ntime.sleep(1.5)\nz = 1", "l1")
    running = kernel.wait(lambda m: m["msg_type"] == "comm_msg"
                          and m["content"]["comm_id"] == comm_id
                          and m["content"]["data"].get("type") == "status"
                          and m["content"]["data"]["updates"].get("slow", {}).get("status")
                          == "running", timeout=10)
    assert running["parent_header"].get("msg_id") == msg_id
    assert not [m for m in kernel.seen if idle_after(m, msg_id)], "running came after the cell"
    kernel.seen.append(running)
    assert kernel.statuses_until(comm_id, "slow") == ["running", "done"]
    assert [m for m in kernel.seen if idle_after(m, msg_id)]  # the cell is over by now
