"""The graph of a Metaflow-style flow, read from its source before anything runs.

Steps are the ``@step`` methods; a step's transitions come from the ``self.next(...)`` that ends
it (the last statement, as in Metaflow). :func:`parse_flow` applies Metaflow's rules — ``start``
and ``end`` exist, ``self.next`` targets are steps, no cycles, every step reachable, every
branch and foreach joined by a step taking ``inputs`` — and gives every step its *split stack*
(the splits it is inside), from which the engine mapping follows.

Each node also records which ``self.<name>`` the step reads (see :mod:`nbflow.flowspec_reads`).

Pure ``ast``/``inspect``; no I/O; must never import IPython.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import GraphError
from .flowspec_reads import Reads, join_names
from .parameters import Parameter, help_lines

#: names a flow's steps, parameters and artifacts may not take (FlowSpec uses them)
RESERVED = frozenset(
    {"next", "merge_artifacts", "input", "index", "run", "resume", "show", "flow", "runs",
     "foreach_stack"}
)
#: parameter names that would shadow the keyword arguments of FlowSpec.run()
RUN_OPTIONS = frozenset({"max_workers", "executor", "address", "store", "echo", "origin_run_id"})

Branch = tuple[str, str]  # (split step, branch target; "" for a foreach)


class FlowGraphError(GraphError):
    """The flow's structure breaks a rule; the message names the step and the fix."""


@dataclass
class Node:
    """One ``@step`` method and what its source says."""

    name: str
    func: types.FunctionType
    doc: str | None
    is_join: bool
    targets: tuple[str, ...]
    foreach: str | None
    line: int
    reads: frozenset[str]
    dynamic: bool
    names: frozenset[str] = frozenset()  # every .attr and include= name in a join's body
    merges_all: bool = False  # a join calling merge_artifacts without a literal include=
    in_funcs: list[str] = field(default_factory=list)
    stack: tuple[Branch, ...] = ()

    @property
    def transition(self) -> str:
        if not self.targets:
            return "end"
        if self.foreach is not None:
            return "foreach"
        return "split" if len(self.targets) > 1 else "linear"

    @property
    def frames(self) -> tuple[str, ...]:
        """The foreach splits this step is inside, outermost first."""
        return tuple(s for s, b in self.stack if b == "")

    @property
    def depth(self) -> int:
        return len(self.frames)

    def reads_name(self, name: str) -> bool:
        return self.dynamic or name in self.reads


@dataclass
class FlowGraph:
    """The checked graph: nodes in topological order (ties in definition order)."""

    name: str
    doc: str | None
    nodes: dict[str, Node]
    params: list[Parameter]

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def incoming_stack(self, name: str) -> tuple[Branch, ...]:
        """The split stack of what arrives at ``name`` (for a join: before it closes its split)."""
        node = self.nodes[name]
        if not node.in_funcs:
            return ()
        return self.out_stack(node.in_funcs[0], name)

    def out_stack(self, pred: str, target: str) -> tuple[Branch, ...]:
        p = self.nodes[pred]
        if p.foreach is not None:
            return (*p.stack, (pred, ""))
        if len(p.targets) > 1:
            return (*p.stack, (pred, target))
        return p.stack

    def inside(self, split: str) -> list[Node]:
        """Non-join steps inside the foreach started at ``split`` (nested ones included)."""
        return [n for n in self if not n.is_join and (split, "") in n.stack]

    def show(self) -> str:
        """Steps in order with their docstrings and transitions, as ``python flow.py show``."""
        lines = [self.name]
        if self.doc:
            lines += ["    " + ln for ln in self.doc.splitlines()]
        if self.params:
            lines += ["", "Parameters"] + ["    " + ln for ln in help_lines(self.params)]
        for node in self:
            lines += ["", f"Step {node.name}" + ("  (join)" if node.is_join else "")]
            doc = node.doc or "?"
            lines += ["    " + ln for ln in doc.splitlines()]
            if node.foreach is not None:
                lines.append(f"    => {node.targets[0]}  (foreach over {node.foreach})")
            elif node.targets:
                lines.append("    => " + ", ".join(node.targets))
        return "\n".join(lines) + "\n"


# -- parsing ---------------------------------------------------------------------------------------
def is_step(obj: Any) -> bool:
    return bool(getattr(obj, "_nbflow_step", False))


