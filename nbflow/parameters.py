"""Flow parameters: declared once, typed from their default, read from a command line or checked
when passed as keyword arguments, with one clear error per bad value.

Shared by Metaflow-style flows (``Parameter`` class attributes), exported notebook scripts and
notebooks (``param("alpha", 0.01)``). Three entry points cover every use:

* :func:`resolve` turns the values a caller gave (strings from a command line or Python values)
  into a complete, validated ``{name: value}`` mapping, defaults filled in;
* :func:`add_arguments` / :func:`parse_args` build ``argparse`` options from parameters;
* :func:`param` declares a parameter where code runs (a notebook cell) and returns its value.

Owns no flow logic; must never import IPython.
"""

from __future__ import annotations

import argparse
import json
import keyword
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import NbflowError

__all__ = [
    "JSONType",
    "Parameter",
    "ParameterError",
    "add_arguments",
    "declared",
    "help_lines",
    "param",
    "parse_args",
    "resolve",
    "set_values",
    "values",
    "values_from_namespace",
]


class ParameterError(NbflowError, ValueError):
    """A parameter declaration or value is invalid; the message names the parameter and the fix."""


class JSONType:
    """``type=JSONType``: the value is JSON text (a mapping, a list, ...), parsed with ``json``.

    Used as a marker, as in Metaflow; a default given as a string is parsed too, so
    ``default='{"US": 1939}'`` reads as a dict in every step.
    """

    name = "JSON"

    def __init__(self) -> None:  # pragma: no cover - a marker, never instantiated
        raise TypeError("JSONType is a marker: pass type=JSONType, not JSONType()")


_SIMPLE = (str, int, float, bool)
_MISSING: Any = object()
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def _type_label(kind: Any) -> str:
    if kind is JSONType:
        return "JSON"
    return str(getattr(kind, "__name__", kind)).upper()


