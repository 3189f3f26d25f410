"""Source-text helpers of the notebook exporter (:mod:`nbflow.export`).

Pure functions over cell text and ``ast`` trees: IPython's cell transformation, finding the
statements IPython made of magics, indenting a cell into a function body without touching its
multi-line strings, comments and docstrings, import order, and the ``noqa`` marks that keep a
faithful copy of notebook code lint-clean. Nothing here knows about steps or flows.
Imports IPython lazily (only :func:`transform` needs it).
"""

from __future__ import annotations

import ast
import io
import json
import re
import sys
import tokenize
from collections.abc import Iterable

from .analysis import AnalysisError, analyze

#: names only an interactive session has
INTERACTIVE = re.compile(r"^(_|__|___|_\d+|_i|_ii|_iii|_i\d+|_oh|_ih|_dh|In|Out|get_ipython)$")
WIDGET_MODULES = ("ipywidgets",)


def transform(source: str) -> str:
    """IPython's ``transform_cell``: what the notebook analyses and keys a cell by."""
    from IPython.core.inputtransformer2 import TransformerManager

    return str(TransformerManager().transform_cell(source))


def magic_statements(tree: ast.AST) -> dict[int, tuple[str, str, str, str]]:
    """line -> (kind, magic name, argument, assignment target) for every ``get_ipython()`` call
    statement: kind is system, getoutput, line (a line magic) or cell."""
    found: dict[int, tuple[str, str, str, str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Expr | ast.Assign):
            continue
        call = node.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Call) and isinstance(call.func.value.func, ast.Name)
                and call.func.value.func.id == "get_ipython"):
            continue
        method = call.func.attr
        consts = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        target = ""
        if isinstance(node, ast.Assign):
            target = ", ".join(ast.unparse(t) for t in node.targets)
        if method in ("system", "getoutput"):
            found[node.lineno] = (method, "", consts[0] if consts else "", target)
        elif method == "run_line_magic":
            found[node.lineno] = ("line", consts[0] if consts else "", consts[1] if len(consts) > 1 else "", target)
        elif method == "run_cell_magic":
            found[node.lineno] = ("cell", consts[0] if consts else "", "", target)
        else:
            found[node.lineno] = ("line", method, "", target)
    return found


def shell_literal(cmd: str) -> str:
    """A Python literal for a ``!`` command; IPython expands ``{expr}`` and ``$name`` in it."""
    if "{" in cmd or re.search(r"(?<!\$)\$[A-Za-z_]", cmd):
        text = re.sub(r"(?<!\$)\$([A-Za-z_]\w*)", r"{\1}", cmd).replace("$$", "$")
        return "f" + json.dumps(text)
    return json.dumps(cmd)


def comment(line: str, raw: bool = False) -> str:
    if raw:
        return "# " + line if line.strip() else "#"
    return ("# " + line).rstrip() if line.strip() else "#"


def doc_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def indent_doc(doc: str) -> str:
    lines = doc_escape(doc).split("\n")
    if len(lines) == 1:
        return f'    """{lines[0]}"""'
    body = "\n".join(("    " + x).rstrip() for x in lines)
    return f'    """{body.lstrip()}\n    """'


def string_continuation_lines(text: str) -> set[int]:
    """1-based lines that continue a multi-line string: indenting them would change the string."""
    inside: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return inside


def indent_block(lines: list[str]) -> list[str]:
    """Indent a cell's lines into a function body, leaving multi-line strings' inner lines be."""
    lines = mark_useless(lines)
    keep = string_continuation_lines("\n".join(lines) + "\n")
    out = []
    for n, line in enumerate(lines, start=1):
        if n in keep:
            out.append(line)
        elif not line.strip():
            out.append("")
        else:
            out.append("    " + line)
    return out


#: bare expressions linters call useless (ruff/flake8-bugbear B018), and comparisons (B015)
USELESS = (ast.Name, ast.Attribute, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.UnaryOp, ast.BoolOp,
           ast.IfExp, ast.Lambda)


