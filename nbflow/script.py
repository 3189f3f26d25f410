"""The runtime of a flow script: ``flow.main()`` makes any :class:`~nbflow.Flow` a command.

::

    python analysis_flow.py run [--alpha 0.6] [--from STEP] [--to STEP] [--store PATH]
    python analysis_flow.py run --help          # parameters with types, defaults and help
    python analysis_flow.py show [--svg out.svg | --dot out.dot]
    python analysis_flow.py resume [STEP]       # after a failure: rerun from the failed step

Why a runtime and not generated argparse code: an exported script stays short and readable (its
steps, nothing else), and every flow — exported or hand-written — gets the same commands.

Every ``run``/``resume`` is recorded in the store (see :mod:`nbflow.runs`), so ``resume`` knows the
last run's parameters, targets and failed step. Finished steps need no bookkeeping: the store
memoizes them, so resuming means forcing the failed step and letting the keys do the rest.

Where the store is: ``--store`` if given, else ``$NBFLOW_STORE``, else what the flow was created
with (an exported script passes the notebook's ``.nbflow``, resolved relative to the script file
by :func:`locate_store`). Must never import IPython.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from .errors import NbflowError, UnknownStepError
from .events import Event

if TYPE_CHECKING:
    from .executor import RunResult
    from .flow import Flow
    from .parameters import Parameter

#: run options a parameter may not shadow
_RESERVED = frozenset({"from", "to", "from_step", "to_step", "store", "help", "quiet",
                       "summary_json", "summary-json", "command", "step", "h", "q",
                       "executor", "address", "max_workers", "max-workers"})


class ScriptMixin:
    """Adds :meth:`main` to :class:`~nbflow.Flow`: ``if __name__ == "__main__": flow.main()``."""

    def main(self, argv: Sequence[str] | None = None, *, exit: bool = True,
             workdir: str | None = None) -> int:
        """Run the command line ``argv`` (default ``sys.argv[1:]``) against this flow.

        ``workdir``: the folder steps run in (an exported script passes the notebook's, so the
        cells' relative paths resolve as they did in the notebook). Returns the exit status
        (0 ok, 1 a step failed, 2 bad usage) or, with ``exit=True`` (what a script wants),
        exits the process with it.
        """
        try:
            code = main(self, argv, workdir=workdir)  # type: ignore[arg-type]
        except BrokenPipeError:  # `show | head`: the reader left; not an error of the flow
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            code = 0
        if exit:
            sys.exit(code)
        return code


def beside(script_file: str, relative: str) -> str:
    """``relative`` resolved against the folder of ``script_file`` (use ``__file__``)."""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(script_file)), relative))


def locate_store(script_file: str, relative: str) -> str:
    """The store an exported script uses: ``$NBFLOW_STORE`` if set, else ``relative`` resolved
    against the script's own folder (so the script finds the notebook's cache from any cwd)."""
    env = os.environ.get("NBFLOW_STORE")
    if env:
        return env
    if "://" in relative or os.path.isabs(relative):
        return relative
    return beside(script_file, relative)


# -- parameters -------------------------------------------------------------------------------------
def flow_parameters(flow: Flow) -> list[Parameter]:
    """The flow's parameters as :class:`nbflow.parameters.Parameter` objects, in declaration order.

    ``graph.inputs`` holds what :meth:`Flow.param` declared (a dict of default/type/help/required)
    or a ``Parameter`` itself; either way parsing, validation and ``--help`` text come from
    :mod:`nbflow.parameters`, shared with Metaflow-style flows.
    """
    from .parameters import Parameter

    out: list[Parameter] = []
    for name, spec in flow.graph.inputs.items():
        if isinstance(spec, Parameter):
            out.append(spec)
            continue
        d = dict(spec) if isinstance(spec, dict) else {}
        default = d.get("default", flow.params.get(name))
        out.append(Parameter(name, default, type=d.get("type"), help=d.get("help"),
                             required=bool(d.get("required", False))))
    return out


# -- the command line -------------------------------------------------------------------------------
def build_parser(flow: Flow) -> argparse.ArgumentParser:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else flow.name
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Flow '{flow.name}' ({len(flow.graph.steps)} steps), run by nbflow.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,show,resume}")
    sub.required = True

    run = sub.add_parser(
        "run", help="bring the flow (or --to STEP) up to date; only out-of-date steps run",
        description="Run the flow. Steps whose inputs, code and parameters are unchanged are "
        "served from the store.",
    )
    _add_common(run)
    run.add_argument("--from", dest="from_step", metavar="STEP",
                     help="rerun STEP even if cached, then everything downstream of it")
    run.add_argument("--to", dest="to_step", metavar="STEP",
                     help="run only what STEP needs (STEP and its ancestors)")
    from .parameters import add_arguments

    group = run.add_argument_group("parameters")  # same add_argument API as a parser
    add_arguments(cast(argparse.ArgumentParser, group), flow_parameters(flow))
    _add_executor_options(run)

    show = sub.add_parser("show", help="print the steps, their edges and docstrings, in order")
    show.add_argument("--store", metavar="PATH", help="the store (default: the flow's; $NBFLOW_STORE)")
    show.add_argument("--svg", metavar="PATH", help="also render the graph to an SVG file (needs Graphviz's dot)")
    show.add_argument("--dot", metavar="PATH", help="also write the graph as Graphviz DOT source")

    resume = sub.add_parser(
        "resume", help="rerun the last run from its failed step (or from STEP), reusing the rest",
        description="Resume the last run of this flow: same parameters and targets; steps that "
        "finished are reused from the store, the failed step (or STEP) runs again.",
    )
    resume.add_argument("step", nargs="?", metavar="STEP", help="rerun from this step instead")
    _add_common(resume)
    _add_executor_options(resume)
    return parser


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--executor``, ``--address``, ``--max-workers``: where steps run (nbflow.backends)."""
    from .backends import add_cli_options

    add_cli_options(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH", help="the store (default: the flow's; $NBFLOW_STORE)")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-step status lines")
    p.add_argument("--summary-json", metavar="PATH",
                   help="write what ran, what was cached and what failed as JSON")


def main(flow: Flow, argv: Sequence[str] | None = None, workdir: str | None = None) -> int:
    """Parse ``argv`` and run one command (in ``workdir``, if given); returns the exit status."""
    from .parameters import check_names

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_names(flow_parameters(flow), reserved=_RESERVED)
        parser = build_parser(flow)
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its message (or --help)
        return int(e.code) if isinstance(e.code, int) else 2
    except NbflowError as e:
        print(f"nbflow: {e}", file=sys.stderr)
        return 2
    if getattr(args, "store", None):
        flow.store = os.path.abspath(args.store) if "://" not in args.store else args.store
    elif isinstance(flow._store_location, str | os.PathLike) and flow._store is None:
        location = os.fspath(flow._store_location)
        if "://" not in location:
            flow.store = os.path.abspath(location)  # before a chdir changes what it means
    if workdir is not None and args.command != "show":
        try:
            os.chdir(workdir)
        except OSError as e:
            print(f"nbflow: cannot run in {workdir} ({e.strerror}); the steps expect the "
                  "notebook's folder", file=sys.stderr)
            return 2
    _install_display()
    try:
        if args.command == "show":
            return cmd_show(flow, args)
        if args.command == "resume":
            return cmd_resume(flow, args)
        return cmd_run(flow, args)
    except UnknownStepError as e:
        print(f"nbflow: {e}", file=sys.stderr)
        return 2
    except NbflowError as e:
        print(f"nbflow: {e}", file=sys.stderr)
        return 2


def _install_display() -> None:
    """Give steps the ``display`` builtin a notebook has, printing plain text.

    A builtin, not a module global: keys fingerprint globals a step reads, and a notebook's
    ``display`` is a builtin too, so a step calling it keeps the notebook's key.
    """
    if not hasattr(builtins, "display"):
        def display(*objs: Any, **_: Any) -> None:
            for obj in objs:
                print(repr(obj))

        builtins.display = display  # type: ignore[attr-defined]


# -- run and resume ---------------------------------------------------------------------------------
def cmd_run(flow: Flow, args: argparse.Namespace) -> int:
    from .parameters import values_from_namespace

    params = values_from_namespace(args, flow_parameters(flow))
    targets, force = plan_targets(flow, args.from_step, args.to_step)
    return execute_recorded(flow, params, targets, force, args, command="run")


def plan_targets(flow: Flow, from_step: str | None, to_step: str | None) -> tuple[list[str], list[str]]:
    """Targets and forced steps for ``--from``/``--to`` (both may name a step or an output)."""
    resolve = flow._resolve_targets
    to = resolve([to_step])[0] if to_step else None
    start = resolve([from_step])[0] if from_step else None
    if to is None:
        targets: list[str] = []
    else:
        targets = [to]
        if start is not None and start != to and start not in flow.graph.upstream(to):
            raise NbflowError(
                f"--from {from_step} is not upstream of --to {to_step}; "
                f"steps {to_step} needs: {', '.join(flow.graph.upstream(to)) or 'none'}"
            )
    return targets, ([start] if start else [])


def cmd_resume(flow: Flow, args: argparse.Namespace) -> int:
    from . import runs

    last = runs.last_run(flow.store, flow.name)
    if last is None:
        raise NbflowError(
            f"flow '{flow.name}' has no recorded run in the store {flow.store.root}; "
            "start one with `run` (resume continues a run)"
        )
    step = args.step
    if step is not None:
        step = flow._resolve_targets([step])[0]
    else:
        step = last.failed_step
    if step is None:
        print(f"nbflow: the last run ({last.id}) of '{flow.name}' finished without a failure; "
              "nothing to resume (use `resume STEP` to rerun from a step)", file=sys.stderr)
        return 0
    if step not in flow.graph.steps:
        raise NbflowError(f"the last run stopped at step '{step}', which this flow no longer has; "
                          "use `run`")
    known = set(flow.graph.inputs)
    params = {k: v for k, v in last.params.items() if k in known}
    targets = [t for t in last.meta.get("targets") or [] if t in flow.graph.steps]
    if targets and not any(t == step or step in flow.graph.upstream(t) for t in targets):
        targets.append(step)
    if not args.quiet:
        print(f"nbflow: resuming run {last.id} of '{flow.name}' from step '{step}'", file=sys.stderr)
    return execute_recorded(flow, params, targets, [step], args, command="resume", origin=last.id)


def execute_recorded(
    flow: Flow,
    params: dict[str, Any],
    targets: list[str],
    force: list[str],
    args: argparse.Namespace,
    *,
    command: str,
    origin: str | None = None,
) -> int:
    """Run, print status lines, record the run in the store, return the exit status.

    ``targets`` empty means every step. Parameters are validated and completed with their
    defaults by :func:`nbflow.parameters.resolve` (a missing required one is a usage error)."""
    from . import runs
    from .parameters import resolve

    values = resolve(flow_parameters(flow), params, source="option", owner=f"flow '{flow.name}'")
    flow.graph.check(targets or None)  # a bad graph is a usage error, not a failed run
    started = time.time()
    recorder = runs.RunRecorder(flow.store, flow.name, values, meta={
        "command": command, "targets": targets, "force": force, "origin": origin, "script": True})
    detach = recorder.attach(flow.events)
    unsubscribe = flow.events.subscribe(_printer(flow)) if not args.quiet else (lambda: None)
    from .backends import from_cli

    scheduler = from_cli(args)  # None: the serial walk (or what flow.config chose)
    options = {"executor": scheduler} if scheduler is not None else {}
    try:
        result = flow.run(*targets, params=values, force=force, raise_on_failure=False, **options)
    finally:
        unsubscribe()
        detach()
    duration = time.time() - started
    record = recorder.finish()
    summary = _summary(flow, record.id, command, values, result, duration)
    if getattr(args, "summary_json", None):
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True, default=repr)
    if result.failed:
        step = result.failed[0]
        err = result.errors[step]
        print(user_traceback(err), file=sys.stderr)
        print(f"nbflow: step '{step}' failed: {type(err).__name__}: {err}\n"
              f"nbflow: {len(summary['executed'])} executed, {len(summary['cached'])} cached, "
              f"{len(summary['skipped'])} not run; fix the step, then `resume` (run {record.id})",
              file=sys.stderr)
        return 1
    print(f"nbflow: run {record.id} of '{flow.name}' finished in {duration:.2f} s: "
          f"{len(summary['executed'])} executed"
          + (f" ({', '.join(summary['executed'])})" if summary["executed"] else "")
          + f", {len(summary['cached'])} cached"
          + (f" ({', '.join(summary['cached'])})" if summary["cached"] else ""),
          file=sys.stderr)
    return 0


def _summary(flow: Flow, run_id: str, command: str, params: dict[str, Any], result: RunResult,
             duration: float) -> dict[str, Any]:
    """What ``--summary-json`` writes: enough for CI (and tests) to see what ran and why."""
    return {
        "flow": flow.name,
        "run": run_id,
        "command": command,
        "params": params,
        "executed": list(result.executed),
        "cached": list(result.cached),
        "failed": list(result.failed),
        "skipped": list(result.skipped),
        "keys": {s: m.key for s, m in result.manifests.items()},
        "duration": duration,
        "store": flow.store.root,
    }


def user_traceback(err: BaseException) -> str:
    """The traceback of a failed step without nbflow's own frames (the executor, the wrapper)."""
    here = os.path.dirname(os.path.abspath(__file__))
    tb = traceback.extract_tb(err.__traceback__)
    frames = [f for f in tb if not os.path.abspath(f.filename).startswith(here + os.sep)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames or tb)]
    lines += traceback.format_exception_only(type(err), err)
    return "".join(lines).rstrip()