class Parameter:
    """A named flow input with a type, a default, help text, and maybe ``required=True``.

    The type comes from ``type=`` (``str``, ``int``, ``float``, ``bool``, :class:`JSONType` or any
    callable that converts a string), else from the default's type (a dict or list default means
    JSON), else ``str``. As a class attribute of a flow it is a read-only descriptor: inside a
    step ``self.alpha`` is the run's value.
    """

    def __init__(
        self,
        name: str,
        default: Any = None,
        *,
        type: Any = None,  # noqa: A002 - the Metaflow spelling users know
        help: str | None = None,  # noqa: A002
        required: bool = False,
        show_default: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ParameterError(
                f"parameter name {name!r} is not valid; use letters, digits, '_' or '-'"
            )
        self.name = name
        self.attr = name.replace("-", "_")
        self.help = help
        self.required = bool(required)
        self.show_default = show_default
        if type is None:
            if default is None:
                type = str
            elif isinstance(default, bool):
                type = bool
            elif isinstance(default, dict | list):
                type = JSONType
            elif isinstance(default, _SIMPLE):
                type = default.__class__
            else:
                raise ParameterError(
                    f"parameter '{name}': cannot infer a type from the default "
                    f"{default!r} ({default.__class__.__name__}); pass type=..."
                )
        if not (type is JSONType or type in _SIMPLE or callable(type)):
            raise ParameterError(f"parameter '{name}': type={type!r} is not a type or converter")
        self.type = type
        self.raw_default = default
        # a bad default is a bug in the flow: report it where the flow is defined
        self.default = None if default is None else self.convert(default, source="default")

    # -- naming -----------------------------------------------------------------------------------
    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    @property
    def option(self) -> str:
        return "--" + self.name

    @property
    def type_name(self) -> str:
        return _type_label(self.type)

    @property
    def has_default(self) -> bool:
        return self.default is not None

    def __repr__(self) -> str:
        extra = ", required=True" if self.required else ""
        return f"Parameter({self.name!r}, default={self.raw_default!r}, type={self.type_name}{extra})"

    # -- values -----------------------------------------------------------------------------------
    def _fail(self, value: Any, source: str, why: str = "") -> ParameterError:
        where = {
            "default": "as its default",
            "option": f"from {self.option}",
            "keyword": f"from {self.attr}=...",
        }.get(source, f"from {source}")
        shown = repr(value) if isinstance(value, str) else f"{value!r} ({value.__class__.__name__})"
        hint = f"; e.g. {self.option} '{{\"a\": 1}}'" if self.type is JSONType else ""
        return ParameterError(
            f"parameter '{self.name}' expects {self._a_type()}, got {shown} {where}"
            + (f": {why}" if why else "")
            + hint
        )

    def _a_type(self) -> str:
        label = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        if self.type is JSONType:
            return "JSON"
        return label.get(self.type, f"a {_type_label(self.type).lower()}")

    def convert(self, value: Any, source: str = "keyword") -> Any:
        """``value`` as this parameter's type; strings are parsed as on a command line."""
        kind = self.type
        if kind is JSONType:
            if isinstance(value, str | bytes):
                try:
                    return json.loads(value)
                except ValueError as e:
                    raise self._fail(value, source, str(e)) from None
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:
                raise self._fail(value, source, f"not JSON-serializable ({e})") from None
            return value
        if isinstance(value, str):
            return self.parse(value, source)
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise self._fail(value, source)
        if kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self._fail(value, source)
        if kind is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            raise self._fail(value, source)
        if kind is str:
            raise self._fail(value, source)
        if isinstance(kind, type) and isinstance(value, kind):
            return value
        try:
            return kind(value)
        except Exception as e:
            raise self._fail(value, source, f"{e.__class__.__name__}: {e}") from None

    def parse(self, text: str, source: str = "option") -> Any:
        """Parse command-line text."""
        kind = self.type
        if kind is str:
            return text
        if kind is JSONType:
            return self.convert(text, source)
        if kind is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise self._fail(text, source)
        try:
            return kind(text.strip() if kind in (int, float) else text)
        except Exception as e:
            why = "" if kind in (int, float) else f"{e.__class__.__name__}: {e}"
            raise self._fail(text, source, why) from None

    def value_or_default(self, given: Any = _MISSING, source: str = "keyword") -> Any:
        """The value to use: ``given`` converted, else the default; a missing required value raises."""
        if given is not _MISSING and given is not None:
            return self.convert(given, source)
        if self.required and not self.has_default:
            raise ParameterError(
                f"parameter '{self.name}' is required; pass {self.option} {self.type_name}"
                + (f" ({self.help})" if self.help else "")
            )
        return self.default

    def describe(self) -> str:
        """One help line: type, help, default or required."""
        parts = [self.help or ""]
        if self.required and not self.has_default:
            parts.append("[required]")
        elif self.show_default and self.raw_default is not None:
            parts.append(f"[default: {_show(self.raw_default)}]")
        return " ".join(p for p in parts if p)

    # -- descriptor: read-only inside steps ---------------------------------------------------
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        reader = getattr(type(obj), "_nbflow_parameter_value", None)
        if reader is None:
            return obj.__dict__.get(self.attr, self.default)
        return reader(obj, self)

    def __set__(self, obj: Any, value: Any) -> None:
        if getattr(type(obj), "_nbflow_parameter_value", None) is not None:
            raise ParameterError(
                f"parameter '{self.name}' is read-only inside a step; give it a value with "
                f"{self.option} on the command line or run({self.attr}=...), or store a "
                f"changed copy under another name (self.{self.attr}_used = ...)"
            )
        obj.__dict__[self.attr] = value


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else repr(value)


# -- many parameters --------------------------------------------------------------------------------
def check_names(params: Sequence[Parameter], reserved: Iterable[str] = ()) -> None:
    """Two parameters with one name, or a name nbflow uses itself, is a declaration error."""
    seen: dict[str, str] = {}
    taken = set(reserved)
    for p in params:
        for label in {p.attr, p.name.replace("-", "_")}:
            if label in seen:
                raise ParameterError(f"two parameters are named '{label}'; rename one of them")
            seen[label] = p.name
        if p.attr in taken or p.name in taken:
            raise ParameterError(
                f"parameter '{p.name}' clashes with a name nbflow uses ({p.name}); rename it"
            )
        if not p.attr.isidentifier() or keyword.iskeyword(p.attr):
            raise ParameterError(
                f"parameter '{p.name}' must be reachable as an attribute; name it with letters, "
                "digits and '_' (or assign it to a valid attribute name)"
            )


def _index(params: Sequence[Parameter]) -> dict[str, Parameter]:
    by_name: dict[str, Parameter] = {}
    for p in params:
        by_name[p.attr] = p
        by_name[p.name] = p
        by_name[p.name.replace("-", "_")] = p
    return by_name


def resolve(
    params: Sequence[Parameter],
    given: Mapping[str, Any] | None = None,
    *,
    source: str = "keyword",
    owner: str = "the flow",
) -> dict[str, Any]:
    """Every parameter's value by attribute name: ``given`` (by name or attribute) converted and
    checked, defaults for the rest. Unknown names and missing required values raise."""
    by_name = _index(params)
    chosen: dict[str, Any] = {}
    for name, value in (given or {}).items():
        p = by_name.get(name)
        if p is None:
            known = ", ".join(sorted({q.attr for q in params})) or "none"
            raise ParameterError(f"{owner} has no parameter '{name}'; its parameters: {known}")
        if p.attr in chosen:
            raise ParameterError(f"parameter '{p.name}' is given twice")
        chosen[p.attr] = value
    return {
        p.attr: p.value_or_default(chosen.get(p.attr, _MISSING), source)
        for p in params
    }


class _Given:
    """argparse default for parameters: tells "not given" from "given the default value"."""

    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN: Any = _Given()


def _argparse_type(p: Parameter) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return p.parse(text, "option")
        except ParameterError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = p.type_name  # argparse shows it in "invalid FLOAT value"
    return convert


def add_arguments(parser: argparse.ArgumentParser, params: Sequence[Parameter]) -> None:
    """One ``--name`` option per parameter (``--flag/--no-flag`` for booleans), with type, help,
    default and ``[required]`` in ``--help``. Read the result with :func:`values_from_namespace`.
    """
    for p in params:
        if p.type is bool:
            parser.add_argument(
                p.option, dest=p.attr, action=argparse.BooleanOptionalAction,
                default=NOT_GIVEN, help=p.describe().replace("%", "%%"),
            )
        else:
            parser.add_argument(
                p.option, dest=p.attr, type=_argparse_type(p), default=NOT_GIVEN,
                metavar=p.type_name, help=p.describe().replace("%", "%%"),
            )


def values_from_namespace(namespace: argparse.Namespace, params: Sequence[Parameter]) -> dict[str, Any]:
    """The parameters given on the command line (not the defaults), by attribute name."""
    out: dict[str, Any] = {}
    for p in params:
        value = getattr(namespace, p.attr, NOT_GIVEN)
        if value is not NOT_GIVEN:
            out[p.attr] = value
    return out


def parse_args(
    params: Sequence[Parameter], argv: Sequence[str] | None = None, prog: str | None = None
) -> dict[str, Any]:
    """Parse ``argv`` holding only parameter options; returns every value (defaults filled in).
    Bad values exit with argparse's usage message; a missing required value raises."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser, params)
    ns = parser.parse_args(argv)
    return resolve(params, values_from_namespace(ns, params), source="option")


def help_lines(params: Sequence[Parameter]) -> list[str]:
    """``--alpha FLOAT  Learning rate [default: 0.01]`` for each parameter."""
    rows = [(f"{p.option} {p.type_name}", p.describe()) for p in params]
    width = max((len(a) for a, _ in rows), default=0)
    return [f"{a.ljust(width)}  {b}".rstrip() for a, b in rows]


# -- param(): parameters declared where code runs (notebooks, exported scripts) -----------------
_declared: dict[str, Parameter] = {}
_values: dict[str, Any] = {}


def param(
    name: str,
    default: Any = None,
    *,
    help: str | None = None,  # noqa: A002
    type: Any = None,  # noqa: A002
    required: bool = False,
) -> Any:
    """Declare parameter ``name`` and return its value for this run.

    In a notebook this is the default; a script runner (or a test) supplies other values with
    :func:`set_values` / :func:`values` before the code runs. Declaring the same name again
    replaces the declaration (re-running a cell is how a notebook edits it).
    """
    p = Parameter(name, default, help=help, type=type, required=required)
    _declared[p.attr] = p
    given = _values.get(p.attr, _values.get(p.name, _MISSING))
    return p.value_or_default(given, "the values set for this run")


def declared() -> dict[str, Parameter]:
    """Parameters declared with :func:`param` so far, by attribute name."""
    return dict(_declared)


def set_values(mapping: Mapping[str, Any] | None) -> None:
    """Values :func:`param` returns from now on (``None`` clears them)."""
    _values.clear()
    if mapping:
        _values.update(mapping)


@contextmanager
def values(mapping: Mapping[str, Any]) -> Iterator[None]:
    """``with values({"alpha": 0.6}): ...``: :func:`param` returns these inside the block."""
    saved = dict(_values)
    _values.update(mapping)
    try:
        yield
    finally:
        _values.clear()
        _values.update(saved)
