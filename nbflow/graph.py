"""The graph of steps: pure data, no I/O, no IPython.

A step reads names and binds names; an edge goes from the step that binds a name to every step
that reads it. Flow inputs (parameters) are names bound by no step. Invariant: every name has at
most one producer, and the producer relation is acyclic once :meth:`Graph.check` has passed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from .errors import CycleError, DuplicateOutputError, MissingInputError, UnknownStepError

Action = Callable[[dict[str, Any]], Any]  # returns dict[str, Any] or executor.StepOutput


@dataclass(frozen=True)
class Step:
    """One node: what it reads, what it binds, and how to compute it.

    ``action(inputs) -> outputs`` gets a dict of input values and returns a dict with exactly
    ``outputs``. ``code`` is the normalized code the key is built from (see :mod:`nbflow.keys`);
    ``source`` is what a person reads. ``params`` are static values folded into the key.
    ``foreach`` names one input that is a list: the action then runs once per item (each item
    cached on its own) and every output becomes the list of per-item results (fan-in for
    whoever reads it).
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    action: Action
    code: str
    source: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    version: str | None = None
    cache: bool = True
    ignore: tuple[str, ...] = ()
    externals: Callable[[], dict[str, str]] | None = None
    foreach: str | None = None
    doc: str | None = None
    kind: str = "function"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_(self, **changes: Any) -> Step:
        return replace(self, **changes)


class KeyMemo(NamedTuple):
    """A step's key and what it was built from (the executor's memo, kept by the graph)."""

    step: Step
    inputs: Mapping[str, str]  # digests of the inputs the key covers
    ext: Mapping[str, str]  # digests of the external values it reads
    merged: dict[str, str]  # what the entry's record lists
    key: str
    volatile: bool  # an input could not be stored: the step is never cached
    from_steps: bool  # every input came from another step: the run's digests are all it
    # covers, whatever else changed in the graph


