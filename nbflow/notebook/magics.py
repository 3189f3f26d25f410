"""``%%step`` and ``%flow``: what users type, turned into calls on the :class:`Session`.

Every command validates its words first and answers a mistake with one :class:`UsageError`
(IPython prints it as a single line, no traceback) that names the bad word and the fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from IPython.core import magic as _magic
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class

from ..errors import NbflowError
from .args import FLOW_USAGE, is_identifier, parse_assignments, parse_size, split_words
from .capture import note
from .report import cache_table, run_summary, status_table
from .session import Session, resolve_store

# IPython's decorator factories are typed too narrowly for mypy; they work on methods
cell_magic: Any = _magic.cell_magic
line_magic: Any = _magic.line_magic


@magics_class
class NbflowMagics(Magics):
    """The magics of one session (``%load_ext nbflow`` registers them)."""

    def __init__(self, shell: Any, session: Session) -> None:
        super().__init__(shell)
        self.session = session
        self.commands: dict[str, Callable[[list[str]], Any]] = {
            "status": self.cmd_status,
            "run": self.cmd_run,
            "rerun": self.cmd_rerun,
            "invalidate": self.cmd_invalidate,
            "remove": self.cmd_remove,
            "show": self.cmd_show,
            "cache": self.cmd_cache,
            "config": self.cmd_config,
            "export": self.cmd_export,
            "help": self.cmd_help,
        }

    @cell_magic("step")
    def step(self, line: str, cell: str) -> None:
        """Make this cell a step of the notebook's flow (``%%step --help``)."""
        self.session.step_cell(line, cell)

    @line_magic("step")
    def step_line(self, line: str) -> None:
        """``%step --help``: the usage of the ``%%step`` cell magic."""
        from .args import STEP_USAGE

        if line.strip() not in ("--help", "-h", ""):
            raise UsageError("%%step is a cell magic: put '%%step NAME' on the first line of "
                             "the cell, above the step's code (see %step --help)")
        print(STEP_USAGE)

    @line_magic("flow")
    def flow(self, line: str) -> Any:
        """Status and control of the notebook's flow (``%flow help``)."""
        words = split_words(line, "%flow")
        if not words:
            return self.cmd_status([])
        command = self.commands.get(words[0].lower())
        if command is None:
            raise UsageError(
                f"%flow: unknown command {words[0]!r}; commands are "
                f"{', '.join(c for c in self.commands)} (see %flow help)"
            )
        return command(words[1:])

    # -- helpers --------------------------------------------------------------------------------
    def _one_step(self, words: list[str], command: str) -> str:
        if len(words) != 1:
            raise UsageError(f"%flow {command} needs exactly one step name, e.g. %flow {command} fit")
        name = words[0]
        if name not in self.session.flow.graph.steps:
            raise UsageError(self.session._unknown(name))
        return name

    # -- commands -------------------------------------------------------------------------------
    def cmd_help(self, words: list[str]) -> None:
        print(FLOW_USAGE)

    def cmd_status(self, words: list[str]) -> None:
        if words:
            raise UsageError("%flow status takes no arguments")
        s = self.session
        print(status_table(s.flow, s.flow.status(), s.config.mode, s.describe_notebook()))

    def cmd_run(self, words: list[str]) -> None:
        s = self.session
        if len(words) > 1:
            raise UsageError("%flow run takes at most one step name, e.g. %flow run fit")
        if words and words[0] not in s.flow.graph.steps:
            spec_class = self._flowspec(words[0])
            if spec_class is not None:
                return spec_class.run()
            if words[0] not in s.flow.graph.producers:
                raise UsageError(s._unknown(words[0]))
        if not s.flow.graph.steps:
            raise UsageError("the flow has no steps yet; run a %%step cell first")
        t0 = time.perf_counter()
        targets = s.flow._resolve_targets(words)
        s.run_log()
        result = s.run(targets)
        plan = s.flow.topological_order() if not words else s.flow.graph.topological_order(targets)
        s.bind_results(result, plan if not words else targets)
        self._summary(result, time.perf_counter() - t0)
        s.raise_failure(result, cell=None)
        return None

    def _flowspec(self, name: str) -> Any:
        value = self.shell.user_ns.get(name) if self.shell is not None else None
        if not isinstance(value, type) or not is_identifier(name):
            return None
        try:
            from ..flowspec import FlowSpec
        except ImportError:
            return value if any(b.__name__ == "FlowSpec" for b in value.__mro__[1:]) else None
        return value if issubclass(value, FlowSpec) and value is not FlowSpec else None

    def _summary(self, result: Any, elapsed: float) -> None:
        text = run_summary(result, self.session.run_log(), elapsed)
        note(self.shell, text, summary=True)

    def cmd_rerun(self, words: list[str]) -> None:
        s = self.session
        name = self._one_step(words, "rerun")
        t0 = time.perf_counter()
        s.run_log()
        down = s.flow.downstream(name)
        result = s.run([name, *down], force=[name], why=f"rerun from '{name}'")
        s.bind_results(result, [name, *down])
        self._summary(result, time.perf_counter() - t0)
        s.raise_failure(result, cell=None)

    def cmd_invalidate(self, words: list[str]) -> None:
        s = self.session
        name = self._one_step(words, "invalidate")
        s.flow.invalidate(name)
        s.bound.pop(name, None)
        stale = [name, *s.flow.downstream(name)]
        print(f"invalidated '{name}'; stale now: {', '.join(stale)}")

    def cmd_remove(self, words: list[str]) -> None:
        name = self._one_step(words, "remove")
        self.session.remove(name)
        print(f"removed step '{name}' from the flow (its cache entries stay until gc)")

    def cmd_show(self, words: list[str]) -> Any:
        s = self.session
        try:
            from ..widget import show
        except ImportError:
            return self.cmd_status([])
        return show(s.flow)

    def cmd_cache(self, words: list[str]) -> None:
        s = self.session
        if not words:
            raise UsageError("%flow cache needs ls, clear [STEP] or gc --max-size SIZE")
        sub, rest = words[0], words[1:]
        store = s.flow.store
        if sub == "ls":
            if rest:
                raise UsageError("%flow cache ls takes no arguments")
            current = {k for k in s.flow.plan_keys().values() if k} if s.flow.graph.steps else set()
            entries = [m for m in store.entries() if m.flow == s.flow.name]
            print(cache_table(s.flow.name, entries, current, store.root))
        elif sub == "clear":
            if len(rest) > 1:
                raise UsageError("%flow cache clear takes at most one step name")
            step = rest[0] if rest else None
            if step is not None and not is_identifier(step):
                raise UsageError(f"{step!r} is not a step name")
            n = store.clear(step=step, flow=s.flow.name)
            for name in [step] if step else list(s.flow.graph.steps):
                if name in s.flow.graph.steps:
                    s.flow._mark_stale([name])
            what = f"step '{step}'" if step else f"flow '{s.flow.name}'"
            print(f"removed {n} cache entr{'y' if n == 1 else 'ies'} of {what}")
        elif sub == "gc":
            max_size = self._max_size(rest)
            before = store.size()
            evicted = store.gc(max_size)
            store.remove_orphans()
            after = store.size()
            print(f"evicted {len(evicted)} entr{'y' if len(evicted) == 1 else 'ies'}; "
                  f"store {_mb(before)} -> {_mb(after)} (limit {_mb(max_size)})")
        else:
            raise UsageError(f"%flow cache: unknown command {sub!r}; use ls, clear [STEP] or gc")

    @staticmethod
    def _max_size(words: list[str]) -> int:
        if len(words) == 2 and words[0] == "--max-size":
            return parse_size(words[1], "--max-size")
        if len(words) == 1 and words[0].startswith("--max-size="):
            return parse_size(words[0].split("=", 1)[1], "--max-size")
        raise UsageError("%flow cache gc needs --max-size SIZE, e.g. %flow cache gc --max-size 2G")

    def cmd_config(self, words: list[str]) -> None:
        s = self.session
        settings = parse_assignments(words, "%flow config")
        for key, value in settings.items():
            setter = _CONFIG.get(key)
            if setter is None:
                raise UsageError(
                    f"%flow config: unknown key {key!r}; keys are {', '.join(_CONFIG)}"
                )
            setter(s, value)
        c = s.config
        lazy = "off" if c.lazy is None else _mb(c.lazy)
        extra = "".join(f"  {k}={v}" for k, v in c.extra.items())
        print(f"mode={c.mode}  store={s.flow.store.root}  lazy={lazy}  "
              f"mutation={'on' if c.mutation else 'off'}{extra}")

    def cmd_export(self, words: list[str]) -> Any:
        s = self.session
        if len(words) != 1:
            raise UsageError("%flow export needs a target file, e.g. %flow export analysis_flow.py")
        if not s.notebook or not s.notebook.endswith(".ipynb"):
            raise UsageError(
                "%flow export needs the notebook's file, which this kernel was not told; run "
                "'nbflow export NOTEBOOK.ipynb -o " + words[0] + "' in a terminal instead"
            )
        try:
            from ..export import export_notebook
        except ImportError:
            raise UsageError("%flow export needs nbflow.export, which is not installed") from None
        try:
            export_notebook(s.notebook, words[0])
        except NbflowError as e:
            raise UsageError(f"%flow export: {e}") from None
        print(f"wrote {words[0]} (run it with: python {words[0]} run)")
        return None


