"""Static analysis of a cell: which names it binds (outputs) and which it reads (inputs).

Pure ``ast`` + ``symtable``; no IPython here (the notebook adapter runs IPython's
``transform_cell`` first, so ``%magic`` and ``!cmd`` lines arrive as ordinary calls).

Rules, in the order a reader would apply them:

* Outputs are the names the cell binds at top level — assignment (plain, tuple, annotated,
  augmented, walrus, ``for``/``with``/``except`` targets, ``match`` captures), ``def``/``class``,
  and ``global`` declarations inside functions that assign — minus names deleted at top level and
  names starting with ``_`` (private temporaries; ``--out`` can still name them).
* Imports bind names too, but modules are not data: they are listed in ``imports`` (the adapter
  re-executes them on a cache hit) and are not outputs.
* Reads are the free names the cell loads: at top level, a name loaded before the cell binds it;
  inside functions, lambdas and comprehensions, a global name the cell does not bind itself.
  Attribute and subscript assignment (``df.x = 1``, ``d[k] = v``) reads the object, binds nothing.
* ``from m import *`` cannot be analysed: :class:`AnalysisError` asks for explicit names.
  ``exec``/``eval``/``globals()`` are not seen; ``--in``/``--out`` override.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import NbflowError
from .statements import Stmt, statements

_BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__builtins__", "get_ipython",
                                         "display", "In", "Out", "exit", "quit"}


class AnalysisError(NbflowError):
    """The cell cannot be analysed (syntax error, ``import *``)."""


@dataclass(frozen=True)
class CellAnalysis:
    binds: tuple[str, ...]  # every top-level binding, in order (outputs + imports + private)
    outputs: tuple[str, ...]  # what the step produces
    reads: tuple[str, ...]  # free names loaded, in first-use order (builtins excluded)
    imports: tuple[str, ...]  # source of each top-level import statement
    deletes: tuple[str, ...]
    # reads that occur only inside functions, lambdas and classes: they need not exist when the
    # cell runs (a helper may refer to a name another cell defines later)
    nested_reads: tuple[str, ...] = ()


Op = tuple[str, str]  # ("bind" | "read" | "delete" | "import_name" | "import", name or text)


class _State:
    """What the top level binds and reads, folded from the ops of its statements in order."""

    def __init__(self) -> None:
        self.bound: list[str] = []
        self.reads: list[str] = []
        self.deleted: list[str] = []
        self.import_names: set[str] = set()
        self.imports: list[str] = []

    def bind(self, name: str) -> None:
        if name not in self.bound:
            self.bound.append(name)
        if name in self.deleted:
            self.deleted.remove(name)

    def apply(self, ops: Iterable[Op]) -> None:
        for kind, name in ops:
            if kind == "bind":
                self.bind(name)
            elif kind == "read":
                if name not in self.bound and name not in self.reads:
                    self.reads.append(name)
            elif kind == "delete":
                self.deleted.append(name)
            elif kind == "import_name":
                self.import_names.add(name)
            else:
                self.imports.append(name)


class _TopLevel(ast.NodeVisitor):
    """Walks one top-level statement in execution order, recording what it binds and reads as
    ops (the same statement always gives the same ops, so they are memoized by its text);
    nested scopes are left to symtable."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.nested = False  # saw a function, class, lambda or comprehension: symtable needed

    def visit(self, node: ast.AST) -> None:
        """``NodeVisitor.visit`` with its method looked up once per node class: an edited
        statement is walked on every run of the cell."""
        method = _DISPATCH.get(type(node))
        if method is None:
            method = _DISPATCH[type(node)] = getattr(
                _TopLevel, "visit_" + type(node).__name__, _TopLevel.generic_visit)
        method(self, node)

    def generic_visit(self, node: ast.AST) -> None:
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, ast.AST):
                self.visit(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)

    # bookkeeping
    def bind(self, name: str) -> None:
        self.ops.append(("bind", name))

    def read(self, name: str) -> None:
        self.ops.append(("read", name))

    def bind_target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self.bind_target(elt)
        elif isinstance(target, ast.Starred):
            self.bind_target(target.value)
        elif isinstance(target, ast.Attribute):
            self.visit(target.value)  # obj.attr = v reads obj
        elif isinstance(target, ast.Subscript):
            self.visit(target.value)
            self.visit(target.slice)

    # statements
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self.bind_target(t)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.read(node.target.id)
        self.bind_target(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.annotation)  # evaluated at module level (no postponed annotations)
        if node.value is not None:
            self.bind_target(node.target)
        elif not isinstance(node.target, ast.Name):
            self.bind_target(node.target)  # ``obj.attr: T`` still evaluates ``obj``

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.bind(node.target.id)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.bind_target(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.bind_target(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.bind(node.name)
        for stmt in node.body:
            self.visit(stmt)
        if node.name:  # Python deletes the name at the end of the handler
            self.ops.append(("delete", node.name))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            name = alias.asname or alias.name.partition(".")[0]
            self.bind(name)
            self.ops.append(("import_name", name))
        self.ops.append(("import", ast.unparse(node)))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                raise AnalysisError(
                    f"'from {node.module} import *' hides which names the cell binds; "
                    "import the names you use explicitly (or pass --in/--out)"
                )
            name = alias.asname or alias.name
            self.bind(name)
            self.ops.append(("import_name", name))
        self.ops.append(("import", ast.unparse(node)))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.nested = True
        for d in node.decorator_list:
            self.visit(d)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        self.bind(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.nested = True
        for d in node.decorator_list:
            self.visit(d)
        for b in [*node.bases, *(k.value for k in node.keywords)]:
            self.visit(b)
        self.bind(node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.nested = True
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        self.nested = True
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        for sub in ast.walk(node):
            if isinstance(sub, ast.NamedExpr):  # binds in the enclosing scope
                self.bind(sub.target.id)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def visit_TypeAlias(self, node: ast.AST) -> None:  # Python 3.12+: a lazily evaluated scope
        self.nested = True
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            if isinstance(t, ast.Name):
                self.ops.append(("delete", t.id))
            else:
                self.visit(t)

    def visit_Global(self, node: ast.Global) -> None:
        return

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.bind(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.bind(node.rest)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.read(node.id)
        elif isinstance(node.ctx, ast.Store):
            self.bind(node.id)


_DISPATCH: dict[type, Callable[[_TopLevel, Any], None]] = {}
_COMPREHENSIONS = frozenset({"listcomp", "setcomp", "dictcomp", "genexpr"})


def _nested_globals(table: symtable.SymbolTable, eager: bool = True
                    ) -> tuple[set[str], set[str], set[str]]:
    """(global names read when the cell runs, global names read only later — inside functions,
    lambdas and classes —, global names assigned) inside nested scopes.

    A comprehension at top level runs with the cell, so what it reads is read *now*.
    """
    now: set[str] = set()
    later: set[str] = set()
    assigned: set[str] = set()
    for child in table.get_children():
        child_eager = eager and child.get_name() in _COMPREHENSIONS
        for sym in child.get_symbols():
            if sym.is_global() or (sym.is_referenced() and not sym.is_local() and not sym.is_free()
                                   and not sym.is_parameter()):
                if sym.is_referenced():
                    (now if child_eager else later).add(sym.get_name())
                if sym.is_declared_global() and sym.is_assigned():
                    assigned.add(sym.get_name())
        n, lt, a = _nested_globals(child, child_eager)
        now |= n
        later |= lt
        assigned |= a
    return now, later - now, assigned


# top-level statement (Stmt.memo) -> (its ops, has inner scopes): an edited cell re-walks only
# the statements that changed
_stmt_ops: dict[tuple[str, int, int], tuple[tuple[Op, ...], bool]] = {}


def analyze(source: str, stmts: Sequence[Stmt] | None = None) -> CellAnalysis:
    """Analyse a cell's (already IPython-transformed) source (``stmts``: its statements, if
    the caller has them already)."""
    try:
        stmts = stmts if stmts is not None else statements(source)
    except SyntaxError as e:
        raise AnalysisError(f"the cell has a syntax error on line {e.lineno}: {e.msg}") from e
    v = _State()
    inner_scopes = False
    for stmt in stmts:
        hit = _stmt_ops.get(stmt.memo)
        if hit is None:
            walker = _TopLevel()
            walker.visit(stmt.node)
            if len(_stmt_ops) > 8192:
                _stmt_ops.clear()
            hit = _stmt_ops[stmt.memo] = (tuple(walker.ops), walker.nested)
        v.apply(hit[0])
        inner_scopes = inner_scopes or hit[1]
    eager_refs: set[str] = set()
    nested_refs: set[str] = set()
    nested_assigned: set[str] = set()
    if inner_scopes:  # symtable parses the text again: only worth it when there are inner scopes
        try:
            table = symtable.symtable(source, "<cell>", "exec")
        except SyntaxError as e:
            raise AnalysisError(f"the cell has a syntax error on line {e.lineno}: {e.msg}") from e
        eager_refs, nested_refs, nested_assigned = _nested_globals(table)
    for name in sorted(nested_assigned):
        v.bind(name)
    reads = list(v.reads)
    for name in sorted(eager_refs):
        if name not in v.bound and name not in reads:
            reads.append(name)
    nested: list[str] = []
    for name in sorted(nested_refs):
        if name not in v.bound and name not in reads:
            reads.append(name)
            nested.append(name)
    reads = [r for r in reads if r not in _BUILTINS]
    deleted = set(v.deleted)
    outputs = tuple(
        b for b in v.bound
        if b not in deleted and b not in v.import_names and not b.startswith("_")
    )
    return CellAnalysis(
        binds=tuple(v.bound),
        outputs=outputs,
        reads=tuple(reads),
        imports=tuple(v.imports),
        deletes=tuple(v.deleted),
        nested_reads=tuple(n for n in nested if n not in _BUILTINS),
    )
