"""Which ``self.<name>`` a step of a Metaflow-style flow reads, seen in its source.

A step's cache key covers only the parameters it reads, and a foreach list travels with each
item only when a step inside the foreach reads the whole list; both need to know what a step
reads. Reads are followed through helper methods and properties of the flow class. A step that
uses ``self`` in a way that cannot be followed (``getattr(self, ...)``, passing ``self`` to a
function, ``eval``) counts as reading everything: the answer errs towards rerunning.
Pure ``ast``/``inspect``; must never import IPython.
"""

from __future__ import annotations

import ast
import inspect
import types
from collections.abc import Callable
from typing import Any

from .errors import GraphError
from .parameters import Parameter

_DYNAMIC_NAMES = frozenset({"eval", "exec", "vars", "locals", "globals", "super", "getattr",
                            "setattr", "delattr", "hasattr"})


def self_reads(fn: ast.FunctionDef) -> tuple[set[str], bool]:
    """``self.<name>`` reads of a method, and whether ``self`` escapes static view."""
    if not fn.args.args:
        return set(), True
    selfname = fn.args.args[0].arg
    parents: dict[int, ast.AST] = {}
    for node in ast.walk(fn):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    reads: set[str] = set()
    dynamic = False
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            if node.id == selfname:
                parent = parents.get(id(node))
                if isinstance(parent, ast.Attribute) and parent.value is node:
                    reads.add(parent.attr)
                else:
                    dynamic = True
            elif node.id in _DYNAMIC_NAMES:
                dynamic = True
    return reads, dynamic


class Reads:
    """``self`` reads of steps, followed through helper methods and properties of the class."""

    def __init__(self, cls: type, is_step: Callable[[Any], bool],
                 function_def: Callable[[Any, str], ast.FunctionDef],
                 reserved: frozenset[str]) -> None:
        self.cls = cls
        self.is_step = is_step
        self.function_def = function_def
        self.reserved = reserved
        self.memo: dict[str, tuple[frozenset[str], bool]] = {}

    def of(self, fn: ast.FunctionDef) -> tuple[frozenset[str], bool]:
        reads, dynamic = self_reads(fn)
        todo = list(reads)
        seen: set[str] = set()
        while todo:
            attr = todo.pop()
            if attr in seen or attr in self.reserved:
                continue
            seen.add(attr)
            more, dyn = self.helper(attr)
            dynamic = dynamic or dyn
            for m in more - reads:
                reads.add(m)
                todo.append(m)
        return frozenset(reads), dynamic

    def helper(self, attr: str) -> tuple[frozenset[str], bool]:
        if attr in self.memo:
            return self.memo[attr]
        self.memo[attr] = (frozenset(), False)  # recursion guard
        static = inspect.getattr_static(self.cls, attr, None)
        funcs: list[Callable[..., Any]] = []
        if isinstance(static, types.FunctionType) and not self.is_step(static):
            if getattr(static, "__module__", "") == "nbflow.flowspec":
                return self.memo[attr]
            funcs.append(static)
        elif isinstance(static, property):
            funcs += [f for f in (static.fget, static.fset, static.fdel) if f is not None]
        elif static is not None and hasattr(static, "__get__") and not isinstance(
            static, staticmethod | classmethod | Parameter | types.FunctionType
        ):
            self.memo[attr] = (frozenset(), True)  # an unknown descriptor may read anything
            return self.memo[attr]
        reads: set[str] = set()
        dynamic = False
        for f in funcs:
            try:
                fn = self.function_def(f, f"helper {attr}")
            except GraphError:
                dynamic = True
                continue
            r, d = self_reads(fn)
            reads |= r
            dynamic = dynamic or d
        self.memo[attr] = (frozenset(reads), dynamic)
        return self.memo[attr]


def join_names(fn: ast.FunctionDef) -> tuple[frozenset[str], bool]:
    """Artifact names a join may read from its inputs: every ``.name`` in its body and every
    literal in ``merge_artifacts(include=[...])``; a merge without a literal include reads all."""
    names: set[str] = set()
    merges_all = False
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "merge_artifacts":
            include = next((k.value for k in node.keywords if k.arg == "include"), None)
            if include is None and len(node.args) > 2:
                include = node.args[2]
            if isinstance(include, ast.List | ast.Tuple | ast.Set) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in include.elts
            ):
                names.update(str(e.value) for e in include.elts)  # type: ignore[attr-defined]
            else:
                merges_all = True
    return frozenset(names), merges_all
