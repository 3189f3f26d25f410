"""Notebook -> flow script: the script's shape, lint, round trip, keys, magics and parameters.

Notebooks are built here with nbformat (no kernel: the integration tests run real ones); each
exported script is parsed, linted with ruff, and loaded as a module to compare its steps'
cache-key code with what the notebook adapter keys the cells by.
"""

from __future__ import annotations

import ast
import io
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbflow import keys
from nbflow.export import ExportError, export_notebook, notebook_to_script
from nbflow.export_text import transform

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")


def write_nb(path: Path, cells: list[Any]) -> Path:
    nb = new_notebook()
    nb.cells = cells
    nbformat.write(nb, str(path))
    return path


def code(source: str, tags: list[str] | None = None) -> Any:
    return new_code_cell(source, metadata={"tags": tags} if tags else {})


def export(tmp_path: Path, cells: list[Any], name: str = "analysis") -> tuple[str, str, Path]:
    """(script text, report text, script path) for a notebook of ``cells``."""
    nb = write_nb(tmp_path / f"{name}.ipynb", cells)
    out = tmp_path / f"{name}_flow.py"
    report = io.StringIO()
    text = export_notebook(nb, out, report=report)
    return text, report.getvalue(), out


ANALYSIS = [
    new_markdown_cell("# Sales\n\nA small analysis."),
    code("%load_ext nbflow"),
    code("import math\nimport json\n\n\ndef scale(v, k):\n    return v * k + OFFSET\n\n\nOFFSET = 1"),
    code("# knobs\nalpha = 0.5  # learning rate\nn = 10\ncfg = {'a': 1}", tags=["parameters"]),
    new_markdown_cell("Load the numbers.\n\nOne per index."),
    code("%%step load\n# make data\nraw = [scale(i, 2) for i in range(n)]\nprint(len(raw))\nraw[:3]"),
    code("%%step weigh\nweighted = [x * alpha for x in raw]\ntext = '''\nmulti\n  line\n'''\n_tmp = 1"),
    code("weighted[:2]"),
    code("%%step summary --out total\ntotal = sum(weighted) + len(text) + math.floor(alpha)\nunused = 3"),
    code("import nbflow\n\n\n@nbflow.step\ndef report(total, cfg):\n    \"\"\"One line.\"\"\"\n"
         "    return f'{total} {json.dumps(cfg)}'"),
    code("%%step final\nline = report.upper()"),
    code("%flow status"),
]


# -- shape ---------------------------------------------------------------------------------------
def test_script_shape(tmp_path: Path) -> None:
    text, report, _ = export(tmp_path, ANALYSIS)
    tree = ast.parse(text)
    assert ast.get_docstring(tree).startswith("# Sales\n\nA small analysis.")  # type: ignore[union-attr]
    # imports first (the notebook's, then nbflow), plain code, the flow, parameters, steps
    assert text.index("import json\nimport math\n") < text.index("import nbflow\n")
    assert text.index("def scale(v, k):") < text.index('flow = nbflow.Flow("analysis", ')
    assert 'store=locate_store(__file__, ".nbflow")' in text
    assert 'flow.param("alpha", 0.5, help="learning rate")' in text
    assert 'flow.param("n", 10)' in text and "flow.param(\"cfg\", {'a': 1})" in text
    assert "# knobs" in text  # the parameters cell's comment stays
    # one function per step: parameters are inputs, return the outputs, markdown docstring
    assert '@flow.step(outputs=("raw",))\ndef load(n):\n    """Load the numbers.\n\n    One per index.\n    """\n' \
           "    # make data\n" in text
    assert "    raw[:3]\n    return raw\n" in text
    assert '@flow.step(outputs=("weighted", "text"))\ndef weigh(raw, alpha):' in text
    assert "    text = '''\nmulti\n  line\n'''\n" in text  # a multi-line string is not indented
    assert '@flow.step(outputs=("total",))\ndef summary(weighted, text, alpha):' in text
    assert "    unused = 3  # noqa: F841\n    return total\n" in text
    assert '@flow.step\ndef report(total, cfg):\n    """One line."""' in text
    assert '@flow.step(outputs=("line",))\ndef final(report):' in text  # reads a function step
    assert text.rstrip().endswith('if __name__ == "__main__":\n    flow.main(workdir=beside(__file__, "."))')
    assert "%load_ext" not in text
    assert "# nbflow: notebook command %flow status" in text
    # a plain cell that reads a step's output cannot run at import: commented out, reported
    assert "# nbflow: not exported: the next line reads 'weighted' (made by step 'weigh')" in text
    assert "\n# weighted[:2]\n" in text
    assert "cell 8: 'weighted[:2]' reads 'weighted' (made by step 'weigh'), which only exists " \
           "while the flow runs; it is commented out in the script" in report


