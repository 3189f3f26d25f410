"""nbflow: turn a notebook into a reliable, fast, inspectable workflow.

Public API (heavy and optional parts are imported lazily, so ``import nbflow`` stays cheap and
the core never pulls in IPython or widgets).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from . import runs  # noqa: E402  (a callable module: nbflow.runs("MyFlow") lists past runs)
from .batch import BatchFailure, BatchStats  # noqa: E402
from .decorators import step  # noqa: E402  (function steps and FlowSpec methods)
from .errors import (  # noqa: E402
    CycleError,
    DuplicateOutputError,
    GraphError,
    MissingInputError,
    NbflowError,
    NbflowWarning,
    StepFailed,
    UnknownStepError,
)
from .events import Event, EventBus  # noqa: E402
from .executor import RunResult, StepOutput  # noqa: E402
from .flow import Flow, StepStatus  # noqa: E402
from .flowspec import FlowSpec  # noqa: E402
from .graph import Graph, Step  # noqa: E402
from .identity import RecordError, load_record  # noqa: E402
from .nodes import Input, Node, Output  # noqa: E402
from .parameters import JSONType, Parameter, param  # noqa: E402
from .processor import Processor, ProcessorNode  # noqa: E402
from .store import Store, open_store  # noqa: E402
from .typecheck import BindingError, FlowTypeError  # noqa: E402

__all__ = [
    "BatchFailure",
    "BatchStats",
    "BindingError",
    "CycleError",
    "DuplicateOutputError",
    "Event",
    "EventBus",
    "Flow",
    "FlowSpec",
    "FlowTypeError",
    "Graph",
    "GraphError",
    "Input",
    "JSONType",
    "MissingInputError",
    "NbflowError",
    "NbflowWarning",
    "Node",
    "Output",
    "Parameter",
    "Processor",
    "ProcessorNode",
    "RecordError",
    "RunResult",
    "Step",
    "StepFailed",
    "StepOutput",
    "StepStatus",
    "Store",
    "UnknownStepError",
    "__version__",
    "load_ipython_extension",
    "show",
    "load_record",
    "open_store",
    "param",
    "runs",
    "step",
]


def show(flow: Any = None) -> Any:
    """Display the live DAG widget of ``flow`` (default: the notebook's live flow)."""
    from .widget import show as _show

    return _show(flow)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbflow``."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .notebook import unload_ipython_extension as unload

    unload(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "nbflow-labextension"}]
