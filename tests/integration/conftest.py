"""Fixtures for real-kernel notebook tests; the helpers live in ``kernel_helpers.py``
(``CellIdClient``: nbclient that sends cell ids like JupyterLab; ``run_notebook``: a fresh
kernel in the notebook's folder, repository importable, ``JPY_SESSION_NAME`` set)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from kernel_helpers import CellIdClient, run_notebook

__all__ = ["CellIdClient"]


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    d = tmp_path / "nbs"
    d.mkdir()
    return d


@pytest.fixture
def runner() -> Callable[..., nbformat.NotebookNode]:
    return run_notebook
