"""A ``%%step`` cell as an engine :class:`~nbflow.graph.Step`.

:func:`prepare_cell` turns a cell's text into a :class:`CellSpec` (IPython's ``transform_cell``,
static analysis, compilation). :meth:`CellSpec.step` makes the Step: its inputs are the names
the cell reads that another step binds; every other name it reads (a global from a plain cell, a
helper function, a module) is an *external* value, fingerprinted through
:class:`nbflow.keys.Fingerprinter` each time the key is built. The key's code is the
normalized cell (:func:`nbflow.keys.normalize_source`), so an exported function with the same
body shares the cache entry.

The action (:class:`CellAction`) runs the compiled cell in the user namespace — inputs bound,
the namespace's other globals visible, exactly like a plain cell — while :mod:`.capture` records
its output for replay. A trailing expression is displayed (as ``display()``, so a replay looks
the same). Functions and step functions: :class:`FunctionAction` wraps a function step's
action the same way. Must not run anything at import time; IPython is imported lazily.
"""

from __future__ import annotations

import functools
import operator
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import keys
from ..analysis import AnalysisError
from ..errors import NbflowError, NbflowWarning
from ..executor import StepOutput
from ..graph import Step
from ..store.codec import value_digest
from .args import StepArgs
from .capture import Capture, flush_figures
from .namespace import MutationWatch, is_lazy, mutation_message
from .parse import Compiled, compile_cell

if TYPE_CHECKING:
    from .session import Session


@dataclass(frozen=True)
class CellSpec:
    """Everything known about one ``%%step`` cell as last executed."""

    args: StepArgs
    raw: str  # the cell as the user wrote it (with the %%step line): cell-badge matching
    code: str  # the body after IPython's transform_cell
    compiled: Compiled
    outputs: tuple[str, ...]
    cell_id: str | None

    @property
    def name(self) -> str:
        return self.args.name

    @property
    def reads(self) -> tuple[str, ...]:
        """Names the step reads: analysis reads, plus --in and --foreach names."""
        extra = [*self.args.inputs, *([self.args.foreach] if self.args.foreach else [])]
        return tuple(dict.fromkeys([*self.compiled.analysis.reads, *extra]))

    def normalized(self) -> str:
        # a trailing ``return`` (what normalize_body drops for functions) cannot end a cell
        return self.compiled.normalized

    def split_reads(self, producers: Mapping[str, str], params: Mapping[str, Any]) -> tuple[
            tuple[str, ...], tuple[str, ...]]:
        """(inputs, externals): a read bound by another step or a flow parameter is an input."""
        inputs, externals = [], []
        for r in self.reads:
            producer = producers.get(r)
            if (producer is not None and producer != self.name) or r in params:
                inputs.append(r)
            elif r in self.args.inputs or r == self.args.foreach:
                inputs.append(r)  # declared: must come from a step (checked before running)
            elif r not in self.args.ignore:
                externals.append(r)
        return tuple(inputs), tuple(externals)


def prepare_cell(shell: Any, args: StepArgs, body: str, raw: str, cell_id: str | None,
                 store: Any = None,
                 defer: Callable[[Callable[[], None]], None] | None = None) -> CellSpec:
    """Parse and analyse a ``%%step`` cell body. Raises UsageError naming the step and the fix."""
    from IPython.core.error import UsageError

    if not body.strip():
        raise UsageError(f"step '{args.name}' is empty; write the step's code below the %%step line")
    try:
        compiled = compile_cell(shell, body, store, defer)
    except AnalysisError as e:
        raise UsageError(f"step '{args.name}': {e}") from None
    if compiled.empty:
        raise UsageError(f"step '{args.name}' is empty (only comments); write the step's code "
                         "below the %%step line")
    analysis = compiled.analysis
    outputs = args.outputs if args.outputs is not None else analysis.outputs
    if args.foreach is not None and args.foreach in outputs and args.outputs is None:
        outputs = tuple(o for o in outputs if o != args.foreach)
    unknown_ignore = [n for n in args.ignore if n not in analysis.reads and n not in args.inputs]
    if unknown_ignore:
        raise UsageError(
            f"step '{args.name}': --ignore names {', '.join(repr(n) for n in unknown_ignore)}, "
            "which the cell does not read; drop it from --ignore"
        )
    return CellSpec(args, raw, compiled.code, compiled, tuple(outputs), cell_id)


_ABSENT = object()
# values whose identity fixes their content (modules: by name and version, as the fingerprinter
# memoizes them for the whole session)
_IMMUTABLE = frozenset({int, float, complex, str, bytes, bool, type(None), types.ModuleType})


