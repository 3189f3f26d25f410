"""Session-wide test setup: a private signing key, so tests never touch the user's home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_KEY_DIR = tempfile.mkdtemp(prefix="nbflow-test-key-")
os.environ["NBFLOW_KEY_FILE"] = str(Path(_KEY_DIR) / "hmac.key")
# kernels and subprocesses started by tests inherit the same key, so they share test stores


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def flow(store_dir: Path):  # noqa: ANN201 - the fixture type is nbflow.Flow
    import nbflow

    return nbflow.Flow("test", store=store_dir)
