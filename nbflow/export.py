"""Notebook -> flow script: one function per step, run by the same engine, sharing the cache.

``export_notebook("analysis.ipynb", "analysis_flow.py")`` writes a script a person would keep:

* imports and helper code from plain cells at the top; markdown cells as comments, or as the
  docstring of the step that follows them;
* the parameters (a cell tagged ``parameters``, papermill's convention, or ``nbflow.param(...)``
  calls) as ``flow.param(...)`` declarations, which become typed command-line options;
* one ``@flow.step`` function per ``%%step`` cell: its parameters are the cell's inputs, its body
  is the cell's code, its ``return`` the cell's outputs; ``@nbflow.step`` functions as they are;
* ``if __name__ == "__main__": flow.main()`` (see :mod:`nbflow.script`).

**Why the script shares the notebook's cache.** A step's key covers its name, its code normalized
through ``ast`` (comments, formatting, a docstring and a final ``return <outputs>`` do not count,
see :func:`nbflow.keys.normalize_body`), its outputs, and one name -> digest map of what it reads
(inputs, parameters and external values alike). The exporter copies a cell's code unchanged
(only re-indented) and checks, step by step, that the function normalizes to exactly what the
cell normalizes to; steps whose code had to change (a translated ``!shell`` line) are reported.

What cannot be exported is reported, never dropped silently: IPython magics in steps (an error,
or an explicit translation with a ``# nbflow:`` comment), plain cells that read step outputs or
interactive state (commented out, with a warning in the script and on stderr).

IPython (for ``transform_cell``, the same transformation the notebook applies before analysing a
cell) and nbformat are imported lazily.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import export_text as xt
from . import keys
from .analysis import AnalysisError, analyze
from .errors import NbflowError
from .statements import first_line

#: line magics that only configure the interactive session: dropped from steps with a comment
_SESSION_MAGICS = frozenset({"matplotlib", "config", "load_ext", "reload_ext", "autoreload",
                             "aimport", "precision", "pylab"})
#: cell magics whose body is ordinary Python that runs the same without them
_TRANSPARENT_CELL_MAGICS = frozenset({"time", "timeit", "capture"})


class ExportError(NbflowError):
    """The notebook cannot be exported; ``issues`` lists every problem with its cell."""

    def __init__(self, path: str, issues: list[ExportIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"cannot export {path}:\n{lines}")


@dataclass(frozen=True)
class ExportIssue:
    """One problem found while exporting; ``cell`` is the 1-based cell number in the notebook."""

    cell: int
    level: str  # "error" or "warning"
    message: str

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.message}"


@dataclass
class _Param:
    name: str
    default: str  # source text of the default value
    extra: list[str] = field(default_factory=list)  # keyword arguments, as source text
    comment: str = ""  # a papermill-style trailing comment: becomes help=


@dataclass
class _Step:
    cell: int
    name: str
    func_name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    body: list[str]  # the cell's lines (magics translated), not yet indented
    doc: str | None
    options: dict[str, str]  # keyword arguments of @flow.step, as source text
    notes: list[str]  # comments above the function
    original: str  # the transformed cell body the notebook keys on
    translated: bool
    reads: tuple[str, ...]  # analysis reads + --in + --foreach, in first-use order
    declared: tuple[str, ...]  # --in and --foreach: inputs whoever binds them
    binds: tuple[str, ...]
    ignore: tuple[str, ...]
    cache: bool
    foreach: str | None
    defaults: set[str] = field(default_factory=set)  # inputs given as `name=name` (a global)


@dataclass
class _FunctionStep:
    cell: int
    name: str
    source: str  # the def with its decorators, @nbflow.step rewritten to @flow.step
    comments: list[str]  # markdown and comments that preceded it
    func_name: str
    outputs: tuple[str, ...]


@dataclass
class _Block:
    """Top-level plain code of one cell (or a comment), in notebook order."""

    cell: int
    lines: list[str]


class _Exporter:
    """Reads the cells once (in notebook order), then resolves names and writes the script.

    Markdown attaches to the code item that follows it: the docstring of a step it directly
    precedes, comments above anything else.
    """

    def __init__(self, nb: Any, name: str, store: str, workdir: str = ".") -> None:
        self.nb = nb
        self.name = name
        self.store = store
        self.workdir = workdir
        self.issues: list[ExportIssue] = []
        self.imports: list[str] = []
        self.blocks: list[_Block] = []  # plain code: runs at import, before any step
        self.params: dict[str, _Param] = {}
        self.param_notes: list[str] = []
        self.steps: list[_Step | _FunctionStep] = []
        self.items: list[_Step | _FunctionStep | _Block] = []  # steps and comments, in order
        self.trailing: list[str] = []
        self.doc_lines: list[str] = []
        self.needs_subprocess = False
        self.nbflow_names: set[str] = set()  # step/param imported from nbflow
        self._markdown: list[str] = []
        self._markdown_cell = 0
        self._source = ""  # the text get_source_segment reads (the cell being read)

    # -- reporting --------------------------------------------------------------------------------
    def error(self, cell: int, message: str) -> None:
        self.issues.append(ExportIssue(cell, "error", message))

    def warn(self, cell: int, message: str) -> None:
        self.issues.append(ExportIssue(cell, "warning", message))

    # -- reading ----------------------------------------------------------------------------------
    def read(self) -> None:
        for i, cell in enumerate(self.nb.cells, start=1):
            source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            if cell.cell_type == "markdown":
                if i == 1:
                    self.doc_lines = source.strip().splitlines()
                else:
                    self._markdown.extend([*([""] if self._markdown else []), *source.strip().splitlines()])
                    self._markdown_cell = self._markdown_cell or i
                continue
            if cell.cell_type != "code" or not source.strip():
                continue
            tags = set(cell.get("metadata", {}).get("tags", []) or [])
            if re.match(r"%%step(\s|$)", source.lstrip()):
                self.read_step(i, source.lstrip())
            elif "parameters" in tags or "injected-parameters" in tags:
                self.read_parameters(i, source, injected="injected-parameters" in tags)
            else:
                self.read_plain(i, source)
        self.trailing = self.take_markdown_comments()

    def take_markdown_comments(self) -> list[str]:
        lines = [xt.comment(x) for x in self._markdown]
        self._markdown = []
        self._markdown_cell = 0
        return lines

    def take_markdown_doc(self) -> str | None:
        doc = "\n".join(self._markdown).strip() or None
        self._markdown = []
        self._markdown_cell = 0
        return doc

    # steps ---------------------------------------------------------------------------------------
    def add_step(self, step: _Step | _FunctionStep) -> None:
        self.steps.append(step)
        self.items.append(step)

    def read_step(self, cell: int, source: str) -> None:
        """A ``%%step`` cell, read the way :mod:`nbflow.notebook.cellstep` reads it."""
        from .notebook.args import parse_step_line

        header, _, body = source.partition("\n")
        doc = self.take_markdown_doc()
        try:
            args = parse_step_line(header[len("%%step"):])
        except Exception as e:  # UsageError: its message names the fix
            self.error(cell, str(e))
            return
        if args.help:
            return
        if not body.strip():
            self.error(cell, f"step '{args.name}' is empty; write the step's code below the %%step line")
            return
        transformed = xt.transform(body)
        try:
            info = analyze(transformed)
        except AnalysisError as e:
            self.error(cell, f"step '{args.name}': {e}")
            return
        outputs = tuple(args.outputs) if args.outputs is not None else info.outputs
        if args.foreach is not None and args.foreach in outputs and args.outputs is None:
            outputs = tuple(o for o in outputs if o != args.foreach)
        if not ast.parse(transformed).body:
            self.error(cell, f"step '{args.name}' is empty (only comments); write the step's code "
                       "below the %%step line")
            return
        unknown_ignore = [n for n in args.ignore if n not in info.reads and n not in args.inputs]
        if unknown_ignore:
            self.error(cell, f"step '{args.name}': --ignore names "
                       f"{', '.join(repr(n) for n in unknown_ignore)}, which the cell does not read")
            return
        if xt.uses_await(transformed):
            self.error(cell, f"step '{args.name}' uses top-level await, which a function cannot; "
                       "wrap the awaited code in asyncio.run(...) in the cell")
            return
        lines, translated = self.translate_lines(cell, body, transformed, step=args.name)
        if lines is None:
            return
        notes: list[str] = []
        if doc is not None and xt.starts_with_string(transformed):
            notes.extend(xt.comment(x) for x in doc.splitlines())
            doc = None
        if args.remote:
            notes.append("# nbflow: --remote in the notebook; this script runs the step here")
        reads = tuple(dict.fromkeys([*info.reads, *args.inputs, *([args.foreach] if args.foreach else [])]))
        self.add_step(_Step(
            cell=cell, name=args.name, func_name=args.name, inputs=(), outputs=outputs,
            body=lines, doc=doc, options={}, notes=notes, original=transformed,
            translated=translated, reads=reads, declared=(*args.inputs, *([args.foreach] if args.foreach else [])),
            binds=info.binds, ignore=args.ignore, cache=args.cache, foreach=args.foreach,
        ))

    def translate_lines(self, cell: int, body: str, transformed: str, *, step: str | None
                        ) -> tuple[list[str] | None, bool]:
        """The cell's own lines, with ``!shell`` lines translated and magics reported.

        ``transform_cell`` keeps one line per line, so the statement it made of a magic sits on
        the magic's line. Returns (None, _) when a step holds a magic nobody can translate.
        """
        raw = body.split("\n")
        while raw and not raw[-1].strip():
            raw.pop()
        try:
            tree = ast.parse(transformed)
        except SyntaxError as e:
            what = f"step '{step}'" if step else "the cell"
            self.error(cell, f"{what} has a syntax error on line {e.lineno}: {e.msg}")
            return None, False
        magics = xt.magic_statements(tree)
        if not magics:
            return raw, False
        out = list(raw)
        ok = True
        for lineno, (kind, name, arg, target) in sorted(magics.items()):
            if lineno - 1 >= len(raw):
                continue
            original = raw[lineno - 1]
            indent = original[: len(original) - len(original.lstrip())]
            shown = original.strip()

            def replace(comment: str, code: str = "pass") -> None:
                # a comment alone where a statement was would leave an empty block
                out[lineno - 1] = f"{indent}{code}  # {comment}" if indent else f"# {comment}"  # noqa: B023

            if kind in ("system", "getoutput"):
                self.needs_subprocess = True
                cmd = xt.shell_literal(arg)
                if kind == "system":
                    new = f"subprocess.run({cmd}, shell=True, check=True)"
                else:
                    new = (f"{target} = subprocess.run({cmd}, shell=True, check=True, "
                           "capture_output=True, text=True).stdout.splitlines()")
                out[lineno - 1] = f"{indent}{new}  # nbflow: translated from {shown}"
                if step is not None:
                    self.warn(cell, f"step '{step}': {shown!r} is translated to subprocess.run; the "
                              "step's code differs from the cell's, so the script runs it once more")
            elif kind == "line" and name in ("load_ext", "reload_ext") and arg.strip() == "nbflow":
                out[lineno - 1] = f"{indent}pass" if indent else ""  # the script is the flow
            elif kind == "line" and name == "flow":
                replace(f"nbflow: notebook command {shown} (the script has run, show and resume)")
            elif step is None:
                replace(f"nbflow: not exported (IPython magic): {shown}")
                self.warn(cell, f"IPython magic {shown!r} is not exported (commented out in the script)")
            elif kind == "line" and name in _SESSION_MAGICS:
                out[lineno - 1] = f"{indent}pass  # nbflow: dropped {shown} (no effect in a script)"
                self.warn(cell, f"step '{step}': dropped {shown!r} (no effect in a script); the "
                          "step's code differs from the cell's, so the script runs it once more")
            else:
                ok = False
                self.error(cell, f"step '{step}', line {lineno}: the IPython magic {shown!r} cannot "
                           "run in a script; remove it from the step or move it to a plain cell")
        return (out if ok else None), True

    # parameters ----------------------------------------------------------------------------------
    def read_parameters(self, cell: int, source: str, injected: bool = False) -> None:
        """A cell tagged ``parameters``: each ``name = value`` is a parameter (papermill's
        convention; a trailing comment becomes its help). Other statements are plain code.
        Papermill's ``injected-parameters`` cell overrides defaults: the notebook ran with those
        values, so the script's defaults are what its cache holds."""
        transformed = xt.transform(source)
        try:
            tree = ast.parse(transformed)
        except SyntaxError as e:
            self.error(cell, f"the parameters cell has a syntax error on line {e.lineno}: {e.msg}")
            return
        self._source = transformed
        self.param_notes.extend(self.take_markdown_comments())
        comments = xt.line_comments(transformed)
        lines = transformed.split("\n")
        if not injected:
            self.param_notes.extend(x.strip() for x in lines if x.strip().startswith("#"))
        rest: list[str] = []
        for node in tree.body:
            target, value = xt.simple_assignment(node)
            if self.param_call(cell, node):
                continue
            if target is None or value is None:
                rest.extend(lines[first_line(node) - 1: node.end_lineno or node.lineno])
                continue
            reads = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)} & set(self.params)
            if reads:
                self.error(cell, f"parameter '{target}' is computed from the parameter "
                           f"'{sorted(reads)[0]}'; give it a value of its own and compute the "
                           "derived value in a step")
                continue
            text = ast.get_source_segment(transformed, value) or ast.unparse(value)
            declared = self.params.get(target)
            if injected and declared is not None:
                declared.default = text  # papermill's value for this run of the notebook
            else:
                self.add_param(cell, _Param(target, text, comment=comments.get(node.lineno, "")))
        if rest:
            self.read_plain(cell, "\n".join(rest))

    def add_param(self, cell: int, param: _Param) -> None:
        if param.name in self.params:
            self.warn(cell, f"parameter '{param.name}' is declared twice; the later value is used")
        self.params[param.name] = param

    def param_call(self, cell: int, node: ast.stmt) -> bool:
        """``alpha = nbflow.param("alpha", 0.01, ...)`` or a bare ``nbflow.param(...)``."""
        call = getattr(node, "value", None)
        if not (isinstance(call, ast.Call) and xt.is_nbflow_attr(call.func, "param", self.nbflow_names)):
            return False
        first = call.args[0] if call.args else None
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            self.error(cell, "nbflow.param needs the parameter's name as a string first, "
                       "e.g. alpha = nbflow.param('alpha', 0.01)")
            return True
        pname = first.value
        target, _ = xt.simple_assignment(node)
        if target is not None and target != pname:
            self.error(cell, f"nbflow.param('{pname}', ...) is assigned to '{target}'; use the "
                       f"same name ({pname} = nbflow.param('{pname}', ...)) so steps read it by name")
            return True

        def src(e: ast.expr) -> str:
            return ast.get_source_segment(self._source, e) or ast.unparse(e)

        default = src(call.args[1]) if len(call.args) > 1 else "None"
        extra: list[str] = []
        for kw in call.keywords:
            if kw.arg == "default":
                default = src(kw.value)
            elif kw.arg is not None:
                extra.append(f"{kw.arg}={src(kw.value)}")
        self.add_param(cell, _Param(pname, default, extra))
        return True

    # plain cells ---------------------------------------------------------------------------------
    def read_plain(self, cell: int, source: str) -> None:
        """Imports go to the top; ``@nbflow.step`` functions join the steps; parameters join the
        parameters; the rest stays plain code, in notebook order."""
        markdown = self.take_markdown_comments()
        stripped = source.lstrip()
        if stripped.startswith("%%"):
            magic, _, body = stripped.partition("\n")
            words = magic[2:].split()
            if words and words[0] in _TRANSPARENT_CELL_MAGICS:
                markdown.append(f"# nbflow: dropped {magic.strip()} (the code runs the same without it)")
                source = body
            else:
                self.warn(cell, f"cell magic {magic.strip()!r} is not exported (commented out in the script)")
                self.blocks.append(_Block(cell, [
                    *markdown, f"# nbflow: not exported (IPython cell magic): {magic.strip()}",
                    *(xt.comment(x, raw=True) for x in body.rstrip().split("\n"))]))
                return
        transformed = xt.transform(source)
        lines, _ = self.translate_lines(cell, source, transformed, step=None)
        if lines is None:
            return
        text = "\n".join(lines)
        try:
            tree = ast.parse(text)
        except SyntaxError:  # reported by translate_lines already
            return
        self._source = text
        keep: list[str] = [*markdown]
        last_end = 0
        for node in tree.body:
            start = first_line(node)
            end = node.end_lineno or node.lineno
            leading = [x for x in lines[last_end:start - 1]]
            seg = lines[start - 1:end]
            last_end = end
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.note_nbflow_import(node)
                keep.extend(x for x in leading if x.strip())
                stmt = "\n".join(seg).strip()
                if not xt.is_nbflow_only_import(node) and stmt not in self.imports:
                    self.imports.append(stmt)
                continue
            if self.param_call(cell, node):
                keep.extend(leading)
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                    xt.nbflow_step_decorator(node, self.nbflow_names):
                comments = [x for x in [*keep, *leading] if x.strip()]
                keep = []
                self.add_step(self.function_step(cell, node, seg, comments))
                continue
            keep.extend(leading)
            keep.extend(seg)
        keep.extend(lines[last_end:])
        while keep and not keep[-1].strip():
            keep.pop()
        while keep and not keep[0].strip():
            keep.pop(0)
        if keep and self.steps and all(x.lstrip().startswith("#") or not x.strip() for x in keep):
            self.items.append(_Block(cell, keep))  # only comments: they stay among the steps
        elif keep:
            self.blocks.append(_Block(cell, keep))

    def note_nbflow_import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.ImportFrom) and node.module == "nbflow":
            for alias in node.names:
                if alias.name in ("step", "param"):
                    self.nbflow_names.add(alias.asname or alias.name)

    def function_step(self, cell: int, node: ast.FunctionDef | ast.AsyncFunctionDef,
                      seg: list[str], comments: list[str]) -> _FunctionStep:
        """An ``@nbflow.step`` function, verbatim but for the decorator (``@flow.step``)."""
        step_names = {"step", *(n for n in self.nbflow_names if n != "param")}
        rewritten: list[str] = []
        for line in seg:
            s = line.lstrip()
            if s.startswith("@"):
                deco = s[1:]
                for prefix in ("nbflow.step", *step_names - {"step"},
                               *(["step"] if "step" in self.nbflow_names else [])):
                    if deco == prefix or deco.startswith(prefix + "(") or deco.startswith(prefix + " "):
                        line = line[: len(line) - len(s)] + "@flow.step" + deco[len(prefix):]
                        break
            rewritten.append(line)
        name = node.name
        outputs: tuple[str, ...] | None = None
        for d in node.decorator_list:
            if isinstance(d, ast.Call):
                for kw in d.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        name = str(kw.value.value)
                    elif kw.arg == "outputs":
                        try:
                            value = ast.literal_eval(kw.value)
                        except ValueError:
                            self.error(cell, f"step '{node.name}': outputs= must be written out "
                                       "(a string or a tuple of strings) for the export to see it")
                            value = ()
                        outputs = (value,) if isinstance(value, str) else tuple(value or ())
        if isinstance(node, ast.AsyncFunctionDef):
            self.error(cell, f"step '{name}' is an async function; nbflow runs plain functions")
        return _FunctionStep(cell, name, "\n".join(rewritten), comments, node.name,
                             outputs or (name,))

    # -- resolving --------------------------------------------------------------------------------
    def finish(self) -> None:
        """What needs the whole notebook: inputs, name clashes, plain cells that read steps."""
        produced: dict[str, str] = {}
        for s in self.steps:
            for o in s.outputs:
                if o in produced and produced[o] != s.name:
                    self.error(s.cell, f"steps '{produced[o]}' and '{s.name}' both define '{o}'; "
                               "rename one of them (the notebook requires this too)")
                produced[o] = s.name
        names = [s.name for s in self.steps]
        for n in sorted({n for n in names if names.count(n) > 1}):
            self.error(next(s.cell for s in self.steps if s.name == n),
                       f"two cells define the step '{n}'; give each step its own name")
        self.check_plain_blocks(produced)  # first: what it comments out is not defined
        top = self.top_level_names()
        reserved = {"flow", "nbflow", "locate_store", "beside", *(["subprocess"] if self.needs_subprocess else [])}
        for s in self.steps:
            if isinstance(s, _Step):
                self.resolve_step(s, produced, top | reserved)
        clash = sorted(reserved & top)
        if clash:
            self.error(next(b.cell for b in self.blocks if clash[0] in xt.binds(b.lines)),
                       f"the notebook binds '{clash[0]}', a name the script needs for itself; rename it")
        if not self.steps:
            self.error(1, "the notebook has no steps: mark cells with %%step NAME (or decorate "
                       "functions with @nbflow.step) to say what the flow is made of")

    def resolve_step(self, s: _Step, produced: dict[str, str], top: set[str]) -> None:
        s.inputs = tuple(r for r in s.reads
                         if (r in produced and produced[r] != s.name) or r in self.params
                         or r in s.declared)
        for r in s.declared:
            if (r in produced and produced[r] != s.name) or r in self.params:
                continue
            if r == s.foreach and r in top:
                # a plain global list: its value is keyed like an input (as the notebook does)
                s.defaults.add(r)
            else:
                self.error(s.cell, f"step '{s.name}': --in/--foreach names '{r}', which no step "
                           "defines; define it in a step or drop it")
        ignored = tuple(n for n in s.ignore if n in s.inputs)
        if not s.cache:
            s.options["cache"] = "False"
        if ignored:
            s.options["ignore"] = xt.tuple_src(ignored)
        if s.foreach:
            s.options["foreach"] = json.dumps(s.foreach)
        external_ignored = [n for n in s.ignore if n not in s.inputs]
        if external_ignored:
            self.warn(s.cell, f"step '{s.name}': --ignore {', '.join(external_ignored)} (a global, "
                      "not an input) cannot be expressed in a script; the script's key covers it")
        rebinds = [r for r in s.reads if r in s.binds and r not in s.inputs and r in top]
        if rebinds:
            self.error(s.cell, f"step '{s.name}' reads and rebinds the global '{rebinds[0]}'; "
                       "a function cannot (its local would hide the global): bind the result "
                       "to a new name")
        for r in s.reads:
            if r not in s.inputs and r not in top and not xt.INTERACTIVE.match(r):
                self.warn(s.cell, f"step '{s.name}' reads '{r}', which no exported cell defines; "
                          "define it in a plain cell or a step")
                s.notes.append(f"# nbflow: warning: reads '{r}', which no exported cell defines")
        interactive = xt.interactive_reads(s.original, s.binds)
        if interactive:
            self.warn(s.cell, f"step '{s.name}' reads {', '.join(interactive)}: interactive state "
                      "a script does not have")
            s.notes.append(f"# nbflow: warning: reads {', '.join(interactive)}, interactive "
                           "state a script does not have")
        if xt.uses_widgets(s.original):
            self.warn(s.cell, f"step '{s.name}' uses ipywidgets, which do nothing in a script")
            s.notes.append("# nbflow: warning: uses ipywidgets, which do nothing in a script")
        if s.name in top:
            # a module-level function named like a helper would replace the helper
            s.func_name = f"{s.name}_step"
            while s.func_name in top:
                s.func_name += "_"
            s.options = {"name": json.dumps(s.name), **s.options}

    def top_level_names(self) -> set[str]:
        """Every name the script binds at module level (imports, plain code, function steps)."""
        found: set[str] = set()
        for text in [*self.imports, *("\n".join(b.lines) for b in self.blocks)]:
            found |= xt.binds(text.split("\n"))
        for s in self.steps:
            if isinstance(s, _FunctionStep):
                found.add(s.func_name)
        return found

    def check_plain_blocks(self, produced: dict[str, str]) -> None:
        """Plain code runs at import, before any step: a statement that reads a step's output,
        a parameter or interactive state is commented out (with what depends on it) and
        reported; a helper function that reads a step's output or a parameter as a global is
        reported (in the script those are not globals)."""
        tainted: dict[str, str] = {}  # names whose binding statement was commented out -> why
        for b in self.blocks:
            text = "\n".join(b.lines)
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            lines = list(b.lines)
            for node in tree.body:
                start, end = first_line(node), node.end_lineno or node.lineno
                segment = "\n".join(b.lines[start - 1:end])
                reads = xt.top_level_reads(ast.Module([node], type_ignores=[]))
                binds = xt.binds(b.lines[start - 1:end])
                why = self._unexportable(reads, produced, tainted)
                if why is None:
                    for name in binds:
                        tainted.pop(name, None)
                    continue
                for name in binds:
                    tainted[name] = why
                fix = "make it a step (%%step NAME) to keep it"
                shown = segment.strip().split("\n")[0]
                self.warn(b.cell, f"{shown!r} {why}; it is commented out in the script ({fix})")
                lines[start - 1] = f"# nbflow: not exported: the next line {why}\n" + xt.comment(
                    lines[start - 1], raw=True)
                for i in range(start, end):
                    lines[i] = xt.comment(lines[i], raw=True)
            b.lines = "\n".join(lines).split("\n")
            for func, names in xt.helper_globals(text).items():
                bad = [n for n in names if n in produced or n in self.params]
                if bad:
                    kind = "a parameter" if bad[0] in self.params else f"made by step '{produced[bad[0]]}'"
                    self.warn(b.cell, f"helper '{func}' reads the global '{bad[0]}' ({kind}); in the "
                              "script it is not a global: pass it to the helper as an argument")
            b.lines = xt.mark_useless(b.lines)

    def _unexportable(self, reads: set[str], produced: dict[str, str], tainted: dict[str, str]
                      ) -> str | None:
        """Why plain code reading ``reads`` cannot run when the script is imported, or None."""
        for r in sorted(reads):
            if r in self.params:
                return f"reads the parameter '{r}', which only exists while the flow runs"
            if r in produced:
                return f"reads '{r}' (made by step '{produced[r]}'), which only exists while the flow runs"
            if r in tainted:
                return f"reads '{r}', which a line not exported binds"
            if xt.INTERACTIVE.match(r):
                return f"reads {r}, interactive state a script does not have"
        return None

    # -- writing ----------------------------------------------------------------------------------
    def write(self, script_name: str) -> str:
        out: list[str] = []
        title = self.doc_lines or [f"The flow of the notebook {self.name}.ipynb."]
        doc = [*title, "",
               f"Exported from {self.name}.ipynb by `nbflow export`: one function per step cell.",
               "With the same code and parameters, a step the notebook already ran is served",
               "from the notebook's cache instead of running again.",
               "",
               f"    python {script_name} run [--PARAM VALUE ...]   # run --help lists the parameters",
               f"    python {script_name} show                      # steps, edges, docstrings",
               f"    python {script_name} resume                    # rerun from the failed step",
               "",
               "Steps run in the notebook's folder ("
               + ("this file's folder" if self.workdir == "." else f"{self.workdir}, relative to this file")
               + "), so relative",
               "paths in them resolve as in the notebook. The store is the notebook's cache",
               f"({self.store}, relative to this file); $NBFLOW_STORE or run --store PATH override it."]
        out.append('"""' + xt.doc_escape("\n".join(doc).strip()) + '\n"""')
        out.append("")
        user = [*(["import subprocess"] if self.needs_subprocess else []), *self.imports]
        out.extend(xt.sorted_imports(list(dict.fromkeys(user))))
        if user:
            out.append("")
        out.extend(["import nbflow", "from nbflow.script import beside, locate_store"])
        previous_def = False
        for b in self.blocks:
            has_def = xt.defines(b.lines)
            out.extend(["", ""] if has_def or previous_def else [""])
            out.extend(b.lines)
            previous_def = has_def
        out.extend(["", ""] if previous_def else [""])
        out.append(f"flow = nbflow.Flow({json.dumps(flow_name(self.name))}, "
                   f"store=locate_store(__file__, {json.dumps(self.store)}))")
        if self.params or self.param_notes:
            out.append("")
            out.extend(self.param_notes)
            for p in self.params.values():
                args = [json.dumps(p.name), p.default, *p.extra]
                if p.comment and not any(e.startswith("help=") for e in p.extra):
                    args.append(f"help={json.dumps(p.comment)}")
                out.append(f"flow.param({', '.join(args)})")
        for s in self.items:
            out.extend(["", ""])
            if isinstance(s, _Block):
                out.extend(s.lines)
                continue
            if isinstance(s, _FunctionStep):
                out.extend(s.comments)
                out.append(s.source)
                continue
            out.extend(s.notes)
            opts = {"outputs": xt.tuple_src(s.outputs), **s.options}
            out.append(f"@flow.step({', '.join(f'{k}={v}' for k, v in opts.items())})")
            args = [i for i in s.inputs if i not in s.defaults] + [f"{d}={d}" for d in sorted(s.defaults)]
            out.append(f"def {s.func_name}({', '.join(args)}):")
            if s.doc:
                out.append(xt.indent_doc(s.doc))
            out.extend(xt.indent_block(s.body))
            if s.outputs:
                out.append(f"    return {', '.join(s.outputs)}")
        if self.trailing:
            out.append("")
            out.append("")
            out.extend(self.trailing)
        out.append("")
        out.append("")
        out.append('if __name__ == "__main__":')
        out.append(f"    flow.main(workdir=beside(__file__, {json.dumps(self.workdir)}))")
        return xt.lint_marks("\n".join(xt.wrap_comments(out)) + "\n")

    # -- checking ---------------------------------------------------------------------------------
    def verify(self, text: str) -> None:
        """Every cell step's function must normalize exactly as the cell does (the same key)."""
        try:
            tree = ast.parse(text)
        except SyntaxError as e:  # a bug here, never the user's
            raise NbflowError(f"nbflow export produced invalid Python (line {e.lineno}: {e.msg}); "
                              "please report this with the notebook") from e
        funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        for s in self.steps:
            if not isinstance(s, _Step) or s.translated:
                continue
            func = funcs.get(s.func_name)
            want = keys.normalize_source(s.original, s.outputs)
            got = keys.normalize_body(func.body, s.outputs) if func is not None else None
            if got != want:
                raise NbflowError(f"nbflow export: step '{s.name}' (cell {s.cell}) would not share "
                                  "the notebook's cache key; please report this with the notebook")


