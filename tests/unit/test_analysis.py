"""Cell analysis, table-driven: source -> (outputs, reads), plus imports, deletes, nested reads.

Each case is what a user's cell looks like after IPython's ``transform_cell``; ``reads`` are in
first-use order (top-level reads first, then names read inside comprehensions, then inside
functions/lambdas/classes, alphabetically).
"""

from __future__ import annotations

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from nbflow.analysis import AnalysisError, analyze

CASES: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    # (id, source, outputs, reads)
    ("assign", "x = 1", ("x",), ()),
    ("assign reads", "y = x + z", ("y",), ("x", "z")),
    ("chained", "a = b = c", ("a", "b"), ("c",)),
    ("tuple unpack", "a, b = pair", ("a", "b"), ("pair",)),
    ("nested unpack", "(a, [b, *rest]), c = data", ("a", "b", "rest", "c"), ("data",)),
    ("starred", "first, *others = items", ("first", "others"), ("items",)),
    ("annotated", "n: int = 3", ("n",), ()),
    ("annotation only", "n: Size", (), ("Size",)),
    ("augmented reads then binds", "total += 1", ("total",), ("total",)),
    ("augmented of bound", "total = 0\ntotal += step", ("total",), ("step",)),
    ("read before bind", "x = x + 1", ("x",), ("x",)),
    ("bind before read", "x = 1\ny = x", ("x", "y"), ()),
    ("del removes output", "tmp = load()\nresult = tmp * 2\ndel tmp", ("result",), ("load",)),
    ("del of a read", "del df", (), ()),
    ("private temporaries", "_tmp = 1\nvalue = _tmp + 1", ("value",), ()),
    ("attribute assignment", "df.x = 1", (), ("df",)),
    ("subscript assignment", "d[k] = v", (), ("v", "d", "k")),
    ("augmented attribute", "model.n += 1", (), ("model",)),
    ("method call mutation", "items.append(4)", (), ("items",)),
    ("walrus", "if (n := len(xs)) > 2:\n    big = True", ("n", "big"), ("xs",)),
    ("walrus in comprehension", "ys = [y for x in xs if (y := f(x))]", ("y", "ys"), ("xs", "f")),
    ("list comprehension", "sq = [x * k for x in xs]", ("sq",), ("xs", "k")),
    ("dict comprehension", "d = {k: v for k, v in pairs}", ("d",), ("pairs",)),
    ("generator", "s = sum(x for x in xs if x > lo)", ("s",), ("xs", "lo")),
    ("nested comprehension", "m = [[i * j for j in cols] for i in rows]", ("m",), ("rows", "cols")),
    ("comprehension var does not leak", "out = [i for i in range(3)]\ny = i", ("out", "y"), ("i",)),
    ("lambda", "f = lambda a, b=default: a + b + offset", ("f",), ("default", "offset")),
    ("def", "def g(a, b=dflt):\n    return a + b + c", ("g",), ("dflt", "c")),
    ("def local names", "def g(a):\n    t = a * 2\n    return t + scale", ("g",), ("scale",)),
    ("def reads global defined later", "def g():\n    return h()\ndef h():\n    return 1", ("g", "h"), ()),
    ("decorator", "@cache\ndef g():\n    pass", ("g",), ("cache",)),
    ("async def", "async def fetch():\n    return await get(url)", ("fetch",), ("get", "url")),
    ("class", "class Model(Base):\n    k = 1\n    def fit(self):\n        return self.k + lr",
     ("Model",), ("Base", "lr")),
    ("global in function", "def setup():\n    global config\n    config = 1", ("setup", "config"), ()),
    ("nonlocal", "def outer():\n    n = 0\n    def inner():\n        nonlocal n\n        n += 1\n    return inner",
     ("outer",), ()),
    ("import", "import numpy as np\narr = np.zeros(3)", ("arr",), ()),
    ("dotted import", "import os.path\np = os.path.join(a, b)", ("p",), ("a", "b")),
    ("from import", "from math import sqrt\nr = sqrt(x)", ("r",), ("x",)),
    ("for loop", "for i, v in enumerate(vals):\n    acc = v", ("i", "v", "acc"), ("vals",)),
    ("while", "while n > 0:\n    n = n - 1", ("n",), ("n",)),
    ("with", "with open(path) as fh:\n    text = fh.read()", ("fh", "text"), ("path",)),
    ("try/except", "try:\n    v = risky()\nexcept ValueError as e:\n    v = str(e)", ("v",), ("risky",)),
    ("if/else", "if flag:\n    a = 1\nelse:\n    b = 2", ("a", "b"), ("flag",)),
    ("match", "match cmd:\n    case [x, *rest]:\n        got = x\n    case {'k': kv, **more}:\n        got = kv",
     ("x", "rest", "got", "kv", "more"), ("cmd",)),
    ("builtins are not reads", "n = len(range(10))\nprint(n)", ("n",), ()),
    ("ipython names are not reads", "display(df)\nget_ipython()", (), ("df",)),
    ("last expression", "x = 1\nx + y", ("x",), ("y",)),
    ("fstring", "msg = f'{name}: {value:.2f}'", ("msg",), ("name", "value")),
    ("annotation is evaluated", "x: Cls = make()", ("x",), ("Cls", "make")),
]


