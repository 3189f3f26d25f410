"""The live flow of one kernel: registering step cells and functions, running them, binding.

One :class:`Session` per kernel owns a :class:`~nbflow.flow.Flow` named after the notebook.
Registration keeps the graph valid or changes nothing: a duplicate output, a cycle or a read of
a name nobody binds is one :class:`UsageError` naming the step and the fix, and the previous
state is restored. Running asks the engine to bring targets up to date (``make``-like: stale
ancestors first); actions run in the user namespace with live, recorded output
(:mod:`.cellstep`). Cached outputs are bound afterwards (lazily when large, :mod:`.namespace`),
and a cell's own recorded output is replayed with one ``cached, saved …`` line.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError

from ..errors import GraphError, NbflowError, NbflowWarning, StepFailed
from ..events import Event
from ..executor import RunResult
from ..flow import Flow, function_step
from ..graph import Step
from ..mainthread import MainThread
from ..store import Manifest
from ..store.base import CorruptEntry
from .args import StepArgs, parse_step_line
from .capture import note, replay
from .cellstep import (
    CellAction,
    CellSpec,
    FunctionAction,
    MemoFingerprinter,
    cell_step,
    check_remote,
    prepare_cell,
    remote_step,
    trim_traceback,
)
from .namespace import Namespace
from .report import seconds

DEFAULT_LAZY = 8 * 1024 * 1024
_MISSING = object()

log = logging.getLogger("nbflow")


@dataclass
class Config:
    """``%flow config`` settings of a session."""

    mode: str = "manual"  # "auto": re-run descendants of a cell that ran
    lazy: int | None = DEFAULT_LAZY  # outputs at least this large are bound lazily (None: never)
    mutation: bool = True  # fingerprint inputs before/after each step
    extra: dict[str, str] = field(default_factory=dict)  # keys other adapters own (executor=...)


def _same_step(a: Step, b: Step) -> bool:
    """Would ``a`` and ``b`` build the same keys from the same inputs?"""
    return (a.code, a.inputs, a.outputs, a.version, a.cache, a.ignore, a.foreach, a.kind) == (
        b.code, b.inputs, b.outputs, b.version, b.cache, b.ignore, b.foreach, b.kind
    ) and _params_equal(a.params, b.params)


def _unchanged(old: Step, new: Step) -> bool:
    """Same cell text, options and external names: the old step's action is as good."""
    a, b = old.action, new.action
    if not (isinstance(a, CellAction) and isinstance(b, CellAction)):
        return False
    return (a.spec.args, a.spec.raw, a.spec.code, a.spec.outputs, a.spec.cell_id,
            a.external_names, a.spec.compiled is b.spec.compiled) == (
        b.spec.args, b.spec.raw, b.spec.code, b.spec.outputs, b.spec.cell_id,
        b.external_names, True) and _same_step(old, new) and _meta(old) == _meta(new)


def _meta(step: Step) -> dict[str, Any]:
    return {k: v for k, v in step.meta.items() if k != "packages"}  # a bound method


def _params_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    from ..store.codec import value_digest

    try:
        return all(value_digest(a[k]) == value_digest(b[k]) for k in a)
    except Exception:
        return False


