"""The JSON mirror views read: events set aside by its owner are folded in order, later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbflow
from nbflow.widget import BUSY, FlowMirror


def make_flow(store: Path) -> nbflow.Flow:
    flow = nbflow.Flow("mirrored", store=store)

    @flow.step
    def base():
        return 2

    @flow.step
    def scaled(base):
        return base * 10

    return flow


class Recorder:
    """A mirror's owner that holds what is not busy, as the kernel's comm does within a cell."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []
        self.holding = True

    def hold(self, event: Any) -> bool:
        return self.holding and event.status not in BUSY

    def on_status(self, updates: dict[str, Any]) -> None:
        self.sent.append({name: info["status"] for name, info in updates.items()})


def mirrored(store: Path) -> tuple[nbflow.Flow, Recorder, FlowMirror]:
    """A flow, run once, and its mirror holding for ``Recorder`` (nothing settled yet)."""
    flow = make_flow(store)
    owner = Recorder()
    mirror = FlowMirror(flow, owner.on_status, lambda _graph: None, hold=owner.hold)
    flow.run()
    return flow, owner, mirror


def test_held_events_wait_for_settle_and_keep_their_order(tmp_path: Path) -> None:
    _flow, owner, mirror = mirrored(tmp_path / "store")
    # a step starting is told at once, after what was held before it; the last status waits
    assert owner.sent == [{"base": "queued"}, {"scaled": "queued"}, {"base": "running"},
                          {"base": "done"}, {"scaled": "running"}]
    assert mirror.statuses["scaled"]["status"] == "running"
    mirror.settle()
    assert owner.sent[-1] == {"scaled": "done"}
    assert {s: i["status"] for s, i in mirror.statuses.items()} == {"base": "done",
                                                                     "scaled": "done"}
    mirror.settle()  # nothing left
    assert len(owner.sent) == 6


def test_an_event_not_held_folds_what_was_held_first(tmp_path: Path) -> None:
    flow, owner, mirror = mirrored(tmp_path / "store")
    mirror.settle()
    owner.sent.clear()
    flow.invalidate("base")  # held: stale, stale
    assert owner.sent == []
    owner.holding = False
    flow.run("base", force=["base"])  # a status not held: the stale ones go first
    statuses = [s for update in owner.sent for s in update.values()]
    assert statuses[:2] == ["stale", "stale"] and statuses[-1] == "done", owner.sent
    assert mirror.statuses["base"]["status"] == "done"


def test_a_refresh_settles_first_so_an_older_event_cannot_overwrite_it(tmp_path: Path) -> None:
    flow, _owner, mirror = mirrored(tmp_path / "store")
    mirror.settle()
    flow.invalidate("scaled")  # held: scaled is stale
    make_flow(tmp_path / "store").run()  # another process writes the entry again: no event here
    mirror.refresh_statuses()  # the entry this process computed: done
    assert mirror.statuses["scaled"]["status"] == "done"
    mirror.settle()
    assert mirror.statuses["scaled"]["status"] == "done"
    mirror.close()
