from __future__ import annotations

import logging

import pytest

from nbflow.events import STATUSES, Event, EventBus


def test_subscribe_emit_unsubscribe_in_order() -> None:
    bus = EventBus()
    seen: list[str] = []
    un1 = bus.subscribe(lambda e: seen.append(f"1:{e.status}"))
    bus.subscribe(lambda e: seen.append(f"2:{e.status}"))
    bus.emit(Event("f", "s", "running"))
    un1()
    bus.emit(Event("f", "s", "done"))
    assert seen == ["1:running", "2:running", "2:done"]
    assert len(bus) == 1


def test_a_broken_subscriber_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[Event] = []

    def broken(e: Event) -> None:
        raise RuntimeError("view crashed")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="nbflow"):
        bus.emit(Event("f", "s", "failed", error="x"))
    assert len(seen) == 1 and "view crashed" in caplog.text


def test_statuses_are_the_documented_set() -> None:
    assert STATUSES == ("stale", "queued", "running", "cached", "done", "failed")
