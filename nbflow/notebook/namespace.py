"""Putting step outputs into the user namespace, and noticing when a step changed its inputs.

**Lazy binding.** A cached output larger than the session's ``lazy`` threshold is bound as a
:class:`LazyOutput` placeholder: loading it (a memory map plus a digest check) waits until it is
used. Two mechanisms make that robust:

1. before every cell runs, a ``pre_run_cell`` hook loads the placeholders whose names appear in
   the cell's text, so code in cells always sees the real object (``type(df)``, ``df is x`` ...);
2. code that reaches a placeholder indirectly (a function defined earlier reading the global)
   gets a proxy that loads the value on first use and forwards attribute access, indexing,
   iteration, calls, operators, ``isinstance`` (via ``__class__``) and display to it, then
   replaces itself in the namespace.

Known limits of (2): ``type(x)`` and ``x is y`` see the proxy; C code that requires an exact type
(e.g. ``np.add(x, 1, out=...)``) may reject it. Names built dynamically (``globals()["df"]``)
are not seen by (1). ``nbflow.notebook.materialize()`` loads every placeholder at once.

**Mutation.** Unpickled inputs are private copies, so a step that changes one in place does not
corrupt the cache — but the notebook now holds a value the cache does not, and later steps (fed
from the cache) will not see the change. :class:`MutationWatch` digests each mutable input before
and after the step and names the ones that changed.
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..store.codec import value_digest

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNSET = object()


class LazyOutput:
    """A placeholder for a cached output that is loaded on first use (see the module doc)."""

    __slots__ = ("_nbflow_name", "_nbflow_step", "_nbflow_loader", "_nbflow_ns", "_nbflow_value",
                 "_nbflow_digest", "_nbflow_size")

    def __init__(self, name: str, step: str, loader: Callable[[], Any], ns: dict[str, Any],
                 digest: str, size: int) -> None:
        object.__setattr__(self, "_nbflow_name", name)
        object.__setattr__(self, "_nbflow_step", step)
        object.__setattr__(self, "_nbflow_loader", loader)
        object.__setattr__(self, "_nbflow_ns", ns)
        object.__setattr__(self, "_nbflow_value", _UNSET)
        object.__setattr__(self, "_nbflow_digest", digest)
        object.__setattr__(self, "_nbflow_size", size)

    def _nbflow_load(self) -> Any:
        value = object.__getattribute__(self, "_nbflow_value")
        if value is _UNSET:
            value = object.__getattribute__(self, "_nbflow_loader")()
            object.__setattr__(self, "_nbflow_value", value)
            ns = object.__getattribute__(self, "_nbflow_ns")
            name = object.__getattribute__(self, "_nbflow_name")
            if ns.get(name) is self:
                ns[name] = value
        return value

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, DataFrame) answers for the value
        return type(self._nbflow_load())

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._nbflow_load(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._nbflow_load(), attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(self._nbflow_load(), attr)

    def __dir__(self) -> Iterable[str]:
        return dir(self._nbflow_load())

    def __repr__(self) -> str:
        return repr(self._nbflow_load())

    def __str__(self) -> str:
        return str(self._nbflow_load())

    def __format__(self, spec: str) -> str:
        return format(self._nbflow_load(), spec)

    def __bool__(self) -> bool:
        return bool(self._nbflow_load())

    def __len__(self) -> int:
        return len(self._nbflow_load())

    def __iter__(self) -> Any:
        return iter(self._nbflow_load())

    def __contains__(self, item: Any) -> bool:
        return item in self._nbflow_load()

    def __getitem__(self, key: Any) -> Any:
        return self._nbflow_load()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._nbflow_load()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._nbflow_load()[key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._nbflow_load()(*args, **kwargs)

    def __hash__(self) -> int:
        return hash(self._nbflow_load())

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        import numpy as np

        return np.asarray(self._nbflow_load(), *args, **kwargs)

    def __reduce_ex__(self, protocol: Any) -> Any:  # pickling stores the value, not the proxy
        return (_identity, (self._nbflow_load(),))


def _identity(value: Any) -> Any:
    return value


def _forward(op: Any, reflected: bool = False) -> Callable[..., Any]:
    if reflected:
        return lambda self, other: op(other, self._nbflow_load())
    return lambda self, *args: op(self._nbflow_load(), *args)


for _name, _op in {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
    "gt": operator.gt, "ge": operator.ge, "add": operator.add, "sub": operator.sub,
    "mul": operator.mul, "matmul": operator.matmul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
    "rshift": operator.rshift, "neg": operator.neg, "pos": operator.pos, "abs": operator.abs,
    "invert": operator.invert,
}.items():
    setattr(LazyOutput, f"__{_name}__", _forward(_op))
    if _name in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "and",
                 "or", "xor", "lshift", "rshift"):
        setattr(LazyOutput, f"__r{_name}__", _forward(_op, reflected=True))


def is_lazy(value: Any) -> bool:
    return type(value) is LazyOutput


class Namespace:
    """The user namespace as nbflow writes it: eager and lazy bindings, import replay."""

    def __init__(self, ns: dict[str, Any]) -> None:
        self.ns = ns
        self._pending: set[str] = set()  # names bound lazily (some may have been loaded since)

    # -- binding --------------------------------------------------------------------------------
    def bind(self, name: str, value: Any) -> None:
        self.ns[name] = value

    def bind_lazy(self, name: str, step: str, loader: Callable[[], Any], digest: str,
                  size: int) -> LazyOutput:
        proxy = LazyOutput(name, step, loader, self.ns, digest, size)
        self.ns[name] = proxy
        self._pending.add(name)
        return proxy

    def pending(self) -> list[str]:
        """Names still bound to a placeholder (the set is pruned as they load or are rebound)."""
        self._pending = {n for n in self._pending if is_lazy(self.ns.get(n))}
        return sorted(self._pending)

    def materialize(self, names: Iterable[str] | None = None) -> list[str]:
        """Load the placeholders among ``names`` (default: all); returns the names loaded."""
        loaded = []
        for name in list(self.pending() if names is None else names):
            value = self.ns.get(name)
            if isinstance(value, LazyOutput) and is_lazy(value):
                value._nbflow_load()
                loaded.append(name)
        return loaded

    def materialize_for(self, text: str) -> list[str]:
        """Load the placeholders named in a cell's text (the ``pre_run_cell`` hook)."""
        if not self._pending:
            return []
        pending = self.pending()
        if not pending:
            return []
        words = set(_WORD.findall(text))
        return self.materialize(n for n in pending if n in words)

    def rerun_imports(self, imports: Iterable[str], step: str) -> None:
        """On a cache hit, the cell's ``import`` statements run again so its modules exist."""
        for statement in imports:
            try:
                code = _import_code.get(statement)
                if code is None:
                    code = _import_code[statement] = compile(statement, "<nbflow import>", "exec")
                exec(code, self.ns)
            except Exception as e:
                print(f"nbflow: step '{step}' is cached, but '{statement}' failed: "
                      f"{type(e).__name__}: {e}", file=sys.stderr)