class Graph:
    """Steps by name plus the derived producer map. Mutated only through add/remove."""

    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}
        self.inputs: dict[str, Any] = {}  # flow-level inputs (parameters): name -> spec
        self._producers: dict[str, str] | None = None
        self._children: dict[str, list[str]] | None = None  # memo, cleared on mutation
        self._orders: dict[tuple[str, ...] | None, list[str]] = {}  # memo, cleared on mutation
        self._descendants: dict[str, list[str]] = {}  # memo, cleared on mutation
        self._checked: set[tuple[str, ...] | None] = set()
        self.revision = 0  # bumped on every mutation: lets callers memoize what they derive
        self.shape = 0  # bumped when steps, edges or inputs change (not on a same-edges edit)
        # step name -> the executor's key memo. A step's key depends only on the step itself
        # and the digests it holds, so the entry holds while they are unchanged.
        self.key_memo: dict[str, KeyMemo] = {}

    def _changed(self) -> None:
        self.revision += 1
        self.shape += 1
        self._producers = None
        self._children = None
        self._orders.clear()
        self._descendants.clear()
        self._checked.clear()

    # -- mutation -----------------------------------------------------------------------------
    def add(self, step: Step) -> Step | None:
        """Add or replace ``step``; returns the step it replaced, if any."""
        old = self.steps.get(step.name)
        self.steps[step.name] = step
        if (old is not None and old.inputs == step.inputs and old.outputs == step.outputs
                and old.params.keys() == step.params.keys()):
            # an edited cell with the same reads and binds: the edges are unchanged, and so is
            # all that derives from them (orders, children, producers, checks), which need not
            # be rebuilt for every edit of a long notebook
            self.revision += 1
        else:
            self._changed()
        return old

    def remove(self, name: str) -> None:
        self.get(name)
        del self.steps[name]
        self._changed()

    def add_input(self, name: str, spec: Any = None) -> None:
        self.inputs[name] = spec
        self._changed()

    # -- queries ------------------------------------------------------------------------------
    def get(self, name: str) -> Step:
        try:
            return self.steps[name]
        except KeyError:
            raise UnknownStepError(name, list(self.steps)) from None

    @property
    def producers(self) -> dict[str, str]:
        """Map of output name -> the step that binds it."""
        if self._producers is None:
            producers: dict[str, str] = {}
            for step in self.steps.values():
                for out in step.outputs:
                    if out in producers and producers[out] != step.name:
                        raise DuplicateOutputError(out, producers[out], step.name)
                    producers[out] = step.name
            self._producers = producers
        return self._producers

    def producer_of(self, name: str) -> str | None:
        return self.producers.get(name)

    def parents(self, name: str) -> list[str]:
        """Steps whose outputs ``name`` reads, in the order of its inputs, without repeats."""
        producers = self.producers
        seen: dict[str, None] = {}
        for inp in self.get(name).inputs:
            p = producers.get(inp)
            if p is not None and p != name:
                seen[p] = None
        return list(seen)

    def children(self, name: str) -> list[str]:
        """Steps that read an output of ``name``, in registration order."""
        self.get(name)
        if self._children is None:
            children: dict[str, list[str]] = {n: [] for n in self.steps}
            for step in self.steps.values():
                for p in self.parents(step.name):
                    children[p].append(step.name)
            self._children = children
        return list(self._children[name])

    def edges(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(producer, consumer, names that flow along the edge) for every edge."""
        producers = self.producers
        result: dict[tuple[str, str], list[str]] = {}
        for step in self.steps.values():
            for inp in step.inputs:
                p = producers.get(inp)
                if p is not None and p != step.name:
                    result.setdefault((p, step.name), []).append(inp)
        return [(a, b, tuple(names)) for (a, b), names in result.items()]

    def upstream(self, name: str) -> list[str]:
        """Every ancestor of ``name`` in topological order (not including it)."""
        return [s for s in self.topological_order([name]) if s != name]

    def descendants(self, name: str) -> list[str]:
        """Every descendant of ``name`` (not including it), in registration order: cheaper than
        :meth:`downstream` when the order does not matter (marking steps stale)."""
        memo = self._descendants.get(name)
        if memo is None:
            self.get(name)
            found: set[str] = set()
            stack = [name]
            while stack:
                for child in self.children(stack.pop()):
                    if child not in found:
                        found.add(child)
                        stack.append(child)
            memo = self._descendants[name] = [s for s in self.steps if s in found] if found else []
        return list(memo)

    def downstream(self, name: str) -> list[str]:
        """Every descendant of ``name`` in topological order (not including it)."""
        found = set(self.descendants(name))
        if not found:  # a leaf (the last cell of a notebook, typically): no order needed
            return []
        return [s for s in self.topological_order() if s in found]

    def missing_inputs(self) -> list[tuple[str, str]]:
        """(step, name) for every read that nothing provides."""
        producers = self.producers
        return [
            (s.name, inp)
            for s in self.steps.values()
            for inp in s.inputs
            if inp not in producers and inp not in self.inputs and inp not in s.params
        ]

    def check(self, targets: Iterable[str] | None = None) -> None:
        """Raise a clear error for duplicates, missing inputs and cycles (among ``targets``' needs)."""
        memo = None if targets is None else tuple(targets)
        if memo in self._checked:
            return
        order = self.topological_order(targets)
        wanted = set(order)
        for step, name in self.missing_inputs():
            if step in wanted:
                raise MissingInputError(step, name)
        self._checked.add(memo)

    def topological_order(self, targets: Iterable[str] | None = None) -> list[str]:
        """Steps needed for ``targets`` (default: all), parents before children.

        Ties keep registration order, so the order is stable and matches the notebook's.
        Raises :class:`CycleError` with the whole cycle path.
        """
        memo = None if targets is None else tuple(targets)
        cached = self._orders.get(memo)
        if cached is not None:
            return list(cached)
        roots = list(self.steps) if targets is None else list(targets)
        for r in roots:
            self.get(r)
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        for root in roots:
            if state.get(root) == 2:
                continue
            # iterative DFS keeping the path, so the cycle can be reported whole
            path: list[str] = [root]
            iters = [iter(self.parents(root))]
            state[root] = 1
            while iters:
                try:
                    nxt = next(iters[-1])
                except StopIteration:
                    done = path.pop()
                    iters.pop()
                    state[done] = 2
                    order.append(done)
                    continue
                st = state.get(nxt)
                if st == 2:
                    continue
                if st == 1:
                    i = path.index(nxt)
                    # path runs child -> parent; report it in data-flow direction
                    cycle = list(reversed(path[i:]))
                    raise CycleError([*cycle, cycle[0]])
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(self.parents(nxt)))
        self._orders[memo] = order
        return list(order)