def _printer(flow: Flow) -> Callable[[Event], None]:
    width = max((len(s) for s in flow.graph.steps), default=8)

    def on_event(ev: Event) -> None:
        if ev.status in ("queued", "stale") or ev.item is not None:
            return
        if ev.status == "running":
            line = "running"
        elif ev.status == "cached":
            line = "cached" + (f" (saved {ev.saved:.2f} s)" if ev.saved else "")
        elif ev.status == "done":
            line = "done" + (f" in {ev.duration:.2f} s" if ev.duration is not None else "")
        else:
            line = ev.status
        print(f"nbflow: {ev.step:<{width}}  {line}", file=sys.stderr, flush=True)

    return on_event


# -- show -------------------------------------------------------------------------------------------
def describe_text(flow: Flow) -> str:
    """The steps in topological order, with what they read and produce, their docstrings and
    where their outputs go; then the parameters."""
    graph = flow.graph
    order = graph.topological_order()
    lines = [f"Flow '{flow.name}': {len(order)} steps"]
    params = flow_parameters(flow)
    if params:
        from .parameters import help_lines

        lines.append("")
        lines.append("Parameters:")
        lines.extend(f"  {line}" for line in help_lines(params))
    producers = graph.producers
    for name in order:
        step = graph.steps[name]
        lines.append("")
        lines.append(f"Step {name}" + (f"  (foreach {step.foreach})" if step.foreach else ""))
        if step.doc:
            for doc_line in step.doc.strip().splitlines():
                lines.append(f"    {doc_line}".rstrip())
        reads = []
        for inp in step.inputs:
            p = producers.get(inp)
            if p is not None and p != name:
                reads.append(f"{inp} (from {p})")
            elif inp in graph.inputs:
                reads.append(f"{inp} (parameter)")
            elif inp in step.params:
                reads.append(f"{inp} (default {step.params[inp]!r})")
        lines.append(f"    reads:    {', '.join(reads) if reads else '-'}")
        lines.append(f"    produces: {', '.join(step.outputs) if step.outputs else '-'}")
        children = graph.children(name)
        lines.append(f"    => {', '.join(children) if children else '(end)'}")
    edges = graph.edges()
    if edges:
        lines.append("")
        lines.append("Edges:")
        for a, b, names in edges:
            lines.append(f"  {a} -> {b}  [{', '.join(names)}]")
    return "\n".join(lines)


