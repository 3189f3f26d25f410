"""Notebook -> Metaflow FlowSpec: ``nbflow export analysis.ipynb --to metaflow -o f.py``.

The notebook is read exactly as for a flow script (:mod:`nbflow.export`: steps, parameters,
imports, helper code, what cannot be exported); only the writing differs. Metaflow's graph is
structured (every split is joined, a join cannot split again), while a notebook's steps form any
DAG, so the steps are laid out in *levels* (a step's level is one more than its deepest input's):

* a level of one step is a linear step; a level of several independent steps is a static
  branch (``self.next(self.a, self.b)``) joined by ``merge_artifacts`` — each branch sets only its
  own outputs, and what came before is identical in all branches, so nothing is ambiguous;
* a foreach step (``--foreach ITEMS`` / ``foreach=``) becomes ``self.next(self.s,
  foreach="ITEMS")``, runs once per item on ``self.input``, and a join collects each output
  into a list, as nbflow does;
* a join that would have to split again gets a small pass-through step (Metaflow's rule).

Inputs are read from artifacts (``df = self.df``), outputs are stored as artifacts
(``self.clean_df = clean_df``), parameters become ``Parameter`` attributes. Metaflow keeps its own
artifacts: the notebook's nbflow cache is not used by the Metaflow flow.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import export_text as xt
from .errors import NbflowError
from .export import ExportError, ExportIssue, _Exporter, _FunctionStep, _Param, _Step

#: attributes a FlowSpec has (or Metaflow reserves) that an artifact or parameter cannot take
RESERVED = frozenset({
    "cmd", "foreach_stack", "index", "input", "merge_artifacts", "next", "script_name", "name",
    "start", "end", "params", "with", "tag", "namespace", "obj", "tags", "decospecs",
    "run_id_file", "max_num_splits", "max_workers", "max_log_size", "user_namespace", "run_id",
    "task_id", "runner_attribute_file",
})
#: names the generated module imports for itself
IMPORTED = frozenset({"FlowSpec", "JSONType", "Parameter", "step"})


@dataclass
class _Node:
    """One notebook step as a Metaflow step."""

    name: str
    method: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    foreach: str | None
    lines: list[str]  # the method body before ``self.next`` (unindented)
    doc: str | None
    notes: list[str]
    cell: int
    parents: set[str] = field(default_factory=set)
    level: int = 0


@dataclass
class _Segment:
    kind: str  # "linear" | "split" | "foreach"
    nodes: list[_Node]


def class_name(stem: str) -> str:
    """``sales_analysis`` -> ``SalesAnalysisFlow`` (Metaflow names the flow after its class)."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", stem) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Notebook"
    if name[0].isdigit():
        name = "N" + name
    return name if name.endswith("Flow") else name + "Flow"