def test_script_is_valid_lint_clean_and_stable(tmp_path: Path) -> None:
    text, _, out = export(tmp_path, ANALYSIS)
    ast.parse(text)
    for args in (["--isolated"], ["--config", str(ROOT / "pyproject.toml")]):
        lint = subprocess.run([str(RUFF), "check", *args, str(out)], capture_output=True, text=True,
                              timeout=60)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    again, _, _ = export(tmp_path, ANALYSIS)
    assert again == text  # round trip: export twice, same text
    assert out.read_text() == text


def test_paths_are_relative_to_the_script(tmp_path: Path) -> None:
    (tmp_path / "nbs").mkdir()
    nb = write_nb(tmp_path / "nbs" / "a.ipynb", ANALYSIS)
    out = tmp_path / "scripts" / "a_flow.py"
    out.parent.mkdir()
    text = export_notebook(nb, out, report=io.StringIO())
    assert 'locate_store(__file__, "../nbs/.nbflow")' in text
    assert 'beside(__file__, "../nbs")' in text
    # a store the notebook configures is the one the script uses
    cells = [code("%load_ext nbflow\n%flow config store=../shared-cache mode=auto"), *ANALYSIS[2:]]
    write_nb(nb, cells)
    assert 'locate_store(__file__, "../shared-cache")' in export_notebook(nb, out, report=io.StringIO())


# -- keys ----------------------------------------------------------------------------------------
def cell_keys_code(cells: list[Any]) -> dict[str, str]:
    """What the notebook adapter keys each %%step cell by: normalized transform_cell(body)."""
    from nbflow.analysis import analyze
    from nbflow.notebook.args import parse_step_line

    out = {}
    for c in cells:
        src = c.source
        if c.cell_type == "code" and src.startswith("%%step"):
            header, _, body = src.partition("\n")
            args = parse_step_line(header[len("%%step"):])
            transformed = transform(body)
            outputs = args.outputs or analyze(transformed).outputs
            out[args.name] = keys.normalize_source(transformed, tuple(outputs))
    return out


def test_exported_steps_share_the_cells_key_code(tmp_path: Path) -> None:
    _, _, out = export(tmp_path, ANALYSIS)
    module = runpy.run_path(str(out), run_name="exported")
    flow = module["flow"]
    want = cell_keys_code(ANALYSIS)
    assert set(want) <= set(flow.graph.steps)
    for name, code_text in want.items():
        assert flow.graph.steps[name].code == code_text, name
    assert flow.graph.steps["weigh"].inputs == ("raw", "alpha")
    assert flow.graph.steps["summary"].outputs == ("total",)
    assert {n: s["default"] for n, s in flow.graph.inputs.items()} == {"alpha": 0.5, "n": 10, "cfg": {"a": 1}}


def test_step_named_like_a_helper_keeps_its_name(tmp_path: Path) -> None:
    cells = [code("def clean(xs):\n    return [x for x in xs if x]"),
             code("%%step raw\nraw = [0, 1, 2]"),
             code("%%step clean\ncleaned = clean(raw)")]
    text, _, out = export(tmp_path, cells)
    assert '@flow.step(outputs=("cleaned",), name="clean")\ndef clean_step(raw):' in text
    flow = runpy.run_path(str(out), run_name="exported")["flow"]
    assert flow.run()["cleaned"] == [1, 2]


# -- what cannot be exported -----------------------------------------------------------------------
def test_shell_lines_are_translated_with_a_comment(tmp_path: Path) -> None:
    cells = [code("where = '.'"), code("%%step listing\n!echo hi\nfiles = !ls {where}\nn = len(files)")]
    text, report, out = export(tmp_path, cells)
    assert "import subprocess\n" in text
    assert '    subprocess.run("echo hi", shell=True, check=True)  # nbflow: translated from !echo hi' in text
    assert ('    files = subprocess.run(f"ls {where}", shell=True, check=True, capture_output=True, '
            'text=True).stdout.splitlines()  # nbflow: translated from files = !ls {where}') in text
    assert "step 'listing': '!echo hi' is translated to subprocess.run" in report
    flow = runpy.run_path(str(out), run_name="exported")["flow"]
    assert flow.run()["n"] >= 2  # the translated code runs


