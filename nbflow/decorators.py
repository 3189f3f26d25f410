"""``nbflow.step``: one decorator for function steps and for FlowSpec methods.

Where a function is defined decides what it becomes, so users need one name only:

* a method in a class body (``class MyFlow(FlowSpec): @step def start(self): ...``) is handed to
  the FlowSpec machinery (:mod:`nbflow.flowspec`, which exports ``flowspec_step`` for this);
* a function at top level joins the *live flow*: the notebook's flow when ``%load_ext nbflow``
  is active (the notebook adapter installs a registrar here), else a default module-level flow.

The function itself is returned unchanged, so it can still be called directly.
Must never import IPython: the notebook adapter plugs in through :func:`set_live_registrar`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

#: (function, options) -> None; installed by ``nbflow.notebook`` while the extension is loaded
Registrar = Callable[[Callable[..., Any], dict[str, Any]], None]

_live_registrar: Registrar | None = None
_default_flow: Any = None


def set_live_registrar(registrar: Registrar | None) -> None:
    """Route top-level ``@nbflow.step`` functions to ``registrar`` (None: the default flow)."""
    global _live_registrar
    _live_registrar = registrar


def default_flow() -> Any:
    """The module-level flow that collects function steps outside a notebook."""
    global _default_flow
    if _default_flow is None:
        from .flow import Flow

        _default_flow = Flow("default")
    return _default_flow


def in_class_body(func: Callable[..., Any]) -> bool:
    """True when ``func`` is being defined inside a class body (its qualname's parent is a class).

    ``outer.<locals>.inner`` is a nested function, ``Flow.start`` and
    ``outer.<locals>.Flow.start`` are methods.
    """
    parts = getattr(func, "__qualname__", "").split(".")
    return len(parts) >= 2 and parts[-2] != "<locals>"


@overload
def step(func: F) -> F: ...
@overload
def step(func: None = None, **options: Any) -> Callable[[F], F]: ...


def step(func: F | None = None, **options: Any) -> Any:
    """Make ``func`` a step. Options (for function steps): ``name``, ``outputs``, ``ignore``,
    ``cache``, ``version``, ``foreach`` — the same as :meth:`nbflow.Flow.step`."""
    if func is None:
        return lambda f: step(f, **options)
    if in_class_body(func):
        from . import flowspec  # the Metaflow-style adapter; only loaded for class bodies

        handler = getattr(flowspec, "flowspec_step", None)
        if handler is None:
            handler = getattr(flowspec, "step", None)
            if handler is step or handler is None:
                raise TypeError("nbflow.flowspec does not provide flowspec_step()")
        return handler(func, **options) if options else handler(func)
    if _live_registrar is not None:
        _live_registrar(func, dict(options))
    else:
        default_flow().step(func, **options)
    return func


__all__ = ["default_flow", "in_class_body", "set_live_registrar", "step"]
