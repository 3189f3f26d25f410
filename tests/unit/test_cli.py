"""The ``nbflow`` command and the flow-script runtime (``flow.main()``), run as real processes.

A small flow script is written to a temp folder and driven through ``run``, ``show`` and
``resume`` in subprocesses; ``--summary-json`` says which steps ran and which were cached.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbflow import Flow
from nbflow.cli import main as cli_main
from nbflow.cli import parse_size

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = '''\
"""A hand-written flow, shaped like an exported one."""

import os

import nbflow
from nbflow.script import beside, locate_store

flow = nbflow.Flow("numbers", store=locate_store(__file__, ".nbflow"))
flow.param("alpha", 0.5, help="Scale factor")
flow.param("n", 4, help="How many numbers")
flow.param("tags", {"a": 1})
flow.param("label", required=True, help="What to call the total")


@flow.step(outputs=("raw",))
def load(n):
    """Make the numbers."""
    raw = list(range(n))
    return raw


@flow.step(outputs=("scaled",))
def scale(raw, alpha):
    """Scale them."""
    if os.environ.get("FAIL_SCALE"):
        raise ValueError("injected failure")
    scaled = [x * alpha for x in raw]
    return scaled


@flow.step(outputs=("total",))
def total_step(scaled, label):
    total = (label, sum(scaled))
    print("total:", total)
    return total


@flow.step(outputs=("count",))
def count(raw, tags):
    count = len(raw) + len(tags)
    return count


if __name__ == "__main__":
    flow.main(workdir=beside(__file__, "."))
'''


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "numbers_flow.py"
    path.write_text(SCRIPT)
    return path


def run(script: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        process: bool = False) -> tuple[int, dict[str, Any], str, str]:
    """Run the script as ``__main__`` (in a subprocess with ``process=True``, else in this
    process, which is faster); (exit status, summary JSON or {}, stdout, stderr)."""
    summary = script.with_name("summary.json")
    summary.unlink(missing_ok=True)
    extra = ["--summary-json", str(summary)] if args and args[0] in ("run", "resume") else []
    argv = [str(script), *args, *extra]
    new_env = {k: v for k, v in os.environ.items() if k != "NBFLOW_STORE"}
    new_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    if process:
        p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=new_env,
                           cwd=cwd or script.parent, timeout=120)
        rc, out, err = p.returncode, p.stdout, p.stderr
    else:
        saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
        os.environ.clear()
        os.environ.update(new_env)
        os.chdir(cwd or script.parent)
        sys.argv = argv
        out_io, err_io = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out_io), contextlib.redirect_stderr(err_io):
                try:
                    runpy.run_path(str(script), run_name="__main__")
                    rc = 0
                except SystemExit as stop:
                    rc = stop.code if isinstance(stop.code, int) else 1
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
            sys.argv = saved_argv
        out, err = out_io.getvalue(), err_io.getvalue()
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return rc, data, out, err


def test_run_caches_and_parameters_rerun_exactly_their_dependents(script: Path, tmp_path: Path) -> None:
    rc, s, out, err = run(script, "run", "--label", "L", cwd=tmp_path.parent, process=True)  # any cwd
    assert rc == 0, err
    assert s["executed"] == ["load", "scale", "total_step", "count"] and s["cached"] == []
    assert "total: ('L', 3.0)" in out
    assert "4 executed (load, scale, total_step, count), 0 cached" in err
    assert s["store"] == str(tmp_path / ".nbflow")  # beside the script, not the cwd
    rc, s, _, err = run(script, "run", "--label", "L", process=True)  # a new process: all cached
    assert rc == 0 and s["executed"] == [] and len(s["cached"]) == 4, err
    rc, s, _, _ = run(script, "run", "--label", "L", "--alpha", "2")
    assert s["executed"] == ["scale", "total_step"] and s["cached"] == ["load", "count"]
    assert s["params"] == {"alpha": 2.0, "n": 4, "tags": {"a": 1}, "label": "L"}
    rc, s, _, _ = run(script, "run", "--label", "L", "--tags", '{"a": 1, "b": 2}')
    assert s["executed"] == ["count"]
    # --store and NBFLOW_STORE move the store
    rc, s, _, _ = run(script, "run", "--label", "L", "--store", str(tmp_path / "other"))
    assert s["store"] == str(tmp_path / "other") and len(s["executed"]) == 4
    rc, s, _, _ = run(script, "run", "--label", "L", env={"NBFLOW_STORE": str(tmp_path / "other")})
    assert s["store"] == str(tmp_path / "other") and s["executed"] == []


def test_bad_parameters_are_clear_errors(script: Path) -> None:
    rc, _, _, err = run(script, "run", "--label", "L", "--alpha", "abc")
    assert rc == 2
    assert "argument --alpha: parameter 'alpha' expects a number, got 'abc' from --alpha" in err
    rc, _, _, err = run(script, "run", "--label", "L", "--tags", "{bad")
    assert rc == 2 and "parameter 'tags' expects JSON" in err
    rc, _, _, err = run(script, "run")
    assert rc == 2 and "parameter 'label' is required; pass --label STR" in err
    rc, _, out, _ = run(script, "run", "--help")
    assert rc == 0
    assert "--alpha FLOAT" in out and "Scale factor [default: 0.5]" in out
    assert "--n INT" in out and "--tags JSON" in out and '[default: {"a": 1}]' in out
    assert "--label STR" in out and "[required]" in out
    rc, _, _, err = run(script, "run", "--label", "L", "--to", "nope")
    assert rc == 2 and "no step named 'nope'; known steps: count, load, scale, total_step" in err


def test_from_and_to(script: Path) -> None:
    assert run(script, "run", "--label", "L")[0] == 0
    rc, s, _, _ = run(script, "run", "--label", "L", "--to", "scale")
    assert rc == 0 and s["cached"] == ["load", "scale"] and s["executed"] == []
    rc, s, _, _ = run(script, "run", "--label", "L", "--from", "scale")
    # scale is forced; its output is unchanged, so total_step stays cached (early cutoff)
    assert s["executed"] == ["scale"] and set(s["cached"]) == {"load", "total_step", "count"}
    rc, s, _, _ = run(script, "run", "--label", "L", "--from", "load", "--to", "scale")
    assert s["executed"] == ["load"] and s["cached"] == ["scale"]
    rc, _, _, err = run(script, "run", "--label", "L", "--from", "count", "--to", "scale")
    assert rc == 2 and "--from count is not upstream of --to scale" in err


def test_resume_after_a_failure(script: Path) -> None:
    rc, s, _, err = run(script, "run", "--label", "L", "--alpha", "3", env={"FAIL_SCALE": "1"},
                        process=True)
    assert rc == 1
    assert s["failed"] == ["scale"] and s["skipped"] == ["total_step"]
    assert set(s["executed"]) == {"load", "count"}
    assert "ValueError: injected failure" in err and "then `resume`" in err
    assert 'numbers_flow.py", line' in err and "executor.py" not in err  # the user's frames only
    rc, s, _, err = run(script, "resume", process=True)
    assert rc == 0, err
    assert f"resuming run {s['run']}" not in err  # a new run, resuming the failed one
    assert "from step 'scale'" in err
    assert s["params"]["alpha"] == 3.0 and s["params"]["label"] == "L"  # the failed run's values
    assert s["executed"] == ["scale", "total_step"] and set(s["cached"]) == {"load", "count"}
    rc, _, _, err = run(script, "resume")
    assert rc == 0 and "finished without a failure; nothing to resume" in err
    rc, s, _, _ = run(script, "resume", "load")
    assert s["executed"] == ["load"]  # forced; everything after it is unchanged


def test_resume_without_a_run(script: Path) -> None:
    rc, _, _, err = run(script, "resume")
    assert rc == 2 and "flow 'numbers' has no recorded run in the store" in err


def test_show_text_svg_and_dot(script: Path, tmp_path: Path) -> None:
    rc, _, out, _ = run(script, "show")
    assert rc == 0
    assert out.index("Step load") < out.index("Step scale") < out.index("Step total_step")
    assert "    Make the numbers.\n" in out and "    Scale them.\n" in out
    assert "reads:    raw (from load), alpha (parameter)" in out
    assert "=> total_step" in out and "load -> scale  [raw]" in out
    assert "--alpha FLOAT  Scale factor [default: 0.5]" in out
    svg, dot = tmp_path / "g.svg", tmp_path / "g.dot"
    assert shutil.which("dot"), "Graphviz's dot is installed by the test command"
    rc, _, _, err = run(script, "show", "--svg", str(svg), "--dot", str(dot))
    assert rc == 0, err
    assert "<svg" in svg.read_text() and "total_step" in svg.read_text()
    assert 'load -> scale [label=raw]' in dot.read_text()
    empty = tmp_path / "empty-path"
    empty.mkdir()
    rc, _, _, err = run(script, "show", "--svg", str(tmp_path / "x.svg"), env={"PATH": str(empty)},
                        process=True)
    assert rc == 2 and "show --svg needs Graphviz's `dot` program, which is not on PATH" in err


def test_main_in_process(tmp_path: Path) -> None:
    flow = Flow("inproc", store=tmp_path / "s")
    flow.param("k", 2)

    @flow.step(outputs=("y",))
    def double(k: int) -> int:
        return k * 2

    rc, out, err = call(lambda: flow.main(["run", "--k", "5", "-q"], exit=False))
    assert rc == 0 and "1 executed (double)" in err
    assert flow.last_result is not None and flow.last_result["y"] == 10
    with pytest.raises(SystemExit) as stop:
        call(lambda: flow.main(["bogus"]))
    assert stop.value.code == 2
    clash = Flow("clash", store=tmp_path / "s")
    clash.param("store", 1)
    rc, _, err = call(lambda: clash.main(["show"], exit=False))
    assert rc == 2 and "parameter 'store' clashes with a name nbflow uses" in err


def call(fn: Any) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fn()
    return rc, out.getvalue(), err.getvalue()


# -- the nbflow command ---------------------------------------------------------------------------
def test_export_command(tmp_path: Path) -> None:
    nb = new_notebook()
    nb.cells = [new_code_cell("%%step a\nx = 1")]
    path = tmp_path / "my nb.ipynb"
    nbformat.write(nb, str(path))
    rc, _, err = call(lambda: cli_main(["export", str(path)]))
    assert rc == 0 and (tmp_path / "my nb_flow.py").exists()
    assert "wrote" in err
    assert 'nbflow.Flow("my_nb", ' in (tmp_path / "my nb_flow.py").read_text()  # as the notebook names it
    rc, out, _ = call(lambda: cli_main(["export", str(path), "-o", "-"]))
    assert rc == 0 and out.startswith('"""') and "def a():" in out
    rc, _, err = call(lambda: cli_main(["export", str(tmp_path / "missing.ipynb")]))
    assert rc == 2 and "does not exist" in err
    rc, _, err = call(lambda: cli_main(["export", str(tmp_path / "x.txt")]))
    assert rc == 2 and "is not a notebook (.ipynb)" in err
    import importlib.util

    rc, _, err = call(lambda: cli_main(["export", str(path), "--to", "metaflow", "-o",
                                        str(tmp_path / "mf.py")]))
    if importlib.util.find_spec("nbflow.export_metaflow") is None:
        assert rc == 2 and "--to metaflow needs nbflow.export_metaflow" in err
    else:
        assert rc == 0 and "FlowSpec" in (tmp_path / "mf.py").read_text()


