"""The ``nbflow`` command: export notebooks to flow scripts and look after stores.

::

    nbflow export analysis.ipynb [-o analysis_flow.py] [--to nbflow|metaflow] [--store PATH]
    nbflow cache ls    [--store PATH] [--flow NAME] [--step NAME]
    nbflow cache clear [--store PATH] [--flow NAME] [--step NAME]
    nbflow cache gc    [--store PATH] --max-size 2G
    nbflow cache check [--store PATH] [--fix]
    nbflow runs        [--store PATH] [--flow NAME]

The store defaults to ``$NBFLOW_STORE``, else ``./.nbflow``. Exit status: 0 ok, 1 the store
check found problems, 2 bad usage. Running a flow is the flow script's own job
(``python analysis_flow.py run``, see :mod:`nbflow.script`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import NbflowError

if TYPE_CHECKING:
    from .store import Store

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``2G`` / ``512M`` / ``1.5GiB`` / ``100000`` -> bytes (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 2G, 512M or 100000")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbflow", description="Turn notebooks into memoized flows; look after their stores.")
    parser.add_argument("--version", action="version", version=f"nbflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{export,cache,runs}")
    sub.required = True

    ex = sub.add_parser("export", help="write a notebook as a flow script",
                        description="Write NOTEBOOK as a flow script that runs its steps with the "
                        "same engine and shares the notebook's cache.")
    ex.add_argument("notebook", help="the .ipynb file")
    ex.add_argument("-o", "--output", metavar="PATH",
                    help="where to write the script (default: NOTEBOOK_flow.py beside it; - for stdout)")
    ex.add_argument("--to", choices=("nbflow", "metaflow"), default="nbflow",
                    help="nbflow: a flow script run by nbflow (default); metaflow: a Metaflow FlowSpec")
    ex.add_argument("--store", metavar="PATH",
                    help="the store the script uses, relative to the script (default: the notebook's)")

    cache = sub.add_parser("cache", help="list, clear, shrink or check a store")
    csub = cache.add_subparsers(dest="action", metavar="{ls,clear,gc,check}")
    csub.required = True
    ls = csub.add_parser("ls", help="list entries: flow, step, size, age, run time")
    clear = csub.add_parser("clear", help="delete entries (all, or one flow's / step's)")
    for p in (ls, clear):
        p.add_argument("--flow", metavar="NAME", help="only this flow's entries")
        p.add_argument("--step", metavar="NAME", help="only this step's entries")
    gc = csub.add_parser("gc", help="evict least recently used entries until the store fits")
    gc.add_argument("--max-size", type=parse_size, required=True, metavar="SIZE",
                    help="e.g. 2G, 512M")
    check = csub.add_parser("check", help="find bad entries, orphan blobs and temp files")
    check.add_argument("--fix", action="store_true", help="remove what check finds")
    for p in (ls, clear, gc, check):
        p.add_argument("--store", metavar="PATH", help="the store (default: $NBFLOW_STORE or ./.nbflow)")

    runs = sub.add_parser("runs", help="list the runs flow scripts recorded in a store")
    runs.add_argument("--store", metavar="PATH", help="the store (default: $NBFLOW_STORE or ./.nbflow)")
    runs.add_argument("--flow", metavar="NAME", help="only this flow's runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbflow`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        if args.command == "export":
            return cmd_export(args)
        if args.command == "runs":
            return cmd_runs(args)
        return cmd_cache(args)
    except NbflowError as e:
        print(f"nbflow: {e}", file=sys.stderr)
        return 2


# -- export ----------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    notebook = Path(args.notebook)
    if notebook.suffix != ".ipynb":
        raise NbflowError(f"{notebook} is not a notebook (.ipynb); pass the notebook file")
    if args.output == "-":
        out: Path | None = None
    elif args.output:
        out = Path(args.output)
    else:
        suffix = "_metaflow.py" if args.to == "metaflow" else "_flow.py"
        out = notebook.with_name(notebook.stem + suffix)
    if args.to == "metaflow":
        return _export_metaflow(notebook, out)
    try:
        from .export import export_notebook

        text = export_notebook(notebook, out, store=args.store)
    except ModuleNotFoundError as e:
        if e.name not in ("nbformat", "IPython"):
            raise
        raise NbflowError(f"nbflow export reads notebooks with {e.name}, which is not installed; "
                          "pip install 'nbflow[notebook]'") from None
    if out is None:
        sys.stdout.write(text)
    else:
        print(f"nbflow: wrote {out} (run it: python {out} run; python {out} show)", file=sys.stderr)
    return 0


def _export_metaflow(notebook: Path, out: Path | None) -> int:
    import importlib
    import importlib.util

    if importlib.util.find_spec("nbflow.export_metaflow") is None:
        raise NbflowError(
            "--to metaflow needs nbflow.export_metaflow, which this installation does not have; "
            "use --to nbflow (the default)"
        )
    export_metaflow = importlib.import_module("nbflow.export_metaflow")
    text = export_metaflow.export_notebook(notebook, out)
    if out is None and isinstance(text, str):
        sys.stdout.write(text)
    elif out is not None:
        print(f"nbflow: wrote {out} (run it with Metaflow: python {out} run)", file=sys.stderr)
    return 0


# -- cache -----------------------------------------------------------------------------------------
def _store(path: str | None) -> Store:
    from .store import open_store

    location = path or os.environ.get("NBFLOW_STORE") or ".nbflow"
    if "://" not in location and not Path(location).is_dir():
        raise NbflowError(f"no store at {location}; pass --store PATH (a notebook's store is the "
                          ".nbflow folder beside it)")
    return open_store(location)


def cmd_cache(args: argparse.Namespace) -> int:
    store = _store(args.store)
    if args.action == "ls":
        return _cache_ls(store, args.flow, args.step)
    if args.action == "clear":
        n = store.clear(step=args.step, flow=args.flow)
        scope = [f"flow '{args.flow}'"] if args.flow else []
        scope += [f"step '{args.step}'"] if args.step else []
        what = f" of {' and '.join(scope)}" if scope else ""
        print(f"nbflow: deleted {n} entr{'y' if n == 1 else 'ies'}{what} from {store.root}")
        return 0
    if args.action == "gc":
        before = store.size()
        evicted = store.gc(args.max_size)
        store.remove_orphans()
        after = store.size()
        print(f"nbflow: evicted {len(evicted)} entr{'y' if len(evicted) == 1 else 'ies'}; "
              f"{human_size(before)} -> {human_size(after)} (limit {human_size(args.max_size)})")
        return 0
    report = store.check(fix=args.fix)
    print(f"nbflow: {store.root}: {report}")
    for key in report.bad_entries:
        print(f"  bad entry   {key}")
    for name in report.orphan_blobs:
        print(f"  orphan blob {name}")
    for path in report.temp_files:
        print(f"  temp file   {path}")
    return 0 if report.clean or args.fix else 1


def _cache_ls(store: Store, flow: str | None, step: str | None) -> int:
    rows = []
    for m in store.entries():
        if (flow is None or m.flow == flow) and (step is None or m.step == step):
            rows.append(m)
    rows.sort(key=lambda m: (m.flow, m.step, m.created))
    now = time.time()
    header = ("FLOW", "STEP", "SIZE", "AGE", "RUN TIME", "KEY")
    table = [header]
    for m in rows:
        table.append((m.flow or "-", m.step or "-", human_size(m.size), _age(now - m.created),
                      f"{m.duration:.2f} s", m.key[:12]))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    total = sum(m.size for m in rows)
    print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {human_size(total)} in {store.root}")
    return 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


# -- runs ------------------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    """Runs recorded in the store (by flow scripts, Metaflow-style flows, notebooks), newest first."""
    from .runs import list_runs

    store = _store(args.store)
    flows = [args.flow] if args.flow else _recorded_flows(store)
    rows = [r for f in flows for r in list_runs(store, f)]
    rows.sort(key=lambda r: r.created, reverse=True)
    if not rows:
        print(f"no recorded runs in {store.root}" + (f" for flow '{args.flow}'" if args.flow else ""))
        return 0
    for r in rows:
        failed = f" at {r.failed_step}" if r.status != "done" and r.failed_step else ""
        params = " ".join(f"{k}={v!r}" for k, v in r.params.items())
        command = r.meta.get("command", "run")
        print(f"{r.id}  {r.flow}  {command}  {r.created_at}  {r.status}{failed}  {params}".rstrip())
    return 0


def _recorded_flows(store: Store) -> list[str]:
    """Names of the flows with run records in ``store``."""
    kinds = sorted({info.path.split("/")[1] for info in store.backend.walk("records")
                    if info.path.count("/") >= 2 and info.path.split("/")[1].startswith("runs-")})
    names: set[str] = set()
    for kind in kinds:
        for rec in store.records(kind)[-1:]:
            data = store.get_record(kind, rec)
            if data is not None and isinstance(data.get("flow"), str):
                names.add(data["flow"])
    return sorted(names)


if __name__ == "__main__":  # python -m nbflow.cli
    sys.exit(main())