# -- public API ------------------------------------------------------------------------------------
def notebook_to_script(
    nb: Any,
    name: str,
    *,
    store: str = ".nbflow",
    workdir: str = ".",
    script_name: str | None = None,
) -> tuple[str, list[ExportIssue]]:
    """The script for notebook node ``nb`` (the notebook file's stem is ``name``) and the issues.

    ``store`` and ``workdir`` are the notebook's store and folder relative to where the script
    will live. Raises :class:`ExportError` listing every error; warnings are returned (and
    written into the script as ``# nbflow:`` comments where they concern code).
    """
    ex = _Exporter(nb, name, store, workdir)
    ex.read()
    ex.finish()
    errors = [i for i in ex.issues if i.level == "error"]
    if errors:
        raise ExportError(f"{name}.ipynb", errors)
    text = ex.write(script_name or f"{name}_flow.py")
    ex.verify(text)
    return text, ex.issues


def flow_name(stem: str) -> str:
    """The flow's name, as the notebook adapter derives it from the notebook's file name."""
    from .notebook import flow_name as derive

    return str(derive(stem + ".ipynb"))


def notebook_store(notebook: Path, nb: Any = None) -> str:
    """Where the notebook keeps its cache: ``%flow config store=PATH`` if a cell sets it
    (relative to the notebook's folder), else ``.nbflow`` beside the notebook."""
    from .notebook.session import resolve_store

    folder = str(notebook.resolve().parent)
    for cell in (nb.cells if nb is not None else []):
        if cell.cell_type != "code":
            continue
        for line in str(cell.source).splitlines():
            m = re.match(r"^\s*%flow\s+config\s+(.*)$", line)
            for word in (m.group(1).split() if m else []):
                key, _, value = word.partition("=")
                if key == "store" and value:
                    return str(resolve_store(value, folder))
    return os.path.join(folder, ".nbflow")


