"""Piecewise parsing of a cell's statements must give exactly what one ``ast.parse`` gives."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbflow import keys, statements
from nbflow.analysis import analyze
from nbflow.statements import parse_whole


def _facts(stmts: list[statements.Stmt]) -> list[tuple[object, ...]]:
    return [(s.text, s.col, s.end_col, s.line, s.end_line, ast.dump(s.node))
            for s in stmts]


def _same_as_whole(code: str) -> None:
    try:
        whole = _facts(parse_whole(code))
    except SyntaxError as e:
        with pytest.raises(SyntaxError) as got:
            statements.statements(code)
        assert (got.value.lineno, got.value.msg) == (e.lineno, e.msg)
        return
    assert _facts(statements.statements(code)) == whole


# lines that look like statement starts but are not: inside strings, brackets, continuations,
# the clauses of compound statements, decorators
SNIPPETS = [
    "x = 1",
    "y = x + 1",
    "a = 1; b = 2",
    's = """\nx = 1\n"""',
    "t = '''\n@foo\ndef g(): pass\n'''",
    "z = foo(\n1,\n2)",
    "d = {\n'k': 1,\n}",
    "w = 1 + \\\n2",
    "if x:\n    y = 2\nelse:\n    y = 3",
    "if x:\n    pass\nelif y:\n    pass",
    "try:\n    pass\nexcept ValueError:\n    pass\nfinally:\n    pass",
    "@dec\ndef f(v):\n    return v",
    "@dec(1)\n# a comment\n\n@other\nclass C:\n    pass",
    "for i in range(3):\n    print(i)\nelse:\n    done = True",
    "# a comment",
    "",
    "    indented = 1",
    "x +",
    ")",
    "else:\n    pass",
    "from __future__ import annotations",
    "f'{x}\n'",
    "lambda: (\n)",
    "x  # trailing \\",
    "print(x)",
]


@pytest.mark.parametrize("code", [
    *SNIPPETS,
    "\n".join(SNIPPETS[:14]),
    "x = 1\n\n\n@dec\n\n# c\ndef f():\n    pass\nf\n",
    "s = '''\nx = 1\n'''\ny = 2\n",
    "x = (\n\ny)\n",
    "x = 1\ny = 2\r\nz = 3\r\n",
    "import math\n_scale = factor * 2\nb = a + offset\nif b < 0:\n    print('negative', b)\n",
])
def test_pieces_give_the_whole_parse(code: str) -> None:
    _same_as_whole(code)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=8),
       st.lists(st.sampled_from(["\n", "\n\n", "\n# note\n", "\n   \n"]), min_size=8, max_size=8))
def test_any_mix_of_statements_parses_as_a_whole(parts: list[str], seps: list[str]) -> None:
    code = parts[0]
    for part, sep in zip(parts[1:], seps, strict=False):
        code += sep + part
    _same_as_whole(code + "\n")


def test_an_edit_parses_only_the_piece_it_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = "import math\na = f(1)\nb = a * 2\nif b:\n    print(b)\n"
    statements.statements(cell)
    parsed: list[str] = []
    real = ast.parse

    def spy(text: str, *args: object, **kwargs: object) -> ast.Module:
        parsed.append(text)
        return real(text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(statements.ast, "parse", spy)
    edited = cell.replace("a * 2", "a * 3")
    assert _facts(statements.statements(edited)) == _facts(parse_whole(edited))
    assert parsed[0] == "b = a * 3"
    assert len(parsed) == 2  # the piece, then the whole text of the check above


def test_a_decorator_edit_changes_the_analysis_and_the_key() -> None:
    """Regression: statements were once memoized by the text from the ``def`` line, so a
    changed decorator kept the old reads and the old key (a stale cache hit)."""
    first = "@foo\ndef f():\n    pass\n"
    second = "@bar\ndef f():\n    pass\n"
    assert analyze(first).reads == ("foo",)
    assert analyze(second).reads == ("bar",)
    assert (keys.normalize_cell(statements.statements(first))
            != keys.normalize_cell(statements.statements(second)))
