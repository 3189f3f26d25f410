"""Capture a step's output while it is shown live, and replay it on a cache hit.

While a step runs, ``sys.stdout``/``sys.stderr`` are replaced by tees (the text still reaches
the kernel's streams, so the user sees it as it happens) and the shell's display publisher is
wrapped (rich outputs: HTML tables, matplotlib PNGs) — nothing is hidden, everything is recorded.
Recorded outputs are nbformat-shaped dicts (``stream`` / ``display_data``), kept in the cache
entry's manifest (JSON) and published again, in order, when the step is served from the cache.

Limits: output written straight to file descriptor 1/2 by C code is shown but not recorded;
widgets (e.g. notebook progress bars) are not replayed — their models die with the kernel;
``update_display`` calls are not recorded; past :data:`MAX_BYTES` recording stops (noted).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

#: outputs larger than this in total are not kept for replay (the manifest is JSON)
MAX_BYTES = 20 * 1024 * 1024

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
NBFLOW_META = "nbflow"  # metadata key marking outputs nbflow itself publishes
RESULT = "nbflow_result"  # key marking the recorded display of the cell's trailing expression


class _Tee:
    """A text stream that writes through to ``target`` and records what it wrote."""

    def __init__(self, target: Any, capture: Capture, name: str) -> None:
        self._target = target
        self._capture = capture
        self._name = name

    def write(self, text: str) -> int:
        self._capture.add_stream(self._name, text)
        return int(self._target.write(text) or 0)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, attr: str) -> Any:  # encoding, isatty, fileno, ... of the real stream
        return getattr(self._target, attr)


class Capture:
    """Context manager recording stdout, stderr and published displays of ``shell``."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.outputs: list[dict[str, Any]] = []
        self.truncated = False
        self._bytes = 0
        self._saved: tuple[Any, ...] | None = None
        self._publishing = False  # a display is being published: what it prints is not a stream

    def add_result(self, value: Any) -> None:
        """Display the cell's trailing expression, recorded as such: a later cell that ends in
        ``;`` (the same key: formatting does not count) replays its output without it."""
        from IPython.display import display

        start = len(self.outputs)
        display(value)
        for out in self.outputs[start:]:
            out[RESULT] = True

    # -- recording ------------------------------------------------------------------------------
    def _room(self, n: int) -> bool:
        self._bytes += n
        if self._bytes > MAX_BYTES:
            self.truncated = True
        return not self.truncated

    def add_stream(self, name: str, text: str) -> None:
        if self._publishing:
            return  # a terminal's publisher prints the display: it is recorded as a display
        if not isinstance(text, str) or not text or not self._room(len(text)):
            return
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.outputs.append({"output_type": "stream", "name": name, "text": text})

    def add_display(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> None:
        metadata = dict(metadata or {})
        if not data or WIDGET_VIEW in data or NBFLOW_META in metadata:
            return  # a widget's model dies with the kernel; its text fallback is its repr
        size = sum(len(v) if isinstance(v, str) else 64 for v in data.values())
        if self._room(size):
            self.outputs.append(
                {"output_type": "display_data", "data": dict(data), "metadata": metadata}
            )

    def clear(self) -> None:
        """``clear_output()`` while running: what the notebook keeps is what we replay."""
        self.outputs.clear()
        self._bytes = 0

    # -- context --------------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        pub = getattr(self.shell, "display_pub", None)
        # instance attributes a surrounding capture may have set, restored as they were
        prev_publish = vars(pub).get("publish") if pub is not None else None
        prev_clear = vars(pub).get("clear_output") if pub is not None else None
        self._saved = (sys.stdout, sys.stderr, pub, prev_publish, prev_clear)
        sys.stdout = _Tee(sys.stdout, self, "stdout")
        sys.stderr = _Tee(sys.stderr, self, "stderr")
        if pub is not None:
            original_publish = pub.publish
            original_clear = getattr(pub, "clear_output", None)

            def publish(data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
                if not kwargs.get("update"):
                    self.add_display(data or {}, metadata)
                self._publishing = True
                try:
                    return original_publish(data, metadata, *args, **kwargs)
                finally:
                    self._publishing = False

            pub.publish = publish
            if original_clear is not None:

                def clear_output(*args: Any, **kwargs: Any) -> Any:
                    self.clear()
                    return original_clear(*args, **kwargs)

                pub.clear_output = clear_output
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None
        stdout, stderr, pub, prev_publish, prev_clear = self._saved
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: S110 - a broken stream must not hide the step's result
                pass
        sys.stdout, sys.stderr = stdout, stderr
        if pub is not None:
            for attr, prev in (("publish", prev_publish), ("clear_output", prev_clear)):
                if prev is None:
                    vars(pub).pop(attr, None)
                else:
                    setattr(pub, attr, prev)
        self._saved = None


def flush_figures() -> None:
    """Show pending matplotlib figures now, inside the capture (the inline backend would show
    them after the cell, too late to be recorded for replay)."""
    if "matplotlib.pyplot" not in sys.modules:
        return
    backend_inline = sys.modules.get("matplotlib_inline.backend_inline")
    if backend_inline is None:
        return
    import matplotlib

    if "inline" not in str(matplotlib.get_backend()):
        return
    backend_inline.flush_figures()


def replay(shell: Any, outputs: list[Mapping[str, Any]], quiet: bool = False) -> None:
    """Publish recorded outputs again, in their original order (``quiet``: without the display
    of the trailing expression, for a cell that now ends in ``;``)."""
    pub = getattr(shell, "display_pub", None)
    for out in outputs:
        if quiet and out.get(RESULT):
            continue
        kind = out.get("output_type")
        if kind == "stream":
            stream = sys.stderr if out.get("name") == "stderr" else sys.stdout
            stream.write(str(out.get("text", "")))
            stream.flush()
        elif kind == "display_data" and pub is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            pub.publish(data=dict(out.get("data") or {}), metadata=dict(out.get("metadata") or {}))


def note(shell: Any, text: str, html: str | None = None, **meta: Any) -> None:
    """Publish one line of nbflow's own (``cached, saved 2.3 s``), marked in its metadata so
    tests, the exporter and captures can tell it from the user's output."""
    pub = getattr(shell, "display_pub", None)
    if pub is None:
        print(text)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    data = {"text/plain": text}
    if html is not None:
        data["text/html"] = html
    pub.publish(data=data, metadata={NBFLOW_META: meta})


__all__ = ["Capture", "MAX_BYTES", "NBFLOW_META", "flush_figures", "note", "replay"]