class CellAction:
    """Runs a cell step's code in the user namespace (the Step's ``action``)."""

    def __init__(self, session: Session, spec: CellSpec, externals: tuple[str, ...]) -> None:
        self.session = session
        self.spec = spec
        self.external_names = externals
        self._warned = False
        # (the values read, their digests, the names of mutable ones): a later run that finds
        # the very same objects reuses the digests of the immutable ones and fingerprints only
        # the others (a list or a function's globals may have changed in place)
        self._same: tuple[list[Any], dict[str, str], tuple[str, ...]] | None = None
        # (names, the values read, their packages) when those values are all modules or
        # immutable: every stored entry's record lists the packages, and an edited cell mostly
        # reads the same modules as before
        self._packages: tuple[list[str], list[Any], dict[str, str]] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def follows(self, previous: Any) -> None:
        """Take over what ``previous`` (the action of this cell before an edit) knows of the
        values both read: an edited cell mostly reads what it read before."""
        if isinstance(previous, CellAction):
            self._packages = previous._packages
            if previous.external_names == self.external_names:
                self._same = previous._same

    # -- the key's external values --------------------------------------------------------------
    def externals(self) -> dict[str, str]:
        ns = self.session.shell.user_ns
        values = [ns.get(n, _ABSENT) for n in self.external_names]
        same = self._same
        if same is not None and all(map(operator.is_, same[0], values)):
            if not same[2]:
                return same[1]  # read only, as every caller treats it
            out = {n: d for n, d in same[1].items() if n not in same[2]}
            out.update(self._fingerprint(ns, same[2]))
            return out
        out = self._fingerprint(ns, self.external_names)
        mutable = tuple(n for n, v in zip(self.external_names, values, strict=True)
                        if v is not _ABSENT and (type(v) not in _IMMUTABLE or n not in out))
        self._same = (values, dict(out), mutable)
        return out

    def _fingerprint(self, ns: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
        fp = self.session.fingerprinter
        out: dict[str, str] = {}
        unknown: list[str] = []
        for n in names:
            if n not in ns:
                continue
            value = ns[n]
            if is_lazy(value):
                out[n] = value._nbflow_digest
                continue
            before = len(fp.unknown)
            digest = fp.external(n, value)
            if digest is not None:
                out[n] = digest
            elif len(fp.unknown) > before:
                unknown.append(n)
        if unknown and not self._warned:
            self._warned = True
            self.session.warn(
                f"step '{self.name}' reads {', '.join(repr(n) for n in unknown)}, which cannot be "
                "fingerprinted (not picklable); changes to "
                f"{'it' if len(unknown) == 1 else 'them'} will not invalidate the cache — "
                f"make {'it' if len(unknown) == 1 else 'them'} in a step, or pass --ignore to "
                "say that is intended"
            )
        return out

    def packages(self) -> dict[str, str]:
        """Versions of the packages the cell imports or reads (for the entry's record)."""
        ns = self.session.shell.user_ns
        names = list(dict.fromkeys([*self.external_names,
                                    *import_names(self.spec.compiled.analysis.imports)]))
        values = [ns.get(n, _ABSENT) for n in names]
        memo = self._packages
        if memo is not None and memo[0] == names and all(map(operator.is_, memo[1], values)):
            return dict(memo[2])
        found = keys.packages_of([v for v in values if v is not _ABSENT])
        if all(type(v) in _IMMUTABLE or v is _ABSENT for v in values):
            self._packages = (names, values, dict(found))
        return found

    # -- running --------------------------------------------------------------------------------
    def __call__(self, values: dict[str, Any]) -> StepOutput:
        s = self.session
        s.announce(self.name)
        ns = s.shell.user_ns
        foreach = self.spec.args.foreach
        if foreach is not None and foreach in ns:
            # the cell sees one item under the list's name; the list comes back afterwards
            restore = {foreach: ns[foreach], **s.bind_inputs(values)}
        else:
            restore = s.bind_inputs(values)
        watch = MutationWatch(values) if s.config.mutation else None
        try:
            body, last, _filename = self.spec.compiled.objects(s.shell)
            with Capture(s.shell) as cap:
                for code in body:  # statement by statement, as IPython runs a cell
                    exec(code, ns)
                if last is not None:
                    result = eval(last, ns)
                    if result is not None:
                        cap.add_result(result)
                flush_figures()
        finally:
            s.restore_names(restore)
            s.fingerprinter.forget()
        if watch is not None:
            changed = watch.changed()
            if changed:
                s.warn(mutation_message(self.name, changed, s.flow.graph.producers))
        missing = [o for o in self.spec.outputs if o not in ns]
        if missing:
            raise NbflowError(
                f"step '{self.name}' did not bind {', '.join(repr(m) for m in missing)}; bind "
                "it on every path through the cell, or leave it out with --out"
            )
        meta: dict[str, Any] = {"displays": cap.outputs}
        if cap.truncated:
            meta["displays_truncated"] = True
        if self.spec.compiled.hides_a_value():
            meta["value_hidden"] = True  # a replay without the ';' has no value to show
        outputs = {o: ns[o] for o in self.spec.outputs}
        for o, value in outputs.items():
            s.remember(o, value)
        return StepOutput(outputs, meta)


def remote_step(step: Step, spec: CellSpec, namespace: Mapping[str, Any]) -> Step:
    """``%%step NAME --remote``: the same Step (same key), run on the Dask cluster by
    :class:`nbflow.backends.cell.RemoteCell` in a fresh namespace holding the cell's external
    values (helpers, modules, globals) and its inputs read from the store on the worker."""
    from ..backends.cell import RemoteCell

    return step.with_(action=RemoteCell(spec.code, spec.outputs, dict(namespace), spec.name),
                      meta={**step.meta, "placement": "remote"})


def check_remote() -> None:
    """A clear error before anything runs when Dask is not installed."""
    from IPython.core.error import UsageError

    try:
        import dask.distributed  # noqa: F401

        from ..backends import cell  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f"--remote runs the cell on a Dask cluster, which needs dask[distributed] ({e}); "
            "install nbflow[dask] or drop --remote"
        ) from None