def test_magics_in_steps(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as err:
        export(tmp_path, [code("%%step fit\n%timeit sum(range(3))\nx = 1")])
    msg = str(err.value)
    assert "cell 1: step 'fit', line 1: the IPython magic '%timeit sum(range(3))' cannot run in a " \
           "script; remove it from the step or move it to a plain cell" in msg
    text, report, _ = export(tmp_path, [code("%%step plot\n%matplotlib inline\nx = 1")])
    assert "    pass  # nbflow: dropped %matplotlib inline (no effect in a script)" in text
    assert "dropped '%matplotlib inline'" in report


def test_magics_in_plain_cells_are_commented_out(tmp_path: Path) -> None:
    cells = [code("%matplotlib inline\nimport math"), code("%%bash\necho hi"),
             code("%%time\nK = 2"), code("%%step s\ny = K * math.pi")]
    text, report, _ = export(tmp_path, cells)
    assert "# nbflow: not exported (IPython magic): %matplotlib inline" in text
    assert "# nbflow: not exported (IPython cell magic): %%bash\n# echo hi" in text
    assert "# nbflow: dropped %%time (the code runs the same without it)\nK = 2" in text
    assert "cell 1: IPython magic '%matplotlib inline' is not exported" in report
    assert "cell 2: cell magic '%%bash' is not exported" in report


def test_interactive_state_is_reported(tmp_path: Path) -> None:
    cells = [code("x = 1"), code("%%step s\ny = Out[1] + _"), code("print(In[-1])")]
    text, report, _ = export(tmp_path, cells)
    assert "# nbflow: warning: reads Out, _, interactive state a script does not have\n@flow.step" in text
    assert "step 's' reads Out, _: interactive state a script does not have" in report
    assert "# print(In[-1])" in text and "cell 3: 'print(In[-1])' reads In, interactive state" in report


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([code("x = 1")], "the notebook has no steps: mark cells with %%step NAME"),
        ([code("%%step a\nx = 1"), code("%%step b\nx = 2")], "steps 'a' and 'b' both define 'x'"),
        ([code("%%step a\nx = await thing()")], "step 'a' uses top-level await"),
        ([code("%%step a\n# nothing yet")], "step 'a' is empty (only comments)"),
        ([code("%%step a --in ghost\nx = ghost")], "step 'a': --in/--foreach names 'ghost'"),
        ([code("%%step 1a\nx = 1")], "step name '1a' is not a Python identifier"),
        ([code("lr = nbflow.param('alpha', 0.1)"), code("%%step a\nx = lr")],
         "nbflow.param('alpha', ...) is assigned to 'lr'"),
        ([code("total = 0"), code("%%step a\ntotal = total + 1")],
         "step 'a' reads and rebinds the global 'total'"),
    ],
)
def test_clear_errors(tmp_path: Path, cells: list[Any], message: str) -> None:
    with pytest.raises(ExportError) as err:
        export(tmp_path, cells)
    assert message in str(err.value)


# -- parameters ------------------------------------------------------------------------------------
def test_parameters_from_nbflow_param(tmp_path: Path) -> None:
    cells = [
        code("import nbflow\nfrom nbflow.parameters import JSONType\n"
             "alpha = nbflow.param('alpha', 0.01, help='Learning rate')\n"
             "gdp = nbflow.param('gdp', '{\"US\": 1939}', type=JSONType)\n"
             "data = nbflow.param('data', required=True, help='input file')"),
        code("%%step fit\nmodel = (alpha, gdp['US'], data)"),
    ]
    text, _, out = export(tmp_path, cells)
    assert "flow.param(\"alpha\", 0.01, help='Learning rate')" in text
    assert "flow.param(\"gdp\", '{\"US\": 1939}', type=JSONType)" in text
    assert "flow.param(\"data\", None, required=True, help='input file')" in text
    assert "from nbflow.parameters import JSONType" in text
    assert "@flow.step(outputs=(\"model\",))\ndef fit(alpha, gdp, data):" in text
    flow = runpy.run_path(str(out), run_name="exported")["flow"]
    code_, stdout, stderr = run_main(flow, ["run", "--data", "x.csv", "--gdp", '{"US": 2}', "-q"])
    assert code_ == 0, stderr
    code_, _, stderr = run_main(flow, ["run", "-q"])
    assert code_ == 2 and "parameter 'data' is required; pass --data STR (input file)" in stderr


