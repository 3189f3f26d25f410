"""Runtime checks of values against type hints (``list[int]``, ``dict[str, float]``, unions, ...).

Imperative flows declare typed inputs and typed processors declare ``process(a: int, ...)``; both
check values *before* a step runs, so a wrong value is reported by the name the user gave it
instead of surfacing as a traceback deep inside a step.

Rules: the numeric tower of PEP 484 (an ``int`` is a fine ``float``; NumPy scalars count through
:mod:`numbers`); containers are checked element by element; a hint this module cannot judge
(a ``TypeVar``, a non-runtime ``Protocol``, an unresolved forward reference) accepts everything,
so a check never rejects a value only because the hint is exotic. Pure; imports nothing heavy.
"""

from __future__ import annotations

import collections.abc as cabc
import functools
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any

from .errors import GraphError, NbflowError

_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)
_SEQUENCE_ORIGINS = (list, cabc.Sequence, cabc.MutableSequence)
_SET_ORIGINS = (set, frozenset, cabc.Set, cabc.MutableSet)
_MAPPING_ORIGINS = (dict, cabc.Mapping, cabc.MutableMapping)


class FlowTypeError(NbflowError, TypeError):
    """A value does not match the declared type of the input or argument it is given to."""


class BindingError(GraphError, TypeError):
    """A node's bindings do not fit its function's signature (missing or extra argument)."""