def _useless_code(node: ast.expr) -> str | None:
    if isinstance(node, ast.Compare):
        return "B015"
    if isinstance(node, USELESS):
        return "B018"
    if isinstance(node, ast.Constant) and not isinstance(node.value, str) and node.value is not Ellipsis:
        return "B018"
    return None


def mark_useless(lines: list[str]) -> list[str]:
    """A bare expression the notebook displayed (``df.shape``) does nothing in a script. It stays
    (it is part of the step's code, hence of its key); a ``noqa`` says it is deliberate."""
    text = "\n".join(lines)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return lines
    marks = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Expr):
            rule = _useless_code(n.value)
            if rule is not None:
                marks[n.lineno] = rule
    comments = line_comments(text)
    inside = string_continuation_lines(text + "\n")
    return [f"{line}  # noqa: {marks[i]}"
            if i in marks and i not in comments and i + 1 not in inside and i not in inside
            else line
            for i, line in enumerate(lines, start=1)]


def sorted_imports(statements: list[str]) -> list[str]:
    """The notebook's imports in isort's order: ``__future__``, standard library, the rest;
    ``import x`` before ``from x import y``, by module name. (Import order rarely matters; a
    linter's complaint about it always does to someone keeping the script.)"""
    groups: dict[int, list[tuple[int, str, str]]] = {}
    for stmt in statements:
        try:
            node = ast.parse(stmt).body[0]
        except (SyntaxError, IndexError):
            groups.setdefault(2, []).append((2, "", stmt))
            continue
        if isinstance(node, ast.ImportFrom):
            module, kind = ("." * node.level) + (node.module or ""), 1
        elif isinstance(node, ast.Import):
            module, kind = node.names[0].name, 0
        else:
            module, kind = "", 2
        top = module.lstrip(".").partition(".")[0]
        group = (0 if top == "__future__" else 1 if top in sys.stdlib_module_names
                 else 3 if module.startswith(".") else 2)
        groups.setdefault(group, []).append((kind, module.lower(), stmt))
    out: list[str] = []
    for g in sorted(groups):
        if out:
            out.append("")
        out.extend(stmt for _, _, stmt in sorted(groups[g]))
    return out


def defines(lines: list[str]) -> bool:
    return any(x.startswith(("def ", "class ", "async def ", "@")) for x in lines)


def wrap_comments(lines: list[str], width: int = 88) -> list[str]:
    """Wrap the exporter's own long ``# nbflow:`` comments (a user's lines are left alone)."""
    import textwrap

    out: list[str] = []
    for line in lines:
        stripped = line.lstrip()
        if len(line) <= width or not stripped.startswith("# nbflow:") or "\n" in line:
            out.append(line)
            continue
        indent = line[: len(line) - len(stripped)]
        wrapped = textwrap.wrap(stripped[2:], width=width - len(indent) - 2,
                                break_long_words=False, break_on_hyphens=False)
        out.extend(f"{indent}# {w}" if i == 0 else f"{indent}#   {w}" for i, w in enumerate(wrapped))
    return out


def lint_marks(text: str) -> str:
    """``noqa`` marks where a faithful copy of notebook code trips a linter for a good reason:
    an import only the notebook's interactive use needed (F401), a cell's temporary that is not
    one of the step's outputs (F841). Removing either would change what the code does or the
    step's key; the marks only tell linters it is deliberate."""
    import symtable

    try:
        tree = ast.parse(text)
        table = symtable.symtable(text, "<script>", "exec")
    except SyntaxError:
        return text
    used: set[str] = set()

    def refs(t: symtable.SymbolTable) -> None:
        for sym in t.get_symbols():
            if sym.is_referenced() and (t.get_type() == "module" or not sym.is_local()):
                used.add(sym.get_name())
        for child in t.get_children():
            refs(child)

    refs(table)
    used |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.isidentifier()}  # __all__ entries and the like
    marks: dict[int, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound = [a.asname or a.name.partition(".")[0] for a in node.names]
            if not any(b in used for b in bound):
                marks[node.lineno] = "F401"
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef):
            continue
        loaded = {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for sub in ast.walk(func):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store) and sub.id not in loaded \
                    and not sub.id.startswith("_"):
                marks.setdefault(sub.lineno, "F841")
            elif isinstance(sub, ast.ExceptHandler) and sub.name and sub.name not in loaded:
                marks.setdefault(sub.lineno, "F841")
    if not marks:
        return text
    comments = line_comments(text)
    lines = text.split("\n")
    strings = string_continuation_lines(text)
    for lineno, code in marks.items():
        line = lines[lineno - 1]
        if lineno in comments or lineno + 1 in strings or line.rstrip().endswith(("(", "[", "{", "\\", ",")):
            continue
        lines[lineno - 1] = f"{line}  # noqa: {code}"
    return "\n".join(lines)


