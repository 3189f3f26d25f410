"""A cell's top-level statements, parsed piece by piece so that an edit re-parses only the
statements it touched.

Parsing is the largest part of the magic's work on an edited cell, and most of a cell is the
same from one edit to the next. The text is cut, by lines, into pieces that each start a
top-level statement; each piece is parsed on its own and memoized by its text. The cut is a
guess made without a tokenizer (a line at column 0 that does not continue the line before), so
it is checked rather than trusted: a piece that does not parse alone — the guess fell inside a
string, a bracket or a compound statement — sends the whole text to ``ast.parse``. A piece that
parses alone ends at the top level (no open bracket, string or block), so the next piece starts
where a statement of the whole text starts, and the pieces' statements are the whole text's.

What is derived from a statement (its analysis, its normalized dump) is memoized by
:attr:`Stmt.memo`: its full text — decorators included — and columns.
"""

from __future__ import annotations

import ast
import re
from typing import NamedTuple


class Stmt(NamedTuple):
    """One top-level statement. Lines are 1-based and count the decorators of a definition.
    ``node`` is shared with every cell holding the same piece, so its own line numbers are
    the piece's, not the cell's: read positions from the fields here."""

    memo: tuple[str, int, int]  # (text of its lines, first and last column): its content
    line: int
    end_line: int
    node: ast.stmt

    @property
    def text(self) -> str:
        return self.memo[0]

    @property
    def col(self) -> int:
        return self.memo[1]

    @property
    def end_col(self) -> int:
        return self.memo[2]

    @property
    def shift(self) -> int:
        """How many lines below the node's own line numbers the statement stands."""
        return self.line - first_line(self.node)


# where a piece may start: after a newline, a line that is not indented, blank or a comment,
# nor the next clause of a compound statement
_START = re.compile(r"\n(?=[^ \t\f#\r\n])(?!(?:else|elif|except|finally)\b)")
_CODE_LINE = re.compile(r"[ \t\f]*[^ \t\f#\r\n]")
_MEMO_MAX = 4096
_pieces: dict[str, tuple[Stmt, ...]] = {}  # piece text -> its statements, lines from 1


def split_lines(code: str) -> list[str]:
    """The lines of ``code`` as Python counts them (``str.splitlines`` also cuts at form feeds
    and other separators that are not line ends to the tokenizer)."""
    if "\r" in code:
        return re.split(r"\r\n|\r|\n", code)
    return code.split("\n")


def first_line(node: ast.stmt) -> int:
    """A statement's first line: its first decorator's, for a decorated definition."""
    first = node.lineno
    for d in getattr(node, "decorator_list", ()):
        first = min(first, d.lineno)
    return first


def _spans(tree: ast.Module, lines: list[str]) -> list[Stmt]:
    out = []
    for node in tree.body:
        first = first_line(node)
        end = node.end_lineno or node.lineno
        memo = ("\n".join(lines[first - 1:end]), node.col_offset, node.end_col_offset or 0)
        out.append(Stmt(memo, first, end, node))
    return out


def parse_whole(code: str) -> list[Stmt]:
    """The statements of ``code`` from one ``ast.parse`` (SyntaxError as it raises)."""
    return _spans(ast.parse(code), split_lines(code))


def _cuts(code: str) -> list[int]:
    """Offsets of the newlines after which a piece starts."""
    cuts = []
    for m in _START.finditer(code):
        at = m.start()
        # the last line of code before: not continued with a backslash, not a decorator
        end = at
        while True:
            start = code.rfind("\n", 0, end) + 1
            if _CODE_LINE.match(code, start, end) or start == 0:
                break
            end = start - 1
        if code[end - 1:end] == "\\" or code.startswith("@", start):
            continue
        cuts.append(at)
    return cuts


def statements(code: str) -> list[Stmt]:
    """The top-level statements of ``code``, in order, as ``ast.parse`` would give them
    (SyntaxError as it raises: a text that fails is always parsed whole)."""
    if "__future__" in code or "\r" in code:  # __future__ imports stand first in a module only
        return parse_whole(code)
    out: list[Stmt] = []
    begin = line = 0
    for cut in [*_cuts(code), len(code)]:
        text = code[begin:cut]
        found = _piece(text, line)
        if found is None:
            return parse_whole(code)
        out.extend(found)
        line += text.count("\n") + 1
        begin = cut + 1
    return out


def _piece(text: str, offset: int) -> list[Stmt] | tuple[Stmt, ...] | None:
    rel = _pieces.get(text)
    if rel is None:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return None
        if len(_pieces) > _MEMO_MAX:
            _pieces.clear()
        rel = _pieces[text] = tuple(_spans(tree, text.split("\n")))
    if not offset:
        return rel
    return [Stmt(s.memo, s.line + offset, s.end_line + offset, s.node) for s in rel]