def run_main(flow: Any, argv: list[str]) -> tuple[int, str, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = flow.main(argv, exit=False)
    return rc, out.getvalue(), err.getvalue()


def test_parameter_derived_from_another_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="parameter 'm' is computed from the parameter 'n'"):
        export(tmp_path, [code("n = 2\nm = n * 2", tags=["parameters"]), code("%%step s\nx = m")])


def test_helper_reading_a_parameter_as_global_is_reported(tmp_path: Path) -> None:
    cells = [code("alpha = 0.1", tags=["parameters"]),
             code("def shrink(v):\n    return v * alpha"),
             code("%%step s\nx = shrink(2)")]
    _, report, _ = export(tmp_path, cells)
    assert "helper 'shrink' reads the global 'alpha' (a parameter)" in report


def test_notebook_to_script_in_memory() -> None:
    nb = new_notebook()
    nb.cells = [code("%%step a\nx = 1")]
    text, issues = notebook_to_script(nb, "tiny")
    assert issues == []
    assert 'flow = nbflow.Flow("tiny", store=locate_store(__file__, ".nbflow"))' in text


def test_nbconvert_exporter_class(tmp_path: Path) -> None:
    from nbconvert.exporters import get_exporter

    from nbflow.export import NbflowExporter

    assert get_exporter("nbflow") is NbflowExporter  # the entry point resolves to our class
    nb_path = write_nb(tmp_path / "conv.ipynb", ANALYSIS)
    body, resources = NbflowExporter().from_filename(str(nb_path))
    assert body == export_notebook(nb_path, tmp_path / "conv_flow.py", report=io.StringIO())
    assert resources["output_extension"] == ".py"


def test_foreach_and_steps_without_outputs(tmp_path: Path) -> None:
    cells = [code("files = ['a', 'bb', 'ccc']"),
             code("%%step lengths --foreach files\nn = len(files)"),
             code("%%step total\nt = sum(n)"),
             code("%%step show\nprint('total is', t)")]
    text, _, out = export(tmp_path, cells)
    assert '@flow.step(outputs=("n",), foreach="files")\ndef lengths(files=files):' in text
    assert '@flow.step(outputs=())\ndef show(t):\n    print(\'total is\', t)\n\n' in text
    flow = runpy.run_path(str(out), run_name="exported")["flow"]
    want = cell_keys_code(cells)
    for name, code_text in want.items():
        assert flow.graph.steps[name].code == code_text, name
    result = flow.run()
    assert result["n"] == [1, 2, 3] and result["t"] == 6
    assert flow.graph.steps["show"].outputs == ()


def test_plain_lines_that_need_a_run_are_commented_out_with_their_dependents(tmp_path: Path) -> None:
    cells = [code("%%step load\nrows = [1, 2, 3]"),
             code("n = len(rows)\nhalf = n / 2\n\n\ndef helper(v):\n    return v + 1\n\n\nLIMIT = 10"),
             code("%%step use\ny = helper(LIMIT)")]
    text, report, out = export(tmp_path, cells)
    assert "# n = len(rows)\n" in text and "# half = n / 2\n" in text
    assert "'half = n / 2' reads 'n', which a line not exported binds" in report
    assert "def helper(v):\n    return v + 1" in text and "\nLIMIT = 10" in text  # the rest stays
    flow = runpy.run_path(str(out), run_name="exported")["flow"]
    assert flow.run()["y"] == 11


def test_papermill_injected_parameters_override_defaults(tmp_path: Path) -> None:
    cells = [code("alpha = 0.1  # step size\nn = 3", tags=["parameters"]),
             code("# Parameters\nalpha = 0.6\n", tags=["injected-parameters"]),
             code("%%step s\nx = alpha * n")]
    text, report, _ = export(tmp_path, cells)
    assert 'flow.param("alpha", 0.6, help="step size")\nflow.param("n", 3)\n' in text
    assert "declared twice" not in report