def test_cache_commands(tmp_path: Path) -> None:
    store = tmp_path / "store"
    flow = Flow("maint", store=store)

    @flow.step
    def big() -> bytes:
        return b"x" * 200_000

    @flow.step
    def small() -> int:
        return 1

    flow.run()
    rc, out, _ = call(lambda: cli_main(["cache", "ls", "--store", str(store)]))
    assert rc == 0
    assert out.splitlines()[0].split() == ["FLOW", "STEP", "SIZE", "AGE", "RUN", "TIME", "KEY"]
    assert "maint  big" in out and "2 entries" in out
    rc, out, _ = call(lambda: cli_main(["cache", "ls", "--store", str(store), "--step", "small"]))
    assert "1 entry" in out and "big" not in out
    rc, out, _ = call(lambda: cli_main(["cache", "check", "--store", str(store)]))
    assert rc == 0 and "2 entries; 0 bad" in out
    # corrupt one blob: check reports it (exit 1), --fix removes it
    blob = max((p for p in (store / "blobs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    rc, out, _ = call(lambda: cli_main(["cache", "check", "--store", str(store)]))
    assert rc == 1 and "1 bad" in out and "bad entry" in out
    rc, out, _ = call(lambda: cli_main(["cache", "check", "--store", str(store), "--fix"]))
    assert rc == 0
    rc, out, _ = call(lambda: cli_main(["cache", "check", "--store", str(store)]))
    assert rc == 0 and "1 entries; 0 bad, 0 orphan blobs" in out
    flow.run()
    rc, out, _ = call(lambda: cli_main(["cache", "gc", "--store", str(store), "--max-size", "100k"]))
    assert rc == 0 and "nbflow: evicted " in out and "(limit 100.0 KiB)" in out
    assert flow.store.size() <= 100 * 1024
    flow.run()
    rc, out, _ = call(lambda: cli_main(["cache", "clear", "--store", str(store), "--flow", "maint",
                                        "--step", "small"]))
    assert rc == 0 and "deleted 1 entry of flow 'maint' and step 'small'" in out
    rc, out, _ = call(lambda: cli_main(["cache", "clear", "--store", str(store)]))
    assert rc == 0 and "deleted 1 entry from" in out
    rc, _, err = call(lambda: cli_main(["cache", "ls", "--store", str(tmp_path / "nope")]))
    assert rc == 2 and "no store at" in err
    assert parse_size("2G") == 2 * 1024**3 and parse_size("512k") == 512 * 1024


def test_runs_command_and_console_script(script: Path, tmp_path: Path) -> None:
    run(script, "run", "--label", "L")
    run(script, "run", "--label", "L", "--alpha", "1", env={"FAIL_SCALE": "1"})
    rc, out, _ = call(lambda: cli_main(["runs", "--store", str(tmp_path / ".nbflow")]))
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2
    assert "numbers  run" in lines[0] and "failed at scale" in lines[0] and "alpha=1.0" in lines[0]
    assert "done" in lines[1]
    exe = Path(sys.executable).with_name("nbflow")
    p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("nbflow ")


def test_parallel_run_matches_serial(script: Path, tmp_path: Path) -> None:
    rc, serial, _, err = run(script, "run", "--label", "L")
    assert rc == 0, err
    rc, par, out, err = run(script, "run", "--label", "L", "--max-workers", "2",
                            "--store", str(tmp_path / "par"), process=True)
    assert rc == 0, err
    assert sorted(par["executed"]) == sorted(serial["executed"]) and par["keys"] == serial["keys"]
    assert "total: ('L', 3.0)" in out
    rc, _, _, err = run(script, "run", "--label", "L", "--executor", "serial", "--address", "tcp://x:1")
    assert rc == 2 and "address= needs executor='dask'" in err