class Session:
    """One kernel's live flow and the glue between it and the IPython shell."""

    def __init__(self, shell: Any, name: str, store: str, notebook: str | None = None) -> None:
        self.shell = shell
        self.notebook = notebook
        self.flow = Flow(name, store=store)
        self.config = Config()
        self.ns = Namespace(shell.user_ns)
        self.fingerprinter = MemoFingerprinter()
        self.cells: dict[str, CellSpec] = {}
        self.functions: dict[str, Callable[..., Any]] = {}  # function step -> its function
        self.cell_steps: dict[str, str] = {}  # cell id -> the step it defines
        self.bound: dict[str, str] = {}  # step -> key whose outputs the namespace holds
        self.cell_target: str | None = None  # the step of the cell being run (no header)
        self._why = ""
        self._log: list[Event] = []
        self.comm: Any = None  # the JupyterLab comm, when nbflow.notebook.comm attached one
        self.on_close: list[Callable[[], Any]] = []
        self._touched: dict[str, float] = {}
        self._ids: dict[str, int] = {}  # name -> id of the value nbflow last bound to it
        self._running: str | None = None  # the step whose action is running
        self._unsubscribe = self.flow.events.subscribe(self._on_event, repeats=False)
        self._main = MainThread(shell)
        self._idle_work: list[Callable[[], None]] = []
        self._idle_due: Any = None
        self._late: list[str] = []  # what work done once idle warned of, told with the next cell
        self.flow.defer_writes(self.when_idle)
        # (the graph's producer map, a step, that map without the step): see _producers
        self._others: tuple[dict[str, str], str, dict[str, str]] | None = None

    def close(self) -> None:
        self.flush_idle()
        self.flow.defer_writes(None)
        self._unsubscribe()
        for undo in self.on_close:
            undo()
        self.on_close.clear()

    # -- work that can wait until the cell is over ---------------------------------------------
    def when_idle(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the kernel is free (after the cell, before the next), or at once
        where there is no running loop. For what the cell need not wait for: the parse record
        of a new cell, the manifests of the entries it made (the store serves them from memory
        until then). A kernel killed in between loses a shortcut or the entries of its last
        cell, never an earlier result."""
        self._idle_work.append(fn)
        if self._idle_due is None:
            self._idle_due = self._main.later(0, self._at_idle)
            if self._idle_due is None:
                self.flush_idle()

    def _at_idle(self) -> None:
        """The loop's call, once the cell is over. A front end has closed the cell's output by
        then (it saw the kernel go idle), so what the work warns of, such as an entry's
        manifest that could not be written, is told at the start of the next cell."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NbflowWarning)
            self.flush_idle()
        for w in caught:
            if issubclass(w.category, NbflowWarning):
                self._late.append(str(w.message))
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    def flush_idle(self) -> None:
        """Do the work :meth:`when_idle` set aside, now (what it warns of is shown at once)."""
        due, self._idle_due = self._idle_due, None
        if due is not None:
            due.cancel()  # when called before the loop's turn came (a no-op within it)
        work, self._idle_work = self._idle_work, []
        for fn in work:
            try:
                fn()
            except Exception as e:  # a shortcut not written is no error of the user's
                log.debug("nbflow: deferred work failed: %s", e)

    # -- hooks --------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if event.item is not None:
            return
        if event.status in ("done", "failed"):
            self._log.append(event)  # for the summary of a %flow run
        if event.status == "done" and event.key:
            self.bound[event.step] = event.key

    def pre_run_cell(self, info: Any) -> None:
        """Before any cell: globals may have changed; placeholders the cell names get loaded.
        Work set aside after the previous cell is done first if the loop has not got to it
        (cells sent together), and what it warned of is told."""
        if self._idle_work:
            self.flush_idle()
        if self._late:
            late, self._late = self._late, []
            for message in late:
                self.warn(message)
        self.fingerprinter.forget()
        raw = getattr(info, "raw_cell", "") or ""
        if not raw.lstrip().startswith("%%step"):  # a step cell binds its inputs itself
            self.ns.materialize_for(raw)

    def warn(self, message: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("always", NbflowWarning)
            warnings.warn(message, NbflowWarning, stacklevel=3)

    def parent(self) -> dict[str, Any]:
        """The execute_request being handled (cell id, raw code), when a kernel runs us."""
        kernel = getattr(self.shell, "kernel", None)
        try:
            parent = kernel.get_parent("shell") if kernel is not None else None
        except Exception:
            parent = None
        return parent if isinstance(parent, dict) else {}

    def cell_info(self) -> tuple[str | None, str | None]:
        parent = self.parent()
        cell_id = (parent.get("metadata") or {}).get("cellId")
        code = (parent.get("content") or {}).get("code")
        return (cell_id if isinstance(cell_id, str) else None,
                code if isinstance(code, str) else None)

    # -- namespace helpers used by actions ------------------------------------------------------
    def announce(self, step: str) -> None:
        """A header above a step that runs inside another cell's output (an upstream step)."""
        self._running = step
        if step == self.cell_target:
            return
        why = f" ({self._why})" if self._why else ""
        note(self.shell, f"▸ running step '{step}'{why}",
             f"<span style='color:#666'>▸ running step <b>{_html(step)}</b>{_html(why)}</span>",
             header=step)

    def bind_inputs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Bind a step's inputs; returns the function-step functions they shadow (restored
        after the step, so ``score`` keeps naming the function outside step cells)."""
        ns = self.shell.user_ns
        restore = {}
        producers = self.flow.graph.producers
        rebound = []
        for name, value in values.items():
            current = ns.get(name, _MISSING)
            if current is not _MISSING and self.functions.get(name) is current:
                restore[name] = current
            elif (current is not _MISSING and name in producers
                  and id(current) != self._ids.get(name, id(current))):
                rebound.append(name)
            ns[name] = value
            self._ids[name] = id(value)
        if rebound:
            self.warn_rebound(rebound, producers)
        return restore

    def warn_rebound(self, names: list[str], producers: Mapping[str, str]) -> None:
        """A step's input was reassigned in a plain cell: the step does not see that value."""
        which = ", ".join(f"'{n}' (from step '{producers[n]}')" for n in names)
        self.warn(
            f"step '{self._running}' reads {which}, which was reassigned outside "
            f"{'that step' if len(names) == 1 else 'those steps'} (in a plain cell); the step uses "
            "the value the step produced. Put that change into a step so the cache can see it"
        )

    def remember(self, name: str, value: Any) -> None:
        """``name`` now holds ``value`` as nbflow bound it (see :meth:`bind_inputs`)."""
        self._ids[name] = id(value)

    def restore_names(self, restore: Mapping[str, Any]) -> None:
        self.shell.user_ns.update(restore)
        for name, value in restore.items():
            self._ids[name] = id(value)

    def bind_output(self, name: str, value: Any) -> None:
        ns = self.shell.user_ns
        current = ns.get(name, _MISSING)
        if current is not _MISSING and self.functions.get(name) is current:
            return  # a function step's value does not replace the function's name
        ns[name] = value
        self._ids[name] = id(value)

    # -- registration -------------------------------------------------------------------------
    def step_cell(self, line: str, body: str) -> None:
        """``%%step``: register the cell as a step, then bring it up to date."""
        args = parse_step_line(line)
        if args.help:
            from .args import STEP_USAGE

            print(STEP_USAGE)
            return
        if args.remote:
            check_remote()  # a clear error now rather than after the ancestors ran
        self._log.clear()  # only a %flow run reads it: it must not grow cell after cell
        cell_id, raw = self.cell_info()
        spec = prepare_cell(self.shell, args, body, raw or f"%%step {line}\n{body}", cell_id,
                            self.flow.store, defer=self.when_idle)
        self.register_cell(spec)
        self.run_cell(spec.name)

    def _producers(self, exclude: str) -> dict[str, str]:
        """Which step binds each name, leaving out step ``exclude`` (read only). Every edit of
        a cell asks; the graph keeps its map while no step's outputs change, and so does this."""
        producers = self.flow.graph.producers
        memo = self._others
        if memo is not None and memo[0] is producers and memo[1] == exclude:
            return memo[2]
        others = {o: s for o, s in producers.items() if s != exclude}
        self._others = (producers, exclude, others)
        return others

    def _check_reads(self, spec: CellSpec, producers: Mapping[str, str]) -> None:
        graph_inputs = self.flow.graph.inputs
        ns = self.shell.user_ns
        nested = set(spec.compiled.analysis.nested_reads)
        for r in spec.args.inputs:
            if r not in producers and r not in graph_inputs:
                raise UsageError(
                    f"step '{spec.name}': --in names '{r}', which no step defines; define it in "
                    f"a step (run that cell first) or drop it from --in"
                )
        for r in spec.reads:
            if r in producers or r in graph_inputs or r in ns or r in nested:
                continue
            if r == spec.args.foreach or r in spec.args.inputs:
                continue
            raise UsageError(
                f"step '{spec.name}' reads '{r}', which no step defines; define it in a step "
                f"(or a plain cell) and run that cell first, or pass --in"
            )

    def _cell_step(self, spec: CellSpec, producers: Mapping[str, str]) -> Step:
        inputs, externals = spec.split_reads(producers, self.flow.graph.inputs)
        params: dict[str, Any] = {}
        foreach = spec.args.foreach
        if foreach and foreach not in producers and foreach not in self.flow.graph.inputs:
            ns = self.shell.user_ns
            if foreach not in ns:
                raise UsageError(
                    f"step '{spec.name}': --foreach '{foreach}' is not defined; bind it in a step "
                    "or a plain cell first"
                )
            params[foreach] = ns[foreach]  # a plain global: its value is keyed like an input
        action = CellAction(self, spec, externals)
        old = self.flow.graph.steps.get(spec.name)
        if old is not None:
            action.follows(old.action)
        step = cell_step(spec, action, inputs, params)
        if spec.args.remote:
            ns = self.shell.user_ns
            step = remote_step(step, spec, {n: ns[n] for n in externals if n in ns})
        return step

    def _install(self, step: Step) -> None:
        old = self.flow.graph.steps.get(step.name)
        if old is not None and _unchanged(old, step):
            return  # the very same cell run again: keep the step (and the graph's memos)
        if old is not None and _same_step(old, step):
            self.flow.graph.add(step)  # same key recipe: swap the action, nothing goes stale
        else:
            self.flow.add(step)

    def register_cell(self, spec: CellSpec) -> None:
        name = spec.name
        self._register(name, spec.cell_id, lambda producers: self._cell_step(spec, producers),
                       cell=spec)

    def register_function(self, func: Callable[..., Any], options: dict[str, Any]) -> None:
        """``@nbflow.step`` on a top-level function while the extension is loaded."""
        cell_id, raw = self.cell_info()
        try:
            base = function_step(func, flow=self.flow, **options)
        except TypeError as e:
            raise UsageError(f"@nbflow.step on '{getattr(func, '__name__', func)}': {e}") from None
        except NbflowError as e:
            raise UsageError(str(e)) from None
        name = base.name
        step = base.with_(
            action=FunctionAction(self, name, base.action, func),
            meta={**base.meta, "cell_id": cell_id, "cell_source": raw},
        )
        existed = name in self.flow.graph.steps
        old = self.flow.graph.steps.get(name)
        self._register(name, cell_id, lambda producers: step, function=func)
        if (self.config.mode == "auto" and existed and old is not None
                and not _same_step(old, step) and self.flow.downstream(name)):
            self.run_downstream(name)

    def _register(self, name: str, cell_id: str | None, build: Callable[[dict[str, str]], Step],
                  cell: CellSpec | None = None, function: Callable[..., Any] | None = None) -> None:
        graph = self.flow.graph
        snapshot: dict[str, tuple[Step | None, CellSpec | None, Callable[..., Any] | None]] = {}

        def remember(n: str) -> None:
            if n not in snapshot:
                snapshot[n] = (graph.steps.get(n), self.cells.get(n), self.functions.get(n))

        try:
            previous = self.cell_steps.get(cell_id) if cell_id else None
            if previous and previous != name and previous in self.cells:
                # a %%step cell now defines another step (renamed, or turned into a function
                # step): the old one goes. A cell may define several function steps, so those
                # are never dropped this way.
                remember(previous)
                self.flow.remove(previous)
                self.cells.pop(previous, None)
                self.functions.pop(previous, None)
            producers = self._producers(name)
            if cell is not None:
                for out in cell.outputs:
                    if out in producers:
                        raise UsageError(
                            f"step '{name}' binds '{out}', which step '{producers[out]}' already "
                            f"defines; bind a new name here (e.g. {name}_{out} = ...) or choose "
                            f"this step's outputs with --out"
                        )
                self._check_reads(cell, producers)
            old = graph.steps.get(name)
            old_outputs = set(old.outputs) if old is not None else set()
            step = build(producers)
            remember(name)
            self._install(step)
            if cell is not None:
                self.cells[name] = cell
                self.functions.pop(name, None)
            else:
                self.cells.pop(name, None)
                if function is not None:
                    self.functions[name] = function
            changed = old_outputs ^ set(step.outputs)
            if changed:
                self._refresh_readers(changed, exclude=name, remember=remember)
        except (GraphError, NbflowError) as e:
            self._rollback(snapshot)
            raise UsageError(f"step '{name}': {e}" if f"'{name}'" not in str(e) else str(e)) from None
        except BaseException:
            self._rollback(snapshot)
            raise
        if cell_id:
            if cell is not None:
                self.cell_steps[cell_id] = name
            elif self.cell_steps.get(cell_id) not in self.cells:
                self.cell_steps.pop(cell_id, None)

    def _refresh_readers(self, names: set[str], exclude: str,
                         remember: Callable[[str], None]) -> None:
        """Cell steps reading ``names`` re-derive which reads are inputs (a producer came or
        went); e.g. a global becomes the output of a new step cell."""
        for reader, spec in list(self.cells.items()):
            if reader == exclude or not names.intersection(spec.reads):
                continue
            producers = self._producers(reader)
            step = self._cell_step(spec, producers)
            current = self.flow.graph.steps.get(reader)
            if current is None or (current.inputs, current.params.keys()) != (
                    step.inputs, step.params.keys()) or not _same_step(current, step):
                remember(reader)
                self._install(step)

    def _rollback(self, snapshot: Mapping[str, tuple[Step | None, CellSpec | None,
                                                     Callable[..., Any] | None]]) -> None:
        graph = self.flow.graph
        for n, (step, spec, func) in snapshot.items():
            if step is None:
                if n in graph.steps:
                    graph.remove(n)
            else:
                graph.add(step)
            if spec is None:
                self.cells.pop(n, None)
            else:
                self.cells[n] = spec
            if func is None:
                self.functions.pop(n, None)
            else:
                self.functions[n] = func

    def remove(self, name: str) -> None:
        if name not in self.flow.graph.steps:
            raise UsageError(self._unknown(name))
        self.flow.remove(name)
        self.cells.pop(name, None)
        self.functions.pop(name, None)
        self.bound.pop(name, None)
        for cid, n in list(self.cell_steps.items()):
            if n == name:
                del self.cell_steps[cid]

    def _unknown(self, name: str) -> str:
        known = ", ".join(self.flow.graph.steps) or "none yet"
        return f"no step named '{name}' in this notebook's flow (steps: {known})"

    # -- running ------------------------------------------------------------------------------
    def run(self, targets: Iterable[str], *, force: Iterable[str] = (), cell: str | None = None,
            why: str = "") -> RunResult:
        """Bring ``targets`` up to date; failures are returned, not raised."""
        saved = (self.cell_target, self._why)
        self.cell_target, self._why = cell, why
        try:
            return self.flow.run(*targets, force=force, raise_on_failure=False)
        except GraphError as e:
            raise UsageError(str(e)) from None
        except KeyboardInterrupt as e:  # one line, not the engine's frames
            rendered = [f"KeyboardInterrupt: step '{self._running}' was interrupted; nothing of "
                        "it was stored, earlier steps stay cached"]
            e._render_traceback_ = lambda: rendered  # type: ignore[attr-defined]
            raise
        finally:
            self.cell_target, self._why = saved

    def run_cell(self, name: str) -> None:
        """The body of a ``%%step`` cell once registered: hit -> bind + replay, miss -> run."""
        result = self.run([name], cell=name, why=f"upstream of '{name}', out of date")
        self.raise_failure(result, cell=name)
        if name in result.cached:
            manifest = result.manifests.get(name)
            if manifest is not None and self.bind_cached(name, manifest):
                spec = self.cells.get(name)
                if spec is not None:
                    self.ns.rerun_imports(spec.compiled.analysis.imports, name)
                quiet = spec is not None and spec.compiled.quiet
                replay(self.shell, manifest.displays, quiet=quiet)
                if manifest.data.get("displays_truncated"):
                    print("(part of this step's output was too large to keep in the cache)")
                if not quiet and manifest.data.get("value_hidden"):
                    print("(the value of the cell's last line was not kept: the cell ended in "
                          f"';' when it ran; %flow rerun {name} shows it)")
                note(self.shell, f"cached, saved {seconds(manifest.duration)}",
                     f"<span style='color:#888'>⟳ cached, saved {seconds(manifest.duration)}"
                     "</span>", cached=name, saved=manifest.duration)
                return
            # the entry went bad while binding: run the step for real
            result = self.run([name], force=[name], cell=name)
            self.raise_failure(result, cell=name)
        spec = self.cells.get(name)
        if spec is not None and (spec.args.remote or spec.args.foreach) and name in result.executed:
            for out in spec.outputs:  # per-item results or computed on a worker: the whole value
                self.bind_output(out, result[out])
        if self.config.mode == "auto" and self.flow.downstream(name):
            self.run_downstream(name)

    def run_downstream(self, name: str) -> RunResult:
        down = self.flow.downstream(name)
        result = self.run(down, why=f"downstream of '{name}'")
        self.bind_results(result, down)
        self.raise_failure(result, cell=None)
        return result

    def bind_results(self, result: RunResult, steps: Iterable[str]) -> None:
        """Bind outputs of cached ``steps`` whose values the namespace does not hold yet."""
        manifests = result.manifests
        for name in steps:
            manifest = manifests.get(name)
            if name in result.cached and manifest is not None and self.bound.get(name) != manifest.key:
                if not self.bind_cached(name, manifest):
                    forced = self.run([name], force=[name])
                    self.raise_failure(forced, cell=None)

    def bind_cached(self, name: str, manifest: Manifest) -> bool:
        """Bind a cached step's outputs (large ones lazily); False if the entry is bad."""
        step = self.flow.graph.steps[name]
        lazy = self.config.lazy
        eager = []
        store = self.flow.store
        for out in step.outputs:
            info = manifest.outputs.get(out) or {}
            size = int(info.get("size", 0))
            if lazy is not None and size >= lazy and self.functions.get(out) is None:
                proxy = self.ns.bind_lazy(out, name, self._remembering(
                    out, _loader(store, manifest, out, name)), str(info.get("digest", "")), size)
                self._ids[out] = id(proxy)
            else:
                eager.append(out)
        if eager:
            values = store.load_outputs(manifest, eager)
            if values is None:
                return False
            for out, value in values.items():
                self.bind_output(out, value)
        self.bound[name] = manifest.key
        now = time.monotonic()
        if now - self._touched.get(manifest.key, -1e9) > 60:
            # least-recently-used for `cache gc`; not on every hit: touching changes the
            # manifest's mtime, which makes the store verify its signature again
            self._touched[manifest.key] = now
            store.touch(manifest.key)
        return True

    def _remembering(self, name: str, load: Callable[[], Any]) -> Callable[[], Any]:
        def loaded() -> Any:
            value = load()
            self._ids[name] = id(value)
            return value

        return loaded

    def raise_failure(self, result: RunResult, cell: str | None) -> None:
        """Re-raise a step's error with the user's own traceback (nbflow's frames dropped)."""
        if not result.failed:
            return
        failed = result.failed[0]
        err = result.errors[failed]
        if isinstance(err, NbflowError) and not isinstance(err, StepFailed):
            raise UsageError(str(err)) from None
        header: list[str] = []
        if failed != cell:
            blocked = [s for s in result.skipped]
            header.append(
                f"nbflow: step '{failed}' failed"
                + (f"; not run: {', '.join(blocked)}" if blocked else "")
                + f". Fix step '{failed}' and run it again.\n"
            )
        tb = trim_traceback(err.__traceback__)
        try:
            stb = self.shell.InteractiveTB.structured_traceback(type(err), err, tb)
        except Exception:
            import traceback

            stb = traceback.format_exception(type(err), err, tb)
        rendered = header + list(stb)
        try:
            err._render_traceback_ = lambda: rendered  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            raise StepError(failed, err, rendered) from None
        raise err.with_traceback(tb) from None

    # -- status -------------------------------------------------------------------------------
    def run_log(self) -> list[Event]:
        log, self._log = self._log, []
        return log

    def describe_notebook(self) -> str:
        return self.notebook or "(notebook path unknown)"


class StepError(Exception):
    """A step failed with an exception that cannot carry a rendered traceback itself."""

    def __init__(self, step: str, error: BaseException, rendered: list[str]) -> None:
        super().__init__(f"step '{step}' failed: {type(error).__name__}: {error}")
        self._rendered = rendered

    def _render_traceback_(self) -> list[str]:
        return self._rendered


def _loader(store: Any, manifest: Manifest, name: str, step: str) -> Callable[[], Any]:
    def load() -> Any:
        try:
            return store.load(manifest, name)
        except CorruptEntry as e:
            store.forget(manifest.key)
            raise NbflowError(
                f"the cached value of '{name}' (step '{step}') cannot be loaded ({e}); "
                f"run %flow rerun {step}"
            ) from None

    return load


def _html(text: str) -> str:
    import html

    return html.escape(text)


def resolve_store(path: str, notebook_dir: str) -> str:
    """A relative ``store=`` path is relative to the notebook's folder; URLs pass through."""
    if "://" in path:
        return path
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(notebook_dir, path)


__all__ = ["Config", "Session", "StepArgs", "parse_step_line", "resolve_store", "seconds"]