class _MetaflowWriter:
    """Turns what :class:`nbflow.export._Exporter` read into a FlowSpec module."""

    def __init__(self, ex: _Exporter, stem: str) -> None:
        self.ex = ex
        self.stem = stem
        self.cls = class_name(stem)
        self.issues: list[ExportIssue] = []
        self.helpers: list[str] = []  # module-level defs of function steps
        self.nodes: list[_Node] = []
        self.used: set[str] = set()

    def error(self, cell: int, message: str) -> None:
        self.issues.append(ExportIssue(cell, "error", message))

    # -- reading ----------------------------------------------------------------------------------
    def build(self) -> None:
        produced = {o: s.name for s in self.ex.steps for o in s.outputs}
        params = set(self.ex.params)
        top = self.ex.top_level_names()
        for name in sorted((top | set(self.ex.params) | set(produced)) & IMPORTED):
            self.error(1, f"the notebook binds '{name}', which the Metaflow flow imports from "
                       "metaflow; rename it")
        for name in sorted((set(produced) | params) & RESERVED):
            cell = next((s.cell for s in self.ex.steps if name in s.outputs), 1)
            what = "parameter" if name in params else "output"
            self.error(cell, f"the {what} '{name}' is a name Metaflow reserves on a flow; rename it")
        self.used = {*RESERVED, *produced, *params, *top, self.cls}
        for s in self.ex.steps:
            node = self.cell_node(s) if isinstance(s, _Step) else self.function_node(s)
            if node is None:
                continue
            node.parents = {produced[i] for i in node.inputs if i in produced and produced[i] != s.name}
            self.nodes.append(node)
        by_name = {n.name: n for n in self.nodes}
        for n in self.nodes:  # notebook order is a topological order
            n.level = 1 + max((by_name[p].level for p in n.parents if p in by_name), default=-1)

    def method_name(self, name: str) -> str:
        method = name
        while method in self.used:
            method += "_step"
        self.used.add(method)
        return method

    def cell_node(self, s: _Step) -> _Node:
        binds = [f"{i} = self.input" if i == s.foreach else f"{i} = self.{i}" for i in s.inputs]
        stores = [f"self.{o} = {o}" for o in s.outputs]
        notes = [n for n in s.notes if "--remote" not in n]
        return _Node(s.name, self.method_name(s.name), s.inputs, s.outputs, s.foreach,
                     [*binds, *s.body, *stores], s.doc, notes, s.cell)

    def function_node(self, s: _FunctionStep) -> _Node | None:
        try:
            tree = ast.parse(s.source)
        except SyntaxError as e:
            self.error(s.cell, f"step '{s.name}' does not parse: {e.msg}")
            return None
        func = tree.body[0]
        assert isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        foreach: str | None = None
        for d in func.decorator_list:
            for kw in getattr(d, "keywords", []):
                if kw.arg == "foreach" and isinstance(kw.value, ast.Constant):
                    foreach = str(kw.value.value)
        lines = s.source.split("\n")
        start = func.decorator_list[0].lineno - 1 if func.decorator_list else func.lineno - 1
        undecorated = lines[:start] + lines[func.lineno - 1:]
        self.helpers.append("\n".join([*s.comments, *undecorated]))
        produced = {o for t in self.ex.steps for o in t.outputs if t.name != s.name}
        args = [a.arg for a in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]]
        bound = [a for a in args if a in produced or a in self.ex.params or a == foreach]
        call = ", ".join(f"{a}=self.input" if a == foreach else f"{a}=self.{a}" for a in bound)
        targets = ", ".join(f"self.{o}" for o in s.outputs)
        doc = ast.get_docstring(func)
        return _Node(s.name, self.method_name(s.name), tuple(bound), s.outputs, foreach,
                     [f"{targets} = {s.func_name}({call})"], doc, [], s.cell)

    # -- the graph --------------------------------------------------------------------------------
    def segments(self) -> list[_Segment]:
        out: list[_Segment] = []
        levels = sorted({n.level for n in self.nodes})
        for level in levels:
            here = [n for n in self.nodes if n.level == level]
            plain = [n for n in here if n.foreach is None]
            if len(plain) == 1:
                out.append(_Segment("linear", plain))
            elif plain:
                out.append(_Segment("split", plain))
            out.extend(_Segment("foreach", [n]) for n in here if n.foreach is not None)
        return out

    # -- writing ----------------------------------------------------------------------------------
    def write(self, script_name: str) -> str:
        segments = self.segments()
        methods: list[tuple[str, str, list[str], str, bool]] = []  # name, doc, body, next, join

        def add(name: str, doc: str, body: list[str], nxt: str = "", join: bool = False) -> None:
            methods.append((name, doc, body, nxt, join))

        starts: dict[str, str] = {}  # method -> its self.next(...) call
        exit_method, exit_is_join = "start", False
        add("start", "Start the flow (parameters are set here).", [])
        joins = 0
        for seg in segments:
            if seg.kind != "linear" and exit_is_join:
                glue = self.method_name(f"before_{seg.nodes[0].name}")
                starts[exit_method] = f"self.next(self.{glue})"
                add(glue, "Metaflow does not let a join split again: this step only passes on.", [])
                exit_method, exit_is_join = glue, False
            if seg.kind == "linear":
                node = seg.nodes[0]
                starts[exit_method] = f"self.next(self.{node.method})"
                add(node.method, node.doc or "", [*node.notes, *node.lines])
                exit_method, exit_is_join = node.method, False
            elif seg.kind == "split":
                joins += 1
                join = self.method_name(f"join_{joins}")
                starts[exit_method] = "self.next(" + ", ".join(f"self.{n.method}" for n in seg.nodes) + ")"
                for node in seg.nodes:
                    add(node.method, node.doc or "", [*node.notes, *node.lines])
                    starts[node.method] = f"self.next(self.{join})"
                names = ", ".join(n.name for n in seg.nodes)
                add(join, f"Join the independent steps {names}.", ["self.merge_artifacts(inputs)"],
                    join=True)
                exit_method, exit_is_join = join, True
            else:
                node = seg.nodes[0]
                join = self.method_name(f"join_{node.name}")
                starts[exit_method] = f"self.next(self.{node.method}, foreach={json.dumps(node.foreach)})"
                add(node.method, node.doc or "", [*node.notes, *node.lines])
                starts[node.method] = f"self.next(self.{join})"
                collect = [f"self.{o} = [i.{o} for i in inputs]" for o in node.outputs]
                excluded = xt.tuple_src(node.outputs).strip("()").rstrip(",")
                collect.append(f"self.merge_artifacts(inputs, exclude=[{excluded}])")
                add(join, f"Collect the items of {node.name} into lists, in order.", collect,
                    join=True)
                exit_method, exit_is_join = join, True
        starts[exit_method] = "self.next(self.end)"
        add("end", "End of the flow.", [])
        return self.module(script_name, [(n, d, b, starts.get(n, ""), j) for n, d, b, _, j in methods])

    def module(self, script_name: str, methods: list[tuple[str, str, list[str], str, bool]]) -> str:
        ex = self.ex
        out: list[str] = []
        title = ex.doc_lines or [f"The flow of the notebook {self.stem}.ipynb."]
        doc = [*title, "",
               f"Exported from {self.stem}.ipynb by `nbflow export --to metaflow`: a Metaflow",
               "FlowSpec with one step per notebook step. Independent steps run as parallel",
               "branches, foreach steps as foreach/join. Metaflow keeps its own artifacts (the",
               "notebook's nbflow cache is not used). Run it from the notebook's folder, so that",
               "relative paths resolve as in the notebook:",
               "",
               f"    python {script_name} run [--PARAM VALUE ...]",
               f"    python {script_name} show",
               f"    python {script_name} resume"]
        out.append('"""' + xt.doc_escape("\n".join(doc).strip()) + '\n"""')
        out.append("")
        user = [*(["import subprocess"] if ex.needs_subprocess else []), *ex.imports]
        declared = {p.name: self.parameter(p) for p in ex.params.values()}
        json_params = [p for p in ex.params.values() if _is_json(p)]
        needs_json = any("json.dumps(" in d for d in declared.values())
        mf = ["FlowSpec", *(["JSONType"] if json_params else []),
              *(["Parameter"] if ex.params else []), "step"]
        out.extend(xt.sorted_imports(list(dict.fromkeys(
            [*user, *(["import json"] if needs_json else []),
             f"from metaflow import {', '.join(mf)}"]))))
        previous_def = False
        for b in ex.blocks:
            has_def = xt.defines(b.lines)
            out.extend(["", ""] if has_def or previous_def else [""])
            out.extend(b.lines)
            previous_def = has_def
        for h in self.helpers:
            out.extend(["", ""])
            out.append(h)
            previous_def = True
        out.extend(["", ""])
        out.append(f"class {self.cls}(FlowSpec):")
        summary = title[0].lstrip("# ").strip() or f"The flow of {self.stem}.ipynb."
        out.append(f'    """{xt.doc_escape(summary)}"""')
        if ex.params or ex.param_notes:
            out.append("")
            out.extend("    " + n for n in ex.param_notes)
            for pname, declaration in declared.items():
                out.append(f"    {pname} = {declaration}")
        for name, docstring, body, nxt, join in methods:
            out.append("")
            out.append("    @step")
            out.append(f"    def {name}(self{', inputs' if join else ''}):")
            if docstring:
                out.extend(_indent(line) for line in xt.indent_doc(docstring).split("\n"))
            out.extend(_indent_body(body))
            if nxt:
                out.append(f"        {nxt}")
            elif not body and not docstring:
                out.append("        pass")
        if ex.trailing:
            out.extend(["", "", *ex.trailing])
        out.extend(["", "", 'if __name__ == "__main__":', f"    {self.cls}()"])
        return _mark_unused_locals(xt.lint_marks("\n".join(xt.wrap_comments(out)) + "\n"))

    def parameter(self, p: _Param) -> str:
        args = [json.dumps(p.name)]
        extra = list(p.extra)
        if _is_json(p):
            extra = [e for e in extra if not e.startswith("type=")]
            try:
                value = ast.literal_eval(p.default)
                default = p.default if isinstance(value, str) else _quote(json.dumps(value))
            except (ValueError, SyntaxError):
                default = f"json.dumps({p.default})"
            args += ["type=JSONType", f"default={default}"]
        elif p.default != "None" or not any(e.startswith("required=") for e in extra):
            args.append(f"default={p.default}")
        args += extra
        if p.comment and not any(e.startswith("help=") for e in extra):
            args.append(f"help={json.dumps(p.comment)}")
        return f"Parameter({', '.join(args)})"


