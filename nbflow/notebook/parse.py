"""From a ``%%step`` cell's text to what nbflow needs of it: transformed code, analysis, the
normalized code of the key, and (only when the cell runs) code objects.

Parsing is most of the magic's own work when a kernel meets a cell for the first time (IPython's
``transform_cell`` tokenizes, then ``ast`` + ``symtable`` + a dump of the tree). Two caches make it
cheap: an in-process memo by cell text (a re-run), and a signed record per cell text in the
store (``records/cells/``: after a kernel restart, a cached cell is not parsed at all — nor
compiled, since it does not run). Records are signed with the user's key like manifests, and
keyed by the text plus the nbflow, IPython and Python versions, so a changed analysis never
reads a stale record.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import textwrap
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import xxhash

from .. import keys
from ..analysis import AnalysisError, CellAnalysis, analyze
from ..hashing import digest_parts
from ..statements import Stmt, statements

CACHE_VERSION = "cells-1"
RECORD_KIND = "cells"
_MEMO_MAX = 512


@dataclass
class Compiled:
    """One cell text, understood. ``objects()`` compiles on first use (a hit never needs it)."""

    code: str  # after IPython's transform_cell
    analysis: CellAnalysis
    normalized: str  # keys.normalize_source of ``code``: what the key covers
    quiet: bool  # ends with ';': the trailing expression is not displayed
    empty: bool  # no statements (only comments)
    _objects: tuple[tuple[types.CodeType, ...], types.CodeType | None, str] | None = field(
        default=None, repr=False, compare=False)

    def objects(self, shell: Any) -> tuple[tuple[types.CodeType, ...], types.CodeType | None, str]:
        """(body, trailing expression or None, filename) compiled for the shell."""
        if self._objects is None:
            self._objects = _compile(shell, self.code, self.quiet)
        return self._objects

    def hides_a_value(self) -> bool:
        """Whether the cell ends in an expression whose value its final ';' hides (asked only
        when such a cell runs: its entry then holds no display of that value)."""
        if not self.quiet or self.empty:
            return False
        try:
            stmts = statements(self.code)
        except SyntaxError:
            return False
        return bool(stmts) and isinstance(stmts[-1].node, ast.Expr)


_memo: OrderedDict[str, Compiled] = OrderedDict()


def clear_memo() -> None:
    """Forget the in-process memo (benchmarks measure a kernel's first sight of a cell)."""
    _memo.clear()
    _present.clear()


def semicolon_at_end(text: str) -> bool:
    for line in reversed(text.rstrip().splitlines()):
        code = line.split("#", 1)[0].rstrip()
        if code:
            return code.endswith(";")
    return False


@functools.lru_cache(maxsize=1)
def _versions_digest() -> bytes:
    """A digest of the versions a record depends on: hashed once, its fixed length keeps the
    name of ``versions + body`` unambiguous."""
    import IPython

    from .. import __version__

    return digest_parts([CACHE_VERSION, __version__, IPython.__version__, sys.version]).encode()


def record_name(body: str) -> str:
    return xxhash.xxh3_128_hexdigest(_versions_digest() + body.encode("utf-8", "surrogatepass"))


def compile_cell(shell: Any, body: str, store: Any = None,
                 defer: Callable[[Callable[[], None]], None] | None = None) -> Compiled:
    """Understand a cell body; AnalysisError (also for code that cannot compile).

    A new body's record goes to ``store`` for the next kernel, through ``defer`` when given
    (the record only saves a later parse, so the cell need not wait for it).
    """
    hit = _memo.get(body)
    if hit is not None:
        _memo.move_to_end(body)
        return hit
    name = record_name(body) if store is not None else ""
    compiled = _load(store, name) if store is not None else None
    if compiled is None:
        compiled = _fresh(shell, body)
        if store is not None:
            if defer is None:
                _save(store, name, compiled)
            else:
                defer(functools.partial(_save, store, name, compiled))
    _memo[body] = compiled
    if len(_memo) > _MEMO_MAX:
        _memo.popitem(last=False)
    return compiled


# what IPython's transformers act on: an escape character first on a line (%magic, !cmd, ?obj,
# autocall's , ; /), prompts, `x = %magic` / `x = !cmd`, and `obj?`. A `%` or `!` elsewhere is
# Python (modulo, `!=`, string formatting), and IPython leaves it alone.
_SPACE = frozenset(" \t\n\r\f\v")
_SPACE_ONLY = re.compile(r"^[ \t]+$", re.MULTILINE)  # lines textwrap.dedent would empty
# each starts with a literal, which the regex engine scans for quickly (one pattern with ``^``
# in MULTILINE mode tries every position of the cell: 3x slower)
_ESCAPE_LINE = re.compile(r"\n[ \t]*(?:[%!?,;/]|>>>|\.\.\.|In \[)")  # searched in "\n" + text
_ASSIGN_ESCAPE = re.compile(r"=[ \t]*[%!]")


def _unusual(body: str) -> bool:
    """Whether IPython's transformers could change ``body`` (see :func:`transform`)."""
    return ("?" in body or _ESCAPE_LINE.search("\n" + body) is not None
            or _ASSIGN_ESCAPE.search(body) is not None)


def transform(shell: Any, body: str) -> str:
    """IPython's ``transform_cell``, without its tokenizer when it could change nothing.

    For a multi-line cell with no escape character starting a line, no ``= %``/``= !``, no
    ``?``, no prompt, and a shell with IPython's default transformers, the result is
    what IPython's cleanup steps give: leading blank lines dropped, common indentation removed,
    a final newline. Anything else goes through IPython itself.
    """
    if not _unusual(body) and _default_transformers(shell):
        cell = body if body.endswith("\n") else body + "\n"
        # a line of only blanks ends in " \n" or "\t\n": look for it only then
        if cell[0] not in _SPACE and not (("\t\n" in cell or " \n" in cell)
                                          and _SPACE_ONLY.search(cell)):  # nothing to dedent
            many = cell.count("\n") > 1 or len(cell.splitlines()) > 1
            return cell if many else str(shell.transform_cell(body))
        lines = cell.splitlines(keepends=True)
        while lines and lines[0].isspace():
            lines.pop(0)
        text = textwrap.dedent("".join(lines))
        if len(text.splitlines()) > 1:  # one-line cells get IPython's dynamic prefilters
            return text
    return str(shell.transform_cell(body))


@functools.lru_cache(maxsize=1)
def _manager_class() -> Any:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager


def _default_transformers(shell: Any) -> bool:
    manager = getattr(shell, "input_transformer_manager", None)
    if manager is None or getattr(shell, "input_transformers_post", None):
        return False
    return (type(manager) is _manager_class() and len(manager.cleanup_transforms) == 4
            and len(manager.line_transforms) == 1 and len(manager.token_transformers) == 4)


def _fresh(shell: Any, body: str) -> Compiled:
    code = transform(shell, body)
    try:
        stmts = statements(code)
    except SyntaxError as e:
        raise AnalysisError(f"the cell has a syntax error on line {e.lineno}: {e.msg}") from None
    analysis = analyze(code, stmts)
    compiled = Compiled(code, analysis, keys.normalize_cell(stmts), semicolon_at_end(body),
                        not stmts)
    try:
        compiled._objects = _compile(shell, code, compiled.quiet, stmts)
    except SyntaxError as e:  # parses, yet cannot compile: 'return' outside a function, ...
        raise AnalysisError(f"line {e.lineno}: {e.msg}") from None
    return compiled


# flags that tell the parser how to treat incomplete input (codeop's): not for a whole cell
_PARSER_FLAGS = 0x200 | 0x4000  # PyCF_DONT_IMPLY_DEDENT | PyCF_ALLOW_INCOMPLETE_INPUT
_CODE_MAX = 4096
# (statement's memo, mode, flags) -> its code, compiled with the statement's own line numbers
_codes: dict[tuple[tuple[str, int, int], str, int], types.CodeType] = {}


def _compile(shell: Any, code: str, quiet: bool, stmts: list[Stmt] | None = None
             ) -> tuple[tuple[types.CodeType, ...], types.CodeType | None, str]:
    """(body, trailing expression to display or None, filename), compiled as IPython would
    (its filename cache, so tracebacks show the cell's lines; its ``__future__`` flags).

    Statement by statement, as IPython runs a cell, from the trees :func:`statements` already
    parsed: each statement's code is memoized, so an edited cell compiles only what changed,
    and then placed at its line of the cell under the cell's file name. A cell with a
    ``__future__`` import (it holds for the statements after it) or a shell with AST
    transformers (they see the whole tree) is compiled whole."""
    compiler = getattr(shell, "compile", None)
    filename = _filename(compiler, code, int(getattr(shell, "execution_count", 0) or 0))
    flags = int(getattr(compiler, "flags", 0) or 0) & ~_PARSER_FLAGS
    if getattr(shell, "ast_transformers", None) or "__future__" in code:
        return _compile_whole(shell, code, quiet, filename, flags)
    if stmts is None:
        stmts = statements(code)
    display = bool(stmts) and isinstance(stmts[-1].node, ast.Expr) and not quiet
    body = tuple(_placed(_statement_code(s, "exec", flags), filename, s.shift)
                 for s in (stmts[:-1] if display else stmts))
    last = _placed(_statement_code(stmts[-1], "eval", flags), filename, stmts[-1].shift
                   ) if display else None
    return body, last, filename


def _filename(compiler: Any, code: str, number: int) -> str:
    """The file name the shell gives ``code`` (its lines are then what tracebacks show).

    ipykernel names a cell's file by a hash of its raw text that it computes in Python, at
    ~0.2 µs a byte: a long cell would cost milliseconds per edit. A digest of the text, passed
    as the raw text, names it as uniquely, at the cost of hashing 16 characters."""
    cache = getattr(compiler, "cache", None)
    if cache is None:
        return "<nbflow cell>"
    try:
        return str(cache(code, number, raw_code=xxhash.xxh3_64_hexdigest(code.encode(
            "utf-8", "surrogatepass"))))
    except TypeError:  # a compiler without raw_code
        return str(cache(code, number))


def _statement_code(stmt: Stmt, mode: str, flags: int) -> types.CodeType:
    key = (stmt.memo, mode, flags)
    code = _codes.get(key)
    if code is None:
        node = stmt.node
        tree: ast.Module | ast.Expression = (
            ast.Expression(node.value) if mode == "eval" and isinstance(node, ast.Expr)
            else ast.Module([node], type_ignores=[]))
        try:
            code = compile(tree, "<nbflow cell>", mode, flags=flags, dont_inherit=True)
        except SyntaxError as e:  # at the statement's line of the cell
            if e.lineno is not None:
                e.lineno += stmt.shift
            raise
        if len(_codes) > _CODE_MAX:
            _codes.clear()
        _codes[key] = code
    return code


def _placed(code: types.CodeType, filename: str, shift: int) -> types.CodeType:
    """``code`` (and the code it holds: functions, classes, comprehensions) ``shift`` lines
    down, under ``filename``. Line tables count from ``co_firstlineno``, so moving that moves
    every line of a code object."""
    if not shift and code.co_filename == filename:
        return code
    consts = code.co_consts
    if any(isinstance(c, types.CodeType) for c in consts):
        consts = tuple(_placed(c, filename, shift) if isinstance(c, types.CodeType) else c
                       for c in consts)
    return code.replace(co_filename=filename, co_firstlineno=code.co_firstlineno + shift,
                        co_consts=consts)


def _compile_whole(shell: Any, code: str, quiet: bool, filename: str, flags: int
                   ) -> tuple[tuple[types.CodeType, ...], types.CodeType | None, str]:
    tree = ast.parse(code)
    if getattr(shell, "ast_transformers", None):
        tree = shell.transform_ast(tree)
    nodes = list(tree.body)
    last_code = None
    end = nodes[-1] if nodes else None
    if isinstance(end, ast.Expr) and not quiet:
        nodes.pop()
        last_code = compile(ast.Expression(end.value), filename, "eval", flags=flags,
                            dont_inherit=True)
    body_code = compile(ast.Module(nodes, type_ignores=[]), filename, "exec", flags=flags,
                        dont_inherit=True)
    return (body_code,), last_code, filename


# store -> names of the records it held when first asked, plus those written since: a cell
# never seen (every edit makes one) is then known to have no record without asking the store.
# A record another process writes meanwhile is missed: the cell is parsed again, no more.
_present: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _names(store: Any) -> set[str]:
    names = _present.get(store)
    if names is None:
        try:
            names = set(store.records(RECORD_KIND))
        except Exception:
            names = set()
        _present[store] = names
    return names


def _load(store: Any, name: str) -> Compiled | None:
    try:
        if name not in _names(store):
            return None
        data = store.get_record(RECORD_KIND, name)
        if not data:
            return None
        a = data["analysis"]
        analysis = CellAnalysis(*(tuple(a[k]) for k in (
            "binds", "outputs", "reads", "imports", "deletes", "nested_reads")))
        return Compiled(str(data["code"]), analysis, str(data["normalized"]), bool(data["quiet"]),
                        bool(data["empty"]))
    except Exception:  # an unreadable record is only a missed shortcut
        return None


def _save(store: Any, name: str, c: Compiled) -> None:
    a = c.analysis
    data = {"code": c.code, "normalized": c.normalized, "quiet": c.quiet, "empty": c.empty,
            "analysis": {"binds": a.binds, "outputs": a.outputs, "reads": a.reads,
                         "imports": a.imports, "deletes": a.deletes,
                         "nested_reads": a.nested_reads}}
    try:
        store.put_record(RECORD_KIND, name, data)
    except Exception:  # a read-only or full store: parse again next time
        return
    _names(store).add(name)


__all__ = ["Compiled", "clear_memo", "compile_cell", "record_name", "semicolon_at_end"]
