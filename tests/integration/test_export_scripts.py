"""Exported flow scripts against real notebooks run in real kernels.

Every notebook in ``example_notebooks/`` is executed with nbclient, exported with ``nbflow
export``, and its script run in subprocesses: with the notebook's code and parameters the script
is served entirely from the notebook's store; on an empty store it recomputes the same values
(same keys, same content digests, same printed lines); a parameter override reruns only the
steps that read it and their descendants; an injected failure is resumed; ``jupyter nbconvert
--to nbflow`` writes the same script.
"""

from __future__ import annotations

import ast
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
from kernel_helpers import run_notebook, write_notebook

from nbflow.store import open_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "example_notebooks"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(300)


def test_examples_exist() -> None:
    assert len(NOTEBOOKS) >= 2, "example_notebooks/ holds the notebooks these tests export"


@pytest.fixture(scope="module")
def executed_examples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The example notebooks and their data in a temp folder, each executed once in a fresh
    kernel (their store fills there); the executed notebooks by file name."""
    folder = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns(
        ".nbflow", "*_flow.py", ".ipynb_checkpoints", "__pycache__"))
    return folder, {name: run_notebook(folder / name, timeout=240) for name in NOTEBOOKS}


@pytest.fixture
def copy_examples(executed_examples: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A private copy of the executed examples, store included, for one test to change."""
    folder = tmp_path / "examples"
    shutil.copytree(executed_examples[0], folder)
    return folder


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NBFLOW_STORE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    # a hash seed other than the kernel's: keys must not depend on it
    env["PYTHONHASHSEED"] = "12345"
    env.update(extra)
    return env