def _quote(text: str) -> str:
    """A string literal for ``text``, in single quotes when that needs no escapes (JSON)."""
    return f"'{text}'" if "'" not in text and "\\" not in text else json.dumps(text)


def _is_json(p: _Param) -> bool:
    for e in p.extra:
        if e.startswith("type="):
            t = e[len("type="):].strip()
            return t in ("JSONType", "nbflow.JSONType", "dict", "list", "'json'", '"json"')
    return p.default.lstrip().startswith(("{", "["))


def _indent(line: str) -> str:
    return "    " + line if line.strip() else ""


def _indent_body(lines: list[str]) -> list[str]:
    """A step's lines as a method body (8 spaces), leaving multi-line strings' inner lines be."""
    lines = xt.mark_useless(lines)
    keep = xt.string_continuation_lines("\n".join(lines) + "\n")
    return [line if n in keep else ("" if not line.strip() else "        " + line)
            for n, line in enumerate(lines, start=1)]


def _mark_unused_locals(text: str) -> str:
    """``noqa: F841`` on a step's temporaries that are not outputs (as the flow-script export
    marks them in functions): the notebook's code is copied faithfully, not tidied."""
    tree = ast.parse(text)
    marks: dict[int, str] = {}
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for func in cls.body:
            if not isinstance(func, ast.FunctionDef):
                continue
            loaded = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)
                      and isinstance(n.ctx, ast.Load)}
            for sub in ast.walk(func):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store) \
                        and sub.id not in loaded and not sub.id.startswith("_"):
                    marks.setdefault(sub.lineno, "F841")
    if not marks:
        return text
    lines = text.split("\n")
    comments = xt.line_comments(text)
    strings = xt.string_continuation_lines(text)
    for lineno, code in marks.items():
        line = lines[lineno - 1]
        if lineno in comments or lineno + 1 in strings or line.rstrip().endswith(("(", "[", "{", "\\", ",")):
            continue
        lines[lineno - 1] = f"{line}  # noqa: {code}"
    return "\n".join(lines)