def step_functions(cls: type) -> dict[str, types.FunctionType]:
    """The class's ``@step`` methods (inherited ones too), in definition order."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for name in vars(klass):
            names.setdefault(name, None)
    out: dict[str, types.FunctionType] = {}
    for name in names:
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, types.FunctionType) and is_step(attr):
            out[name] = attr
    return out


def flow_parameters(cls: type) -> list[Parameter]:
    seen: dict[str, Parameter] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Parameter):
                seen[attr] = value
    return list(seen.values())


def _function_def(func: types.FunctionType, what: str) -> ast.FunctionDef:
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        raise FlowGraphError(
            f"cannot read the source of {what}; define flows in a .py file or a notebook cell "
            "(nbflow reads self.next() from the source, as Metaflow does)"
        ) from None
    try:
        tree = ast.parse(source)
    except SyntaxError as e:  # pragma: no cover - the function was compiled from this source
        raise FlowGraphError(f"cannot parse the source of {what}: {e}") from None
    for found in [*tree.body, *ast.walk(tree)]:
        if isinstance(found, ast.FunctionDef) and found.name == func.__name__:
            return found
    raise FlowGraphError(f"cannot find the definition of {what} in its source")


def _body(fn: ast.FunctionDef) -> list[ast.stmt]:
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body


def _is_next_call(stmt: ast.AST, selfname: str) -> ast.Call | None:
    call = stmt.value if isinstance(stmt, ast.Expr) else stmt
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "next"
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == selfname
    ):
        return call
    return None


def _parse_next(name: str, call: ast.Call, selfname: str) -> tuple[tuple[str, ...], str | None]:
    targets: list[str] = []
    for arg in call.args:
        if not (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name)
                and arg.value.id == selfname):
            raise FlowGraphError(
                f"step '{name}': self.next() takes steps written as self.<step>, e.g. "
                f"self.next(self.a, self.b); got {ast.unparse(arg)}"
            )
        if arg.attr in targets:
            raise FlowGraphError(f"step '{name}' names self.{arg.attr} twice in self.next()")
        targets.append(arg.attr)
    foreach = None
    for kw in call.keywords:
        if kw.arg != "foreach":
            raise FlowGraphError(
                f"step '{name}': self.next() got {kw.arg or '**'}=, which nbflow does not "
                "support; use self.next(self.a), self.next(self.a, self.b) or "
                "self.next(self.a, foreach='items')"
            )
        if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)):
            raise FlowGraphError(
                f"step '{name}': foreach= takes the artifact's name as a string, e.g. "
                f"self.next(self.a, foreach='titles'); got {ast.unparse(kw.value)}"
            )
        foreach = kw.value.value
    if not targets:
        raise FlowGraphError(f"step '{name}': self.next() needs the next step, e.g. self.next(self.end)")
    if foreach is not None and len(targets) != 1:
        raise FlowGraphError(
            f"step '{name}': a foreach goes to exactly one step, but self.next() names "
            f"{', '.join(targets)}; branch inside that step instead"
        )
    return tuple(targets), foreach


def parse_flow(cls: type) -> FlowGraph:
    """Read ``cls``'s steps and check every rule; raises :class:`FlowGraphError`."""
    name = cls.__name__
    funcs = step_functions(cls)
    params = flow_parameters(cls)
    for required in ("start", "end"):
        if required not in funcs:
            raise FlowGraphError(
                f"flow {name} has no step named '{required}'; every flow goes from "
                f"@step def start(self) to @step def end(self)"
            )
    reads = Reads(cls, is_step, _function_def, RESERVED)
    nodes: dict[str, Node] = {}
    for sname, func in funcs.items():
        if sname in RESERVED:
            raise FlowGraphError(f"step name '{sname}' is reserved by nbflow; rename the step")
        nodes[sname] = _parse_step(sname, func, reads)
    _check_params(name, params, nodes)
    _check_targets(name, nodes)
    order = _order(name, nodes)
    _check_splits(nodes, order)
    return FlowGraph(name, inspect.getdoc(cls) if cls.__doc__ else None,
                     {n: nodes[n] for n in order}, params)


def _parse_step(name: str, func: types.FunctionType, reads: Reads) -> Node:
    fn = _function_def(func, f"step '{name}'")
    args = fn.args
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    if args.vararg or args.kwarg or args.kwonlyargs or args.defaults or len(positional) not in (1, 2):
        raise FlowGraphError(
            f"step '{name}' must be def {name}(self) (or def {name}(self, inputs) for a join); "
            f"it is def {name}({ast.unparse(args)})"
        )
    selfname = positional[0]
    body = _body(fn)
    targets: tuple[str, ...] = ()
    foreach = None
    calls = [c for c in ast.walk(fn) if _is_next_call(c, selfname) is not None]
    if name == "end":
        if calls:
            raise FlowGraphError("step 'end' is the last step; remove its self.next() call")
    else:
        last = body[-1] if body else None
        call = _is_next_call(last, selfname) if last is not None else None
        if call is None:
            raise FlowGraphError(
                f"step '{name}' must end with self.next(...) naming the next step(s), e.g. "
                f"self.next(self.end); only 'end' has none (line {fn.lineno + func.__code__.co_firstlineno - 1})"
            )
        targets, foreach = _parse_next(name, call, selfname)
    r, dynamic = reads.of(fn)
    names, merges_all = join_names(fn) if len(positional) == 2 else (frozenset(), False)
    return Node(
        name=name, func=func, doc=inspect.getdoc(func), is_join=len(positional) == 2,
        targets=targets, foreach=foreach, line=func.__code__.co_firstlineno, reads=r,
        dynamic=dynamic, names=names | r, merges_all=merges_all,
    )