def _mb(n: int) -> str:
    for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def _set_mode(s: Session, value: str) -> None:
    if value not in ("manual", "auto"):
        raise UsageError(f"%flow config: mode must be manual or auto, not {value!r}")
    s.config.mode = value


def _set_store(s: Session, value: str) -> None:
    if not value:
        raise UsageError("%flow config: store needs a path, e.g. store=../shared-cache")
    base = _notebook_dir(s)
    s.flow.store = resolve_store(value, base)
    s.bound.clear()


def _notebook_dir(s: Session) -> str:
    import os

    if s.notebook and os.path.isabs(s.notebook):
        return os.path.dirname(s.notebook)
    return os.getcwd()


def _set_lazy(s: Session, value: str) -> None:
    s.config.lazy = None if value.lower() in ("off", "none", "never") else parse_size(value, "lazy")


def _set_mutation(s: Session, value: str) -> None:
    if value.lower() not in ("on", "off", "true", "false", "1", "0"):
        raise UsageError(f"%flow config: mutation must be on or off, not {value!r}")
    s.config.mutation = value.lower() in ("on", "true", "1")


def _set_executor_option(key: str) -> Callable[[Session, str], None]:
    def setter(s: Session, value: str) -> None:
        s.config.extra[key] = value
        options: dict[str, Any] = dict(s.config.extra)
        if "max_workers" in options:
            try:
                options["max_workers"] = int(options["max_workers"])
            except ValueError:
                raise UsageError(f"%flow config: max_workers must be a number, not "
                                 f"{options['max_workers']!r}") from None
        if "executor" not in options:
            options["executor"] = "dask" if "address" in options else None
        try:
            s.flow.config(**options)
        except NbflowError as e:
            del s.config.extra[key]
            raise UsageError(f"%flow config: {e}") from None

    return setter


_CONFIG: dict[str, Callable[[Session, str], None]] = {
    "mode": _set_mode,
    "store": _set_store,
    "lazy": _set_lazy,
    "mutation": _set_mutation,
    "executor": _set_executor_option("executor"),
    "address": _set_executor_option("address"),
    "max_workers": _set_executor_option("max_workers"),
}

__all__ = ["NbflowMagics"]