def to_dot(flow: Flow) -> str:
    """The graph as DOT source (built with the ``graphviz`` package), edges labelled by names."""
    import graphviz

    dot = graphviz.Digraph(flow.name, graph_attr={"rankdir": "TB"},
                           node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "10"})
    for name in flow.graph.topological_order():
        dot.node(name, name)
    for a, b, names in flow.graph.edges():
        dot.edge(a, b, label=", ".join(names))
    return str(dot.source)


def cmd_show(flow: Flow, args: argparse.Namespace) -> int:
    print(describe_text(flow))
    if args.dot or args.svg:
        try:
            source = to_dot(flow)
        except ImportError:
            print("nbflow: show --svg/--dot needs the Python package 'graphviz' "
                  "(pip install graphviz)", file=sys.stderr)
            return 2
        if args.dot:
            with open(args.dot, "w") as f:
                f.write(source)
        if args.svg:
            return _render_svg(source, args.svg)
    return 0


def _render_svg(source: str, path: str) -> int:
    import shutil

    import graphviz

    if shutil.which("dot") is None:
        print("nbflow: show --svg needs Graphviz's `dot` program, which is not on PATH; install "
              "Graphviz (e.g. apt-get install graphviz, brew install graphviz), or write the DOT "
              "source with `show --dot graph.dot`", file=sys.stderr)
        return 2
    svg = graphviz.Source(source).pipe(format="svg")
    with open(path, "wb") as f:
        f.write(svg)
    print(f"nbflow: wrote {path}", file=sys.stderr)
    return 0