class FunctionAction:
    """Wraps a function step's action: live + recorded output, bound outputs, mutation check."""

    def __init__(self, session: Session, name: str, inner: Callable[[dict[str, Any]], Any],
                 func: Callable[..., Any]) -> None:
        self.session = session
        self.name = name
        self.inner = inner
        self.func = func

    def __reduce__(self) -> tuple[Any, ...]:
        # sent to a worker (executor=local|dask), the step is just its function: no kernel there
        return (_identity, (self.inner,))

    def __call__(self, values: dict[str, Any]) -> StepOutput:
        s = self.session
        s.announce(self.name)
        watch = MutationWatch(values) if s.config.mutation else None
        with Capture(s.shell) as cap:
            result = self.inner(values)
            flush_figures()
        s.fingerprinter.forget()
        if isinstance(result, StepOutput):
            out, meta = dict(result.values), dict(result.meta)
        else:
            out, meta = dict(result), {}
        if watch is not None:
            changed = watch.changed()
            if changed:
                s.warn(mutation_message(self.name, changed, s.flow.graph.producers))
        for name, value in out.items():
            s.bind_output(name, value)
        meta["displays"] = [*meta.get("displays", []), *cap.outputs]
        return StepOutput(out, meta)


def _identity(value: Any) -> Any:
    return value


class MemoFingerprinter(keys.Fingerprinter):
    """A Fingerprinter that remembers module and plain-value digests until :meth:`forget`.

    ``%flow status`` builds every step's key; without the memo each build would pickle every
    global a step reads. The memo is dropped before each cell runs and after each step (either
    may change a global in place); functions and classes are not memoized (their digests depend
    on the recursion path and are cheap: normalized code is cached by code object).
    """

    def __init__(self) -> None:
        super().__init__(value_digest)
        self._memo: dict[int, tuple[Any, str | None]] = {}
        self._modules: dict[str, str] = {}

    def forget(self) -> None:
        self._memo.clear()
        self.unknown = []

    def external(self, name: str, value: Any, _seen: set[int] | None = None) -> str | None:
        if isinstance(value, types.FunctionType | type):
            return super().external(name, value, _seen)
        if isinstance(value, types.ModuleType):
            fp = self._modules.get(value.__name__)
            if fp is None:
                fp = super().external(name, value, _seen)
                if fp is not None:
                    self._modules[value.__name__] = fp
            return fp
        hit = self._memo.get(id(value))
        if hit is not None and hit[0] is value:
            if hit[1] is None:
                self.unknown.append(name)
            return hit[1]
        before = len(self.unknown)
        fp = super().external(name, value, _seen)
        if fp is not None or len(self.unknown) > before:
            self._memo[id(value)] = (value, fp)  # holds the value: its id cannot be reused
        return fp


def warn(message: str) -> None:
    """nbflow's notebook warnings (shown once per occurrence, formatted by the session)."""
    warnings.warn(message, NbflowWarning, stacklevel=2)


def trim_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Drop nbflow's and the executor's frames from the front of a step error's traceback."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(root):
        tb = tb.tb_next
    return tb


@functools.lru_cache(maxsize=512)
def _import_names(statements: tuple[str, ...]) -> tuple[str, ...]:
    import ast

    names: list[str] = []
    for statement in statements:
        for node in ast.parse(statement).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names += [a.asname or a.name.partition(".")[0] for a in node.names]
    return tuple(names)


def import_names(statements: tuple[str, ...]) -> list[str]:
    """Names bound by ``import`` statements (``import a.b`` binds ``a``); memoized, since every
    stored entry's record asks."""
    return list(_import_names(tuple(statements)))


def cell_step(spec: CellSpec, action: CellAction, inputs: tuple[str, ...],
              params: dict[str, Any]) -> Step:
    return Step(
        name=spec.name,
        inputs=inputs,
        outputs=spec.outputs,
        action=action,
        code=spec.normalized(),
        source=spec.code,
        params=params,
        cache=spec.args.cache,
        ignore=tuple(n for n in spec.args.ignore if n in inputs),
        externals=action.externals,
        foreach=spec.args.foreach,
        kind="cell",
        # runs in this kernel's namespace: a parallel or Dask executor must not ship it
        meta={"cell_id": spec.cell_id, "cell_source": spec.raw, "placement": "local",
              "packages": action.packages},
    )


__all__ = [
    "CellAction",
    "CellSpec",
    "FunctionAction",
    "MemoFingerprinter",
    "cell_step",
    "compile_cell",
    "prepare_cell",
    "check_remote",
    "remote_step",
    "trim_traceback",
    "warn",
]