def _relative(target: str, start: Path) -> str:
    """``target`` relative to folder ``start`` with forward slashes (URLs unchanged)."""
    if "://" in target:
        return target
    return os.path.relpath(target, start).replace(os.sep, "/")


def export_notebook(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    store: str | None = None,
    report: TextIO | None = None,
) -> str:
    """Export the notebook at ``path`` to a flow script; write it to ``out`` if given.

    Returns the script's text. Warnings go to ``report`` (default stderr) as
    ``nbflow export: <notebook> cell N: ...``; errors raise :class:`ExportError`.
    ``store`` overrides where the script looks for the cache (default: the notebook's store,
    relative to the script's folder).
    """
    nb_path = Path(path)
    nb = read_notebook(nb_path)
    out_path = Path(out) if out is not None else None
    script_dir = (out_path.resolve().parent if out_path is not None else nb_path.resolve().parent)
    text, issues = notebook_to_script(
        nb, nb_path.stem,
        store=store if store is not None else _relative(notebook_store(nb_path, nb), script_dir),
        workdir=_relative(str(nb_path.resolve().parent), script_dir),
        script_name=out_path.name if out_path is not None else f"{nb_path.stem}_flow.py",
    )
    return write_export(nb_path, text, issues, out_path, report)


def write_export(nb_path: Path, text: str, issues: Sequence[ExportIssue], out_path: Path | None,
                 report: TextIO | None) -> str:
    """Report an export's warnings, write its text atomically to ``out_path`` (if given), and
    return the text. Shared by the flow-script and Metaflow exporters."""
    stream = report if report is not None else sys.stderr
    for issue in issues:
        print(f"nbflow export: {nb_path.name} {issue}", file=stream)
    if out_path is not None:
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out_path)
    return text


