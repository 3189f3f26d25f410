"""The notebook adapter in a real IPython ``InteractiveShell`` (in-process, no kernel): fast
checks of lazy binding, foreach cells, externals, ``%flow`` commands and function steps.
Kernel-level behaviour (replay across restarts, cell ids) is in ``test_notebook.py``.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

import nbflow
from nbflow.errors import NbflowWarning
from nbflow.notebook import current_session
from nbflow.notebook.namespace import LazyOutput, is_lazy

pytestmark = pytest.mark.timeout(120)


class Shell:
    """A real InteractiveShell with nbflow loaded, run cell by cell."""

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell

    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns  # type: ignore[no-any-return]

    def run(self, source: str) -> Any:
        result = self.shell.run_cell(source, store_history=True)
        return result

    def ok(self, source: str) -> Any:
        result = self.run(source)
        assert result.success, (source, result.error_before_exec or result.error_in_exec)
        return result

    def usage_error(self, source: str) -> str:
        result = self.run(source)
        err = result.error_in_exec or result.error_before_exec
        assert type(err).__name__ == "UsageError", (source, err)
        return str(err)


@pytest.fixture
def sh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shell]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "analysis.ipynb"))
    monkeypatch.delenv("NBFLOW_STORE", raising=False)
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])  # the shell replaces it
    shell = InteractiveShell.instance()
    shell.reset(new_session=True)
    wrapper = Shell(shell)
    with warnings.catch_warnings():
        warnings.simplefilter("default", NbflowWarning)
        wrapper.ok("%load_ext nbflow")
        try:
            yield wrapper
        finally:
            shell.run_cell("%unload_ext nbflow")
            shell.reset(new_session=True)


def test_flow_is_named_after_the_notebook_with_its_store_beside_it(sh: Shell, tmp_path: Path) -> None:
    session = current_session()
    assert session is not None
    assert session.flow.name == "analysis"
    assert Path(session.flow.store.root) == tmp_path / ".nbflow"


def test_large_outputs_are_bound_lazily_on_a_hit(sh: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    sh.ok("%flow config lazy=64K")
    cell = "%%step make\nimport numpy as np\nbig = np.arange(100_000, dtype='float64')\nsmall = 3"
    sh.ok(cell)
    sh.ok("def total():\n    return float(big.sum()) + small")
    sh.ok(cell)  # a hit: 800 KB stays in the store until used
    assert is_lazy(sh.ns["big"]) and sh.ns["small"] == 3
    capsys.readouterr()
    sh.ok("print(total())")  # reached through a function: the proxy loads and steps aside
    assert capsys.readouterr().out.strip() == str(float(np.arange(100_000).sum()) + 3)
    assert isinstance(sh.ns["big"], np.ndarray) and not is_lazy(sh.ns["big"])
    sh.ok(cell)
    assert is_lazy(sh.ns["big"])
    sh.ok("kind = type(big).__name__")  # named in a cell: loaded before the cell runs
    assert sh.ns["kind"] == "ndarray"
    sh.ok(cell)
    proxy = sh.ns["big"]
    assert isinstance(proxy, LazyOutput) is False or is_lazy(proxy)  # __class__ answers for it
    assert isinstance(proxy, np.ndarray)
    assert float((proxy + 1)[0]) == 1.0 and len(proxy) == 100_000


MARK = "def mark(name):\n    with open('steps.log', 'a') as f:\n        f.write(name + '\\n')"


def _log(tmp_path: Path) -> list[str]:
    path = tmp_path / "steps.log"
    return path.read_text().split() if path.exists() else []


def test_external_values_functions_and_ignore_enter_the_key(sh: Shell, tmp_path: Path) -> None:
    sh.ok(MARK)
    sh.ok("rate = 2\nverbose = False\ndef helper(x):\n    return x * rate")
    cell = "%%step compute --ignore verbose\nmark('c')\nresult = helper(10) + (0 if verbose else 1)"
    sh.ok(cell)
    sh.ok(cell)
    assert _log(tmp_path) == ["c"]  # hit
    sh.ok("verbose = True")
    sh.ok(cell)
    assert _log(tmp_path) == ["c"]  # ignored
    sh.ok("rate = 3")  # a global the helper reads
    sh.ok(cell)
    assert _log(tmp_path) == ["c", "c"] and sh.ns["result"] == 30
    sh.ok("def helper(x):\n    return x * rate + 1")  # the helper's code
    sh.ok(cell)
    assert _log(tmp_path) == ["c", "c", "c"] and sh.ns["result"] == 31
    sh.ok("calls = []")
    sh.ok("%%step appends\ncalls.append(1)\nn_calls = len(calls)")
    sh.ok("%%step appends\ncalls.append(1)\nn_calls = len(calls)")
    assert sh.ns["n_calls"] == 2  # it changed a global it reads: an honest miss
    sh.ok("factor = 2\nitems = [1, 2]")
    scaled = "%%step scaled\nmark('s')\ntotal = factor * sum(items)"
    sh.ok(scaled)
    sh.ok(scaled)
    assert _log(tmp_path).count("s") == 1
    sh.ok("factor = 3")  # a new object for an immutable global
    sh.ok(scaled)
    assert _log(tmp_path).count("s") == 2 and sh.ns["total"] == 9
    sh.ok("items.append(3)")  # the same list, changed in place
    sh.ok(scaled)
    assert _log(tmp_path).count("s") == 3 and sh.ns["total"] == 18
    sh.ok(scaled)
    assert _log(tmp_path).count("s") == 3


def test_a_value_that_cannot_be_fingerprinted_is_named_in_one_warning(sh: Shell) -> None:
    sh.ok("lock = __import__('threading').Lock()\nstate = []")
    with pytest.warns(NbflowWarning) as record:
        sh.ok("%%step guarded\nwith lock:\n    n = 5")
    messages = [str(w.message) for w in record if issubclass(w.category, NbflowWarning)]
    assert len(messages) == 1, messages
    assert "step 'guarded' reads 'lock', which cannot be fingerprinted" in messages[0]
    assert isinstance(sh.ns["lock"], type(threading.Lock()))


def test_foreach_cell_caches_each_item(sh: Shell, tmp_path: Path) -> None:
    sh.ok(MARK)
    sh.ok("%%step files\nnames = ['a', 'b']")
    cell = "%%step parse --foreach names\nmark(names)\nlength = len(names) * 10"
    sh.ok(cell)
    assert _log(tmp_path) == ["a", "b"]
    assert sh.ns["length"] == [10, 10]
    sh.ok("%%step files\nnames = ['a', 'b', 'ccc']")
    sh.ok(cell)
    assert _log(tmp_path) == ["a", "b", "ccc"] and sh.ns["length"] == [10, 10, 30]


def test_no_cache_always_runs_and_rerun_imports_on_a_hit(sh: Shell, tmp_path: Path) -> None:
    sh.ok(MARK)
    sh.ok("%%step tick --no-cache\nmark('t')\ncount = 1")
    sh.ok("%%step tick --no-cache\nmark('t')\ncount = 1")
    assert _log(tmp_path) == ["t", "t"]
    cell = "%%step uses_json\nimport json as js\ntext = js.dumps([1])"
    sh.ok(cell)
    del sh.ns["js"]
    sh.ok(cell)  # cached: its import runs again so the module name is back
    assert sh.ns["js"].dumps([2]) == "[2]"


def test_flow_commands(sh: Shell, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sh.ok("%%step a\nx = 1")
    sh.ok("%%step b\ny = x + 1")
    capsys.readouterr()
    sh.ok("%flow status")
    out = capsys.readouterr().out
    assert "flow 'analysis'" in out and "step" in out and "a " in out and "b " in out
    sh.ok("%flow cache ls")
    assert "2 entries" in capsys.readouterr().out
    sh.ok("%flow invalidate a")
    assert "stale now: a, b" in capsys.readouterr().out
    sh.ok("%flow run")
    assert "ran 1 step (a" in capsys.readouterr().out  # b: early cutoff, served from cache
    sh.ok("%flow cache clear b")
    assert "removed 1 cache entry of step 'b'" in capsys.readouterr().out
    sh.ok("%flow cache gc --max-size 1")
    assert "evicted" in capsys.readouterr().out
    sh.ok("%flow config store=other-store mode=auto")
    out = capsys.readouterr().out
    assert f"store={tmp_path / 'other-store'}" in out and "mode=auto" in out
    sh.ok("%flow remove b")
    assert list(current_session().flow.graph.steps) == ["a"]  # type: ignore[union-attr]
    assert "mode must be manual or auto" in sh.usage_error("%flow config mode=fast")
    assert "unknown key 'colour'" in sh.usage_error("%flow config colour=red")
    assert "expected key=value" in sh.usage_error("%flow config mode")
    assert "exactly one step name" in sh.usage_error("%flow rerun")
    assert "needs --max-size" in sh.usage_error("%flow cache gc")
    assert "%%step is a cell magic" in sh.usage_error("%step load")
    sh.ok("%flow help")
    assert "%flow rerun STEP" in capsys.readouterr().out


def test_flow_show_gives_the_dag_widget(sh: Shell) -> None:
    sh.ok("%%step a\nx = 1")
    result = sh.ok("w = %flow show")
    widget = sh.ns["w"]
    assert type(widget).__name__ == "DagWidget", result
    assert "a" in widget.text()


def test_export_writes_a_flow_script(sh: Shell, tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext nbflow", id="a"),
                nbformat.v4.new_code_cell("%%step a\nx = 1", id="b")]
    nbformat.write(nb, tmp_path / "analysis.ipynb")
    sh.ok("%flow export analysis_flow.py")
    script = (tmp_path / "analysis_flow.py").read_text()
    compile(script, "analysis_flow.py", "exec")
    assert "def a(" in script
    assert "needs a target file" in sh.usage_error("%flow export")


def test_function_steps_join_the_live_flow(sh: Shell) -> None:
    sh.ok("%%step base\nnumbers = [1, 2, 3]")
    sh.ok("import nbflow\n@nbflow.step\ndef total(numbers):\n    return sum(numbers)")
    sh.ok("@nbflow.step(outputs=('lo', 'hi'))\ndef bounds(numbers):\n    return min(numbers), max(numbers)")
    sh.ok("%%step use\nmessage = f'{total} in [{lo}, {hi}]'")
    assert sh.ns["message"] == "6 in [1, 3]"
    assert callable(sh.ns["total"])  # the function keeps its name in the notebook
    flow = current_session().flow  # type: ignore[union-attr]
    assert set(flow.graph.steps) == {"base", "total", "bounds", "use"}
    assert "binds 'total', which step 'total' already defines" in sh.usage_error(
        "%%step clash\ntotal = 1")


def test_step_outside_a_notebook_goes_to_the_default_flow_and_methods_to_flowspec() -> None:
    from nbflow import decorators

    def standalone(x: int = 1) -> int:
        return x + 1

    decorated = nbflow.step(standalone)
    assert decorated is standalone
    assert "standalone" in decorators.default_flow().graph.steps

    class Tiny(nbflow.FlowSpec):  # type: ignore[misc]
        @nbflow.step
        def start(self) -> None:
            self.next(self.end)

        @nbflow.step
        def end(self) -> None:
            pass

    assert getattr(Tiny.start, "_nbflow_step", False) is True
    assert decorators.in_class_body(Tiny.end) and not decorators.in_class_body(standalone)


def test_flow_run_names_a_flowspec_class(sh: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    sh.ok(
        "from nbflow import FlowSpec, step\n"
        "class HelloFlow(FlowSpec):\n"
        "    @step\n"
        "    def start(self):\n"
        "        self.greeting = 'hello'\n"
        "        self.next(self.end)\n"
        "    @step\n"
        "    def end(self):\n"
        "        print('GREETING', self.greeting)\n"
    )
    sh.ok("run = %flow run HelloFlow")
    assert "GREETING hello" in capsys.readouterr().out
    assert sh.ns["run"] is not None


def test_bad_step_lines_name_the_fix(sh: Shell) -> None:
    assert "needs a step name first" in sh.usage_error("%%step\nx = 1")
    assert "'my-step' is not a Python identifier" in sh.usage_error("%%step my-step\nx = 1")
    assert "'class' is not a Python identifier" in sh.usage_error("%%step class\nx = 1")
    assert "--in needs a value" in sh.usage_error("%%step s --in\nx = 1")
    assert "'a-b' is not a Python identifier" in sh.usage_error("%%step s --out a-b\nx = 1")
    assert "which the cell does not read" in sh.usage_error("%%step s --ignore zzz\nx = 1")
    assert "--in names 'nope', which no step defines" in sh.usage_error("%%step s --in nope\nx = 1")
    assert "syntax error" in sh.usage_error("%%step s\nx = (")
    # parses, yet does not compile: the line is the cell's, not its statement's
    assert "line 2: 'return' outside function" in sh.usage_error("%%step s\nx = 1\nreturn x\n")
    assert "empty" in sh.usage_error("%%step s\n# only a comment\n")
    assert "did not bind 'y'" in sh.usage_error("%%step s --out y\nif False:\n    y = 1")
    assert "cannot read" in sh.usage_error("%%step s --in 'a\nx = 1")
    # nothing half-registered: the flow still works
    sh.ok("%%step s\nx = 2")
    assert sh.ns["x"] == 2


def test_shell_magics_and_plain_output_in_a_step(sh: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    sh.ok("%%step magics\nfiles = !echo one two\nwords = files[0].split()\n%time total = len(words)")
    assert sh.ns["words"] == ["one", "two"] and sh.ns["total"] == 2
    capsys.readouterr()
    sh.ok("%%step magics\nfiles = !echo one two\nwords = files[0].split()\n%time total = len(words)")
    assert "cached, saved" in capsys.readouterr().out


def test_remote_without_dask_cluster_config_is_clear(sh: Shell) -> None:
    # --remote is accepted when dask is installed; a bad executor setting is one clear line
    assert "executor" in sh.usage_error("%flow config executor=quantum")


def test_unload_restores_the_shell(sh: Shell) -> None:
    sh.ok("%unload_ext nbflow")
    assert current_session() is None
    from nbflow import decorators

    assert decorators._live_registrar is None
    sh.ok("%load_ext nbflow")
    assert current_session() is not None
    assert os.path.basename(current_session().flow.store.root) == ".nbflow"  # type: ignore[union-attr]


def test_reloading_keeps_no_unloaded_session_alive(sh: Shell) -> None:
    """IPython keeps every magics object it is given: the unloaded session must not live on in
    it, with its flow and the values it holds."""
    import gc
    import weakref

    sh.ok("%%step first\nvalue = list(range(1000))\n")
    unloaded = weakref.ref(current_session())
    for _ in range(3):
        sh.ok("%reload_ext nbflow")
    sh.ok("%%step first\nvalue = list(range(1000))\n")  # served by the new session
    assert sh.ns["value"][-1] == 999
    gc.collect()
    assert unloaded() is None
    assert "step" in sh.shell.magics_manager.magics["cell"]


@pytest.mark.slow
def test_remote_cell_runs_on_a_dask_worker_and_comes_back(sh: Shell) -> None:
    from nbflow.backends import shutdown

    # an in-process shell's __main__ lacks __spec__, which spawning worker processes reads
    # (a real kernel's has one)
    sh.ns.setdefault("__spec__", None)
    try:
        sh.ok("import os\nfactor = 3\ndef helper(v):\n    return v * factor")
        sh.ok("%%step base\nxs = list(range(5))")
        cell = "%%step far --remote\nimport os\nworker_pid = os.getpid()\nys = [helper(x) for x in xs]"
        sh.ok(cell)
        assert sh.ns["ys"] == [0, 3, 6, 9, 12]
        assert sh.ns["worker_pid"] != os.getpid()  # it ran in a worker process
        sh.ok(cell)  # same key as before: served from the store, bound here
        assert sh.ns["ys"] == [0, 3, 6, 9, 12]
        sh.ok("%%step near\nzs = [y + 1 for y in ys]")  # a local step reads the remote output
        assert sh.ns["zs"] == [1, 4, 7, 10, 13]
    finally:
        shutdown()


def test_an_input_reassigned_in_a_plain_cell_is_named(sh: Shell) -> None:
    sh.ok("%%step load\nxs = [3, 1, 2]")
    sh.ok("xs = sorted(xs)")  # a plain cell changes a step's output: steps will not see it
    with pytest.warns(NbflowWarning, match=r"step 'use' reads 'xs' \(from step 'load'\), which "
                      r"was reassigned outside that step"):
        sh.ok("%%step use\nfirst = xs[0]")
    assert sh.ns["first"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", NbflowWarning)
        sh.ok("%%step use2\nsecond = xs[1]")  # xs is the step's value again: no warning
        sh.ok("%%step items\nnames = ['a', 'b']")
        sh.ok("%%step per --foreach names\nupper = names.upper()")
        sh.ok("%%step after\njoined = names + upper")
    assert sh.ns["joined"] == ["a", "b", "A", "B"]


def test_parsed_cells_are_remembered_in_signed_records(sh: Shell, tmp_path: Path) -> None:
    from nbflow.notebook import parse

    body = "import math\nroot = math.sqrt(value)\nlabel = f'{root:.1f}'\n"  # as IPython passes it
    sh.ok("value = 16")
    sh.ok("%%step calc\n" + body)
    store = current_session().flow.store  # type: ignore[union-attr]
    name = parse.record_name(body)
    assert name in store.records(parse.RECORD_KIND)
    parse.clear_memo()
    loaded = parse.compile_cell(sh.shell, body, store)  # a new kernel: no parsing
    assert loaded.analysis.outputs == ("root", "label") and loaded.analysis.imports == ("import math",)
    assert loaded.normalized == parse._fresh(sh.shell, body).normalized
    # a record altered on disk is not trusted: the cell is parsed again
    path = tmp_path / ".nbflow" / "records" / parse.RECORD_KIND / f"{name}.json"
    path.write_text(path.read_text().replace("root", "evil"))
    parse.clear_memo()
    with pytest.warns(NbflowWarning, match="record signature does not match"):
        again = parse.compile_cell(sh.shell, body, store)
    assert again.analysis.outputs == ("root", "label")
    parse.clear_memo()
    sh.ok("%%step calc\n" + body)  # the cached step still works after all that
    assert sh.ns["label"] == "4.0"


def test_one_cell_may_define_several_function_steps(sh: Shell) -> None:
    sh.ok("%%step base\nnumbers = [1, 2, 3]")
    two = ("import nbflow\n@nbflow.step\ndef total(numbers):\n    return sum(numbers)\n"
           "@nbflow.step\ndef count(numbers):\n    return len(numbers)")
    sh.ok(two)
    sh.ok(two)
    sh.ok("%%step mean\naverage = total / count")
    assert sh.ns["average"] == 2.0
    assert {"total", "count"} <= set(current_session().flow.graph.steps)  # type: ignore[union-attr]


TRANSFORM_CORPUS = [
    "x = 1\ny = 2",
    "\n\n   \nx = 1\n\ny = x\n",
    "    a = 1\n    b = a + 1\n",
    "    a = 1\n      \n    b = 2",
    "def f(a,\n      b):\n    return a + b\n",
    "s = '''\n  text\n'''\nt = s",
    "data = [\n    1,\n    2,\n]\n# comment\n",
    "if x:\n    y = 1\nelse:\n    y = 2",
    "x = 1\n%time y = 2",
    "files = !ls\nn = len(files)",
    "x = 1\nx?",
    ">>> a = 1\n>>> b = 2",
    "In [1]: a = 1\n   ...: b = 2",
    "x = 1\n/print x",
    "x = 1\n,print a b",
    "single = 1",
    "print 1",
    "a = 'it\\'s'\nb = \"100% sure\"",
    "a = 7 % 3\nb = a != 1\nc = '%s' % a",
    "x = %time 1\ny = 2",
    "x =%time 1\ny = 2",
    "y = 1\nx=!ls",
    "for i in range(2):\n    %time i\n",
    "for i in range(2):\n    !echo hi\n",
    "a = (1\n     % 2)\nb = 3",
    "t = f'{1 if 2 != 3 else 4}'\nu = not t",
    "x = 1\nprint(x)  # done? yes\n",
    "def f(a):\n    return a % 2\nf?\n",
    "x = 1\n   \ny = 2\n",  # a line of spaces only
    "x = 1\n\t\ny = 2",
    "x = 1\fy = 2\n",
    "\tx = 1\n\ty = 2\n",
]


def _corpus() -> list[str]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    import nbformat
    from test_analysis import CASES

    root = Path(__file__).resolve().parents[2] / "example_notebooks"
    cells = [c.source.split("\n", 1)[-1] for nb in root.glob("*.ipynb")
             for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
    return [*TRANSFORM_CORPUS, *(case[1] for case in CASES), *cells]


def test_transform_shortcut_matches_ipython() -> None:
    from nbflow.notebook.parse import transform

    shell = InteractiveShell.instance()
    corpus = _corpus()
    assert len(corpus) > 60
    wrong = [body for body in corpus if transform(shell, body) != shell.transform_cell(body)]
    assert wrong == []


def test_cells_parsed_in_pieces_parse_as_a_whole() -> None:
    import ast

    from nbflow.statements import Stmt, parse_whole, statements

    def facts(stmts: list[Stmt]) -> list[tuple[object, ...]]:
        return [(s.text, s.line, s.end_line, s.col, s.end_col, ast.dump(s.node)) for s in stmts]

    shell = InteractiveShell.instance()
    for body in _corpus():
        code = shell.transform_cell(body)
        try:
            whole = facts(parse_whole(code))
        except SyntaxError:
            with pytest.raises(SyntaxError):
                statements(code)
            continue
        assert facts(statements(code)) == whole, code


def test_nothing_waits_for_a_loop_that_is_not_a_kernels(sh: Shell) -> None:
    """In a kernel, nbflow sets some work aside until the kernel is idle (a new cell's parse
    record). Under some other running loop (a sync Playwright session runs one) it does that
    work at once: such a loop may never run the callbacks."""
    import asyncio

    from nbflow.notebook import parse

    def cells() -> None:
        sh.ok("%reload_ext nbflow")
        sh.ok("%%step in_loop\nanswer = 41 + 1\n")
        store = current_session().flow.store  # type: ignore[union-attr]
        assert parse.record_name("answer = 41 + 1\n") in store.records(parse.RECORD_KIND)

    async def inside() -> None:  # never yields to its loop, as a sync Playwright session
        cells()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(inside())
    else:
        cells()  # a loop runs here already (the browser tests' Playwright session)
    assert sh.ns["answer"] == 42


@pytest.mark.parametrize(("cell", "shown"), [
    ("a = 2\na * 3\n", "6"),
    ("a = 2\n(a *\n 4)\n# the end\n", "8"),
    ("a = 2; a + 1\n", "3"),  # the expression shares its line: compiled from the tree
    ("@staticmethod\ndef f():\n    pass\nb = 5\nb + 5\n", "10"),
    ("from __future__ import annotations\ndef f(v: int):\n    pass\nf.__annotations__['v']\n",
     "'int'"),  # the cell's own __future__ import holds
    ("a = 2\na * 3;\n", ""),  # a final ';' keeps it quiet
    ("a = 2\n(a *\n 4);  # the end\n", ""),
])
def test_a_trailing_expression_is_shown(sh: Shell, capsys: pytest.CaptureFixture[str], cell: str,
                                       shown: str) -> None:
    capsys.readouterr()
    sh.ok("%%step shown\n" + cell)
    assert capsys.readouterr().out.strip() == shown


@pytest.mark.parametrize("transformed", [False, True])
def test_a_traceback_names_the_cells_line(sh: Shell, transformed: bool) -> None:
    import ast

    class Same(ast.NodeTransformer):
        pass

    if transformed:  # an AST transformer makes nbflow compile from the tree
        sh.shell.ast_transformers.append(Same())
    try:
        result = sh.run("%%step fails\na = 1\n\nb = a / 0\nb\n")
    finally:
        sh.shell.ast_transformers[:] = []
    err = result.error_in_exec
    assert isinstance(err, ZeroDivisionError)
    tb, lines = err.__traceback__, []
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "<module>":
            lines.append(tb.tb_lineno)
        tb = tb.tb_next
    assert lines[-1] == 3


@pytest.mark.parametrize("kernel", [False, True])
def test_tracebacks_name_the_edited_cells_file_and_lines(sh: Shell, kernel: bool) -> None:
    """Statements' code is memoized across edits and placed at its line under the cell's
    current file name: a function kept from an earlier version of the cell, and one moved down
    by a line added above it, report the right line, and the line shown is the cell's. Also
    under ipykernel's compiler, which names a cell's file by a hash of its text."""
    import linecache

    from ipykernel.compiler import XCachingCompiler

    def frames(cell: str) -> list[tuple[str, int, str]]:
        err = sh.run("%%step fails\n" + cell).error_in_exec
        assert isinstance(err, ZeroDivisionError)
        tb, out = err.__traceback__, []
        while tb is not None:
            code = tb.tb_frame.f_code
            entry = linecache.cache.get(code.co_filename)
            line = linecache.getline(code.co_filename, tb.tb_lineno).strip()
            # registered by the shell: a cell's (IPython's own is the magic's call)
            if entry is not None and entry[1] is None and "run_cell_magic" not in line:
                out.append((code.co_name, tb.tb_lineno, line))
            tb = tb.tb_next
        return out

    previous = sh.shell.compile
    if kernel:
        sh.shell.compile = XCachingCompiler()
    try:
        body = "def f(v):\n    return [1 / x for x in v]\n\nsafe = 1\ny = f([safe])\n"
        sh.ok("%%step fails\n" + body)  # runs: every statement's code is memoized
        edited = body.replace("safe = 1", "safe = 0")
        assert frames(edited) == [("<module>", 5, "y = f([safe])"),
                                  ("f", 2, "return [1 / x for x in v]"),
                                  ("<listcomp>", 2, "return [1 / x for x in v]")]
        moved = "# a line above\n" + edited
        assert frames(moved) == [("<module>", 6, "y = f([safe])"),
                                 ("f", 3, "return [1 / x for x in v]"),
                                 ("<listcomp>", 3, "return [1 / x for x in v]")]
    finally:
        sh.shell.compile = previous


def test_a_final_semicolon_hides_the_value_on_a_hit_too(sh: Shell,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """';' does not change the key (formatting does not count), so the cached entry of the
    cell without it is served: its replay leaves out the trailing expression's display, and
    keeps what the cell printed. A display is replayed once, also where the shell's publisher
    prints it (a terminal)."""
    sh.ok("%%step shown\nprint('printed')\na = 2\na * 3\n")
    assert capsys.readouterr().out.split() == ["printed", "6"]
    sh.ok("%%step shown\nprint('printed')\na = 2\na * 3\n")
    replayed = capsys.readouterr().out.split()
    assert replayed[:3] == ["printed", "6", "cached,"]  # the value once, not twice
    sh.ok("%%step shown\nprint('printed')\na = 2\na * 3;\n")
    out = capsys.readouterr().out
    assert out.split()[0] == "printed" and "6" not in out.split() and "cached" in out


def test_a_value_hidden_when_the_cell_ran_says_so_on_a_hit(sh: Shell,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The other way round: the entry was made with the final ';', so it holds no display of
    the value. A hit without the ';' says so (rather than re-running an expensive cell
    unasked) and names the command that shows it; after that rerun, the hit shows the value."""
    sh.ok("%%step hidden\na = 2\na * 3;\n")
    assert capsys.readouterr().out.strip() == ""
    sh.ok("%%step hidden\na = 2\na * 3\n")
    out = capsys.readouterr().out
    assert "6" not in out.split() and "cached" in out
    assert "ended in ';' when it ran; %flow rerun hidden shows it" in out
    sh.ok("%flow rerun hidden")
    assert "6" in capsys.readouterr().out.split()
    sh.ok("%%step hidden\na = 2\na * 3\n")
    out = capsys.readouterr().out
    assert out.split()[0] == "6" and "cached" in out and "rerun" not in out
    sh.ok("%%step quiet_end\nb = 1;\n")  # no value to hide: nothing to say
    sh.ok("%%step quiet_end\nb = 1\n")
    assert "rerun" not in capsys.readouterr().out
