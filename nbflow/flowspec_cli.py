"""The command line of a flow script: ``python flow.py run | show | resume | runs | check``.

``MyFlow()`` under ``__main__`` lands here. Parameters become ``run`` options (``run --help``
lists them with types, defaults and help). Bad input gets one line naming the thing and the
fix, never a traceback; a failing step prints the step's own traceback (from the user's code
on), then how to resume. Exit codes: 0 done, 1 a step failed or the flow is invalid, 2 usage.
Must never import IPython.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast

from .errors import NbflowError, StepFailed
from .flowspec_graph import FlowGraph, FlowGraphError, parse_flow
from .parameters import ParameterError, add_arguments, values_from_namespace
from .runs import list_runs


def build_parser(cls: type, graph: FlowGraph, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=(graph.doc or f"The {cls.__name__} flow.").replace("%", "%%"),
        epilog="Each command has --help. Steps and foreach items are cached in the store: a run "
               "only computes what changed.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,show,resume,runs,check}")
    sub.required = True

    def common(p: argparse.ArgumentParser, workers: bool = True) -> None:
        p.add_argument("--store", metavar="PATH",
                       help="the nbflow store: a directory or an fsspec URL "
                            "(default: $NBFLOW_STORE or ./.nbflow)")
        if workers:
            from .backends import add_cli_options

            add_cli_options(p)  # --executor, --address, --max-workers N (a local process pool)

    run = sub.add_parser(
        "run", help="run the flow",
        description="Run the flow. Steps (and foreach items) whose code, parameters and inputs "
                    "are unchanged are served from the store.",
    )
    if graph.params:
        group = run.add_argument_group("parameters")  # the same add_argument API as a parser
        add_arguments(cast(argparse.ArgumentParser, group), graph.params)
    common(run)
    show = sub.add_parser("show", help="print the steps, their docstrings and transitions")
    del show
    resume = sub.add_parser(
        "resume", help="rerun from the failed step of the last run (or from STEP)",
        description="Rerun from the failed step of the last run, or from STEP, reusing the "
                    "steps before it from that run (with that run's parameters).",
    )
    resume.add_argument("step", nargs="?", help="the step to rerun from")
    resume.add_argument("--origin-run-id", metavar="ID", help="resume this run instead of the last")
    common(resume)
    runs = sub.add_parser("runs", help="list past runs (newest first)")
    common(runs, workers=False)
    sub.add_parser("check", help="check the flow's graph and exit")
    return parser


def main(cls: type, argv: Sequence[str] | None = None) -> int:
    """Run the command line for flow class ``cls``; returns the exit code."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else cls.__name__
    try:
        graph = parse_flow(cls)
    except (FlowGraphError, ParameterError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    parser = build_parser(cls, graph, prog)
    args = parser.parse_args(argv)
    try:
        return _dispatch(cls, graph, args)
    except StepFailed as e:
        _print_failure(e, prog)
        return 1
    except (NbflowError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ParameterError) else 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _dispatch(cls: type, graph: FlowGraph, args: argparse.Namespace) -> int:
    from .flowspec import resume_flow, run_flow

    if args.command == "show":
        print(graph.show(), end="")
        return 0
    if args.command == "check":
        print(f"{cls.__name__}: the graph is valid ({len(graph.nodes)} steps)")
        return 0
    if args.command == "runs":
        from .flowspec_engine import engine_flow

        store = engine_flow(cls, args.store).store
        for run in list_runs(store, cls.__name__):
            params = " ".join(f"{k}={v!r}" for k, v in run.params.items())
            print(f"{run.id}  {run.created_at}  {run.status:<8} {params}".rstrip())
        return 0
    if args.command == "run":
        values = values_from_namespace(args, graph.params)
        run_flow(cls, values, store=args.store, max_workers=args.max_workers,
                 executor=args.executor, address=args.address, echo=True, source="option")
        return 0
    if args.command == "resume":
        resume_flow(cls, args.step, origin_run_id=args.origin_run_id, store=args.store,
                    max_workers=args.max_workers, executor=args.executor, address=args.address,
                    echo=True)
        return 0
    raise AssertionError(args.command)  # pragma: no cover


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip nbflow's own frames at the top of a traceback: show the user's code first."""
    here = os.path.dirname(os.path.abspath(__file__))
    start = tb
    while start is not None and os.path.abspath(start.tb_frame.f_code.co_filename).startswith(here):
        start = start.tb_next
    return start or tb


def _print_failure(e: StepFailed, prog: str) -> None:
    error: Any = e.error
    lines = traceback.format_exception(type(error), error, _user_frames(error.__traceback__))
    sys.stderr.write("".join(lines))
    run = getattr(e, "run", None)
    where = f" in run {run.id}" if run is not None else ""
    print(f"{prog}: step '{e.step}' failed{where}; fix it, then `python {prog} resume` "
          f"reruns from '{e.step}' and reuses the steps before it", file=sys.stderr)