def _make_exporter() -> type:
    """The nbconvert exporter class, built on first use so ``nbflow.export`` does not need
    nbconvert to be importable (only ``jupyter nbconvert --to nbflow`` does)."""
    from nbconvert.exporters import Exporter

    class NbflowExporter(Exporter):
        """``jupyter nbconvert --to nbflow analysis.ipynb`` writes ``analysis_flow.py``.

        Written beside the notebook by default, where its store path (the notebook's
        ``.nbflow``) resolves; with ``--output-dir`` elsewhere, run it with ``--store`` or
        ``$NBFLOW_STORE``.
        """

        export_from_notebook = "nbflow flow script"
        output_mimetype = "text/x-python"

        def _file_extension_default(self) -> str:
            return ".py"

        def from_notebook_node(  # type: ignore[override]  # a text exporter returns text
            self, nb: Any, resources: dict[str, Any] | None = None, **kw: Any
        ) -> tuple[str, dict[str, Any]]:
            nb_copy, resources = super().from_notebook_node(nb, resources, **kw)
            meta = resources.get("metadata", {})
            name = str(meta.get("name") or "notebook")
            folder = Path(meta.get("path") or ".").resolve()
            store = _relative(notebook_store(folder / f"{name}.ipynb", nb_copy), folder)
            text, issues = notebook_to_script(nb_copy, name, store=store, script_name=f"{name}_flow.py")
            for issue in issues:
                self.log.warning("%s.ipynb %s", name, issue)
            if resources.get("unique_key") == name:
                resources["unique_key"] = f"{name}_flow"  # analysis.ipynb -> analysis_flow.py
            resources["output_extension"] = ".py"
            return text, resources

    NbflowExporter.__module__ = __name__
    return NbflowExporter


_exporter_class: type | None = None


def __getattr__(name: str) -> Any:
    global _exporter_class
    if name == "NbflowExporter":
        if _exporter_class is None:
            _exporter_class = _make_exporter()
        return _exporter_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_notebook(nb_path: Path) -> Any:
    """The notebook at ``nb_path`` (nbformat v4), or a clear error (shared by both exporters)."""
    import nbformat

    if not nb_path.is_file():
        raise NbflowError(f"notebook {nb_path} does not exist")
    try:
        return nbformat.read(str(nb_path), as_version=4)
    except Exception as e:
        raise NbflowError(f"{nb_path} is not a readable notebook ({type(e).__name__}: {e})") from e
