"""The event bus: every status change of a step is an :class:`Event`.

The widget, the JupyterLab comm, progress bars and run logs subscribe here; none of them reaches
into the executor. Owns nothing but the fan-out; must never import IPython or widget code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import time as _now
from typing import Literal, NamedTuple

Status = Literal["stale", "queued", "running", "cached", "done", "failed"]
STATUSES: tuple[str, ...] = ("stale", "queued", "running", "cached", "done", "failed")

log = logging.getLogger("nbflow")


class _EventFields(NamedTuple):
    flow: str
    step: str
    status: Status
    time: float
    duration: float | None
    saved: float | None
    key: str | None
    sizes: dict[str, int] | None
    error: str | None
    item: int | None


class Event(_EventFields):
    """One status change of one step (``item`` set for a foreach item or batch item).

    Immutable, as every subscriber sees the same object. A named tuple rather than a frozen
    dataclass: a run emits one per step it checks, and a frozen dataclass takes 3× as long to
    make (it sets each field through ``object.__setattr__``).
    """

    __slots__ = ()

    def __new__(
        cls,
        flow: str,
        step: str,
        status: Status,
        time: float | None = None,
        duration: float | None = None,
        saved: float | None = None,
        key: str | None = None,
        sizes: dict[str, int] | None = None,
        error: str | None = None,
        item: int | None = None,
    ) -> Event:
        return tuple.__new__(cls, (flow, step, status, _now() if time is None else time,
                                   duration, saved, key, sizes, error, item))


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out of events to subscribers; a failing subscriber is logged, not raised.

    Why synchronous: the widget must show "running" before a long step starts, and ordering
    between events of one run must be preserved for every subscriber.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._repeaters: list[Subscriber] = []  # the subscribers that want repeats
        self._lock = threading.Lock()

    def subscribe(self, callback: Subscriber, *, repeats: bool = True) -> Callable[[], None]:
        """Call ``callback(event)`` for every later event; returns a function that unsubscribes.

        ``repeats=False`` says the subscriber need not hear again that a step is ``cached``
        when its state already says so, with the same key (an ancestor a later run checked):
        while no subscriber wants repeats, runs do not emit them. A run record wants every
        step of its run; a live view does not.
        """
        with self._lock:
            self._subscribers = [*self._subscribers, callback]
            if repeats:
                self._repeaters = [*self._repeaters, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not callback]
                self._repeaters = [s for s in self._repeaters if s is not callback]

        return unsubscribe

    @property
    def wants_repeats(self) -> bool:
        return bool(self._repeaters)

    def emit(self, event: Event) -> None:
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:  # a broken view must never break a run
                log.exception("nbflow event subscriber %r failed", callback)

    def __len__(self) -> int:
        return len(self._subscribers)
