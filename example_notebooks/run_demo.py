"""The demo: run an example notebook headlessly twice, each time in a fresh kernel.

The first run computes every ``%%step`` cell; the second is served from the cache (``.nbflow``
beside the notebook): nothing is recomputed and every cell shows its output again, replayed.

    python example_notebooks/run_demo.py                     # model_fit.ipynb, in a temp copy
    python example_notebooks/run_demo.py sales_analysis.ipynb
    python example_notebooks/run_demo.py --here              # run in example_notebooks/ itself
"""

from __future__ import annotations

import argparse
import os
import reprlib
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def execute(path: Path, timeout: int = 300) -> tuple[nbformat.NotebookNode, float]:
    """Execute ``path`` in a fresh kernel started in its folder; returns (notebook, seconds)."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["JPY_SESSION_NAME"] = str(path)  # what Jupyter tells a kernel: names the flow
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - started


def step_name(cell: Any) -> str | None:
    first = cell.source.split("\n", 1)[0].split()
    return first[1] if len(first) > 1 and first[0] == "%%step" else None


def cell_seconds(cell: Any) -> float:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return float("nan")
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def was_cached(cell: Any) -> bool:
    return any((o.get("metadata") or {}).get("nbflow", {}).get("cached")
               for o in cell.get("outputs", []))


def user_outputs(cell: Any) -> list[Any]:
    """A cell's outputs without nbflow's own notes (the ``cached, saved`` line), with adjacent
    stream outputs of one name joined, as a front end shows them: the kernel sends what a cell
    prints in chunks cut by its flush timer, so one ``print`` may arrive as two."""
    outputs: list[dict[str, Any]] = []
    for o in cell.get("outputs", []):
        if "nbflow" in (o.get("metadata") or {}):
            continue
        last = outputs[-1] if outputs else None
        if (last is not None and o.get("output_type") == "stream"
                and last.get("output_type") == "stream" and last.get("name") == o.get("name")):
            last["text"] = last.get("text", "") + o.get("text", "")
            continue
        outputs.append({k: v for k, v in o.items() if k != "execution_count"})
    return outputs


def summarize(first: nbformat.NotebookNode, second: nbformat.NotebookNode) -> dict[str, Any]:
    rows = []
    for a, b in zip(first.cells, second.cells, strict=True):
        name = step_name(a)
        if a.cell_type != "code" or name is None:
            continue
        rows.append({
            "step": name,
            "run1": "cached" if was_cached(a) else "executed",
            "run2": "cached" if was_cached(b) else "executed",
            "t1": cell_seconds(a),
            "t2": cell_seconds(b),
            "same_output": user_outputs(a) == user_outputs(b),
            "outputs": (user_outputs(a), user_outputs(b)),
        })
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?", default="model_fit.ipynb",
                        help="an example notebook (default: model_fit.ipynb)")
    parser.add_argument("--here", action="store_true",
                        help="run in example_notebooks/ itself (keeps its .nbflow cache)")
    args = parser.parse_args(argv)
    source = (HERE / args.notebook) if not Path(args.notebook).is_absolute() else Path(args.notebook)
    if not source.exists():
        parser.error(f"no notebook {source}")
    workdir = source.parent if args.here else Path(tempfile.mkdtemp(prefix="nbflow-demo-"))
    if not args.here:
        shutil.copy(source, workdir / source.name)
        if (source.parent / "data").is_dir():
            shutil.copytree(source.parent / "data", workdir / "data")
    path = workdir / source.name
    print(f"nbflow demo: executing {source.name} twice, each time in a fresh kernel")
    print(f"  folder: {workdir} (cache in {workdir / '.nbflow'})\n")
    first, t1 = execute(path)
    print(f"run 1 finished in {t1:.1f} s (kernel start included)")
    second, t2 = execute(path)
    print(f"run 2 finished in {t2:.1f} s (kernel start included)\n")
    rows = summarize(first, second)["rows"]
    width = max([len(r["step"]) for r in rows] + [4])
    print(f"{'step'.ljust(width)}  {'run 1':<18}  {'run 2':<18}  output")
    for r in rows:
        print(f"{r['step'].ljust(width)}  {r['run1']:<9}{r['t1']:>7.2f} s  "
              f"{r['run2']:<9}{r['t2']:>7.2f} s  {'same' if r['same_output'] else 'DIFFERENT'}")
    executed = [r["step"] for r in rows if r["run2"] == "executed"]
    cached = [r["step"] for r in rows if r["run2"] == "cached"]
    step_time = (sum(r["t1"] for r in rows), sum(r["t2"] for r in rows))
    print(f"\nsecond run: {len(executed)} step(s) executed, {len(cached)} served from the cache; "
          f"step cells took {step_time[0]:.2f} s then {step_time[1]:.2f} s")
    ok = not executed and all(r["same_output"] for r in rows)
    print("OK: the second run was served from the cache with identical outputs" if ok
          else f"UNEXPECTED: executed again: {executed or 'none'}")
    for r in rows:
        if not r["same_output"]:
            first_out, second_out = (reprlib.repr(o) for o in r["outputs"])
            print(f"  {r['step']}: outputs of run 1: {first_out}\n"
                  f"  {' ' * len(r['step'])}  outputs of run 2: {second_out}")
    if not args.here:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
