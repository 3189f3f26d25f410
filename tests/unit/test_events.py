from __future__ import annotations

import logging
from pathlib import Path

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


def test_repeated_cached_checks_are_emitted_only_for_subscribers_that_want_them(
    tmp_path: Path,
) -> None:
    """A later run checks a cached ancestor again: a live view (repeats=False) hears nothing
    new, a run record (the default) hears every step of every run, and an event is immutable."""
    from nbflow import Flow

    flow = Flow("repeats", store=str(tmp_path / "store"))
    @flow.step
    def a() -> int:
        return 1

    @flow.step
    def b(a: int) -> int:
        return a + 1

    live: list[tuple[str, str]] = []
    stop_live = flow.events.subscribe(lambda e: live.append((e.step, e.status)), repeats=False)
    flow.run("b")
    assert ("a", "done") in live and ("b", "done") in live
    live.clear()
    flow.run("b")  # both cached now: each is news once...
    assert live == [("a", "cached"), ("b", "cached")]
    live.clear()
    flow.run("b")  # ...and then not any more
    assert live == []

    record: list[tuple[str, str]] = []
    stop_record = flow.events.subscribe(lambda e: record.append((e.step, e.status)))
    flow.run("b")
    assert record == [("a", "cached"), ("b", "cached")] and live == record
    stop_record()
    live.clear()
    flow.run("b")
    assert live == []
    stop_live()
    event = Event("f", "s", "done")
    with pytest.raises(AttributeError):
        event.status = "failed"  # type: ignore[misc]