_import_code: dict[str, Any] = {}


# -- mutation ---------------------------------------------------------------------------------------
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range)


def _cannot_change(value: Any) -> bool:
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, tuple | frozenset):
        return all(isinstance(v, _IMMUTABLE) for v in value)
    flags = getattr(value, "flags", None)  # a read-only NumPy array (as loaded from the store)
    if flags is not None and getattr(flags, "writeable", True) is False and type(value).__module__ == "numpy":
        return getattr(value, "base", None) is None or not getattr(value.base, "flags", flags).writeable
    return False


def state_digest(value: Any, _depth: int = 0) -> str | None:
    """A digest of what a value *holds*, blind to internal caches (None: cannot tell).

    Pickles are not enough: pandas pickles lazily filled caches (reading ``df.date`` once
    changes the DataFrame's pickle), which would report mutations that never happened. Frames,
    series and indexes are digested from their hashed values, labels and dtypes; arrays from
    their bytes; lists, tuples and dicts element by element; anything else by its pickle.
    """
    from ..hashing import digest_parts

    if _depth > 3:
        return value_digest(value)
    mod = type(value).__module__ or ""
    try:
        if mod.startswith("pandas"):
            import pandas as pd

            if isinstance(value, pd.DataFrame | pd.Series | pd.Index):
                hashed = pd.util.hash_pandas_object(value, index=not isinstance(value, pd.Index))
                parts = [type(value).__name__, repr(value.shape), hashed.to_numpy().tobytes()]
                if isinstance(value, pd.DataFrame):
                    parts += [repr(list(value.columns)), repr([str(t) for t in value.dtypes])]
                    parts.append(value.columns.dtype.str if hasattr(value.columns.dtype, "str") else "")
                else:
                    parts += [repr(getattr(value, "name", None)), str(value.dtype)]
                return digest_parts(parts)
        if mod == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
            import numpy as np

            if isinstance(value, np.ndarray) and value.dtype != object:
                data = np.ascontiguousarray(value)
                return digest_parts([value.dtype.str, repr(value.shape), data.view(np.uint8).reshape(-1).data])
        if type(value) in (list, tuple) and len(value) <= 10_000:
            parts = [type(value).__name__]
            for item in value:
                d = state_digest(item, _depth + 1)
                if d is None:
                    return None
                parts.append(d)
            return digest_parts(parts)
        if type(value) is dict and len(value) <= 10_000:
            parts = ["dict"]
            for k, item in value.items():
                d = state_digest(item, _depth + 1)
                if d is None:
                    return None
                parts += [repr(k), d]
            return digest_parts(parts)
        return value_digest(value)
    except Exception:
        return None


class MutationWatch:
    """Digests of a step's mutable inputs taken before it runs, compared after."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = {n: v for n, v in values.items() if not _cannot_change(v)}
        self.before = {n: state_digest(v) for n, v in self.values.items()}

    def changed(self) -> list[str]:
        out = []
        for name, value in self.values.items():
            before = self.before[name]
            if before is not None and state_digest(value) != before:
                out.append(name)
        return out


def mutation_message(step: str, names: list[str], producers: Mapping[str, str]) -> str:
    which = ", ".join(
        f"'{n}'" + (f" (from step '{producers[n]}')" if n in producers else "") for n in names
    )
    first = names[0]
    return (
        f"step '{step}' changed its input {which} in place; the cache keeps the unchanged value, "
        f"so later steps and cached runs will not see this change. Work on a copy instead, "
        f"e.g. {first} = {first}.copy() at the top of the cell, or bind the result to a new name"
    )


__all__ = ["LazyOutput", "MutationWatch", "Namespace", "is_lazy", "mutation_message"]