def notebook_to_metaflow(nb: Any, name: str, *, script_name: str | None = None
                         ) -> tuple[str, list[ExportIssue]]:
    """The Metaflow module for notebook node ``nb`` (file stem ``name``) and the issues found.

    Raises :class:`~nbflow.export.ExportError` listing every error (those of the notebook, as
    for ``--to nbflow``, and Metaflow's own naming rules).
    """
    ex = _Exporter(nb, name, ".nbflow", ".")
    ex.read()
    ex.finish()
    errors = [i for i in ex.issues if i.level == "error"]
    if errors:
        raise ExportError(f"{name}.ipynb", errors)
    writer = _MetaflowWriter(ex, name)
    writer.build()
    if writer.issues:
        raise ExportError(f"{name}.ipynb", writer.issues)
    text = writer.write(script_name or f"{name}_metaflow.py")
    try:
        ast.parse(text)
    except SyntaxError as e:  # a bug here, never the user's
        raise NbflowError(f"nbflow export --to metaflow produced invalid Python (line {e.lineno}: "
                          f"{e.msg}); please report this with the notebook") from e
    return text, [i for i in ex.issues if i.level != "error"]


def export_notebook(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    report: TextIO | None = None,
) -> str:
    """Export the notebook at ``path`` to a Metaflow FlowSpec; write it to ``out`` if given.

    Returns the module's text; warnings go to ``report`` (default stderr)."""
    from .export import read_notebook, write_export

    nb_path = Path(path)
    nb = read_notebook(nb_path)
    out_path = Path(out) if out is not None else None
    text, issues = notebook_to_metaflow(
        nb, nb_path.stem,
        script_name=out_path.name if out_path is not None else f"{nb_path.stem}_metaflow.py")
    return write_export(nb_path, text, issues, out_path, report)


__all__ = ["class_name", "export_notebook", "notebook_to_metaflow"]
