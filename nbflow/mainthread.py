"""Calls onto the kernel's main thread: at once, from another thread, or once it is idle.

Kept apart from the widget so that the notebook adapter can defer work without importing
ipywidgets. Must never import IPython.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class MainThread:
    """Runs callables on the kernel's main thread.

    Front-end messages may be handled on a kernel subshell thread while a cell runs; a flow must
    only ever run where cells run, one thing at a time, so commands are handed to the loop of
    the thread that created this object (the main thread) and wait for the running cell.
    """

    def __init__(self, shell: Any = None) -> None:
        """``shell``: the IPython shell, when known. Its loop is used only where the shell has
        a kernel: another running loop (a sync Playwright session, say) may not run our
        callbacks for a long time, so without a kernel everything happens at once."""
        self.thread = threading.current_thread()
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        if shell is not None and getattr(shell, "kernel", None) is None:
            self.loop = None

    def call(self, fn: Callable[[], None]) -> None:
        loop = self.loop
        if threading.current_thread() is self.thread or loop is None or loop.is_closed():
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def later(self, delay: float, fn: Callable[[], None]) -> asyncio.Handle | None:
        """Schedules ``fn`` on the main thread's loop in ``delay`` seconds, from that thread.

        Returns None, scheduling nothing, where there is no running loop (a terminal IPython)
        or when called from another thread: the caller then does the work at once.
        """
        loop = self.loop
        if (threading.current_thread() is not self.thread or loop is None or loop.is_closed()
                or not loop.is_running()):
            return None
        if delay <= 0:  # the loop's next turn, without a timer
            return loop.call_soon(fn)
        return loop.call_later(delay, fn)


__all__ = ["MainThread"]