def type_name(tp: Any) -> str:
    """A short, readable name for a type hint: ``list[int]``, ``dict[str, float]``, ``int | None``."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any:
        return "Any"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
    if isinstance(tp, str):
        return tp
    return repr(tp).replace("typing.", "").replace("collections.abc.", "")


def _short(value: Any, width: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[: width - 1] + "…"


def mismatch(value: Any, tp: Any) -> str | None:
    """Why ``value`` is not a ``tp`` (e.g. ``"got list with a str at [2]: 'a'"``), or None if it is."""
    return _mismatch(value, tp, "")


def _got(value: Any, where: str) -> str:
    if where:
        return f"got {type(value).__name__} at {where}: {_short(value)}"
    return f"got {type(value).__name__}: {_short(value)}"


def _mismatch(value: Any, tp: Any, where: str) -> str | None:  # noqa: C901 - one case per kind
    if tp is Any or tp is object or isinstance(tp, str | typing.ForwardRef | typing.TypeVar):
        return None
    if tp is None or tp is type(None):
        return None if value is None else _got(value, where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _mismatch(value, args[0], where)
    if origin in _UNION_TYPES:
        reasons = [_mismatch(value, a, where) for a in args]
        return None if any(r is None for r in reasons) else _got(value, where)
    if origin is typing.Literal:
        return None if value in args else _got(value, where)
    if origin is type:
        if not isinstance(value, type):
            return _got(value, where)
        target = args[0] if args else object
        if isinstance(target, type) and not issubclass(value, target):
            return f"got class {value.__qualname__}" + (f" at {where}" if where else "")
        return None
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _mismatch(value, supertype, where)
    if origin is None:
        return _plain(value, tp, where)
    if origin is cabc.Callable:
        return None if callable(value) else _got(value, where)
    if not _isinstance(value, origin):
        return _got(value, where)
    if not args:
        return None
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _each(value, args[0], where)
        if args == ((),):
            return None if len(value) == 0 else f"got a tuple of {len(value)}, expected ()"
        if len(value) != len(args):
            at = f" at {where}" if where else ""
            return f"got a tuple of {len(value)} values{at}, expected {len(args)}"
        for i, (v, a) in enumerate(zip(value, args, strict=True)):
            r = _mismatch(v, a, f"{where}[{i}]")
            if r:
                return r
        return None
    if origin in _MAPPING_ORIGINS and isinstance(value, cabc.Mapping):
        key_tp, val_tp = (args + (Any, Any))[:2]
        if _all_of_class(value.keys(), key_tp) and _all_of_class(value.values(), val_tp):
            return None
        fast_k, fast_v = _fast(key_tp), _fast(val_tp)
        for k, v in value.items():
            if not (fast_k(k) if fast_k is not None else _mismatch(k, key_tp, "") is None):
                return _mismatch(k, key_tp, f"{where}[key {_short(k, 20)}]")
            if not (fast_v(v) if fast_v is not None else _mismatch(v, val_tp, "") is None):
                return _mismatch(v, val_tp, f"{where}[{_short(k, 20)}]")
        return None
    if (origin in _SEQUENCE_ORIGINS or origin in _SET_ORIGINS) and isinstance(
        value, list | tuple | set | frozenset | cabc.Sequence
    ):
        if isinstance(value, str | bytes):
            return None
        return _each(value, args[0], where)
    return None  # Iterable, Iterator, ... : never consume the value to check it


def _each(value: Any, item_tp: Any, where: str) -> str | None:
    """Check every item; the location text is built only for the first item that fails, so
    checking a million-element list costs about as much as hashing it."""
    ordered = not isinstance(value, set | frozenset)
    if _all_of_class(value, item_tp):
        return None
    fast = _fast(item_tp)
    for i, v in enumerate(value):
        if fast is not None:
            if fast(v):
                continue
        elif _mismatch(v, item_tp, "") is None:
            continue
        return _mismatch(v, item_tp, f"{where}[{i}]" if ordered else f"{where}{{…}}")
    return None


def _all_of_class(values: Any, tp: Any) -> bool:
    """True when ``tp`` is a plain class and every value's type is acceptable for it, judged once
    per distinct type (``set(map(type, ...))`` runs at C speed on a million items)."""
    if not isinstance(tp, type) or typing.get_args(tp):
        return tp is Any
    try:
        kinds = set(map(type, values))
    except TypeError:
        return False
    return all(_class_ok(k, tp) for k in kinds)


def _class_ok(kind: type, tp: type) -> bool:
    try:
        if tp is float:
            return issubclass(kind, numbers.Real) and not issubclass(kind, bool)
        if tp is int:
            return issubclass(kind, numbers.Integral)
        if tp is complex:
            return issubclass(kind, numbers.Complex) and not issubclass(kind, bool)
        return issubclass(kind, tp)
    except TypeError:
        return False


def _fast(tp: Any) -> Callable[[Any], bool] | None:
    """A quick yes/no predicate for common item types (None: use the general path)."""
    try:
        return _fast_cached(tp)
    except TypeError:  # an unhashable hint
        return None


@functools.lru_cache(maxsize=256)
def _fast_cached(tp: Any) -> Callable[[Any], bool] | None:
    if tp is Any or tp is object:
        return lambda v: True
    if tp is int:
        return lambda v: type(v) is int or isinstance(v, numbers.Integral)
    if tp is float:
        return lambda v: (type(v) is float or type(v) is int
                          or (isinstance(v, numbers.Real) and not isinstance(v, bool)))
    if tp is str or tp is bytes or tp is bool or tp is type(None):
        return lambda v: isinstance(v, tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNION_TYPES:
        parts = [_fast(a) for a in args]
        if all(p is not None for p in parts):
            checks = [p for p in parts if p is not None]
            return lambda v: any(c(v) for c in checks)
        return None
    if origin in (list, set, frozenset) and len(args) == 1:
        item = _fast(args[0])
        if item is not None:
            return lambda v: isinstance(v, origin) and all(item(x) for x in v)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        member = _fast(args[0])
        if member is not None:
            return lambda v: isinstance(v, tuple) and all(member(x) for x in v)
    if origin is dict and len(args) == 2:
        fk, fv = _fast(args[0]), _fast(args[1])
        if fk is not None and fv is not None:
            return lambda v: isinstance(v, dict) and all(fk(k) and fv(x) for k, x in v.items())
    return None


def _plain(value: Any, tp: Any, where: str) -> str | None:
    if tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, numbers.Integral)
    elif tp is complex:
        ok = isinstance(value, numbers.Complex) and not isinstance(value, bool)
    elif isinstance(tp, type):
        ok = _isinstance(value, tp)
    else:
        ok = True  # something this module cannot judge
    return None if ok else _got(value, where)


def _isinstance(value: Any, tp: Any) -> bool:
    try:
        return isinstance(value, tp)
    except TypeError:  # a non-runtime Protocol, a subscripted special form: cannot judge
        return True


def compatible(produced: Any, expected: Any) -> bool:
    """Whether a value declared as ``produced`` may be given where ``expected`` is declared.

    Only plain classes are compared (``str`` into ``int`` is refused); anything generic or unknown
    is accepted here and checked on the real value at run time.
    """
    if not (isinstance(produced, type) and isinstance(expected, type)):
        return True
    if typing.get_args(produced) or typing.get_args(expected):
        return True
    if expected is object or issubclass(produced, expected):
        return True
    if expected is float and issubclass(produced, int) and produced is not bool:
        return True
    if expected is complex and issubclass(produced, int | float):
        return True
    return False


def hints_of(func: Any) -> dict[str, Any]:
    """Resolved type hints of a callable; unresolvable ones are left out (they accept anything)."""
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:
        raw = getattr(func, "__annotations__", None) or {}
        return {k: v for k, v in raw.items() if not isinstance(v, str)}


__all__ = ["BindingError", "FlowTypeError", "compatible", "hints_of", "mismatch", "type_name"]