def _check_params(flow: str, params: list[Parameter], nodes: dict[str, Node]) -> None:
    from .parameters import check_names

    check_names(params, RESERVED | RUN_OPTIONS)
    for p in params:
        if p.attr in nodes or p.name.replace("-", "_") in nodes:
            raise FlowGraphError(
                f"flow {flow}: parameter '{p.name}' has the name of a step; rename one of them"
            )


def _check_targets(flow: str, nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        for t in node.targets:
            if t not in nodes:
                known = ", ".join(nodes)
                raise FlowGraphError(
                    f"step '{node.name}' goes to self.{t}, but {flow} has no step '{t}' "
                    f"(steps: {known}); fix the self.next() or add @step to '{t}'"
                )
            nodes[t].in_funcs.append(node.name)
    if nodes["start"].in_funcs:
        raise FlowGraphError(
            f"step '{nodes['start'].in_funcs[0]}' goes to start; nothing may lead back to start"
        )
    if nodes["start"].is_join:
        raise FlowGraphError("step 'start' takes inputs, but only a step after a split can be a join")


def _order(flow: str, nodes: dict[str, Node]) -> list[str]:
    """Check cycles and reachability; return a topological order (ties: definition order)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for t in nodes[n].targets:
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise FlowGraphError(
                    f"flow {flow} loops: {' -> '.join(cycle)}; steps must lead forward to end, "
                    f"so change the self.next() in '{n}'"
                )
            if t not in state:
                visit(t)
        path.pop()
        state[n] = 2

    visit("start")
    unreachable = [n for n in nodes if n not in state]
    if unreachable:
        raise FlowGraphError(
            f"step '{unreachable[0]}' is never reached from start; add self.next(self."
            f"{unreachable[0]}) to the step before it, or remove its @step"
        )
    indeg = {n: len(nodes[n].in_funcs) for n in nodes}
    position = {n: i for i, n in enumerate(nodes)}
    ready = ["start"]
    order: list[str] = []
    while ready:
        ready.sort(key=position.__getitem__)
        n = ready.pop(0)
        order.append(n)
        for t in nodes[n].targets:
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    return order


def _check_splits(nodes: dict[str, Node], order: list[str]) -> None:
    """Give each step its split stack; every split is closed by one join taking all its branches."""
    graph = FlowGraph("", None, {n: nodes[n] for n in order}, [])
    for n in order:
        node = nodes[n]
        if n == "start":
            continue
        preds = node.in_funcs
        stacks = [graph.out_stack(p, n) for p in preds]
        if not node.is_join:
            if len(preds) > 1 and n == "end":
                raise FlowGraphError(
                    f"branches from {', '.join(preds)} reach 'end' without being joined; add a "
                    f"join step (def join(self, inputs)) that they all go to, then end"
                )
            if len(preds) > 1:
                raise FlowGraphError(
                    f"branches from {', '.join(preds)} meet at step '{n}', so it must be a join: "
                    f"def {n}(self, inputs)"
                )
            node.stack = stacks[0]
            continue
        splitting = [p for p in preds if nodes[p].transition in ("split", "foreach")]
        if splitting:
            raise FlowGraphError(
                f"step '{splitting[0]}' splits straight into the join '{n}'; put at least one "
                f"step on every branch between a split and its join"
            )
        if any(not s for s in stacks):
            raise FlowGraphError(
                f"step '{n}' takes inputs, so it is a join, but no split comes before it; "
                f"a join follows self.next(self.a, self.b) or self.next(self.a, foreach='items'). "
                f"If '{n}' is not a join, write def {n}(self)"
            )
        tops = {s[-1][0] for s in stacks}
        prefixes = {s[:-1] for s in stacks}
        if len(tops) != 1 or len(prefixes) != 1:
            raise FlowGraphError(
                f"join '{n}' joins steps from different splits ({', '.join(sorted(tops))}); "
                f"join the inner split first, then join its result with the outer branches"
            )
        split = tops.pop()
        if nodes[split].foreach is not None:
            if len(preds) != 1:
                raise FlowGraphError(
                    f"join '{n}' closes the foreach started at '{split}' but several steps "
                    f"lead to it ({', '.join(preds)}); join the inner branches first"
                )
        else:
            branches = [s[-1][1] for s in stacks]
            expected = list(nodes[split].targets)
            if sorted(branches) != sorted(expected):
                missing = [b for b in expected if b not in branches]
                extra = sorted({b for b in branches if branches.count(b) > 1})
                what = (f"the branch{'es' if len(missing) > 1 else ''} starting at "
                        f"{', '.join(missing)} never reach{'' if len(missing) > 1 else 'es'} it"
                        if missing else f"branch {', '.join(extra)} arrives twice")
                raise FlowGraphError(
                    f"join '{n}' must join every branch of the split at '{split}' "
                    f"({', '.join(expected)}), but {what}; every branch must end in this join"
                )
        node.stack = prefixes.pop()
    end = nodes["end"]
    if end.stack:
        split = end.stack[-1][0]
        raise FlowGraphError(
            f"step 'end' is reached before the split at '{split}' is joined; add a join step "
            f"(def join(self, inputs)) between the branches and end"
        )
