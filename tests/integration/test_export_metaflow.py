"""``nbflow export --to metaflow``: the FlowSpec it writes runs with the real ``metaflow`` package.

Metaflow runs locally (local datastore and metadata) under a private HOME; its artifacts are read
back with Metaflow's own client in a subprocess and compared with the values the notebook computes.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbflow.export import ExportError
from nbflow.export_metaflow import class_name, export_notebook

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


def notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    for kind, source in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


SHAPES = [
    ("markdown", "# Shapes\n\nA foreach, independent branches and a join."),
    ("code", "%load_ext nbflow\nimport nbflow"),
    ("parameters", "factor = 3  # how much each square is scaled\nconfig = {\"offset\": 1}"),
    ("code", "%%step numbers\nnumbers = list(range(5))"),
    ("markdown", "Each number, squared and scaled."),
    ("code", "%%step squares --foreach numbers\nsquare = numbers * numbers * factor"),
    ("code", "%%step label\nlabel = f\"{len(numbers)} numbers\""),
    ("code", "@nbflow.step\ndef doubled(numbers):\n    return [2 * n for n in numbers]"),
    ("code", "%%step total\ntotal = sum(square) + config[\"offset\"]"),
    ("code", "%%step summary\nsummary = f\"{label}: {total}, {sum(doubled)}\"\nprint(summary)"),
]


def metaflow_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAFLOW_")}
    env.update(HOME=str(home), METAFLOW_HOME=str(home / ".metaflowconfig"), USERNAME="nbflow-test",
               METAFLOW_DEFAULT_DATASTORE="local", METAFLOW_DEFAULT_METADATA="local",
               PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 150) -> str:
    out = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def artifacts(flow: str, names: list[str], cwd: Path, env: dict[str, str]) -> dict:
    code = (
        "import json, sys\n"
        "from metaflow import Flow, namespace\n"
        "namespace(None)\n"
        f"run = Flow({flow!r}).latest_run\n"
        "assert run.successful, run\n"
        f"print(json.dumps({{n: getattr(run.data, n) for n in {names!r}}}, default=str))\n"
    )
    return json.loads(run(["-c", code], cwd, env).strip().splitlines()[-1])


def test_foreach_branches_and_parameters_run_on_metaflow(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "shapes.ipynb", SHAPES)
    out = tmp_path / "shapes_metaflow.py"
    env = metaflow_env(tmp_path / "home")
    run(["-m", "nbflow.cli", "export", str(nb), "--to", "metaflow", "-o", str(out)], tmp_path, env)
    text = out.read_text()
    ast.parse(text)
    assert "class ShapesFlow(FlowSpec):" in text
    assert 'self.next(self.squares, foreach="numbers")' in text
    assert "numbers = self.input" in text
    assert "self.merge_artifacts(inputs" in text
    assert 'factor = Parameter("factor", default=3, help="how much each square is scaled")' in text
    assert "config = Parameter(\"config\", type=JSONType, default='{\"offset\": 1}')" in text
    lint = subprocess.run([str(Path(sys.executable).with_name("ruff")), "check", "--config",
                           str(ROOT / "pyproject.toml"), str(out)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout

    shown = run([str(out), "show"], tmp_path, env)
    assert "squares" in shown and "join" in shown
    log = run([str(out), "run", "--factor", "2"], tmp_path, env)
    assert "5 numbers: 61, 20" in log
    got = artifacts("ShapesFlow", ["numbers", "square", "total", "label", "doubled", "summary",
                                   "factor", "config"], tmp_path, env)
    assert got == {"numbers": [0, 1, 2, 3, 4], "square": [0, 2, 8, 18, 32], "total": 61,
                   "label": "5 numbers", "doubled": [0, 2, 4, 6, 8],
                   "summary": "5 numbers: 61, 20", "factor": 2, "config": {"offset": 1}}


def test_example_notebook_runs_on_metaflow(tmp_path: Path) -> None:
    folder = tmp_path / "nb"
    shutil.copytree(ROOT / "example_notebooks", folder,
                    ignore=shutil.ignore_patterns(".nbflow", "*_flow.py", "__pycache__"))
    env = metaflow_env(tmp_path / "home")
    out = folder / "sales_metaflow.py"
    text = export_notebook(folder / "sales_analysis.ipynb", out)
    assert out.read_text() == text
    assert export_notebook(folder / "sales_analysis.ipynb", out) == text  # deterministic
    run([str(out), "run", "--min_units", "3"], folder, env)
    got = artifacts("SalesAnalysisFlow", ["best_month", "lines", "min_units"], folder, env)

    import pandas as pd  # what the notebook computes, directly

    sales = pd.read_csv(folder / "data" / "sales.csv", parse_dates=["date"])
    orders = sales[sales.units >= 3].assign(revenue=lambda d: d.units * d.price)
    by_month = orders.assign(month=orders.date.dt.strftime("%Y-%m")).groupby("month")[
        ["units", "revenue"]].sum()
    top = orders.groupby("product").revenue.sum().sort_values(ascending=False).head(3)
    assert got["best_month"] == by_month.revenue.idxmax()
    assert got["lines"] == [f"{n}: {v:,.0f} EUR" for n, v in top.items()]
    assert got["min_units"] == 3


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([("code", "%%step s\nindex = 1")], "'index' is a name Metaflow reserves"),
        ([("parameters", "input = 1"), ("code", "%%step s\nx = input")],
         "'input' is a name Metaflow reserves"),
        ([("code", "step = 3"), ("code", "%%step s\nx = 1")], "rename it"),
    ],
)
def test_names_metaflow_reserves_are_clear_errors(tmp_path: Path, cells, message) -> None:
    nb = notebook(tmp_path / "bad.ipynb", cells)
    with pytest.raises(ExportError, match=message):
        export_notebook(nb)


def test_class_names() -> None:
    assert class_name("sales_analysis") == "SalesAnalysisFlow"
    assert class_name("2024-report") == "N2024ReportFlow"
    assert class_name("MyFlow") == "MyFlow"


def test_step_names_that_clash_get_their_own_method(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "clash.ipynb", [
        ("code", "%%step start\nfirst = 1"),
        ("code", "%%step end\nlast = first + 1"),
        ("code", "%%step join_1\nj = last"),
    ])
    text = export_notebook(nb)
    tree = ast.parse(text)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    methods = [f.name for f in cls.body if isinstance(f, ast.FunctionDef)]
    assert methods[0] == "start" and methods[-1] == "end"
    assert {"start_step", "end_step", "join_1"} <= set(methods)
    assert len(methods) == len(set(methods))
    assert json.dumps(methods)  # a plain list of names