def nbflow_export(notebook: Path, *extra: str) -> tuple[Path, str]:
    p = subprocess.run([str(BIN / "nbflow"), "export", str(notebook), *extra], capture_output=True,
                       text=True, env=script_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    return notebook.with_name(notebook.stem + "_flow.py"), p.stderr


def run_script(script: Path, *args: str, cwd: Path | None = None, **env: str
               ) -> tuple[int, dict[str, Any], str, str]:
    summary = script.with_name(f"summary-{os.getpid()}.json")
    summary.unlink(missing_ok=True)
    p = subprocess.run([sys.executable, str(script), *args, "--summary-json", str(summary)],
                       capture_output=True, text=True, env=script_env(**env), cwd=cwd or ROOT,
                       timeout=240)
    data = json.loads(summary.read_text()) if summary.exists() else {}
    return p.returncode, data, p.stdout, p.stderr


def step_cells(nb: nbformat.NotebookNode) -> dict[str, Any]:
    return {c.source.split("\n", 1)[0].split()[1]: c for c in nb.cells
            if c.cell_type == "code" and c.source.startswith("%%step")}


def stdout_lines(cell: Any) -> list[str]:
    return [line for o in cell.get("outputs", []) if o.get("output_type") == "stream"
            and o.get("name") == "stdout" for line in o.get("text", "").splitlines() if line.strip()]


def load_flow(script: Path) -> Any:
    return runpy.run_path(str(script), run_name="exported")["flow"]


# -- every example notebook ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_example_script_shares_the_notebooks_cache(
        executed_examples: tuple[Path, dict[str, Any]], copy_examples: Path, tmp_path: Path,
        name: str) -> None:
    notebook = copy_examples / name
    executed = executed_examples[1][name]
    script, report = nbflow_export(notebook)
    text = script.read_text()
    ast.parse(text)
    lint = subprocess.run([str(BIN / "ruff"), "check", "--isolated", str(script)], capture_output=True,
                          text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout
    assert nbflow_export(notebook)[0].read_text() == text  # round trip
    flow = load_flow(script)
    steps = flow.graph.topological_order()
    assert set(step_cells(executed)) <= set(steps)

    # the notebook computed everything: the script, run from elsewhere, computes nothing
    rc, s, out, err = run_script(script, "run")
    assert rc == 0, err
    assert s["executed"] == [] and s["cached"] == steps, err
    assert f"0 executed, {len(steps)} cached" in err
    assert s["store"] == str(copy_examples / ".nbflow")

    # on an empty store it recomputes the same values: same keys, same content digests
    fresh = tmp_path / "fresh-store"
    rc, s2, out2, err2 = run_script(script, "run", "--store", str(fresh))
    assert rc == 0, err2
    assert s2["executed"] == steps and s2["keys"] == s["keys"]
    nb_store, new_store = open_store(copy_examples / ".nbflow"), open_store(fresh)
    for step, key in s["keys"].items():
        a, b = nb_store.get(key), new_store.get(key)
        assert a is not None and b is not None, step
        assert {n: a.digest(n) for n in a.outputs} == {n: b.digest(n) for n in b.outputs}, step
    # and prints what the notebook's cells printed
    for step, cell in step_cells(executed).items():
        for line in stdout_lines(cell):
            assert line in out2.splitlines(), (step, line)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameter_override_reruns_exactly_its_dependents(copy_examples: Path, name: str) -> None:
    notebook = copy_examples / name
    script, _ = nbflow_export(notebook)
    flow = load_flow(script)
    params = {n: spec["default"] for n, spec in flow.graph.inputs.items()}
    assert params, f"{name} declares parameters (a cell tagged 'parameters')"
    graph = flow.graph

    def dependents(p: str) -> tuple[set[str], set[str]]:
        readers = {s for s, step in graph.steps.items() if p in step.inputs}
        return readers, readers | {d for r in readers for d in graph.downstream(r)}

    # the parameter read by the fewest steps (cheap to rerun), with a different value
    param = min(params, key=lambda p: (len(dependents(p)[1]), p))
    readers, affected = dependents(param)
    value = changed(params[param])
    rc, s, _, err = run_script(script, "run", f"--{param}", str(value))
    assert rc == 0, err
    assert s["params"][param] == value
    assert readers <= set(s["executed"]) <= affected  # descendants may stop early (same output)
    assert set(s["cached"]) == set(graph.steps) - set(s["executed"])
    assert set(graph.steps) - affected <= set(s["cached"])


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value // 100 if value >= 100 else value + 1
    if isinstance(value, float):
        return value * 2
    if isinstance(value, str):
        return value + "X"
    raise AssertionError(f"no rule to change {value!r}")


def test_resume_after_an_injected_failure(copy_examples: Path) -> None:
    # the cheapest step with both parents and children, among all the examples
    candidates = []
    for name in NOTEBOOKS:
        script, _ = nbflow_export(copy_examples / name)
        flow = load_flow(script)
        status = flow.status()
        candidates += [(status[s].duration or 0.0, name, s) for s in flow.graph.steps
                       if flow.graph.parents(s) and flow.graph.children(s)]
    _, name, victim = min(candidates)
    script = copy_examples / name.replace(".ipynb", "_flow.py")
    original = script.read_text()
    flow = load_flow(script)
    graph = flow.graph
    func = flow.graph.steps[victim].meta["function"].__name__
    marker = f"def {func}("
    start = original.index(marker)
    body = original.index("\n", original.index("):", start)) + 1
    script.write_text(original[:body] + '    raise RuntimeError("injected failure")\n' + original[body:])
    rc, s, _, err = run_script(script, "run")
    assert rc == 1
    assert s["failed"] == [victim] and "RuntimeError: injected failure" in err
    assert set(graph.upstream(victim)) <= set(s["cached"])
    assert set(graph.downstream(victim)) == set(s["skipped"])

    script.write_text(original)  # the fix
    rc, s, _, err = run_script(script, "resume")
    assert rc == 0, err
    assert s["command"] == "resume" and f"from step '{victim}'" in err
    assert victim in s["executed"] and s["failed"] == []
    assert set(graph.upstream(victim)) <= set(s["cached"])  # finished steps are reused
    runs = subprocess.run([str(BIN / "nbflow"), "runs", "--store", str(copy_examples / ".nbflow")],
                          capture_output=True, text=True, env=script_env(), timeout=60)
    assert f"failed at {victim}" in runs.stdout and "resume" in runs.stdout


def test_jupyter_nbconvert_to_nbflow(copy_examples: Path) -> None:
    notebook = copy_examples / NOTEBOOKS[-1]
    script, _ = nbflow_export(notebook)
    expected = script.read_text()
    script.unlink()
    p = subprocess.run([str(BIN / "jupyter"), "nbconvert", "--to", "nbflow", str(notebook)],
                       capture_output=True, text=True, env=script_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert script.read_text() == expected


# -- a notebook written here: nbflow.param, helpers, a shell line ----------------------------------
def test_param_helpers_and_shell_share_the_cache(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "nbs" / "weights.ipynb", [
        "%load_ext nbflow",
        "import nbflow\nalpha = nbflow.param('alpha', 0.25, help='weight of each value')",
        "SCALE = 3\n\n\ndef helper(v):\n    return v * SCALE + OFFSET\n\n\nOFFSET = 1",
        "!echo setting up",
        "%%step base\nvalues = [helper(i) for i in range(5)]\nprint('values', values)",
        "%%step weighted\nweighted = [v * alpha for v in values]\nresult = sum(weighted)\nprint('result', result)",
    ])
    executed = run_notebook(notebook, timeout=120)
    assert "result 8.75" in "".join(stdout_lines(executed.cells[5]))
    script, report = nbflow_export(notebook)
    text = script.read_text()
    assert "flow.param(\"alpha\", 0.25, help='weight of each value')" in text
    assert 'subprocess.run("echo setting up", shell=True, check=True)  # nbflow: translated from !echo' in text
    rc, s, out, err = run_script(script, "run")
    assert rc == 0, err
    assert s["executed"] == [] and s["cached"] == ["base", "weighted"]
    assert "setting up" in out  # the plain cell's shell line ran, translated
    rc, s, out, err = run_script(script, "run", "--alpha", "0.5")
    assert s["executed"] == ["weighted"] and s["cached"] == ["base"]
    assert "result 17.5" in out
    # the kernel reads the value the script stored under the same key
    key = s["keys"]["weighted"]
    store = open_store(tmp_path / "nbs" / ".nbflow")
    manifest = store.get(key)
    assert manifest is not None and store.load(manifest, "result") == 17.5


def test_foreach_class_helpers_and_effect_steps_share_the_cache(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "nbs" / "items.ipynb", [
        "%load_ext nbflow",
        "files = ['a', 'bb', 'ccc']",
        "class Scaler:\n    factor = 2\n\n    def __call__(self, v):\n        return v * self.factor",
        "%%step lengths --foreach files\nn = len(files)",
        "%%step total\nt = sum(Scaler()(x) for x in n)",
        "%%step show\nprint('total is', t)",  # binds nothing: run for its effect
        "import nbflow\n\n\n@nbflow.step(outputs=('half', 'double'))\ndef split(t):\n"
        "    return t / 2, t * 2",
        "%%step use\nq = half + double",  # runs split first (like make)
    ])
    executed = run_notebook(notebook, timeout=120)
    assert "total is 12" in "".join(stdout_lines(executed.cells[5]))
    script, _ = nbflow_export(notebook)
    rc, s, out, err = run_script(script, "run")
    assert rc == 0, err
    assert s["executed"] == [] and sorted(s["cached"]) == ["lengths", "show", "split", "total", "use"]
    rc, s, out, err = run_script(script, "run", "--store", str(tmp_path / "fresh"))
    assert rc == 0 and "total is 12" in out and len(s["executed"]) == 5, err
