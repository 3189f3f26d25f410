from __future__ import annotations

import ast
import dataclasses
import inspect
import json.decoder
import sys
import textwrap
import types
import typing
import warnings

import numpy as np
import pytest

from nbflow import keys
from nbflow.statements import statements
from nbflow.store.codec import value_digest


def compile_func(src: str, name: str, extra: dict | None = None) -> types.FunctionType:
    """Define a function from source in a fresh module so inspect.getsource works."""
    import linecache

    filename = f"<test-{abs(hash(src))}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    ns: dict = {"__name__": "testmod", **(extra or {})}
    exec(compile(src, filename, "exec"), ns)
    return ns[name]


CASES = [
    # (a, b, same?)
    ("def f(x):\n    return [v * 2 for v in x]\n",
     "def f(x):  # doubled\n    return [v*2   for v in x]\n", True),
    ("def f(x):\n    return [v * 2 for v in x]\n",
     "def f(x):\n    return [v + v for v in x]\n", False),
    ("def f(x):\n    '''doc'''\n    return x\n", "def f(x):\n    return x\n", True),
    ("@deco\ndef f(x):\n    return x\n", "def f(x):\n    return x\n", True),
    ("def f(x: int) -> int:\n    return x\n", "def f(x):\n    return x\n", True),
]


@pytest.mark.parametrize(("a", "b", "same"), CASES)
def test_normalized_code(a: str, b: str, same: bool) -> None:
    fa = compile_func(a, "f", {"deco": lambda f: f})
    fb = compile_func(b, "f", {"deco": lambda f: f})
    assert (keys.function_code(fa) == keys.function_code(fb)) is same


def test_cell_and_exported_function_normalize_alike() -> None:
    cell = "model = fit(df, alpha)\nprint(model)\n"
    func = compile_func(
        "def fit_step(df, alpha):\n    model = fit(df, alpha)\n    print(model)\n    return model\n",
        "fit_step",
    )
    assert keys.normalize_source(cell, ("model",)) == keys.function_code(func, ("model",))


CELLS = [
    "a = 1; b = 2\nc = (a +\n     b)\n",
    '"""doc"""\nx = 1\n',
    "def f():\n    return 1\nf()\n",
    "if x:\n    y = 1\nelse:\n    y = 2\nz = y  # note\n",
    "a = 1; b = 2\n",
    "b = 2; a = 1\n",
]


def test_cell_normalization_memoized_per_statement_equals_the_whole_dump() -> None:
    seen: dict[str, str] = {}
    for _ in range(2):  # the second round is served from the per-statement memo
        for src in CELLS:
            tree = ast.parse(src)
            got = keys.normalize_cell(statements(src))
            assert got == keys.normalize_body(tree.body, ())
            assert seen.setdefault(src, got) == got
    assert len(set(seen.values())) == len(CELLS)


@pytest.mark.parametrize("module", [ast, dataclasses, json.decoder, textwrap, typing])
def test_dump_is_the_text_of_ast_dump(module: types.ModuleType) -> None:
    """Keys made before nbflow wrote its own dump stay valid: every node of a few
    standard-library modules (all kinds of statements and expressions between them) dumps to
    the text ``ast.dump`` gives, optional fields left out and the fields after them named."""
    tree = ast.parse(inspect.getsource(module))
    extra = ast.parse("f(*a, **{**d, 'k': 1})\nx = [v async for v in g() if v]\n"
                      "def g(a, /, b=1, *c, d, **e) -> None: ...\n")
    nodes = [*ast.walk(tree), *ast.walk(extra)]
    assert len(nodes) > 500
    # from 3.13 on, ast.dump leaves out empty lists: the text a key covers stays the 3.11 one
    same_as_stdlib = sys.version_info < (3, 13)
    for node in nodes:
        text = keys.dump(node)
        assert text.startswith(type(node).__name__ + "(")
        if same_as_stdlib:
            assert text == ast.dump(node, annotate_fields=False)


def test_dump_leaves_out_positions_and_optional_nones_and_names_what_follows() -> None:
    call = ast.parse("f(x, *a, k=1)  # a comment").body[0]
    assert keys.dump(call) == ("Expr(Call(Name('f', Load()), [Name('x', Load()), "
                               "Starred(Name('a', Load()), Load())], [keyword('k', Constant(1))]))")
    lone = ast.parse("raise E from c").body[0]
    assert keys.dump(lone) == "Raise(Name('E', Load()), Name('c', Load()))"
    bare = ast.parse("raise").body[0]
    assert keys.dump(bare) == "Raise()"
    after = ast.parse("x[:2]").body[0]  # lower is None: the fields after it are named
    assert keys.dump(after) == ("Expr(Subscript(Name('x', Load()), Slice(upper=Constant(2)), "
                                "Load()))")


def test_helper_edit_changes_fingerprint_recursively() -> None:
    src = textwrap.dedent("""
        def inner(v):
            return v * 2
        def helper(v):
            return inner(v) + 1
        def step(x):
            return helper(x)
    """)
    f1 = compile_func(src, "step")
    f2 = compile_func(src.replace("v * 2", "v * 3"), "step")
    e1, _ = keys.function_externals(f1, value_digest)
    e2, _ = keys.function_externals(f2, value_digest)
    assert set(e1) == {"helper"}
    assert e1 != e2  # an edit two calls deep is seen


def test_globals_modules_and_values_fingerprinted() -> None:
    src = "def step(x):\n    return np.sum(x) * SCALE\n"
    f1 = compile_func(src, "step", {"np": np, "SCALE": 2})
    f2 = compile_func(src, "step", {"np": np, "SCALE": 3})
    e1, unknown = keys.function_externals(f1, value_digest)
    e2, _ = keys.function_externals(f2, value_digest)
    assert unknown == []
    assert e1["np"] == e2["np"] and e1["SCALE"] != e2["SCALE"]
    assert keys.module_version(np).startswith(f"module:numpy=={np.__version__}")


def test_unfingerprintable_is_named() -> None:
    import threading

    f = compile_func("def step():\n    return LOCK\n", "step", {"LOCK": threading.Lock()})
    _, unknown = keys.function_externals(f, value_digest)
    assert unknown == ["LOCK"]


def test_step_key_covers_every_part() -> None:
    base = dict(name="s", code="c", outputs=("o",), params={"p": "1"}, input_digests={"i": "d"}, version=None)
    k = keys.step_key(**base)  # type: ignore[arg-type]
    variants = [
        {"name": "t"}, {"code": "c2"}, {"outputs": ("o2",)}, {"params": {"p": "2"}},
        {"input_digests": {"i": "e"}}, {"version": "2"},
    ]
    for v in variants:
        assert keys.step_key(**{**base, **v}) != k  # type: ignore[arg-type]
    assert keys.step_key(**base) == k  # type: ignore[arg-type]


def test_no_source_falls_back_to_bytecode() -> None:
    ns: dict = {}
    exec("def f(x):\n    return x + 1\n", ns)  # no linecache entry: no source
    exec("def g(x):\n    return x + 2\n", ns)
    assert keys.function_code(ns["f"]).startswith("bytecode:")
    assert keys.function_code(ns["f"]) != keys.function_code(ns["g"])


def test_normalize_rejects_nothing_valid() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keys.normalize_source("x = 1\n") == ast.dump(ast.parse("x=1").body[0], annotate_fields=False)