def line_comments(source: str) -> dict[int, str]:
    """line -> trailing comment text (papermill puts a parameter's help there)."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def tuple_src(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "()"
    if len(names) == 1:
        return f"({json.dumps(names[0])},)"
    return "(" + ", ".join(json.dumps(n) for n in names) + ")"


def starts_with_string(source: str) -> bool:
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    return bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        and isinstance(body[0].value.value, str)


def uses_await(source: str) -> bool:
    """Top-level ``await``/``async for``/``async with`` (IPython runs them; a function cannot)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith):
            return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def simple_assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    """(name, value) of ``name = value`` / ``name: T = value``; (None, None) otherwise."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None, None


def binds(lines: list[str]) -> set[str]:
    """Names some code binds at top level (imports included)."""
    try:
        return set(analyze("\n".join(lines)).binds)
    except (AnalysisError, SyntaxError):
        return set()


def interactive_reads(source: str, binds: Iterable[str]) -> list[str]:
    """Names only an interactive session has (``_``, ``Out``, ``In``...) that code reads."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    bound = set(binds)
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                   and isinstance(n.ctx, ast.Load) and INTERACTIVE.match(n.id) and n.id not in bound})


def top_level_reads(tree: ast.Module) -> set[str]:
    """Names read when the code runs (not inside function or class bodies, which run later)."""
    found: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend([*node.decorator_list, *node.args.defaults,
                          *(d for d in node.args.kw_defaults if d is not None)])
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return found


def helper_globals(source: str) -> dict[str, list[str]]:
    """For each top-level function, the global names it reads (via symtable)."""
    import symtable

    try:
        table = symtable.symtable(source, "<cell>", "exec")
    except SyntaxError:
        return {}
    out: dict[str, list[str]] = {}

    def collect(t: symtable.SymbolTable, acc: set[str]) -> None:
        for sym in t.get_symbols():
            if sym.is_referenced() and sym.is_global():
                acc.add(sym.get_name())
        for child in t.get_children():
            collect(child, acc)

    for child in table.get_children():
        if child.get_type() == "function":
            acc: set[str] = set()
            collect(child, acc)
            out[child.get_name()] = sorted(acc)
    return out


def uses_widgets(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in WIDGET_MODULES for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in WIDGET_MODULES:
            return True
    return False


def is_nbflow_attr(func: ast.expr, attr: str, imported: set[str]) -> bool:
    if isinstance(func, ast.Attribute) and func.attr == attr and isinstance(func.value, ast.Name) \
            and func.value.id == "nbflow":
        return True
    return isinstance(func, ast.Name) and func.id == attr and attr in imported


def nbflow_step_decorator(node: ast.FunctionDef | ast.AsyncFunctionDef, imported: set[str]) -> bool:
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if is_nbflow_attr(target, "step", imported):
            return True
    return False


def is_nbflow_only_import(node: ast.Import | ast.ImportFrom) -> bool:
    """``import nbflow`` (the script imports it itself) and ``from nbflow import step, param``
    (the script uses ``flow.step``/``flow.param`` instead)."""
    if isinstance(node, ast.Import):
        return all(a.name == "nbflow" and a.asname is None for a in node.names)
    return node.module == "nbflow" and all(a.name in ("step", "param") for a in node.names)