@pytest.mark.parametrize(("source", "outputs", "reads"),
                         [pytest.param(s, o, r, id=i) for i, s, o, r in CASES])
def test_outputs_and_reads(source: str, outputs: tuple[str, ...], reads: tuple[str, ...]) -> None:
    result = analyze(source)
    assert result.outputs == outputs
    assert set(result.reads) == set(reads), result.reads


def test_reads_keep_first_use_order_at_top_level() -> None:
    assert analyze("a = z + y\nb = x + z").reads == ("z", "y", "x")


def test_imports_are_listed_for_replay_and_are_not_outputs() -> None:
    result = analyze("import pandas as pd\nfrom os import path as p, sep\nimport a.b.c\ndf = pd.DataFrame()")
    assert result.imports == ("import pandas as pd", "from os import path as p, sep", "import a.b.c")
    assert result.outputs == ("df",)
    assert set(result.binds) >= {"pd", "p", "sep", "a", "df"}


def test_deletes_and_except_names() -> None:
    result = analyze("x = 1\ndel x\ntry:\n    pass\nexcept E as err:\n    pass")
    assert "x" in result.deletes and "err" in result.deletes
    assert result.outputs == ()


def test_nested_reads_are_told_apart() -> None:
    """Names read only inside functions need not exist yet when the cell runs."""
    result = analyze("def f():\n    return later()\nys = [g(x) for x in xs]\nh = lambda: other")
    assert set(result.nested_reads) == {"later", "other"}
    assert {"g", "xs"} <= set(result.reads) and not {"g", "xs"} & set(result.nested_reads)


@pytest.mark.parametrize("source", ["from os.path import *", "if True:\n    from math import *"])
def test_import_star_is_a_clear_error(source: str) -> None:
    with pytest.raises(AnalysisError, match=r"import \*.*explicitly"):
        analyze(source)


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(AnalysisError, match="line 2"):
        analyze("x = 1\ny = (")


def test_ipython_syntax_after_transform_cell() -> None:
    """Magics and shell escapes become calls once IPython has transformed the cell."""
    code = TransformerManager().transform_cell("files = !ls {folder}\n%time n = len(files)\ntotal = n * k")
    result = analyze(code)
    assert {"files", "total"} <= set(result.outputs)
    assert "k" in result.reads
    assert "get_ipython" not in result.reads


def test_per_statement_memo_gives_the_same_analysis() -> None:
    """Statements are walked once per text; a warm memo must not change any result."""
    from nbflow import analysis

    sources = [case[1] for case in CASES if "import *" not in case[1]]
    analysis._stmt_ops.clear()
    cold = [analyze(src) for src in sources]
    warm = [analyze(src) for src in reversed(sources)][::-1]
    assert cold == warm
    joined = "\n".join(sources[:5])
    analysis._stmt_ops.clear()
    fresh = analyze(joined)
    for src in sources[:5]:
        analyze(src)
    assert analyze(joined) == fresh
